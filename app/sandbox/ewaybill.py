"""电子面单 sandbox: an e-waybill service issuing tracking numbers from carrier accounts.

Protocol (modelled on the 电子面单 APIs of the aggregators, e.g. Kuaidi100's
``/label/order``; the client is app/platforms/ewaybill.py):

``POST /ewaybill/label`` form fields ``method``, ``key``, ``t``, ``param``, ``sign``:

* ``t``: milliseconds since the epoch; more than 10 minutes off → code 402;
* ``param``: a JSON object (the exact posted string is what is signed);
* ``sign`` = UPPER(MD5(param + t + key + secret)); wrong → code 403.

Methods:

* ``order`` (取号), param ``{"kuaidicom", "partnerId", "orderId", "recMan": {"name",
  "mobile", "printAddr"}, "sendMan": {...}, "cargo"}`` → ``data: {"kuaidinum",
  "kuaidicom", "orderId", "taskId"}``. The same ``orderId`` gets the same number
  again while that number is not cancelled (a retried request never costs two
  numbers). Numbers come from the account's pool: recycled (cancelled) numbers
  first, then new ones while the balance lasts (30001 when it is empty).
* ``cancel`` (回收), param ``{"kuaidicom", "partnerId", "kuaidinum", "orderId"}``: the
  number goes back to the pool and will be issued again.

Answers are HTTP 200 ``{"success": bool, "code": int, "message": str, "data": ...}``:
200 ok; 400 bad parameters; 401 unknown key; 402 timestamp; 403 bad signature;
404 number unknown; 409 number already cancelled or of another order; 30001 pool
empty; 30002 kuaidicom not this account's carrier; 500 server error. Faults
(admin API): a burst of HTTP 503s, or one error code forced on every call.

Admin: ``GET /_sandbox/ewaybill/accounts``, ``PUT /_sandbox/ewaybill/accounts/<key>``
``{"balance", "fail_code", "burst_5xx"}``, ``GET /_sandbox/ewaybill/numbers?key=``.

Number formats per carrier (``FORMATS``): SF + 13 digits, YT + 13, 中通 78 + 12 …
"""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

from flask import Flask, Response, request

TIMESTAMP_TOLERANCE = 600
DEFAULT_BALANCE = 100_000

# kuaidicom -> (prefix, digits after the prefix)
FORMATS = {
    "shunfeng": ("SF", 13), "yuantong": ("YT", 13), "zhongtong": ("78", 12), "shentong": ("77", 13),
    "yunda": ("43", 13), "jtexpress": ("JT", 13), "ems": ("11", 11), "youzhengguonei": ("98", 11),
    "jd": ("JDVA", 11), "debangkuaidi": ("DPK", 12),
}
# The demo accounts: our carrier code -> kuaidicom (app/services/setup.py CARRIERS).
DEMO_CARRIERS = {"SF": "shunfeng", "YTO": "yuantong", "ZTO": "zhongtong", "STO": "shentong", "YUNDA": "yunda",
                 "JT": "jtexpress", "EMS": "ems", "POSTB": "youzhengguonei", "JD": "jd", "DBKD": "debangkuaidi"}


def demo_key(code: str) -> str:
    return f"EWB-{code}"


def demo_secret(code: str) -> str:
    return f"ewb-sandbox-secret-{code.lower()}"


def sign(param: str, t: str, key: str, secret: str) -> str:
    return hashlib.md5((param + t + key + secret).encode("utf-8")).hexdigest().upper()


@dataclass
class Account:
    key: str
    secret: str
    kuaidicom: str
    partner_id: str
    balance: int = DEFAULT_BALANCE
    next_seq: int = 1
    recycled: deque = field(default_factory=deque)
    issued: dict = field(default_factory=dict)     # number -> orderId (live numbers)
    by_order: dict = field(default_factory=dict)   # orderId -> number
    cancelled: set = field(default_factory=set)
    fail_code: Optional[int] = None
    burst_5xx: int = 0
    calls: int = 0

    def new_number(self) -> str:
        prefix, digits = FORMATS[self.kuaidicom]
        # Two accounts of one carrier never collide: each starts in its own block.
        base = (zlib.crc32(self.key.encode()) % 9000 + 1000) * 10 ** (digits - 4)
        number = f"{prefix}{base + self.next_seq:0{digits}d}"
        self.next_seq += 1
        self.balance -= 1
        return number

    def view(self) -> dict:
        return {"key": self.key, "kuaidicom": self.kuaidicom, "partner_id": self.partner_id,
                "balance": self.balance, "recycled": list(self.recycled), "issued": len(self.issued),
                "cancelled": len(self.cancelled), "fail_code": self.fail_code, "burst_5xx": self.burst_5xx,
                "calls": self.calls}


class EwaybillBook:
    """Every account of the sandbox e-waybill service (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accounts: dict[str, Account] = {}
        self.tasks = 0
        for code, com in DEMO_CARRIERS.items():
            self.add(demo_key(code), demo_secret(code), com, f"SANDBOX-{code}")

    def add(self, key: str, secret: str, kuaidicom: str, partner_id: str, balance: int = DEFAULT_BALANCE) -> Account:
        if kuaidicom not in FORMATS:
            raise ValueError(f"unknown kuaidicom {kuaidicom}")
        acc = Account(key=key, secret=secret, kuaidicom=kuaidicom, partner_id=partner_id, balance=balance)
        self.accounts[key] = acc
        return acc


def _reply(code: int, message: str, data=None, status: int = 200) -> Response:
    body = {"success": code == 200, "code": code, "message": message}
    if data is not None:
        body["data"] = data
    return Response(json.dumps(body, ensure_ascii=False), status=status,
                    content_type="application/json;charset=UTF-8")


def handle(book: EwaybillBook, form) -> Response:
    method = form.get("method") or ""
    key = form.get("key") or ""
    t = form.get("t") or ""
    param_text = form.get("param")
    given = form.get("sign") or ""
    if not (method and key and t and param_text and given):
        return _reply(400, "缺少参数：method、key、t、param、sign 均为必填")
    with book.lock:
        acc = book.accounts.get(key)
        if acc is None:
            return _reply(401, "授权 key 不存在")
        acc.calls += 1
        if acc.burst_5xx > 0:
            acc.burst_5xx -= 1
            return Response("Service Unavailable", status=503, mimetype="text/plain")
        try:
            sent = int(t) / 1000.0
        except ValueError:
            return _reply(402, "时间戳格式错误")
        if abs(time.time() - sent) > TIMESTAMP_TOLERANCE:
            return _reply(402, "时间戳与服务器时间相差超过 10 分钟")
        if not hmac.compare_digest(given.encode(), sign(param_text, t, key, acc.secret).encode()):
            return _reply(403, "签名验证失败")
        if acc.fail_code:
            return _reply(acc.fail_code, {500: "服务器内部错误", 30001: "电子面单余额不足"}.get(
                acc.fail_code, "模拟错误"))
        try:
            param = json.loads(param_text)
            if not isinstance(param, dict):
                raise ValueError
        except ValueError:
            return _reply(400, "param 不是合法的 JSON 对象")
        com = param.get("kuaidicom")
        if com != acc.kuaidicom:
            return _reply(30002, f"快递公司编码 {com} 与该账号（{acc.kuaidicom}）不符")
        order_id = str(param.get("orderId") or "").strip()
        if method == "order":
            if not order_id:
                return _reply(400, "缺少 orderId")
            rec = param.get("recMan") or {}
            if not isinstance(rec, dict) or not rec.get("name") or not rec.get("printAddr"):
                return _reply(400, "收件人姓名和地址不能为空")
            number = acc.by_order.get(order_id)
            if number is None:
                if acc.recycled:
                    number = acc.recycled.popleft()
                    acc.cancelled.discard(number)
                elif acc.balance > 0:
                    number = acc.new_number()
                else:
                    return _reply(30001, "电子面单余额不足，请充值")
                acc.issued[number] = order_id
                acc.by_order[order_id] = number
            book.tasks += 1
            return _reply(200, "success", {"kuaidinum": number, "kuaidicom": acc.kuaidicom, "orderId": order_id,
                                           "taskId": f"T{book.tasks:010d}"})
        if method == "cancel":
            number = str(param.get("kuaidinum") or "").strip()
            if not number:
                return _reply(400, "缺少 kuaidinum")
            if number in acc.cancelled:
                return _reply(409, f"单号 {number} 已回收")
            owner = acc.issued.get(number)
            if owner is None:
                return _reply(404, f"单号 {number} 不存在")
            if order_id and owner != order_id:
                return _reply(409, f"单号 {number} 不属于订单 {order_id}")
            del acc.issued[number]
            acc.by_order.pop(owner, None)
            acc.cancelled.add(number)
            acc.recycled.append(number)
            return _reply(200, "success")
        return _reply(400, f"未知的 method：{method}")


def register(app: Flask, state) -> EwaybillBook:
    """Mount the e-waybill service and its admin endpoints on the sandbox app."""
    book = getattr(state, "ewaybill", None)
    if book is None:
        book = EwaybillBook()
        state.ewaybill = book

    def _json(obj, status=200):
        return Response(json.dumps(obj, ensure_ascii=False), status=status,
                        content_type="application/json;charset=UTF-8")

    @app.post("/ewaybill/label")
    def ewaybill_label():
        return handle(book, request.form)

    @app.get("/_sandbox/ewaybill/accounts")
    def ewaybill_accounts():
        with book.lock:
            return _json({"accounts": [a.view() for a in book.accounts.values()]})

    @app.put("/_sandbox/ewaybill/accounts/<key>")
    def ewaybill_account_faults(key):
        try:
            body = json.loads(request.data or b"{}")
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            return _json({"error": "body must be a JSON object"}, 400)
        with book.lock:
            acc = book.accounts.get(key)
            if acc is None:
                return _json({"error": f"no e-waybill account {key}"}, 404)
            try:
                if "balance" in body:
                    acc.balance = int(body["balance"])
                if "fail_code" in body:
                    acc.fail_code = int(body["fail_code"]) if body["fail_code"] else None
                if "burst_5xx" in body:
                    acc.burst_5xx = int(body["burst_5xx"])
            except (TypeError, ValueError) as exc:
                return _json({"error": str(exc)}, 400)
            return _json(acc.view())

    @app.get("/_sandbox/ewaybill/numbers")
    def ewaybill_numbers():
        key = request.args.get("key") or ""
        with book.lock:
            acc = book.accounts.get(key)
            if acc is None:
                return _json({"error": f"no e-waybill account {key}"}, 404)
            return _json({"key": key, "issued": dict(acc.issued), "recycled": list(acc.recycled)})

    return book
