"""Kuaidi100 (快递100) real-time tracking client (../shared/platform-apis.md §4).

``POST https://poll.kuaidi100.com/poll/query.do`` with three form fields:
``customer`` (the account's customer id), ``param`` (a JSON string: ``com`` the
lowercase carrier code, ``num`` the tracking number (≤ 32 chars), ``phone``
(顺丰 and 中通 check the receiver's phone; its last 4 digits suffice), ``from``,
``to``, ``resultv2``, ``show`` "0" (JSON), ``order`` "desc") and ``sign`` =
UPPER(MD5(param + key + customer)) over the exact param string that is posted.

Success: ``{"message":"ok","nu":…,"ischeck":"0|1","condition":…,"com":…,
"status":"200","state":"0","data":[{"time","ftime","context","areaName","status"}…]}``
(newest first). Failure: ``{"result":false,"returnCode":"500","message":"…"}`` with
returnCode 400 bad company/data, 408 phone check failed, 500 no result, 501 server
error, 502 busy, 503 bad signature, 601 key expired / no quota.

The sandbox (app/sandbox/kuaidi100.py) is the same protocol seen from the server
side; only the URL (and the account) differ.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urlsplit

import requests

from .base import CN_TZ, PlatformError

log = logging.getLogger(__name__)

QUERY_URL = "https://poll.kuaidi100.com/poll/query.do"
MAX_NUM_LENGTH = 32
# Carriers whose queries need the receiver's phone (last 4 digits suffice).
PHONE_REQUIRED = {"shunfeng", "shunfengkuaiyun", "zhongtong"}

# Kuaidi100 ``state`` → our tracking state (models/tracking.py TRACKING_STATES).
STATE_CODES = {
    "0": "in_transit",        # 在途
    "1": "collected",         # 揽收
    "2": "problem",           # 疑难
    "3": "signed",            # 签收
    "4": "return_signed",     # 退签
    "5": "delivering",        # 派件
    "6": "returning",         # 退回
    "7": "redirected",        # 转投
    "10": "customs",          # 待清关
    "11": "customs",          # 清关中
    "12": "customs",          # 已清关
    "13": "customs_problem",  # 清关异常
    "14": "refused",          # 拒签
}
STATE_ZH = {"0": "在途", "1": "揽收", "2": "疑难", "3": "签收", "4": "退签", "5": "派件", "6": "退回", "7": "转投",
            "10": "待清关", "11": "清关中", "12": "已清关", "13": "清关异常", "14": "拒签"}

# returnCode → (kind, zh message). ``no_result`` is not a failure of ours: the
# carrier has no events for the number yet (typically before pickup).
RETURN_CODES = {
    "400": ("bad_request", "快递100：提交的数据不完整或快递公司编码错误"),
    "408": ("bad_request", "快递100：收件人手机号校验失败，顺丰、中通需收件人手机号后四位"),
    "500": ("no_result", "快递100：暂无物流轨迹，快递公司尚未上传，稍后再查"),
    "501": ("server", "快递100服务器错误，稍后自动重试"),
    "502": ("server", "快递100服务器繁忙，稍后自动重试"),
    "503": ("auth", "快递100签名验证失败：请检查授权 key 与 customer"),
    "601": ("auth", "快递100授权 key 已过期或查询次数已用完：请续费或更换 key"),
}


class TrackingError(PlatformError):
    """A Kuaidi100 query failed. ``code`` is the returnCode (or http_5xx / network /
    timeout / bad_response); ``kind`` as PlatformError, plus ``no_result``."""

    @property
    def retryable(self) -> bool:
        return self.kind in ("rate_limit", "server", "network", "no_result")


@dataclass
class TrackingEvent:
    time: dt.datetime  # aware UTC
    context: str
    area: Optional[str] = None
    status_text: Optional[str] = None  # the event's own status text (在途, 派件, 签收…)


@dataclass
class TrackingResult:
    number: str
    com: str
    state_code: str
    state: Optional[str]  # ours; None for a code we do not know (kept as it was)
    is_signed: bool
    condition: Optional[str] = None
    events: list[TrackingEvent] = field(default_factory=list)  # newest first, as Kuaidi100 sends them


# --- signing ---------------------------------------------------------------------
def build_param(com: str, num: str, phone: str = "", from_: str = "", to: str = "", *,
                resultv2: str = "1", show: str = "0", order: str = "desc") -> str:
    """The ``param`` JSON string, keys in the documented order, compact. What is
    signed is exactly this string, and exactly this string is posted."""
    return json.dumps({"com": com, "num": num, "phone": phone, "from": from_, "to": to, "resultv2": resultv2,
                       "show": show, "order": order}, ensure_ascii=False, separators=(",", ":"))


def sign(param: str, key: str, customer: str) -> str:
    """UPPER(MD5(param + key + customer)), UTF-8."""
    return hashlib.md5(f"{param}{key}{customer}".encode("utf-8")).hexdigest().upper()


# --- state codes ---------------------------------------------------------------------
def map_state(code: Any) -> Optional[str]:
    """Our tracking state for a Kuaidi100 ``state``. With ``resultv2`` the service may
    send finer sub-states (UNCONFIRMED, not in our spec: 101–103 under 揽收, 1001–1003
    under 在途, 201–211 under 疑难, 301–304 under 签收, 401 under 退签, 501 under 派件):
    a 3-digit code is read by its first digit, ``100x`` as 在途."""
    text = str(code if code is not None else "").strip()
    if text in STATE_CODES:
        return STATE_CODES[text]
    if re.fullmatch(r"[1-7]\d\d", text):
        return STATE_CODES.get(text[0])
    if re.fullmatch(r"100\d", text):
        return STATE_CODES["0"]
    return None


_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2})(?::(\d{2}))?$")


def parse_time(value: Any) -> dt.datetime:
    """``yyyy-MM-dd HH:mm:ss`` (Beijing time; seconds optional) → aware UTC."""
    text = str(value or "").strip()
    m = _TIME.match(text)
    if not m:
        raise TrackingError("bad_response", f"快递100返回的时间无法识别：{text!r}", kind="server")
    naive = dt.datetime.strptime(f"{m.group(1)} {m.group(2)}:{m.group(3) or '00'}", "%Y-%m-%d %H:%M:%S")
    return naive.replace(tzinfo=CN_TZ).astimezone(dt.timezone.utc)


def parse_result(payload: dict, com: str, num: str) -> TrackingResult:
    """A success body → TrackingResult; an error body raises TrackingError."""
    check_error(payload)
    if str(payload.get("status", "")) != "200" and "data" not in payload:
        raise TrackingError("bad_response", "快递100返回的内容缺少 status/data", kind="server")
    code = str(payload.get("state", "")).strip()
    events = []
    for row in payload.get("data") or []:
        if not isinstance(row, dict):
            continue
        context = str(row.get("context") or "").strip()
        when = row.get("ftime") or row.get("time")
        if not context or not when:
            continue
        events.append(TrackingEvent(time=parse_time(when), context=context,
                                    area=(str(row.get("areaName")).strip() or None) if row.get("areaName") else None,
                                    status_text=(str(row.get("status")).strip() or None) if row.get("status")
                                    else None))
    events.sort(key=lambda e: e.time, reverse=True)
    state = map_state(code)
    if state is None and code:
        log.warning("unknown Kuaidi100 state %r for %s %s: state kept", code, com, num)
    return TrackingResult(number=str(payload.get("nu") or num), com=str(payload.get("com") or com),
                          state_code=code, state=state,
                          is_signed=str(payload.get("ischeck", "0")) == "1" or state == "signed",
                          condition=payload.get("condition"), events=events)


def check_error(payload: dict) -> None:
    if payload.get("result") is False or payload.get("result") == "false" or "returnCode" in payload:
        code = str(payload.get("returnCode") or "")
        kind, zh = RETURN_CODES.get(code, ("bad_request", f"快递100查询失败（returnCode {code or '无'}）"))
        detail = str(payload.get("message") or "").strip()
        message = f"{zh}（returnCode {code}{'：' + detail if detail else ''}）"
        raise TrackingError(code or "unknown", message, kind=kind)


# --- the client ----------------------------------------------------------------------
class Kuaidi100Client:
    """Real-time query (实时快递查询). One instance per worker; not shared between threads."""

    label = "快递100"

    def __init__(self, customer: str, key: str, url: str = QUERY_URL, timeout: float = 15.0, session=None):
        self.customer = customer
        self.key = key
        self.url = url
        self.timeout = timeout
        self.session = session or requests.Session()

    def form(self, com: str, num: str, phone: str = "") -> dict[str, str]:
        """The three form fields of one query (validated first, zh errors)."""
        com = (com or "").strip().lower()
        num = (num or "").strip()
        if not com:
            raise TrackingError("400", "快递公司没有配置快递100编码，无法查询物流轨迹", kind="bad_request")
        if not num or len(num) > MAX_NUM_LENGTH:
            raise TrackingError("400", f"快递单号「{num}」无效：不能为空，最多 {MAX_NUM_LENGTH} 个字符",
                                kind="bad_request")
        digits = re.sub(r"\D", "", phone or "")
        param = build_param(com, num, digits[-4:] if digits else "")
        return {"customer": self.customer, "sign": sign(param, self.key, self.customer), "param": param}

    def query(self, com: str, num: str, phone: str = "") -> TrackingResult:
        form = self.form(com, num, phone)
        host = urlsplit(self.url).netloc or self.url
        try:
            resp = self.session.post(self.url, data=form, timeout=self.timeout,
                                     headers={"Accept": "application/json"})
        except requests.Timeout as exc:
            raise TrackingError("timeout", f"快递100接口超过 {self.timeout:g} 秒未响应，稍后自动重试",
                                kind="server") from exc
        except requests.RequestException as exc:
            raise TrackingError("network", f"无法连接快递100接口（{host}）：{type(exc).__name__}，请检查网络",
                                kind="network") from exc
        if resp.status_code >= 500:
            raise TrackingError(f"http_{resp.status_code}",
                                f"快递100服务器错误（HTTP {resp.status_code}），稍后自动重试", kind="server")
        try:
            payload = json.loads(resp.content.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise TrackingError("bad_response", f"快递100返回的内容不是 JSON（HTTP {resp.status_code}），"
                                "请检查接口地址", kind="server" if resp.status_code < 400 else "bad_request") from exc
        if not isinstance(payload, dict):
            raise TrackingError("bad_response", "快递100返回的内容格式异常", kind="server")
        if resp.status_code >= 400:
            check_error(payload)
            raise TrackingError(f"http_{resp.status_code}", f"快递100拒绝了请求（HTTP {resp.status_code}）",
                                kind="bad_request")
        return parse_result(payload, (com or "").strip().lower(), (num or "").strip())


def client_from_config(config) -> Kuaidi100Client:
    """The configured client: the real service when OMS_KUAIDI100_CUSTOMER is set, else
    the local sandbox's demo account (``make run`` serves it)."""
    from app.sandbox.kuaidi100 import DEMO_CUSTOMER, DEMO_KEY, QUERY_PATH

    customer = config.get("OMS_KUAIDI100_CUSTOMER") or ""
    key = config.get("OMS_KUAIDI100_KEY") or ""
    url = config.get("OMS_KUAIDI100_URL") or ""
    if not customer:
        customer, key = DEMO_CUSTOMER, DEMO_KEY
        url = url or (config.get("OMS_SANDBOX_URL") or "http://127.0.0.1:8900").rstrip("/") + QUERY_PATH
    return Kuaidi100Client(customer=customer, key=key, url=url or QUERY_URL,
                           timeout=float(config.get("OMS_KUAIDI100_TIMEOUT") or 15))
