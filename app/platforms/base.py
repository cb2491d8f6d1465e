"""The one small interface every platform client implements, and the normalised
order it returns. Clients speak the real protocols (../shared/platform-apis.md):
real parameter names, time formats, signing, paging rules, response shapes and
error codes; only the gateway URL differs between production and the sandbox.
"""
from __future__ import annotations

import abc
import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterator, Optional, Sequence

CN_TZ = dt.timezone(dt.timedelta(hours=8))  # platforms speak Beijing time


@dataclass
class PlatformLine:
    platform_line_id: str  # Taobao oid, PDD/JD: sku id or index; unique within the order
    title: str
    quantity: int
    price: Decimal
    paid_amount: Decimal
    merchant_code: Optional[str] = None  # outer_sku_id / outer_id / outerSkuId
    spec: Optional[str] = None
    refund_status: Optional[str] = None


@dataclass
class PlatformOrder:
    """One platform trade, normalised to our field names (see services/orders.create_order)."""

    platform_order_id: str  # a string always: Taobao ids exceed 2^53
    platform_status: str  # the platform's own status text/code, as received
    status: str  # unified status (GLOSSARY.md mapping), before local workflow is considered
    modified_at: dt.datetime  # aware, UTC
    created_at: Optional[dt.datetime] = None
    paid_at: Optional[dt.datetime] = None
    shipped_at: Optional[dt.datetime] = None
    goods_amount: Decimal = Decimal("0.00")
    discount_amount: Decimal = Decimal("0.00")
    post_fee: Decimal = Decimal("0.00")
    paid_amount: Decimal = Decimal("0.00")
    buyer_nick: Optional[str] = None
    receiver_name: Optional[str] = None
    receiver_phone: Optional[str] = None
    receiver_province: Optional[str] = None
    receiver_city: Optional[str] = None
    receiver_district: Optional[str] = None
    receiver_address: Optional[str] = None
    receiver_zip: Optional[str] = None
    buyer_message: Optional[str] = None
    seller_memo: Optional[str] = None
    flag: int = 0
    tracking_number: Optional[str] = None
    carrier_code: Optional[str] = None  # the platform's carrier code
    # Platform-side exceptions: "refunding" (退款中) or "platform_locked" (JD LOCKED/PAUSE)
    hold_reason: Optional[str] = None
    # A full refund before shipping: the order is to be closed (GLOSSARY.md).
    refund_closed: bool = False
    lines: list[PlatformLine] = field(default_factory=list)
    # The digest of the order's payload as the gateway listed it (common.raw_digest), set by
    # the client that parsed it. Not a field on purpose: a copy made with other values
    # (dataclasses.replace, tests) must not carry the digest of the payload it came from.
    # (Not annotated: not a field, nor in __dataclass_fields__.) Optional[str].
    raw_digest = None


class Deferred:
    """A listed order not parsed yet (``GatewayClient.defer_parsing``): its id and the
    digest of its payload, enough for the sync engine to recognise an unchanged order;
    ``parse()`` gives the PlatformOrder (Taobao: with the ``fullinfo`` call for a buyer
    message, made then)."""

    __slots__ = ("platform_order_id", "raw_digest", "_parse", "_payload")

    def __init__(self, platform_order_id: str, raw_digest: str, parse, payload):
        self.platform_order_id = platform_order_id
        self.raw_digest = raw_digest
        self._parse = parse
        self._payload = payload

    def parse(self) -> "PlatformOrder":
        order = self._parse(self._payload)
        if order.platform_order_id != self.platform_order_id:  # one id rule for both paths
            raise PlatformError("bad_response", f"订单号解析不一致：{self.platform_order_id}", kind="server")
        order.raw_digest = self.raw_digest
        return order


class Unparsed:
    """A listed order whose payload cannot be read as an order (a missing modified time, a
    time or amount in no known format): its id, the digest of its payload and the zh
    reason. The sync records it (无法保存的平台订单) and goes on with the rest, instead of
    failing the same page on every run."""

    __slots__ = ("platform_order_id", "raw_digest", "error")

    def __init__(self, platform_order_id: str, raw_digest: Optional[str], error: str):
        self.platform_order_id = platform_order_id
        self.raw_digest = raw_digest
        self.error = error


BAD_ORDER = "bad_order"  # PlatformError.code: one order's payload is unreadable (not the whole answer)


@dataclass
class Page:
    orders: list[PlatformOrder]
    page_no: int
    total: Optional[int] = None


class PlatformError(Exception):
    """A platform call failed. ``message`` is zh and shown on the shop.

    kind: "rate_limit" (retry after ``retry_after`` seconds), "auth" (bad app key,
    session or signature: needs a person), "server" (5xx, timeouts: retry),
    "bad_request" (our bug or bad data: do not retry blindly), "network".
    """

    def __init__(self, code: str, message: str, *, kind: str = "server",
                 retry_after: Optional[float] = None, sub_code: Optional[str] = None):
        super().__init__(message)
        self.code = str(code)
        self.message = message
        self.kind = kind
        self.retry_after = retry_after
        self.sub_code = sub_code

    @property
    def retryable(self) -> bool:
        return self.kind in ("rate_limit", "server", "network")


class PlatformClient(abc.ABC):
    platform: str
    # The widest modified-time window one incremental call accepts.
    max_window: dt.timedelta
    # How far back each window starts before the previous checkpoint (clock skew, late commits).
    overlap: dt.timedelta = dt.timedelta(minutes=2)
    # Do not ask for data newer than now − safety (PDD: at least 3 minutes).
    safety_lag: dt.timedelta = dt.timedelta(seconds=0)

    def __init__(self, gateway_url: str, app_key: str, app_secret: str, access_token: str,
                 timeout: float = 15.0, http=None):
        self.gateway_url = gateway_url
        self.app_key = app_key
        self.app_secret = app_secret
        self.access_token = access_token
        self.timeout = timeout
        # The transport (app/platforms/http.py: kept-alive urllib3 pools); tests pass a fake
        # with the same ``post`` and ``close``.
        if http is None:
            from .http import FormTransport

            http = FormTransport()
        self.http = http
        # Optional wrapper for every gateway call: ``call_policy(fn)`` calls ``fn()``,
        # retrying retryable PlatformErrors as it sees fit (the sync engine's backoff).
        self.call_policy = None

    def close(self) -> None:
        """Releases the client's connections (and threads); it may be used again after."""
        self.http.close()

    @abc.abstractmethod
    def fetch_changed(self, start: dt.datetime, end: dt.datetime, page_size: int = 100) -> Iterator[Page]:
        """Orders modified in [start, end) (aware datetimes, end - start <= max_window),
        page by page, in the order the platform says avoids missing changes
        (Taobao and PDD: from the last page backwards)."""

    @abc.abstractmethod
    def fetch_order(self, platform_order_id: str) -> PlatformOrder:
        """One order in full."""

    @abc.abstractmethod
    def ship(self, platform_order_id: str, carrier_code: str, tracking_number: str,
             line_ids: Optional[Sequence[str]] = None) -> None:
        """Write the carrier and tracking number back to the platform (发货回传).
        ``line_ids``: the platform line ids (sub-orders) this parcel carries, to ship only
        those (拆单发货), where :meth:`ships_parts` allows it; None: the whole order."""

    # Whether the platform's shipment call can ship some sub-orders of a trade (拆单发货).
    partial_shipment = False

    def ships_parts(self, line_ids: Sequence[str]) -> bool:
        """Whether :meth:`ship` can ship these sub-orders of one trade apart from the rest
        (拆单发货). The default: no, the platform's shipment call ships a whole order."""
        return False

    def sub_order_shipments(self, platform_order_id: str) -> dict:
        """Where a platform ships parts: each sub-order (platform line id) of the trade that
        has shipped or still waits → the tracking number it shipped with ("" if shipped
        without one), None while it waits. Closed or refunded sub-orders are left out."""
        raise PlatformError("unsupported", "该平台接口按整单发货，没有子订单发货状态", kind="bad_request")

    @abc.abstractmethod
    def push_stock(self, merchant_code: str, quantity: int, *, item_id: Optional[str] = None,
                   sku_id: Optional[str] = None) -> None:
        """Publish the available quantity of one listing SKU (库存同步), addressed by the
        platform ids when known, else by the merchant code (outer_id)."""
