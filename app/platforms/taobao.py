"""Taobao / Tmall Open Platform (TOP) client (../shared/platform-apis.md §1).

One POST per call to the router (``/router/rest``): common parameters ``method,
app_key, session, timestamp`` (Beijing ``yyyy-MM-dd HH:mm:ss``), ``format=json``,
``v=2.0``, ``sign_method`` (md5 | hmac | hmac-sha256) and ``sign``.

Receiver data: the real gateway returns masked/encrypted receiver names, phones
and addresses (with ``oaid``) that must be decrypted with ``taobao.top.oaid.decrypt``
(≤ 20 per call). This first version reads the plaintext fields
``receiver_name``/``receiver_mobile`` the sandbox serves; decryption is a follow-up.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Iterator, Optional, Sequence
from urllib.parse import urlsplit

from . import signing
from .base import BAD_ORDER, Page, PlatformError, PlatformLine, PlatformOrder
from .common import (DEFAULT_BAN_SECONDS, GatewayClient, as_list, cn_text, cn_time, dig, flag, integer, money,
                     seconds_in, text)

log = logging.getLogger(__name__)

_ORDER_FIELDS = ("oid", "num_iid", "sku_id", "outer_iid", "outer_sku_id", "title", "sku_properties_name", "num",
                 "price", "payment", "status", "refund_status", "invoice_no", "logistics_company")
TRADE_FIELDS = ",".join([
    "tid", "status", "modified", "created", "pay_time", "consign_time", "payment", "post_fee", "total_fee",
    "discount_fee", "buyer_nick", "receiver_name", "receiver_mobile", "receiver_phone", "receiver_state",
    "receiver_city", "receiver_district", "receiver_town", "receiver_address", "receiver_zip", "seller_flag",
    "has_buyer_message", *(f"orders.{name}" for name in _ORDER_FIELDS),
])
FULLINFO_FIELDS = TRADE_FIELDS + ",tid_str,buyer_message,seller_memo"
# What a parcel's write-back of a split trade asks first: which sub-orders still wait.
SHIPMENT_FIELDS = "tid,status,orders.oid,orders.status,orders.refund_status,orders.invoice_no"
SHIPPED_LINE_STATES = {"WAIT_BUYER_CONFIRM_GOODS", "TRADE_BUYER_SIGNED", "TRADE_FINISHED"}
# What a listed trade with a buyer message still needs from fullinfo: a small answer
# instead of the whole trade again.
MESSAGE_FIELDS = "tid,buyer_message,seller_memo"

STATUS_MAP = {
    "WAIT_BUYER_PAY": "pending_payment", "TRADE_NO_CREATE_PAY": "pending_payment", "PAY_PENDING": "pending_payment",
    # Not in GLOSSARY.md: pre-authorisation not yet confirmed is not a payment.
    "WAIT_PRE_AUTH_CONFIRM": "pending_payment",
    "WAIT_SELLER_SEND_GOODS": "to_audit",
    # Not in GLOSSARY.md: paid but the platform forbids shipping → to_audit with a platform_locked hold.
    "PAID_FORBID_CONSIGN": "to_audit",
    "SELLER_CONSIGNED_PART": "shipped", "WAIT_BUYER_CONFIRM_GOODS": "shipped",
    "TRADE_BUYER_SIGNED": "completed", "TRADE_FINISHED": "completed",
    "TRADE_CLOSED": "closed", "TRADE_CLOSED_BY_TAOBAO": "closed",
}
# Line refund states that stop an unshipped order (挂起「退款中」). SUCCESS on some lines of a
# still-unshipped trade is a partial refund: those lines must not ship either.
REFUND_HOLD_STATES = {"WAIT_SELLER_AGREE", "WAIT_BUYER_RETURN_GOODS", "WAIT_SELLER_CONFIRM_GOODS", "SUCCESS"}

_AUTH_HINTS = {
    "24": "淘宝接口缺少签名（code 24）：请检查 App Secret",
    "25": "淘宝接口签名错误（code 25）：请检查 App Secret",
    "26": "淘宝接口缺少授权 session（code 26）：请授权店铺",
    "27": "淘宝店铺授权无效或已过期（code 27）：请重新授权店铺",
    "28": "淘宝接口缺少 App Key（code 28）：请检查 App Key",
    "29": "淘宝 App Key 无效（code 29）：请检查 App Key",
    "30": "淘宝接口缺少时间戳（code 30）：请检查服务器时间",
    "31": "淘宝接口时间戳无效（code 31）：请检查服务器时间（与淘宝相差不能超过 10 分钟）",
    "11": "淘宝应用权限不足（code 11）：请在开放平台申请该接口权限",
    "12": "淘宝店铺授权权限不足（code 12）：请重新授权店铺",
    "13": "淘宝合作伙伴权限不足（code 13）",
}


def has_notes(trade: dict) -> bool:
    """Whether a listed trade may carry texts only fullinfo gives: a buyer message
    (``has_buyer_message``) or a seller memo, which the seller writes with a flag (插旗备注:
    ``seller_flag`` 1–5). A memo written without a flag is not seen until the trade is
    fetched whole (the listing says nothing of it)."""
    if trade.get("has_buyer_message") in (True, "true"):
        return True
    return flag(trade.get("seller_flag")) > 0  # as the order's flag is read: 1–5, else none


class TaobaoClient(GatewayClient):
    platform = "taobao"  # also Tmall: same gateway and protocol
    label = "淘宝"
    # The API accepts a window of at most 1 day; 30 minutes is what the doc recommends
    # (the sync walks any longer catch-up in windows of max_window).
    max_window = dt.timedelta(days=1)
    # The list is sorted newest first and read from the last page backwards, which is safe
    # only while nothing enters the window during the paging: an order the index shows late
    # would push one order per page boundary into a page already read. So the windows that
    # advance the checkpoint end a minute ago; the last minute is read in a window of its own
    # (services/sync.py) and again by the next run. This covers an index up to a minute late.
    safety_lag = dt.timedelta(minutes=1)

    def __init__(self, *args, sign_method: str = "md5", **kwargs):
        super().__init__(*args, **kwargs)
        if sign_method not in signing.TOP_SIGN_METHODS:
            raise ValueError(f"sign_method must be one of {signing.TOP_SIGN_METHODS}")
        self.sign_method = sign_method
        local = urlsplit(self.gateway_url).hostname in ("127.0.0.1", "localhost", "::1")
        self.message_calls = 1 if local else self.MESSAGE_CALLS
        self._message_pool = None
        self._messages: dict = {}  # tid → fullinfo fields, prefetched for the page being parsed

    # --- transport ------------------------------------------------------------
    def call(self, method: str, params: Optional[dict[str, Any]] = None) -> dict:
        """Call one TOP API; returns its ``<name>_response`` object."""
        form = signing.clean_params({
            "method": method, "app_key": self.app_key, "session": self.access_token,
            "timestamp": self._now().strftime("%Y-%m-%d %H:%M:%S"), "format": "json", "v": "2.0",
            "sign_method": self.sign_method, **(params or {}),
        })
        form["sign"] = signing.top_sign(form, self.app_secret, self.sign_method)
        payload = self._post(form, method)
        key = method.removeprefix("taobao.").replace(".", "_") + "_response"
        body = payload.get(key)
        if not isinstance(body, dict):
            raise self._missing(method, key)
        return body

    def _check_error(self, payload: Any, api: str) -> None:
        err = payload.get("error_response")
        if not isinstance(err, dict):
            return
        code = str(err.get("code", ""))
        sub_code = text(err.get("sub_code"))
        detail = text(err.get("sub_msg")) or text(err.get("msg")) or ""
        if code == "7":
            wait = seconds_in(err.get("sub_msg")) or seconds_in(err.get("msg")) or DEFAULT_BAN_SECONDS
            raise PlatformError(code, f"淘宝接口限流（code 7），请 {wait:g} 秒后重试", kind="rate_limit",
                                retry_after=wait, sub_code=sub_code)
        if code in _AUTH_HINTS:
            message = _AUTH_HINTS[code] + (f"（{detail}）" if detail else "")
            raise PlatformError(code, message, kind="auth", sub_code=sub_code)
        if code == "10" or (code == "15" and (sub_code or "").startswith("isp.")):
            raise PlatformError(code, f"淘宝服务暂不可用（code {code}{' ' + sub_code if sub_code else ''}）：{detail}，稍后重试",
                                kind="server", sub_code=sub_code)
        raise PlatformError(code, f"淘宝接口 {api} 调用失败（code {code}{' ' + sub_code if sub_code else ''}）：{detail}",
                            kind="bad_request", sub_code=sub_code)

    # --- orders ---------------------------------------------------------------
    def fetch_changed(self, start: dt.datetime, end: dt.datetime, page_size: int = 100) -> Iterator[Page]:
        start_cn, end_cn = self._window(start, end)
        page_size = max(1, min(int(page_size), 100))
        base = {"fields": TRADE_FIELDS, "start_modified": cn_text(start_cn), "end_modified": cn_text(end_cn),
                "page_size": page_size, "use_has_next": False}

        def fetch(page_no: int):
            body = self.call("taobao.trades.sold.increment.get", {**base, "page_no": page_no})
            trades = as_list(dig(body, "trades", "trade"))
            if not self.defer_parsing:  # parsed now: their messages are needed now, ask at once
                self._prefetch_messages(trades)
            try:
                return ([self._listed(trade, trade_id, self._with_messages) for trade in trades],
                        integer(body.get("total_results")))
            finally:
                self._messages.clear()

        yield from self._pages(fetch, page_size)

    # A listed trade with a buyer message or a seller flag costs one fullinfo call (the
    # listing has neither text; Taobao's 插旗备注 sets the flag with the seller memo, so a
    # flag is where a memo shows): for a page parsed at once they are made MESSAGE_CALLS at a time, so a
    # first sync waits for one round trip per MESSAGE_CALLS orders, not per order. Not for
    # a gateway on this machine (the sandbox): it answers in well under a millisecond, so
    # overlapping buys nothing, and the extra threads only contend for the GIL (measured:
    # about 1 ms of CPU per call with the sandbox, bench/RESULTS.md).
    MESSAGE_CALLS = 4

    def _prefetch_messages(self, trades: list) -> None:
        tids = [tid for t in trades if isinstance(t, dict) and has_notes(t) for tid in (trade_id(t),) if tid]
        if len(tids) < 2 or self.message_calls < 2:
            return
        if self._message_pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._message_pool = ThreadPoolExecutor(max_workers=self.message_calls,
                                                    thread_name_prefix="oms-taobao-messages")
        futures = {tid: self._message_pool.submit(self._fullinfo, tid, MESSAGE_FIELDS) for tid in tids}
        try:
            for tid, future in futures.items():
                self._messages[tid] = future.result()  # a failed call fails the page, as before
        except BaseException:
            for future in futures.values():
                future.cancel()
            raise

    def _with_messages(self, trade: dict) -> PlatformOrder:
        order = parse_trade(trade)
        if has_notes(trade):
            full = self._messages.pop(order.platform_order_id, None)
            if full is None:
                full = self._fullinfo(order.platform_order_id, MESSAGE_FIELDS)
            order.buyer_message = text(full.get("buyer_message"))
            order.seller_memo = text(full.get("seller_memo"))
        return order

    def close(self) -> None:
        if self._message_pool is not None:
            self._message_pool.shutdown(wait=True, cancel_futures=True)
            self._message_pool = None
        super().close()

    def _fullinfo(self, tid: str, fields: str = FULLINFO_FIELDS) -> dict:
        body = self.call("taobao.trade.fullinfo.get", {"fields": fields, "tid": tid})
        trade = body.get("trade")
        if not isinstance(trade, dict):
            raise PlatformError("not_found", f"淘宝订单 {tid} 不存在或无权查看", kind="bad_request")
        return trade

    def fetch_order(self, platform_order_id: str) -> PlatformOrder:
        trade = self._fullinfo(str(platform_order_id))
        order = parse_trade(trade)
        order.buyer_message = text(trade.get("buyer_message"))
        order.seller_memo = text(trade.get("seller_memo"))
        return order

    # --- write-back -------------------------------------------------------------
    def ship(self, platform_order_id: str, carrier_code: str, tracking_number: str,
             line_ids: Optional[Sequence[str]] = None) -> None:
        """``line_ids``: the sub-orders (oid) of this parcel, sent as ``is_split=1`` with
        ``sub_tid`` (拆单发货): the trade shows SELLER_CONSIGNED_PART until every sub-order
        has shipped, each with its own tracking number."""
        api = "taobao.logistics.offline.send"
        params = {"tid": platform_order_id, "out_sid": tracking_number, "company_code": carrier_code}
        if line_ids:
            params["is_split"] = "1"
            params["sub_tid"] = ",".join(str(x) for x in line_ids)
        body = self.call(api, params)
        if dig(body, "shipping", "is_success") not in (True, "true"):
            raise PlatformError("ship_failed", f"淘宝订单 {platform_order_id} 发货回传失败：平台未确认成功",
                                kind="bad_request")

    partial_shipment = True

    def ships_parts(self, line_ids: Sequence[str]) -> bool:
        """Taobao ships sub-orders apart, named by their oid. A line imported from a sheet
        without 子订单编号 has a numbered id (1, 2, …) instead: such a trade ships whole."""
        return bool(line_ids) and all(str(x).isdigit() and len(str(x)) >= 10 for x in line_ids)

    def sub_order_shipments(self, platform_order_id: str) -> dict:
        """The trade's sub-orders as the platform sees them now (one fullinfo call):
        oid → its tracking number once shipped ("" without one), None while it waits to
        ship; refunded or closed sub-orders are left out."""
        trade = self._fullinfo(str(platform_order_id), SHIPMENT_FIELDS)
        out = {}
        for o in as_list(dig(trade, "orders", "order")):
            oid, status = text(o.get("oid")), text(o.get("status")) or ""
            if not oid or text(o.get("refund_status")) == "SUCCESS":
                continue
            if status in SHIPPED_LINE_STATES:
                out[oid] = text(o.get("invoice_no")) or ""
            elif status in ("WAIT_SELLER_SEND_GOODS", "SELLER_CONSIGNED_PART"):
                out[oid] = None
        return out

    def push_stock(self, merchant_code: str, quantity: int, *, item_id: Optional[str] = None,
                   sku_id: Optional[str] = None) -> None:
        # The real API needs num_iid; without it we send outer_id alone and let the gateway judge.
        api = "taobao.item.quantity.update"
        body = self.call(api, {"num_iid": item_id, "sku_id": sku_id, "outer_id": merchant_code,
                               "quantity": int(quantity), "type": 1})
        if not isinstance(body.get("item"), dict):
            raise PlatformError("stock_failed", f"淘宝库存同步失败（商家编码 {merchant_code}）：平台未返回商品",
                                kind="bad_request")


# --- parsing ----------------------------------------------------------------------
def trade_id(trade: dict) -> Optional[str]:
    """The trade's tid as exact digits (``tid_str`` when sent)."""
    return text(trade.get("tid_str")) or text(trade.get("tid"))


def parse_trade(trade: dict) -> PlatformOrder:
    tid = trade_id(trade)
    if not tid:
        raise PlatformError("bad_response", "淘宝订单缺少 tid", kind="server")
    platform_status = text(trade.get("status")) or ""
    status = STATUS_MAP.get(platform_status)
    if status is None:
        log.warning("unknown Taobao trade status %r on %s: treated as pending_payment", platform_status, tid)
        status = "pending_payment"
    lines = [parse_line(o) for o in as_list(dig(trade, "orders", "order"))]

    hold_reason = None
    if status == "to_audit":
        if any(line.refund_status in REFUND_HOLD_STATES for line in lines):
            hold_reason = "refunding"
        elif platform_status == "PAID_FORBID_CONSIGN":
            hold_reason = "platform_locked"
    elif platform_status == "SELLER_CONSIGNED_PART":
        # 拆单发货 under way: a refund on a sub-order still waiting stops the parcels still to go
        # (the parts of a trade split here stay 待发货 locally while the trade shows this).
        if any(text(o.get("status")) == "WAIT_SELLER_SEND_GOODS"
               and text(o.get("refund_status")) in REFUND_HOLD_STATES for o in as_list(dig(trade, "orders", "order"))):
            hold_reason = "refunding"
    created = cn_time(trade.get("created"))
    modified = cn_time(trade.get("modified")) or created
    if modified is None:
        raise PlatformError(BAD_ORDER, f"淘宝订单 {tid} 缺少修改时间", kind="server")
    tracking = next((text(o.get("invoice_no")) for o in as_list(dig(trade, "orders", "order"))
                     if text(o.get("invoice_no"))), None)
    return PlatformOrder(
        platform_order_id=tid,
        platform_status=platform_status,
        status=status,
        modified_at=modified,
        created_at=created,
        paid_at=cn_time(trade.get("pay_time")),
        shipped_at=cn_time(trade.get("consign_time")),
        goods_amount=money(trade.get("total_fee")),
        discount_amount=money(trade.get("discount_fee")),
        post_fee=money(trade.get("post_fee")),
        paid_amount=money(trade.get("payment")),
        buyer_nick=text(trade.get("buyer_nick")),
        receiver_name=text(trade.get("receiver_name")),
        receiver_phone=text(trade.get("receiver_mobile")) or text(trade.get("receiver_phone")),
        receiver_province=text(trade.get("receiver_state")),
        receiver_city=text(trade.get("receiver_city")),
        receiver_district=text(trade.get("receiver_district")),
        receiver_address=text(trade.get("receiver_address")),
        receiver_zip=text(trade.get("receiver_zip")),
        buyer_message=text(trade.get("buyer_message")),
        seller_memo=text(trade.get("seller_memo")),
        flag=flag(trade.get("seller_flag")),
        tracking_number=tracking,
        hold_reason=hold_reason,
        # TRADE_CLOSED is "closed after payment by a successful refund" (TRADE_CLOSED_BY_TAOBAO is before payment).
        refund_closed=platform_status == "TRADE_CLOSED",
        lines=lines,
    )


def parse_line(o: dict) -> PlatformLine:
    oid = text(o.get("oid"))
    if not oid:
        raise PlatformError(BAD_ORDER, "淘宝子订单缺少 oid", kind="server")
    return PlatformLine(
        platform_line_id=oid,
        title=text(o.get("title")) or "",
        quantity=integer(o.get("num"), 1),
        price=money(o.get("price")),
        paid_amount=money(o.get("payment")),
        merchant_code=text(o.get("outer_sku_id")) or text(o.get("outer_iid")),
        spec=text(o.get("sku_properties_name")),
        refund_status=text(o.get("refund_status")),
    )
