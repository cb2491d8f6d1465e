"""电子面单 client: take a tracking number for an order from a carrier account, and
give it back (cancel the label).

The protocol (the sandbox in app/sandbox/ewaybill.py speaks it from the server
side): ``POST <endpoint>`` form ``method`` (order | cancel), ``key``, ``t`` (ms),
``param`` (a JSON string) and ``sign = UPPER(MD5(param + t + key + secret))``
over the exact posted ``param``. Answers are ``{"success", "code", "message",
"data"}``; errors raise :class:`PlatformError` with a zh message.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Callable, Optional
from urllib.parse import urlsplit

import requests

from .base import PlatformError

# code -> (kind, zh message prefix)
ERRORS = {
    400: ("bad_request", "电子面单请求参数错误"),
    401: ("auth", "电子面单账号 key 不存在，请检查电子面单账号"),
    402: ("auth", "电子面单请求时间戳无效，请检查服务器时间"),
    403: ("auth", "电子面单签名验证失败，请检查账号密钥"),
    404: ("bad_request", "电子面单单号不存在"),
    409: ("bad_request", "电子面单单号状态不符"),
    30001: ("pool", "电子面单余额不足，请联系快递网点充值"),
    30002: ("bad_request", "快递公司与电子面单账号不符"),
    500: ("server", "电子面单服务器错误，稍后重试"),
}


def sign(param: str, t: str, key: str, secret: str) -> str:
    return hashlib.md5((param + t + key + secret).encode("utf-8")).hexdigest().upper()


@dataclass
class Party:
    name: str
    mobile: str
    address: str  # the full printed address


class EwaybillClient:
    def __init__(self, endpoint: str, key: str, secret: str, kuaidicom: str, *,
                 partner_id: Optional[str] = None, session: Optional[requests.Session] = None,
                 timeout: float = 10.0, clock: Callable[[], float] = time.time):
        self.endpoint = endpoint
        self.key = key
        self.secret = secret or ""
        self.kuaidicom = kuaidicom
        self.partner_id = partner_id or ""
        self.session = session or requests.Session()
        self.timeout = timeout
        self.clock = clock

    # --- calls ------------------------------------------------------------------------
    def issue(self, order_ref: str, receiver: Party, sender: Party, cargo: str = "") -> str:
        """A tracking number for ``order_ref`` (the same one again if asked twice)."""
        data = self._call("order", {
            "kuaidicom": self.kuaidicom, "partnerId": self.partner_id, "orderId": order_ref,
            "recMan": {"name": receiver.name, "mobile": receiver.mobile, "printAddr": receiver.address},
            "sendMan": {"name": sender.name, "mobile": sender.mobile, "printAddr": sender.address},
            "cargo": cargo, "count": 1,
        })
        number = str((data or {}).get("kuaidinum") or "").strip()
        if not number:
            raise PlatformError("bad_response", "电子面单服务没有返回快递单号", kind="server")
        return number

    def cancel(self, number: str, order_ref: str) -> None:
        """Give ``number`` back (the label is void; the service may issue it again)."""
        self._call("cancel", {"kuaidicom": self.kuaidicom, "partnerId": self.partner_id, "kuaidinum": number,
                              "orderId": order_ref})

    # --- transport ----------------------------------------------------------------------
    def signed_form(self, method: str, param: dict) -> dict[str, str]:
        text = json.dumps(param, ensure_ascii=False, separators=(",", ":"))
        t = str(int(self.clock() * 1000))
        return {"method": method, "key": self.key, "t": t, "param": text,
                "sign": sign(text, t, self.key, self.secret)}

    def _call(self, method: str, param: dict):
        host = urlsplit(self.endpoint).netloc or self.endpoint
        form = self.signed_form(method, param)
        try:
            resp = self.session.post(self.endpoint, data=form, timeout=self.timeout,
                                     headers={"Accept": "application/json"})
        except requests.Timeout as exc:
            raise PlatformError("timeout", f"电子面单服务（{host}）超过 {self.timeout:g} 秒未响应，稍后重试",
                                kind="server") from exc
        except requests.RequestException as exc:
            raise PlatformError("network", f"无法连接电子面单服务（{host}）：{type(exc).__name__}",
                                kind="network") from exc
        if resp.status_code >= 500:
            raise PlatformError(f"http_{resp.status_code}",
                                f"电子面单服务器错误（HTTP {resp.status_code}），稍后重试", kind="server")
        try:
            body = json.loads(resp.content.decode("utf-8"))
            if not isinstance(body, dict):
                raise ValueError
        except (ValueError, UnicodeDecodeError) as exc:
            raise PlatformError("bad_response", f"电子面单服务（{host}）返回的内容不是 JSON，请检查服务地址",
                                kind="server" if resp.status_code < 400 else "bad_request") from exc
        code = body.get("code")
        if body.get("success") is True and code in (200, "200"):
            return body.get("data")
        try:
            code = int(code)
        except (TypeError, ValueError):
            code = 500
        kind, prefix = ERRORS.get(code, ("bad_request", "电子面单服务返回错误"))
        detail = str(body.get("message") or "").strip()
        message = f"{prefix}（{code}：{detail}）" if detail else f"{prefix}（{code}）"
        raise PlatformError(str(code), message, kind=kind)
