"""The sandbox HTTP server: one WSGI app speaking the Taobao TOP, Pinduoduo and
JD JOS gateway protocols (``/router/rest``, ``/api/router``, ``/routerjson``),
plus admin JSON endpoints under ``/_sandbox/`` for tests and the demo.

Gateway behaviour follows /work/shared/platform-apis.md. Where the spec is
silent the choice is written next to the code and marked UNCONFIRMED.

All gateway errors are answered with HTTP 200 and the platform's error body,
as the real gateways do; only the injected 5xx burst uses other statuses.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import socket
import threading
import time
from typing import Callable, Optional
from urllib.parse import parse_qsl, urlsplit

import orjson
from flask import Flask, Response, request
import werkzeug.urls  # noqa: F401  (registers the "werkzeug.url_quote" codec error handler used below)
from werkzeug.exceptions import InternalServerError
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wsgi import LimitedStream

from . import ewaybill, kuaidi100, signing
from .state import (
    EVENTS, GATEWAY_PATHS, EventError, Faults, Order, SandboxState, fmt_time, money, parse_time,
    platform_status, refund_status, visible,
)

TIMESTAMP_TOLERANCE = 600  # all three gateways: at most 10 minutes off server time
TOP_MAX_WINDOW = 86400     # taobao.trades.sold.increment.get: end - start <= 1 day
PDD_MAX_WINDOW = 1800      # pdd.order.number.list.increment.get: <= 30 minutes
JD_MAX_WINDOW = 31 * 86400  # jingdong.pop.order.search: <= 1 month (sandbox: 31 days)
MAX_PAGE_SIZE = 100


def _dumps(obj) -> bytes:
    """Compact UTF-8 JSON. Python ints are written exactly, so 19-digit tids stay bare JSON
    numbers (> 2^53); orjson (C) writes the same text as ``json.dumps(ensure_ascii=False,
    separators=(",", ":"))`` several times faster, and the standard library takes over for
    what orjson refuses (integers beyond 64 bits)."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _json(obj, status: int = 200) -> Response:
    return Response(_dumps(obj), status=status, content_type="application/json;charset=UTF-8")


# Listing responses are assembled from per-order JSON fragments, each serialized once per
# version of its order (SandboxState.fragment): a page of 100 unchanged orders costs a
# join, not 100 dicts, 1,000 time and money formats and their encoding.
_FRAGMENTS = "\x00oms-sandbox-fragments\x00"
_FRAGMENTS_JSON = _dumps(_FRAGMENTS)


def _json_with(obj, fragments: list[bytes], status: int = 200) -> Response:
    """``obj`` as JSON with the one value ``_FRAGMENTS`` in it (if any) replaced by the JSON
    array of ``fragments`` (each already serialized)."""
    text = _dumps(obj)
    if _FRAGMENTS_JSON not in text:
        return Response(text, status=status, content_type="application/json;charset=UTF-8")
    head, tail = text.split(_FRAGMENTS_JSON)
    return Response(b"".join((head, b"[", b",".join(fragments), b"]", tail)), status=status,
                    content_type="application/json;charset=UTF-8")


def _params() -> dict[str, str]:
    """Query string and form merged (first value wins), as the gateways read them."""
    out: dict[str, str] = {}
    for source in (request.args, request.form):
        for key in source.keys():
            if key not in out:
                out[key] = source.get(key)
    return out


def _int(value, default=None):
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if not re.fullmatch(r"-?\d+", text):
        raise ValueError(value)
    return int(text)


BAD_GATEWAY_HTML = ("<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
                    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>Tengine</center>\r\n"
                    "</body>\r\n</html>\r\n")


class _Reply(Exception):
    """Raised inside handlers to answer at once."""

    def __init__(self, response: Response):
        self.response = response


# =====================================================================================
# Taobao TOP
# =====================================================================================
TOP_METHODS = ("taobao.trades.sold.increment.get", "taobao.trade.fullinfo.get",
               "taobao.logistics.offline.send", "taobao.item.quantity.update")
TOP_CARRIER_NAMES = {"ZTO": "中通快递", "YTO": "圆通速递", "YUNDA": "韵达快递", "STO": "申通快递",
                     "SF": "顺丰速运", "EMS": "EMS", "JTSD": "极兔速递", "POSTB": "邮政快递包裹"}


def top_error(state: SandboxState, code: int, msg: str, sub_code: Optional[str] = None,
              sub_msg: Optional[str] = None) -> Response:
    body = {"code": code, "msg": msg}
    if sub_code:
        body["sub_code"] = sub_code
    if sub_msg:
        body["sub_msg"] = sub_msg
    body["request_id"] = _top_request_id(state)
    return _json({"error_response": body})


def _top_request_id(state: SandboxState) -> str:
    return hashlib.md5(state.request_id().encode()).hexdigest()[:13]


def _sku_properties(spec: str) -> str:
    # Taobao calls the colour axis 颜色分类: "颜色分类:黑色;尺码:M"
    parts = []
    for part in filter(None, spec.split(";")):
        axis, _, value = part.partition(":")
        parts.append(f"{'颜色分类' if axis == '颜色' else axis}:{value}")
    return ";".join(parts)


def top_trade(state: SandboxState, shop, o: Order, *, full: bool) -> dict:
    """A trade in the real TOP shape. NOTE: the real gateway masks or encrypts
    receiver_name / receiver_mobile / receiver_phone / receiver_address (with an
    oaid, decrypted through taobao.top.oaid.decrypt); this first sandbox version
    serves them as plaintext. Absent values are left out, as TOP does."""
    status = platform_status("top", o)
    rstatus = refund_status("top", o)
    t = {
        "tid": o.tid,
        "status": status,
        "type": "fixed",
        "shipping_type": "express",
        "created": fmt_time(o.created),
        "modified": fmt_time(o.modified),
        "pay_time": fmt_time(o.paid),
        "consign_time": fmt_time(o.shipped),
        "end_time": fmt_time(o.ended),
        "payment": money(o.payment),
        "post_fee": money(o.post_fee),
        "total_fee": money(o.goods),
        "discount_fee": money(o.discount),
        "adjust_fee": "0.00",
        "received_payment": money(o.payment) if o.status == "completed" else "0.00",
        "num": sum(ln.num for ln in o.lines),
        "buyer_nick": o.buyer_nick,
        "seller_nick": shop.seller_nick,
        "receiver_name": o.name,
        "receiver_mobile": o.phone,
        "receiver_state": o.province,
        "receiver_city": o.city,
        "receiver_district": o.district,
        "receiver_address": o.address,
        "receiver_zip": o.zip,
        "seller_flag": o.flag,
        "has_buyer_message": bool(o.message),
    }
    if full:
        t["tid_str"] = str(o.tid)
        if o.message:
            t["buyer_message"] = o.message
        if o.memo:
            t["seller_memo"] = o.memo
    lines = []
    line_status = "TRADE_CLOSED" if o.refund == "success" else status
    if line_status == "SELLER_CONSIGNED_PART":  # a sub-order not shipped yet still waits
        line_status = "WAIT_SELLER_SEND_GOODS"
    for ln in o.lines:
        lst = ln.listing
        d = {
            "oid": ln.line_id,
            "num_iid": lst.item_id,
            "sku_id": str(lst.sku_id),
            "outer_iid": lst.product_code,
            "outer_sku_id": ln.code,
            "title": ln.title,
            "sku_properties_name": _sku_properties(ln.spec),
            "price": money(ln.price),
            "num": ln.num,
            "total_fee": money(ln.total),
            "discount_fee": money(ln.discount),
            "adjust_fee": "0.00",
            "payment": money(ln.payment),
            "divide_order_fee": money(ln.payment),
            "status": line_status,
            "refund_status": rstatus,
            "consign_time": fmt_time(o.shipped),
            "logistics_company": TOP_CARRIER_NAMES.get(o.carrier or "", o.carrier) if o.shipped else None,
            "invoice_no": o.tracking if o.shipped else None,
        }
        if ln.sent is not None and o.refund != "success":  # shipped alone (拆单发货)
            carrier, tracking, when = ln.sent
            if o.status == "paid":
                d["status"] = "WAIT_BUYER_CONFIRM_GOODS"
            d["consign_time"], d["invoice_no"] = fmt_time(when), tracking
            d["logistics_company"] = TOP_CARRIER_NAMES.get(carrier, carrier)
        lines.append({k: v for k, v in d.items() if v is not None and v != ""})
    t["orders"] = {"order": lines}
    return {k: v for k, v in t.items() if v is not None and v != ""}


def _sub_fields(fields: set[str]) -> set[str]:
    return {f.split(".", 1)[1] for f in fields if f.startswith("orders.")}


def _top_filter(trade: dict, fields: set[str], sub: Optional[set[str]] = None) -> dict:
    """Keep the requested ``fields``: trade field names, ``orders`` (all sub-order
    fields) or ``orders.<field>`` (``sub``: those names, when the caller has them). Unknown
    names are ignored."""
    out = {k: v for k, v in trade.items() if k in fields and k != "orders"}
    if sub is None:
        sub = _sub_fields(fields)
    if "orders" in fields or sub:
        keep_all = "orders" in fields
        out["orders"] = {"order": [{k: v for k, v in line.items() if keep_all or k in sub}
                                   for line in trade["orders"]["order"]]}
    return out


def _top_fields(state, p) -> set[str]:
    text = p.get("fields")
    if not text:
        raise _Reply(top_error(state, 40, "Missing required arguments:fields"))
    return {f.strip() for f in text.split(",") if f.strip()}


def _top_required(state, p, *names):
    for name in names:
        if not p.get(name):
            raise _Reply(top_error(state, 40, f"Missing required arguments:{name}"))


def _top_invalid(state, name, sub_msg=None):
    return _Reply(top_error(state, 41, f"Invalid arguments:{name}", "isv.invalid-parameter", sub_msg))


def top_increment(state: SandboxState, shop, book, p: dict) -> Response:
    fields = _top_fields(state, p)
    _top_required(state, p, "start_modified", "end_modified")
    try:
        start = parse_time(p["start_modified"])
    except ValueError:
        raise _top_invalid(state, "start_modified", "时间格式应为 yyyy-MM-dd HH:mm:ss")
    try:
        end = parse_time(p["end_modified"])
    except ValueError:
        raise _top_invalid(state, "end_modified", "时间格式应为 yyyy-MM-dd HH:mm:ss")
    if end <= start:
        raise _top_invalid(state, "end_modified", "end_modified 必须晚于 start_modified")
    if end - start > TOP_MAX_WINDOW:
        raise _top_invalid(state, "end_modified", "start_modified 与 end_modified 的间隔不能超过一天")
    try:
        page_no = _int(p.get("page_no"), 1)
        if page_no < 1:
            raise ValueError
    except ValueError:
        raise _top_invalid(state, "page_no")
    try:
        page_size = _int(p.get("page_size"), 40)
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError
    except ValueError:
        raise _top_invalid(state, "page_size", "page_size 取值范围 1~100")
    status = p.get("status") or None
    # ``type`` is accepted and ignored: every sandbox trade is "fixed".
    listing = state.listing_window(shop.app_key, start, end, filter_key=("top", status),
                                   predicate=(lambda o: platform_status("top", o) == status) if status
                                   else (lambda o: True), descending=True)
    total = len(listing)
    chunk = listing[(page_no - 1) * page_size: page_no * page_size]
    body = {"total_results": total, "has_next": page_no * page_size < total}
    variant = ("top", frozenset(fields), False)
    sub = _sub_fields(fields)
    if chunk:  # TOP leaves out empty lists
        body["trades"] = {"trade": _FRAGMENTS}
    body["request_id"] = _top_request_id(state)
    response = _json_with({"trades_sold_increment_get_response": body}, [
        state.fragment(book, o, variant, lambda o: _top_filter(top_trade(state, shop, o, full=False), fields, sub))
        for o in chunk])
    _disturb_after_page(state, book, listing, page_no, page_size)
    return response


def _disturb_after_page(state, book, listing, page_no, page_size) -> None:
    k = book.faults.change_between_pages
    if k and page_no == 1 and len(listing) > page_size:
        state.disturb(book.shop.app_key, list(listing[page_size: page_size + k]))


def _top_order(state, shop, p) -> Order:
    tid = p.get("tid")
    if not tid:
        raise _Reply(top_error(state, 40, "Missing required arguments:tid"))
    if not re.fullmatch(r"\d{1,20}", tid):
        raise _top_invalid(state, "tid")
    o = state.order(shop.app_key, tid)
    if o is None:
        raise _Reply(top_error(state, 15, "Remote service error", "isv.trade-not-exist", "交易不存在"))
    return o


_TOP_NOTE_FIELDS = frozenset({"tid", "tid_str", "buyer_message", "seller_memo"})


def top_notes(o: Order) -> dict:
    """The fields of ``top_trade(full=True)`` a message look-up asks for, the same values
    in the same order, without building the whole trade."""
    t = {"tid": o.tid, "tid_str": str(o.tid), "buyer_message": o.message, "seller_memo": o.memo}
    return {k: v for k, v in t.items() if v is not None and v != ""}


def top_fullinfo(state: SandboxState, shop, book, p: dict) -> Response:
    fields = _top_fields(state, p)
    o = _top_order(state, shop, p)
    whole = not fields <= _TOP_NOTE_FIELDS  # a sync's message look-up asks for these only
    trade = _top_filter(top_trade(state, shop, o, full=True) if whole else top_notes(o), fields)
    return _json({"trade_fullinfo_get_response": {"trade": trade, "request_id": _top_request_id(state)}})


# The trade states as the seller back-end names them (for the zh error texts).
_TOP_STATUS_ZH = {"WAIT_BUYER_PAY": "等待买家付款", "WAIT_SELLER_SEND_GOODS": "买家已付款",
                  "SELLER_CONSIGNED_PART": "卖家部分发货", "WAIT_BUYER_CONFIRM_GOODS": "卖家已发货",
                  "TRADE_FINISHED": "交易成功", "TRADE_CLOSED": "交易关闭", "TRADE_CLOSED_BY_TAOBAO": "交易关闭"}


def top_offline_send(state: SandboxState, shop, book, p: dict) -> Response:
    _top_required(state, p, "tid", "out_sid", "company_code")
    o = _top_order(state, shop, p)
    split = str(p.get("is_split") or "0").strip()
    if split not in ("0", "1"):
        raise _top_invalid(state, "is_split", f"is_split 只能是 0 或 1：{split}")
    line_ids = None
    if split == "1":  # 拆单发货: only the sub-orders in sub_tid
        line_ids = [x.strip() for x in str(p.get("sub_tid") or "").split(",") if x.strip()]
        if not line_ids:
            _top_required(state, {}, "sub_tid")
    ok, why = state.ship(shop.app_key, o.key, p["company_code"], p["out_sid"], line_ids=line_ids)
    if not ok:
        # UNCONFIRMED: the real sub_codes for these refusals are not known.
        kind, _, ref = why.partition(":")
        if why == "refunding":
            msg = "订单正在退款中，不能发货"
        elif kind == "sub_tid":
            msg = f"子订单 {ref} 不属于订单 {o.key}"
        elif kind == "sent":
            msg = f"子订单 {ref} 已经发货"
        elif why == "not_split":
            msg = "拆单发货不能包含订单的全部子订单，请整单发货"
        else:
            status = platform_status("top", o)
            msg = f"订单状态不允许发货（{_TOP_STATUS_ZH.get(status, status)}）"
        raise _Reply(top_error(state, 15, "Remote service error", "isv.logistics-offline-service-error", msg))
    return _json({"logistics_offline_send_response": {"shipping": {"is_success": True},
                                                       "request_id": _top_request_id(state)}})


def top_quantity_update(state: SandboxState, shop, book, p: dict) -> Response:
    # num_iid is required by the real API; the SKU is chosen by sku_id or outer_id.
    _top_required(state, p, "num_iid", "quantity")
    try:
        num_iid = _int(p["num_iid"])
    except ValueError:
        raise _top_invalid(state, "num_iid")
    items = book.listings_by_item.get(num_iid)
    if not items:
        raise _Reply(top_error(state, 15, "Remote service error", "isv.item-not-exist", "商品不存在"))
    mode = {"1": "full", "2": "increment", "": "full"}.get(p.get("type") or "")
    if mode is None:
        raise _top_invalid(state, "type", "type 只能是 1（全量）或 2（增量）")
    try:
        quantity = _int(p["quantity"])
        if mode == "full" and quantity < 0:
            raise ValueError
    except ValueError:
        raise _top_invalid(state, "quantity")
    lst = _pick_listing(items, p.get("sku_id"), p.get("outer_id"))
    if lst is None:
        raise _Reply(top_error(state, 15, "Remote service error", "isv.item-sku-not-exist",
                               "找不到对应的 SKU（sku_id / outer_id）"))
    state.push_stock(shop.app_key, lst, quantity, mode)
    total = sum(x.quantity for x in items)
    now = fmt_time(state.now())
    item = {"num_iid": num_iid, "quantity": total, "modified": now,
            "skus": {"sku": [{"sku_id": lst.sku_id, "outer_id": lst.code, "quantity": lst.quantity,
                              "modified": now}]}}
    return _json({"item_quantity_update_response": {"item": item, "request_id": _top_request_id(state)}})


def _pick_listing(items, sku_id, outer_id):
    """The listing SKU of an item named by its sku_id or outer_id (both must agree);
    with neither, only a single-SKU item qualifies."""
    found = None
    if sku_id:
        found = next((x for x in items if str(x.sku_id) == str(sku_id)), None)
        if found is None:
            return None
    if outer_id:
        by_code = next((x for x in items if x.code == outer_id), None)
        if by_code is None or (found is not None and by_code is not found):
            return None
        found = by_code
    if found is None and len(items) == 1:
        found = items[0]
    return found


TOP_HANDLERS = {
    "taobao.trades.sold.increment.get": top_increment,
    "taobao.trade.fullinfo.get": top_fullinfo,
    "taobao.logistics.offline.send": top_offline_send,
    "taobao.item.quantity.update": top_quantity_update,
}


def _check_timestamp(state, ts: int) -> bool:
    return abs(ts - state.clock()) <= TIMESTAMP_TOLERANCE


def top_gateway(state: SandboxState, p: dict) -> Response:
    app_key = p.get("app_key")
    if not app_key:
        return top_error(state, 28, "Missing App Key")
    book = state.books.get(app_key)
    if book is None or book.shop.protocol != "top":
        return top_error(state, 29, "Invalid App Key", "isv.appkey-not-exists")
    shop = book.shop
    blocked = _faults(state, book, "top")
    if blocked is not None:
        return blocked
    if not p.get("method"):
        return top_error(state, 21, "Missing Method")
    ts = p.get("timestamp")
    if not ts:
        return top_error(state, 30, "Missing Timestamp")
    try:
        ts_epoch = parse_time(ts)
    except ValueError:
        return top_error(state, 31, "Invalid Timestamp", sub_msg="时间格式应为 yyyy-MM-dd HH:mm:ss（GMT+8）")
    if not _check_timestamp(state, ts_epoch):
        return top_error(state, 31, "Invalid Timestamp", sub_msg="时间戳与服务器时间相差超过10分钟")
    v = p.get("v")
    if not v:
        return top_error(state, 32, "Missing Version")
    if v != "2.0":
        if re.fullmatch(r"\d+(\.\d+)*", v):
            return top_error(state, 34, "Unsupported Version")
        return top_error(state, 33, "Invalid Version")
    if (p.get("format") or "xml").lower() != "json":
        # The real default is xml; the sandbox speaks json only.
        return top_error(state, 23, "Invalid Format", sub_msg="沙箱只支持 format=json")
    if not p.get("sign"):
        return top_error(state, 24, "Missing Signature")
    if (p.get("sign_method") or "md5") not in signing.TOP_SIGN_METHODS:
        return top_error(state, 25, "Invalid Signature", sub_msg="sign_method 只能是 md5、hmac 或 hmac-sha256")
    if not signing.verify_top(p, shop.app_secret):
        return top_error(state, 25, "Invalid Signature")
    handler = TOP_HANDLERS.get(p["method"])
    if handler is None:
        return top_error(state, 22, "Invalid Method")
    if not p.get("session"):
        return top_error(state, 26, "Missing Session")
    if p["session"] != shop.access_token or book.faults.invalid_session:
        return top_error(state, 27, "Invalid session", "invalid-sessionkey", "SessionKey非法")
    try:
        return handler(state, shop, book, p)
    except _Reply as r:
        return r.response


# =====================================================================================
# Pinduoduo
# =====================================================================================
# Error codes: 10019 (token) is from the spec; 20004 "签名验证失败" and 10016
# "client下线或者clientId不正确" are seen in public code; 10001 (common parameters),
# 10000 (business parameters) and 70031 (rate limit) are UNCONFIRMED choices.
def pdd_error(state, code: int, msg: str, sub_msg: Optional[str] = None,
              sub_code: Optional[str] = None) -> Response:
    return _json({"error_response": {"error_code": code, "error_msg": msg,
                                     "sub_code": sub_code or str(code), "sub_msg": sub_msg or msg,
                                     "request_id": state.request_id()}})


def _yuan(cents: int) -> float:
    # PDD money: JSON numbers in 元 (e.g. 59.9); parse with Decimal(str(x)).
    return round(cents / 100, 2)


def pdd_order(state, shop, o: Order) -> dict:
    """A full PDD order. NOTE: since 2024 the real gateway sends receiver_name,
    receiver_phone and the addresses as ciphertext with *_mask fields beside them;
    this first sandbox version serves plaintext. ``address`` is the full address
    (province + city + district + detail) and ``receiver_address`` the detail only
    (UNCONFIRMED, see the report). Absent times are null."""
    status = int(platform_status("pdd", o))
    after_sales = {"": 0, "closed": 0, "requested": 2, "success": 10}[o.refund]  # UNCONFIRMED values
    return {
        "order_sn": o.key,
        "order_status": status,
        "refund_status": refund_status("pdd", o),
        "after_sales_status": after_sales,
        "confirm_status": 1,
        "group_status": 1,
        "trade_type": 0,
        "is_lucky_flag": 1,
        "created_time": fmt_time(o.created),
        "confirm_time": fmt_time(o.paid),
        "pay_time": fmt_time(o.paid),
        "updated_at": fmt_time(o.modified),
        "shipping_time": fmt_time(o.shipped),
        "receive_time": fmt_time(o.ended) if o.status == "completed" else None,
        "last_ship_time": fmt_time(o.paid + 48 * 3600) if o.paid else None,
        "goods_amount": _yuan(o.goods),
        "discount_amount": _yuan(o.discount),
        "seller_discount": _yuan(o.discount),
        "platform_discount": 0.0,
        "capital_free_discount": 0.0,
        "postage": _yuan(o.post_fee),
        "pay_amount": _yuan(o.payment),
        "country": "中国",
        "province": o.province,
        "city": o.city,
        "town": o.district,
        "address": f"{o.province}{o.city}{o.district}{o.address}",
        "receiver_address": o.address,
        "receiver_name": o.name,
        "receiver_phone": o.phone,
        "buyer_memo": o.message,
        "remark": o.memo,
        "remark_tag": o.flag or None,
        "logistics_id": int(o.carrier) if o.carrier and str(o.carrier).isdigit() else 0,
        "tracking_number": o.tracking or "",
        "item_list": [{
            "goods_id": ln.listing.item_id,
            "sku_id": ln.listing.sku_id,
            "outer_id": ln.code,
            "outer_goods_id": ln.listing.product_code,
            "goods_name": ln.title,
            "goods_spec": ",".join(part.partition(":")[2] for part in ln.spec.split(";") if part),
            "goods_price": _yuan(ln.price),
            "goods_count": ln.num,
        } for ln in o.lines],
    }


_PDD_ORDER = ("pdd",)


def _pdd_bad(state, sub_msg: str) -> _Reply:
    return _Reply(pdd_error(state, 10000, "参数错误", sub_msg))


def pdd_increment(state: SandboxState, shop, book, p: dict) -> Response:
    try:
        start = _int(p.get("start_updated_at"))
        end = _int(p.get("end_updated_at"))
    except ValueError:
        raise _pdd_bad(state, "start_updated_at / end_updated_at 应为秒级时间戳")
    if start is None or end is None:
        raise _pdd_bad(state, "start_updated_at 和 end_updated_at 必填")
    if end <= start:
        raise _pdd_bad(state, "end_updated_at 必须大于 start_updated_at")
    if end - start > PDD_MAX_WINDOW:
        raise _pdd_bad(state, "start_updated_at 与 end_updated_at 的间隔不能超过30分钟")
    try:
        # The real API requires order_status and refund_status; the sandbox defaults both to 5 (all).
        order_status = _int(p.get("order_status"), 5)
        refund = _int(p.get("refund_status"), 5)
        page = _int(p.get("page"), 1)
        page_size = _int(p.get("page_size"), 100)
    except ValueError:
        raise _pdd_bad(state, "order_status / refund_status / page / page_size 应为整数")
    if order_status not in (1, 2, 3, 5):
        raise _pdd_bad(state, "order_status 只能是 1、2、3、5")
    if refund not in (1, 2, 3, 4, 5):
        raise _pdd_bad(state, "refund_status 只能是 1~5")
    if page < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise _pdd_bad(state, "page 从 1 开始，page_size 取值 1~100")

    def predicate(o: Order) -> bool:
        if not visible("pdd", o):
            return False
        if order_status != 5 and int(platform_status("pdd", o)) != order_status:
            return False
        return refund == 5 or refund_status("pdd", o) == refund

    listing = state.listing_window(shop.app_key, start, end, filter_key=("pdd", order_status, refund),
                                   predicate=predicate, descending=True)
    total = len(listing)
    chunk = listing[(page - 1) * page_size: page * page_size]
    response = _json_with({"order_sn_increment_get_response": {
        "total_count": total, "has_next": page * page_size < total, "order_sn_list": _FRAGMENTS,
        "request_id": state.request_id()}}, [state.fragment(book, o, _PDD_ORDER, lambda o: pdd_order(state, shop, o))
                                             for o in chunk])
    _disturb_after_page(state, book, listing, page, page_size)
    return response


def _pdd_order_of(state, shop, p) -> Order:
    sn = p.get("order_sn")
    if not sn:
        raise _pdd_bad(state, "order_sn 必填")
    o = state.order(shop.app_key, sn)
    if o is None or not visible("pdd", o):
        raise _pdd_bad(state, "订单不存在")
    return o


def pdd_information(state: SandboxState, shop, book, p: dict) -> Response:
    o = _pdd_order_of(state, shop, p)
    return _json({"order_info_get_response": {"order_info": pdd_order(state, shop, o),
                                              "request_id": state.request_id()}})


def pdd_online_send(state: SandboxState, shop, book, p: dict) -> Response:
    o = _pdd_order_of(state, shop, p)
    if not p.get("tracking_number"):
        raise _pdd_bad(state, "tracking_number 必填")
    try:
        logistics_id = _int(p.get("logistics_id"))
        if logistics_id is None or logistics_id <= 0:
            raise ValueError
    except ValueError:
        raise _pdd_bad(state, "logistics_id 必填且为正整数")
    ok, why = state.ship(shop.app_key, o.key, str(logistics_id), p["tracking_number"])
    if not ok:
        msg = "订单售后中，不能发货" if why == "refunding" else "订单状态不允许发货"
        raise _Reply(pdd_error(state, 10000, "参数错误", msg))
    return _json({"logistics_online_send_response": {"is_success": True, "request_id": state.request_id()}})


def pdd_quantity_update(state: SandboxState, shop, book, p: dict) -> Response:
    try:
        goods_id = _int(p.get("goods_id"))
        quantity = _int(p.get("quantity"))
        update_type = _int(p.get("update_type"), 1)
    except ValueError:
        raise _pdd_bad(state, "goods_id / quantity / update_type 应为整数")
    if goods_id is None or quantity is None:
        raise _pdd_bad(state, "goods_id 和 quantity 必填")
    if update_type not in (1, 2):
        raise _pdd_bad(state, "update_type 只能是 1（全量）或 2（增量）")
    items = book.listings_by_item.get(goods_id)
    if not items:
        raise _pdd_bad(state, "商品不存在")
    lst = _pick_listing(items, p.get("sku_id"), p.get("outer_id"))
    if lst is None:
        raise _pdd_bad(state, "找不到对应的 SKU（sku_id / outer_id）")
    if update_type == 1 and quantity < 0:
        raise _pdd_bad(state, "全量更新时 quantity 不能为负")
    state.push_stock(shop.app_key, lst, quantity, "full" if update_type == 1 else "increment")
    return _json({"goods_quantity_update_response": {"is_success": True, "request_id": state.request_id()}})


PDD_HANDLERS = {
    "pdd.order.number.list.increment.get": pdd_increment,
    "pdd.order.information.get": pdd_information,
    "pdd.logistics.online.send": pdd_online_send,
    "pdd.goods.quantity.update": pdd_quantity_update,
}


def pdd_gateway(state: SandboxState, p: dict) -> Response:
    book = state.books.get(p.get("client_id") or "")
    if book is None or book.shop.protocol != "pdd":
        return pdd_error(state, 10016, "client下线或者clientId不正确")
    shop = book.shop
    blocked = _faults(state, book, "pdd")
    if blocked is not None:
        return blocked
    if not p.get("type"):
        return pdd_error(state, 10001, "公共参数错误", "type 不能为空")
    try:
        ts = _int(p.get("timestamp"))
    except ValueError:
        ts = -1
    if ts is None or ts < 0:
        return pdd_error(state, 10001, "公共参数错误", "timestamp 必填，为秒级时间戳")
    if not _check_timestamp(state, ts):
        return pdd_error(state, 10001, "公共参数错误", "timestamp 与服务器时间相差超过10分钟")
    if (p.get("data_type") or "JSON").upper() != "JSON":
        return pdd_error(state, 10001, "公共参数错误", "沙箱只支持 data_type=JSON")
    if not signing.verify_wrapped(p, shop.app_secret):
        return pdd_error(state, 20004, "签名验证失败")
    handler = PDD_HANDLERS.get(p["type"])
    if handler is None:
        return pdd_error(state, 10001, "公共参数错误", f"接口 {p['type']} 不存在")
    if p.get("access_token") != shop.access_token or book.faults.invalid_session:
        return pdd_error(state, 10019, "access_token已过期")
    try:
        return handler(state, shop, book, p)
    except _Reply as r:
        return r.response


# =====================================================================================
# JD JOS
# =====================================================================================
# Top-level error codes: "19" (access_token) and "15" (method) are in the spec and in
# public code; "21" "key=… 信息无效" (app_key) and "12" "无效签名" (sign) are seen in
# public code; "16" (timestamp), "17" (version), "61" (bad 360buy_param_json) and the
# rate-limit "4" are UNCONFIRMED choices. Business errors come back inside the
# method's response with apiResult.success = false (chineseErr/englishErr/numberCode).
JD_STATE_REMARK = {"WAIT_SELLER_STOCK_OUT": "等待出库", "WAIT_GOODS_RECEIVE_CONFIRM": "等待确认收货",
                   "FINISHED_L": "完成", "TRADE_CANCELED": "取消", "LOCKED": "已锁定"}
JD_STATES = set(JD_STATE_REMARK) | {"POP_ORDER_PAUSE", "PAUSE"}


def jd_error(code: str, zh: str, en: str) -> Response:
    return _json({"error_response": {"code": code, "zh_desc": zh, "en_desc": en}})


def _vender_id(shop) -> str:
    return str(10000 + int(hashlib.md5(shop.app_key.encode()).hexdigest()[:6], 16) % 900000)


def jd_order(state, shop, o: Order) -> dict:
    """A JD order in the orderInfoList shape. NOTE: the real gateway masks mobile /
    telephone and, in enSearch, encrypts fullname / fullAddress; this first sandbox
    version serves plaintext. fullAddress is province + city + county + detail."""
    st = platform_status("jd", o)
    return {
        "orderId": o.key,
        "venderId": _vender_id(shop),
        "orderType": "22",
        "payType": "4-在线支付",
        "orderTotalPrice": money(o.goods),
        "orderSellerPrice": money(o.goods - o.discount),
        "orderPayment": money(o.payment),
        "freightPrice": money(o.post_fee),
        "sellerDiscount": money(o.discount),
        "balanceUsed": "0.00",
        "orderState": st,
        "orderStateRemark": JD_STATE_REMARK.get(st, ""),
        "deliveryType": "任意时间",
        "invoiceInfo": "不需要开具发票",
        "orderRemark": o.message,
        "venderRemark": o.memo,
        "orderStartTime": fmt_time(o.created),
        "paymentConfirmTime": fmt_time(o.paid),
        "orderEndTime": fmt_time(o.ended) or "",
        "modified": fmt_time(o.modified),
        "pin": o.buyer_nick,
        "waybill": o.tracking or "",
        "logisticsId": o.carrier or "",
        "consigneeInfo": {
            "fullname": o.name,
            "mobile": o.phone,
            "telephone": o.phone,
            "province": o.province,
            "city": o.city,
            "county": o.district,
            "town": "",
            "fullAddress": f"{o.province}{o.city}{o.district}{o.address}",
        },
        "itemInfoList": [{
            "skuId": str(ln.listing.sku_id),
            "wareId": str(ln.listing.item_id),
            "outerSkuId": ln.code,
            "skuName": " ".join([ln.title] + [part.partition(":")[2] for part in ln.spec.split(";") if part]),
            "jdPrice": money(ln.price),
            "giftPoint": "0",
            "itemTotal": str(ln.num),
        } for ln in o.lines],
    }


def _api_fail(zh: str, en: str, number: int = 10100001) -> dict:
    # UNCONFIRMED numberCode
    return {"success": False, "chineseErr": zh, "englishErr": en, "numberCode": number}


API_OK = {"success": True, "chineseErr": "", "englishErr": "", "numberCode": 0}
_JD_ORDER = ("jd",)


def jd_search(state: SandboxState, shop, book, q: dict) -> Response:
    def fail(zh, en):
        return _json({"jingdong_pop_order_search_responce": {"code": "0", "searchorderinfo_result": {
            "apiResult": _api_fail(zh, en), "orderInfoList": [], "orderTotal": 0}}})
    try:
        start = parse_time(str(q.get("start_date") or ""))
        end = parse_time(str(q.get("end_date") or ""))
    except ValueError:
        return fail("start_date、end_date 必填，格式 yyyy-MM-dd HH:mm:ss", "start_date and end_date are required")
    if end <= start:
        return fail("end_date 必须晚于 start_date", "end_date must be after start_date")
    if end - start > JD_MAX_WINDOW:
        return fail("查询时间跨度不能超过一个月", "the time range must not exceed one month")
    states_text = str(q.get("order_state") or "")
    states = {s.strip() for s in states_text.split(",") if s.strip()}
    if states - JD_STATES:
        return fail(f"order_state 取值错误：{','.join(sorted(states - JD_STATES))}", "invalid order_state")
    try:
        page = _int(q.get("page"), 1)
        page_size = _int(q.get("page_size"), 20)
        sort_type = _int(q.get("sortType"), 0)
        date_type = _int(q.get("dateType"), 0)
    except ValueError:
        return fail("page / page_size / sortType / dateType 应为整数", "invalid paging parameters")
    if page < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
        return fail("page 从 1 开始，page_size 取值 1~100", "invalid page or page_size")

    def predicate(o):
        return visible("jd", o) and (not states or platform_status("jd", o) in states)

    descending = sort_type == 1  # UNCONFIRMED: anything else is ascending
    fkey = ("jd", frozenset(states))
    if date_type == 1:  # by creation time
        listing = [o for o in book.orders.values() if start <= o.created < end and predicate(o)]
        listing.sort(key=lambda o: (o.created, o.key), reverse=descending)
    else:
        listing = state.listing_window(shop.app_key, start, end, filter_key=fkey, predicate=predicate,
                                       descending=descending)
    total = len(listing)
    chunk = listing[(page - 1) * page_size: page * page_size]
    response = _json_with({"jingdong_pop_order_search_responce": {"code": "0", "searchorderinfo_result": {
        "apiResult": API_OK, "orderInfoList": _FRAGMENTS, "orderTotal": total}}},
        [state.fragment(book, o, _JD_ORDER, lambda o: jd_order(state, shop, o)) for o in chunk])
    _disturb_after_page(state, book, listing, page, page_size)
    return response


def jd_get(state: SandboxState, shop, book, q: dict) -> Response:
    o = state.order(shop.app_key, str(q.get("order_id") or ""))
    if o is None or not visible("jd", o):
        return _json({"jingdong_pop_order_get_responce": {"code": "0", "orderDetailInfo": {
            "apiResult": _api_fail("订单不存在", "order not found")}}})
    return _json({"jingdong_pop_order_get_responce": {"code": "0", "orderDetailInfo": {
        "apiResult": API_OK, "orderInfo": jd_order(state, shop, o)}}})


def jd_shipment(state: SandboxState, shop, book, q: dict) -> Response:
    def result(ok, zh="", en=""):
        body = {"success": ok, "chineseErr": zh, "englishErr": en}
        return _json({"jingdong_pop_order_shipment_responce": {"code": "0", "sopjosshipment_result": body}})
    order_id = str(q.get("orderId") or "")
    carrier = str(q.get("logiCoprId") or "")
    number = str(q.get("logiNo") or "")
    if not (order_id and carrier and number):
        return result(False, "orderId、logiCoprId、logiNo 必填", "orderId, logiCoprId and logiNo are required")
    o = state.order(shop.app_key, order_id)
    if o is None or not visible("jd", o):
        return result(False, "订单不存在", "order not found")
    ok, why = state.ship(shop.app_key, o.key, carrier, number)
    if not ok:
        if why == "refunding":
            return result(False, "订单已锁定，不能出库", "the order is locked")
        return result(False, f"订单状态不允许出库（{platform_status('jd', o)}）", "order state does not allow shipment")
    return result(True)


def jd_stock(state: SandboxState, shop, book, q: dict) -> Response:
    def result(ok, zh=""):
        body = {"code": "0", "success": ok}
        if not ok:
            body["chineseErr"] = zh
        return _json({"jingdong_stock_write_updateSkuStock_responce": body})
    try:
        sku_id = _int(q.get("skuId"))
        stock = _int(q.get("stockNum"))
    except ValueError:
        return result(False, "skuId、stockNum 应为整数")
    if stock is None or stock < 0:
        return result(False, "stockNum 必填且不能为负")
    outer = q.get("outerId")
    lst = None
    if sku_id is not None:
        lst = book.listings_by_sku.get(sku_id)
        if lst is not None and outer and lst.code != outer:
            lst = None
    elif outer:
        # Sandbox leniency: skuId is what the real API needs; outerId alone is accepted.
        lst = book.listings.get(str(outer))
    if lst is None:
        return result(False, "SKU 不存在")
    state.push_stock(shop.app_key, lst, stock, "full")
    return result(True)


JD_HANDLERS = {
    "jingdong.pop.order.search": jd_search,
    "jingdong.pop.order.get": jd_get,
    "jingdong.pop.order.shipment": jd_shipment,
    "jingdong.stock.write.updateSkuStock": jd_stock,
}

_JD_TS = re.compile(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})(\.\d{1,3})?(\+0800)?")


def jd_gateway(state: SandboxState, p: dict) -> Response:
    book = state.books.get(p.get("app_key") or "")
    if book is None or book.shop.protocol != "jd":
        return jd_error("21", f"key={p.get('app_key') or ''} 信息无效", "Invalid app_key")
    shop = book.shop
    blocked = _faults(state, book, "jd")
    if blocked is not None:
        return blocked
    if not p.get("method"):
        return jd_error("15", "不存在的方法名", "Invalid Method")
    m = _JD_TS.fullmatch((p.get("timestamp") or "").strip())
    if not m:
        return jd_error("16", "无效的时间戳", "Invalid timestamp")
    if not _check_timestamp(state, parse_time(m.group(1))):
        return jd_error("16", "时间戳与服务器时间相差超过10分钟", "Invalid timestamp")
    if p.get("v") != "2.0":
        return jd_error("17", "无效的版本号", "Invalid version")
    if not signing.verify_wrapped(p, shop.app_secret):
        return jd_error("12", "无效签名", "Invalid signature")
    handler = JD_HANDLERS.get(p["method"])
    if handler is None:
        return jd_error("15", "不存在的方法名", "Invalid Method")
    if p.get("access_token") != shop.access_token or book.faults.invalid_session:
        return jd_error("19", "无效access_token", "Invalid access_token")
    try:
        q = json.loads(p.get("360buy_param_json") or "{}")
        if not isinstance(q, dict):
            raise ValueError
    except ValueError:
        return jd_error("61", "360buy_param_json 不是合法的 JSON 对象", "Invalid 360buy_param_json")
    return handler(state, shop, book, q)


# =====================================================================================
# Faults shared by the three gateways
# =====================================================================================
def _rate_limited(state: SandboxState, protocol: str, seconds: int) -> Response:
    text = f"This ban will last for {seconds} more seconds"
    if protocol == "top":
        return top_error(state, 7, "App Call Limited", "accesscontrol.limited-by-dynamic-access-count", text)
    if protocol == "pdd":
        return pdd_error(state, 70031, "调用过于频繁", text)  # UNCONFIRMED code
    return jd_error("4", f"请求频率过快，请 {seconds} 秒后再试", text)  # UNCONFIRMED code


def _faults(state: SandboxState, book, protocol: str) -> Optional[Response]:
    """5xx burst and rate limiting (slow responses are handled outside the lock)."""
    f = book.faults
    if f.burst_5xx > 0:
        f.burst_5xx -= 1
        book.burst_served += 1
        if book.burst_served % 2 == 1:
            return Response(BAD_GATEWAY_HTML, status=502, mimetype="text/html")
        return Response(b"", status=500)
    if f.rate_limit_every > 0:
        now = state.clock()
        if book.ban_until > now:
            return _rate_limited(state, protocol, max(1, math.ceil(book.ban_until - now)))
        book.calls += 1
        if book.calls % f.rate_limit_every == 0:
            book.ban_until = now + f.rate_limit_ban
            return _rate_limited(state, protocol, max(1, math.ceil(f.rate_limit_ban)))
    return None


# =====================================================================================
# The app
# =====================================================================================
_KEY_PARAM = {"top": "app_key", "pdd": "client_id", "jd": "app_key"}
_GATEWAYS: dict[str, Callable] = {"top": top_gateway, "pdd": pdd_gateway, "jd": jd_gateway}


_GATEWAY_ROUTES = {path: protocol for protocol, path in GATEWAY_PATHS.items()}


def gateway_call(state: SandboxState, protocol: str, p: dict) -> Response:
    """One gateway call with its parameters (query and form merged, first value wins):
    the state evolves, the shop's slow-response fault waits, then the protocol answers."""
    with state.lock:
        state.evolve()
        book = state.books.get(p.get(_KEY_PARAM[protocol]) or "")
        slow = book.faults.slow_ms if book is not None and book.shop.protocol == protocol else 0
    if slow:
        time.sleep(slow / 1000.0)
    with state.lock:
        try:
            return _GATEWAYS[protocol](state, p)
        except _Reply as r:
            return r.response


def create_app(state: SandboxState) -> Flask:
    app = Flask("oms_sandbox")
    app.extensions["sandbox_state"] = state

    def gateway(protocol: str) -> Response:
        return gateway_call(state, protocol, _params())

    @app.route("/router/rest", methods=["GET", "POST"])
    def top_route():
        return gateway("top")

    @app.route("/api/router", methods=["POST"])
    def pdd_route():
        return gateway("pdd")

    @app.route("/routerjson", methods=["GET", "POST"])
    def jd_route():
        return gateway("jd")

    # -- admin -------------------------------------------------------------------
    def _book_or_404(app_key):
        book = state.books.get(app_key)
        if book is None:
            raise _Reply(_json({"error": f"no sandbox shop with app_key {app_key}"}, 404))
        return book

    def _body() -> dict:
        if not request.data:
            return {}
        try:
            body = json.loads(request.data)
        except ValueError:
            raise _Reply(_json({"error": "body is not JSON"}, 400))
        if not isinstance(body, dict):
            raise _Reply(_json({"error": "body must be a JSON object"}, 400))
        return body

    @app.errorhandler(_Reply)
    def _reply(r: _Reply):
        return r.response

    @app.get("/_sandbox/shops")
    def admin_shops():
        return _json({"shops": state.shops_view()})

    @app.get("/_sandbox/shops/<app_key>/orders")
    def admin_orders(app_key):
        with state.lock:
            state.evolve()
            book = _book_or_404(app_key)
            orders = sorted(book.orders.values(), key=lambda o: (o.modified, o.key))
            views = [state.order_view(app_key, o) for o in orders]
            return _json({"app_key": app_key, "shop": book.shop.name, "platform": book.shop.platform,
                          "count": len(views), "orders": views})

    @app.post("/_sandbox/shops/<app_key>/orders")
    def admin_create(app_key):
        body = _body()
        with state.lock:
            _book_or_404(app_key)
            state.evolve()
            specs = body.get("orders")
            if specs is None:
                count = int(body.get("count", 1))
                template = {k: v for k, v in body.items() if k != "count"}
                specs = [dict(template) for _ in range(count)]
            if not isinstance(specs, list):
                return _json({"error": "orders must be a list"}, 400)
            try:
                created = [state.create_order(app_key, spec) for spec in specs]
            except (ValueError, KeyError, TypeError) as exc:
                return _json({"error": str(exc)}, 400)
            return _json({"orders": [state.order_view(app_key, o) for o in created]}, 201)

    @app.post("/_sandbox/shops/<app_key>/orders/<order_id>/<event>")
    def admin_event(app_key, order_id, event):
        body = _body()
        with state.lock:
            _book_or_404(app_key)
            state.evolve()
            if event not in EVENTS:
                return _json({"error": f"unknown event {event}; one of {', '.join(EVENTS)}"}, 400)
            kw = {}
            if event == "ship" and body.get("carrier_code") and body.get("tracking_number"):
                kw = {"carrier": body["carrier_code"], "tracking": body["tracking_number"]}
            if event == "address" and body.get("receiver"):
                kw = {"receiver": body["receiver"]}
            try:
                o = state.apply_event(app_key, order_id, event, **kw)
            except KeyError as exc:
                return _json({"error": str(exc.args[0])}, 404)
            except EventError as exc:
                return _json({"error": str(exc)}, 409)
            return _json({"order": state.order_view(app_key, o)})

    @app.put("/_sandbox/shops/<app_key>/faults")
    def admin_faults(app_key):
        body = _body()
        _book_or_404(app_key)
        try:
            faults = Faults.from_dict(body)
        except (TypeError, ValueError) as exc:
            return _json({"error": str(exc)}, 400)
        state.set_faults(app_key, faults)
        return _json({"app_key": app_key, "faults": faults.to_dict()})

    @app.get("/_sandbox/shops/<app_key>/listings")
    def admin_listings(app_key):
        with state.lock:
            book = _book_or_404(app_key)
            return _json({"app_key": app_key, "listings": [x.to_dict() for x in book.listings.values()]})

    @app.get("/_sandbox/writebacks")
    def admin_writebacks():
        key = request.args.get("app_key")
        with state.lock:
            rows = [w for w in state.writebacks if not key or w["app_key"] == key]
        return _json({"writebacks": rows})

    @app.get("/_sandbox/stock_pushes")
    def admin_stock():
        key = request.args.get("app_key")
        with state.lock:
            rows = [w for w in state.stock_pushes if not key or w["app_key"] == key]
        return _json({"stock_pushes": rows})

    @app.post("/_sandbox/fragments/clear")
    def admin_clear_fragments():
        state.clear_fragments()
        return _json({"ok": True})

    @app.post("/_sandbox/tick")
    def admin_tick():
        return _json(state.evolve())

    @app.post("/_sandbox/reset")
    def admin_reset():
        body = _body()
        state.reset(seed=body.get("seed"), rate_per_minute=body.get("rate_per_minute"))
        return _json({"ok": True, "seed": state.seed, "rate_per_minute": state.rate_per_minute})

    # Kuaidi100 tracking: /poll/query.do and /_sandbox/kuaidi100/ (app/sandbox/kuaidi100.py)
    kuaidi100.register(app, state)
    # 电子面单: /ewaybill/label and /_sandbox/ewaybill/ (app/sandbox/ewaybill.py)
    ewaybill.register(app, state)
    return app


class KeepAliveHandler(WSGIRequestHandler):
    """werkzeug's request handler, keeping HTTP/1.1 connections open as the real gateways do.

    werkzeug's own ``run_wsgi`` sends ``Connection: close`` on every response, whatever the
    protocol version (werkzeug 3.1, serving.py: http.server cannot drain a request body it
    did not read before the next request line). Here the body is read through a stream
    limited to its Content-Length and drained after the app, the response is buffered
    (the sandbox's are small) and sent with its Content-Length, and the connection stays
    open unless the client asks to close it (``Connection: close``, HTTP/1.0) or the
    request body is chunked. An idle connection is closed after ``timeout`` seconds."""

    protocol_version = "HTTP/1.1"
    timeout = 120

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        open_connections = getattr(self.server, "oms_connections", None)
        if open_connections is not None:
            open_connections.add(self.connection)

    def finish(self) -> None:
        open_connections = getattr(self.server, "oms_connections", None)
        if open_connections is not None:
            open_connections.discard(self.connection)
        super().finish()

    def log_error(self, format: str, *args) -> None:
        if format.startswith("Request timed out"):
            return  # an idle keep-alive connection ending: normal
        super().log_error(format, *args)

    def run_wsgi(self) -> None:
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self._gateway_form():
            return
        self.environ = environ = self.make_environ()
        body_in = None
        if "wsgi.input_terminated" in environ:  # chunked: read to its end by the app or not at all
            self.close_connection = True
        else:
            try:
                length = max(0, int(environ.get("CONTENT_LENGTH") or 0))
            except ValueError:
                length, self.close_connection = 0, True
            body_in = environ["wsgi.input"] = LimitedStream(self.rfile, length)
            environ["wsgi.input_terminated"] = True
        reply: list = []
        chunks: list[bytes] = []

        def start_response(status, headers, exc_info=None):
            if exc_info and reply:
                raise exc_info[1].with_traceback(exc_info[2])
            reply[:] = [status, headers]
            return chunks.append

        def execute(app) -> None:
            result = app(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                if hasattr(result, "close"):
                    result.close()

        try:
            execute(self.server.app)
        except Exception as exc:  # as werkzeug: log it, answer 500, and close this connection
            if self.server.passthrough_errors:
                raise
            from werkzeug.debug.tbtools import DebugTraceback

            self.server.log("error", f"Error on request:\n{DebugTraceback(exc).render_traceback_text()}")
            reply.clear()
            chunks.clear()
            self.close_connection = True
            execute(InternalServerError())
        if body_in is not None:
            body_in.exhaust()  # what the app left unread, so the next request line is next
        status, headers = reply
        code, _, msg = status.partition(" ")
        self._answer(int(code), msg, headers, b"".join(chunks))

    def _gateway_form(self) -> bool:
        """A form POST to one of the three gateway paths, answered without the WSGI layer:
        the same parameters (query, then form; first value wins), the same
        :func:`gateway_call` and the same answer, at a fraction of the per-call CPU (a first
        sync makes thousands of calls; the sandbox shares the machine with what it tests).
        Anything else (GET, chunked or other bodies, admin routes) goes through Flask."""
        target = urlsplit(self.path)
        path, query = target.path, target.query
        protocol = _GATEWAY_ROUTES.get(path)
        if protocol is None or self.command != "POST" or "Transfer-Encoding" in self.headers:
            return False
        ctype = (self.headers.get("Content-Type") or "").partition(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return False
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return False
        if length < 0:
            return False
        app = self.server.app
        body = self.rfile.read(length) if length else b""
        try:  # as werkzeug's form parser: a body that is not UTF-8 gives an empty form
            form = body.decode()
        except UnicodeDecodeError:
            form = ""
        params: dict[str, str] = {}
        for text in (query, form):  # invalid escapes stay percent-encoded, as werkzeug keeps them
            for key, value in parse_qsl(text, keep_blank_values=True, errors="werkzeug.url_quote"):
                params.setdefault(key, value)
        try:
            resp = gateway_call(app.extensions["sandbox_state"], protocol, params)
        except Exception:  # as Flask: log the traceback and answer its 500 page
            if self.server.passthrough_errors:
                raise
            app.logger.error("Exception on %s [POST]", path, exc_info=True)
            resp = InternalServerError().get_response()
        self._answer(resp.status_code, resp.status.partition(" ")[2], resp.headers.items(), resp.get_data())
        return True

    def _answer(self, code: int, msg: str, headers, data: bytes) -> None:
        self.send_response(code, msg)  # logs the request, sends Server and Date
        for key, value in headers:
            if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        # Head and body in one write: written apart, Nagle's algorithm holds the body until
        # the client's delayed ACK of the head (~40 ms per call on a kept-alive connection).
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(data)
        self.flush_headers()


class _QuietHandler(KeepAliveHandler):
    def log_request(self, *args, **kwargs) -> None:
        """Tests start many servers: no access log lines."""


def serve_in_thread(state: SandboxState, host: str = "127.0.0.1", port: int = 0, *, quiet: bool = True):
    """Start the sandbox on a background thread. Returns (base_url, stop)."""
    server = make_server(host, port, create_app(state), threaded=True,
                         request_handler=_QuietHandler if quiet else KeepAliveHandler)
    server.oms_connections = set()  # keep-alive connections, closed by stop()
    thread = threading.Thread(target=server.serve_forever, name="oms-sandbox", daemon=True)
    thread.start()
    base_url = f"http://{host}:{server.server_port}"

    def stop() -> None:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()
        for conn in list(server.oms_connections):  # a stopped sandbox answers nothing more
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    return base_url, stop


def run(host: str = "127.0.0.1", port: int = 8765, seed: int = 1, *, rate_per_minute: float = 1.0,
        history_per_shop: int = 50, history_hours: int = 24) -> None:
    """Serve the demo shops until interrupted (``flask oms sandbox``). Seeds
    ``history_per_shop`` orders modified over the last ``history_hours`` hours."""
    state = SandboxState(seed=seed, rate_per_minute=rate_per_minute)
    now = state.now()
    for shop in state.shops:
        if history_per_shop:
            state.seed_orders(shop, history_per_shop, now - history_hours * 3600, now)
    server = make_server(host, port, create_app(state), threaded=True, request_handler=KeepAliveHandler)
    base = f"http://{host}:{server.server_port}"
    print(f"沙箱已启动 / sandbox on {base}")
    print(f"  淘宝/天猫 {base}/router/rest   拼多多 {base}/api/router   京东 {base}/routerjson")
    print(f"  快递100 {base}{kuaidi100.QUERY_PATH}  customer={kuaidi100.DEMO_CUSTOMER} key={kuaidi100.DEMO_KEY}")
    print(f"  电子面单 {base}/ewaybill/label  key=EWB-<快递公司编码>（如 EWB-ZTO）"
          f" secret={ewaybill.demo_secret('<code>')}（如 {ewaybill.demo_secret('ZTO')}）")
    for s in state.shops:
        print(f"  {s.platform:<6} {s.name}  app_key={s.app_key} secret={s.app_secret} token={s.access_token}")
    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends the sandbox quietly
            server.serve_forever()
    finally:
        server.server_close()
