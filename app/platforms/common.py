"""Plumbing shared by the three gateway clients: the HTTP call and its transport
errors, JSON without float loss, money, Beijing time and paging.

Receiver data (NOTE): the real gateways now return masked or encrypted receiver
names, phones and addresses (Taobao ``oaid`` + ``taobao.top.oaid.decrypt``, at most
20 per call; PDD ciphertext with ``*_mask`` fields, decrypted through PDD's
decrypt API; JD ``enSearch`` ciphertext, decrypted through JD's security API).
This first version reads the plaintext fields the sandbox serves; decryption
(and the platforms' rules on storing plaintext) is a follow-up.
"""
from __future__ import annotations

import abc

import datetime as dt
import hashlib
import json
import logging
import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterator, Optional
from urllib.parse import urlencode, urlsplit

import orjson

from .base import BAD_ORDER, CN_TZ, Deferred, Page, PlatformClient, PlatformError, PlatformOrder, Unparsed
from .http import TransportError

log = logging.getLogger(__name__)

ZERO = Decimal("0.00")
CENT = Decimal("0.01")
# Used when a platform rate-limits without saying for how long (UNCONFIRMED for PDD and JD).
DEFAULT_BAN_SECONDS = 60.0
_FORM_HEADERS = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded",
                 "User-Agent": "shop-group-oms"}


# --- values -----------------------------------------------------------------
# A run of 20 digits: an integer literal beyond 64 bits (orjson would turn it into a float).
_DIGIT_RUNS = bytes(0x39 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_TWENTY_DIGITS = b"9" * 20


def loads(data: bytes | str) -> Any:
    """JSON from a gateway, without losing an id or a cent.

    orjson (C, several times faster than ``json``) gives every integer up to 64 bits as an
    exact ``int`` (Taobao tid/oid exceed 2^53 but not 2^63), so ``text()`` of an id gives
    its exact digits; fractions come as ``float``, which only ``money()`` reads, through
    ``repr`` (exact for any amount below 10^13). A payload with an integer literal of 20
    digits or more (beyond 64 bits, which orjson would turn into a float) is parsed by the
    standard library instead: exact ``int`` and ``Decimal``."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if _TWENTY_DIGITS in data.translate(_DIGIT_RUNS):
        return json.loads(data.decode("utf-8"), parse_float=Decimal)
    return orjson.loads(data)


def raw_digest(payload: dict) -> str:
    """128-bit digest of one order as the gateway sent it (keys in the order received):
    an order whose payload is byte for byte the same as last time is unchanged, and the
    sync engine can tell so without parsing it (services/sync.py)."""
    return hashlib.blake2b(orjson.dumps(payload), digest_size=16).hexdigest()


def text(value: Any) -> Optional[str]:
    if value is None:
        return None
    value = (value if value.__class__ is str else str(value)).strip()
    return value or None


def address_detail(address: Optional[str], *regions: Optional[str]) -> Optional[str]:
    """The street part of an address: drop a leading province / city / district
    (some gateways send "浙江省 杭州市 西湖区 文三路100号", we store the parts apart)."""
    if not address:
        return address
    rest = address.strip()
    for region in regions:
        if region and rest.startswith(region):
            rest = rest[len(region):].lstrip(" ,，")
    return rest or address.strip()


def money(value: Any) -> Decimal:
    """元 as Decimal with 2 places, from the platform's decimal string (or number)."""
    if value is None or value == "":
        return ZERO
    if isinstance(value, float):
        # A JSON number parsed by orjson (PDD sends 59.9): repr is the shortest text that reads
        # back as the same float, so it is the digits that were sent for up to 15 significant
        # digits; beyond 10^13 it might not be: refuse rather than guess.
        if not -1e13 < value < 1e13:
            raise PlatformError(BAD_ORDER, f"接口返回的金额超出范围：{value!r}", kind="server")
        value = repr(value)
    try:
        return Decimal(value.strip() if value.__class__ is str else str(value)).quantize(CENT)
    except InvalidOperation as exc:
        raise PlatformError(BAD_ORDER, f"接口返回的金额无法识别：{value!r}", kind="server") from exc


def integer(value: Any, default: int = 0) -> int:
    if value.__class__ is int:
        return value
    if value is None or value == "":
        return default
    try:
        return int(Decimal(str(value).strip()))
    except (InvalidOperation, ValueError):
        return default


def flag(value: Any) -> int:
    n = integer(value, 0)
    return n if 0 <= n <= 5 else 0


_CN_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:\.(\d{1,6}))?\s*(?:\+0800|\+08:00)?$")


_UTC = dt.timezone.utc
_CN_OFFSET = dt.timedelta(hours=8)


def cn_time(value: Any) -> Optional[dt.datetime]:
    """A platform time (Beijing, ``yyyy-MM-dd HH:mm:ss[.SSS][+0800]``) as an aware UTC datetime."""
    value = text(value)
    if value is None:
        return None
    m = _CN_TIME.match(value)
    if not m:
        raise PlatformError(BAD_ORDER, f"接口返回的时间无法识别：{value}", kind="server")
    try:  # the pattern has checked the shape; fromisoformat (C) checks the ranges, as strptime did
        naive = dt.datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}")
    except ValueError as exc:
        raise PlatformError(BAD_ORDER, f"接口返回的时间无法识别：{value}", kind="server") from exc
    if m.group(3):
        naive = naive.replace(microsecond=int(m.group(3).ljust(6, "0")))
    return (naive - _CN_OFFSET).replace(tzinfo=_UTC)


def as_cn(moment: dt.datetime) -> dt.datetime:
    """Beijing time of an aware datetime (a naive one is taken as UTC, as the project stores it)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(CN_TZ)


def cn_text(moment: dt.datetime) -> str:
    return as_cn(moment).strftime("%Y-%m-%d %H:%M:%S")


def dig(payload: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(payload, dict):
            return None
        payload = payload.get(key)
    return payload


def as_list(value: Any) -> list:
    if value is None or value == "":
        return []
    return value if isinstance(value, list) else [value]


def seconds_in(message: Optional[str]) -> Optional[float]:
    """"This ban will last for 27 more seconds" / "请 60 秒后重试" → 27.0 / 60.0."""
    if not message:
        return None
    m = re.search(r"(\d+)\s*(?:more\s+seconds?|seconds?|秒)", message)
    return float(m.group(1)) if m else None


def unique_line_ids(raw_ids: list[Optional[str]]) -> list[str]:
    """PDD/JD lines have no line id: the sku id, or ``<sku id>-<index>`` (index from 0 in
    the item list) for a sku id seen earlier in the same order, or the index when empty."""
    seen: set[str] = set()
    out = []
    for index, raw in enumerate(raw_ids):
        line_id = raw or str(index)
        if line_id in seen:
            line_id = f"{raw}-{index}" if raw else str(index)
        seen.add(line_id)
        out.append(line_id)
    return out


# --- the client base ----------------------------------------------------------
class GatewayClient(PlatformClient):
    """One POST per call to ``self.gateway_url`` with the signed, form-encoded parameters."""

    label = ""  # zh platform name in messages: 淘宝 / 拼多多 / 京东
    # Page from the last page backwards (see _pages); False pages forwards.
    page_backwards = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Set by the sync engine when most listed orders are expected to be unchanged:
        # fetch_changed then lists Deferred orders (id and raw digest, parsed on demand).
        self.defer_parsing = False

    def _listed(self, payload: Any, order_id: Callable[[dict], Optional[str]],
                parse: Callable[[dict], PlatformOrder]):
        """One listed order: parsed now (with its raw digest), or Deferred when
        ``defer_parsing`` is set, or Unparsed when its own payload cannot be read (the sync
        records it and goes on). Anything that is not an object is parsed now, so it fails
        as it always did."""
        if not isinstance(payload, dict):
            return parse(payload)
        digest = raw_digest(payload)
        if self.defer_parsing:
            pid = order_id(payload)
            if pid:
                return Deferred(pid, digest, parse, payload)
        try:
            order = parse(payload)
        except PlatformError as exc:  # one unreadable order: the rest of the page still counts
            pid = order_id(payload) if exc.code == BAD_ORDER else None
            if not pid:
                raise
            return Unparsed(pid, digest, exc.message)
        order.raw_digest = digest
        return order

    def _now(self) -> dt.datetime:
        return dt.datetime.now(CN_TZ)

    @abc.abstractmethod
    def _check_error(self, payload: Any, api: str) -> None:
        """Raise PlatformError for an error payload (each platform has its own shape)."""

    def _post(self, form: dict[str, str], api: str) -> dict:
        """One gateway call, through ``call_policy`` (retries with backoff) when set."""
        if self.call_policy is not None:
            return self.call_policy(lambda: self._post_once(form, api))
        return self._post_once(form, api)

    def _post_once(self, form: dict[str, str], api: str) -> dict:
        body = urlencode(form).encode("ascii")  # UTF-8, quote_plus: as the gateways read forms
        try:
            status, content = self.http.post(self.gateway_url, body, _FORM_HEADERS, self.timeout)
        except TransportError as exc:
            host = urlsplit(self.gateway_url).netloc or self.gateway_url
            if exc.kind == "connect":
                raise PlatformError("network", f"无法连接{self.label}接口（{host}）：{exc.detail}，请检查网络",
                                    kind="network") from exc
            if exc.kind == "timeout":
                raise PlatformError("timeout", f"{self.label}接口 {api} 超过 {self.timeout:g} 秒未响应，稍后重试",
                                    kind="server") from exc
            raise PlatformError("network", f"调用{self.label}接口 {api} 失败：{exc.detail}",
                                kind="network") from exc
        if status >= 500:
            raise PlatformError(f"http_{status}",
                                f"{self.label}接口服务器错误（HTTP {status}），稍后重试", kind="server")
        try:
            payload = loads(content)
        except (ValueError, UnicodeDecodeError) as exc:
            if status >= 400:
                raise PlatformError(f"http_{status}",
                                    f"{self.label}接口拒绝了请求（HTTP {status}），请检查网关地址",
                                    kind="bad_request") from exc
            raise PlatformError("bad_response", f"{self.label}接口 {api} 返回的内容不是 JSON，请检查网关地址",
                                kind="server") from exc
        if not isinstance(payload, dict):
            raise PlatformError("bad_response", f"{self.label}接口 {api} 返回的内容格式异常", kind="server")
        self._check_error(payload, api)
        if status >= 400:
            raise PlatformError(f"http_{status}",
                                f"{self.label}接口拒绝了请求（HTTP {status}），请检查网关地址",
                                kind="bad_request")
        return payload

    def _missing(self, api: str, key: str) -> PlatformError:
        return PlatformError("bad_response", f"{self.label}接口 {api} 的返回缺少 {key}", kind="server")

    def _window(self, start: dt.datetime, end: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        start_cn, end_cn = as_cn(start), as_cn(end)
        if end_cn - start_cn > self.max_window:
            raise PlatformError("window", f"{self.label}增量同步的时间窗口过大：{end_cn - start_cn}，"
                                f"最多 {self.max_window}", kind="bad_request")
        return start_cn, end_cn

    def _pages(self, fetch: Callable[[int], tuple[list[PlatformOrder], int]],
               page_size: int) -> Iterator[Page]:
        """Page 1 first to learn the total, then (``page_backwards``) from the last page
        back to page 1, which is fetched again. Results are sorted by modified time and
        an order modified while we page leaves the window, shifting the orders after
        it to lower positions: paging backwards turns that shift into a duplicate
        (harmless, upserts) instead of a miss."""
        first, total = fetch(1)
        pages = max(1, math.ceil(total / page_size)) if total else 1
        if pages == 1:
            if first:
                yield Page(orders=first, page_no=1, total=total)
            return
        if not self.page_backwards:
            yield Page(orders=first, page_no=1, total=total)
            numbers = range(2, pages + 1)
        else:
            numbers = range(pages, 0, -1)
        for number in numbers:
            orders, latest_total = fetch(number)
            yield Page(orders=orders, page_no=number, total=latest_total)
