"""Pinduoduo open platform client (../shared/platform-apis.md §2).

One POST per call to ``/api/router``: common parameters ``type`` (the API name),
``client_id``, ``access_token``, ``timestamp`` (UNIX seconds), ``data_type=JSON``,
``version=V1`` and ``sign``.

Receiver data: since 2024 the real gateway returns ciphertext names, phones and
addresses (``~AgAAAA...~``, ``$...$``) with ``*_mask`` fields alongside; they must
be decrypted through PDD's decrypt API. This first version reads the plaintext
``receiver_name``/``receiver_phone``/``address`` the sandbox serves, falling back
to the masks when it sees ciphertext; decryption is a follow-up.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
from decimal import Decimal
from typing import Any, Iterator, Optional, Sequence

from . import signing
from .base import BAD_ORDER, Page, PlatformError, PlatformLine, PlatformOrder
from .common import (DEFAULT_BAN_SECONDS, GatewayClient, address_detail, as_list, cn_time, flag, integer, money,
                     seconds_in, text,
                     unique_line_ids)

log = logging.getLogger(__name__)

STATUS_MAP = {"1": "to_audit", "2": "shipped", "3": "completed"}
# refund_status: 1 无售后或售后关闭, 2 售后处理中, 3 退款中, 4 退款成功.
# GLOSSARY.md holds on 3; we also hold on 2 (an open after-sales request on an
# unshipped order should not ship). 4 before shipping closes the order.
REFUND_HOLD = {"2", "3"}
REFUND_DONE = "4"
# The rate-limit error code is UNCONFIRMED (platform-apis.md); 70031 is our guess and what the sandbox uses.
RATE_LIMIT_CODES = {"70031"}
AUTH_CODES = {"10019"}  # access_token 已过期


def _is_cipher(value: Optional[str]) -> bool:
    """PDD ciphertext: ``~...~`` (names, addresses), ``$...$`` (phones), ``#...#``."""
    return bool(value) and len(value) > 2 and value[0] in "~$#" and value.endswith(value[0])


def _plain(order: dict, name: str, mask: str) -> Optional[str]:
    value = text(order.get(name))
    if _is_cipher(value):
        return text(order.get(mask))
    return value


class PddClient(GatewayClient):
    platform = "pdd"
    label = "拼多多"
    max_window = dt.timedelta(minutes=30)
    # Keep the window end at least 3 minutes before PDD's clock (official hint).
    safety_lag = dt.timedelta(minutes=3)

    # --- transport ------------------------------------------------------------
    def call(self, api: str, params: Optional[dict[str, Any]] = None) -> dict:
        """Call one PDD API; returns the whole JSON object (its ``*_response`` is the caller's)."""
        form = signing.clean_params({
            "type": api, "client_id": self.app_key, "access_token": self.access_token,
            "timestamp": int(self._now().timestamp()), "data_type": "JSON", "version": "V1", **(params or {}),
        })
        form["sign"] = signing.pdd_sign(form, self.app_secret)
        return self._post(form, api)

    def _response(self, api: str, params: dict[str, Any], key: str) -> dict:
        body = self.call(api, params).get(key)
        if not isinstance(body, dict):
            raise self._missing(api, key)
        return body

    def _check_error(self, payload: Any, api: str) -> None:
        err = payload.get("error_response")
        if not isinstance(err, dict):
            return
        code = str(err.get("error_code", ""))
        sub_code = text(err.get("sub_code"))
        detail = text(err.get("sub_msg")) or text(err.get("error_msg")) or ""
        both = " ".join(filter(None, [text(err.get("error_msg")), text(err.get("sub_msg"))]))
        if code in RATE_LIMIT_CODES or re.search(r"限流|频率|频繁|rate.?limit", both, re.I):
            wait = seconds_in(both) or DEFAULT_BAN_SECONDS
            raise PlatformError(code, f"拼多多接口限流，请 {wait:g} 秒后重试", kind="rate_limit",
                                retry_after=wait, sub_code=sub_code)
        if code in AUTH_CODES or re.search(r"access_token|client_id|签名|\bsign\b", both, re.I):
            if code == "10019" or "access_token" in both:
                hint = "店铺授权（access_token）无效或已过期：请重新授权店铺"
            elif re.search(r"签名|\bsign\b", both, re.I):
                hint = "接口签名错误：请检查 Client Secret"
            else:
                hint = "Client ID 无效：请检查 Client ID"
            raise PlatformError(code, f"拼多多{hint}（code {code}{'：' + detail if detail else ''}）", kind="auth",
                                sub_code=sub_code)
        if re.search(r"系统繁忙|服务不可用|内部错误|超时|busy|unavailable", both, re.I):
            raise PlatformError(code, f"拼多多服务暂不可用（code {code}）：{detail}，稍后重试", kind="server",
                                sub_code=sub_code)
        raise PlatformError(code, f"拼多多接口 {api} 调用失败（code {code}）：{detail}", kind="bad_request",
                            sub_code=sub_code)

    # --- orders ---------------------------------------------------------------
    def fetch_changed(self, start: dt.datetime, end: dt.datetime, page_size: int = 100) -> Iterator[Page]:
        start_cn, end_cn = self._window(start, end)
        page_size = max(1, min(int(page_size), 100))
        base = {"start_updated_at": int(start_cn.timestamp()), "end_updated_at": int(end_cn.timestamp()),
                "order_status": 5, "refund_status": 5, "is_lucky_flag": 0, "page_size": page_size,
                "use_has_next": False}
        api = "pdd.order.number.list.increment.get"

        def fetch(page: int):
            body = self._response(api, {**base, "page": page}, "order_sn_increment_get_response")
            orders = [self._listed(o, order_sn_of, parse_order) for o in as_list(body.get("order_sn_list"))]
            return orders, integer(body.get("total_count"))

        yield from self._pages(fetch, page_size)

    def fetch_order(self, platform_order_id: str) -> PlatformOrder:
        api = "pdd.order.information.get"
        body = self._response(api, {"order_sn": platform_order_id}, "order_info_get_response")
        info = body.get("order_info")
        if not isinstance(info, dict):
            raise PlatformError("not_found", f"拼多多订单 {platform_order_id} 不存在或无权查看", kind="bad_request")
        return parse_order(info)

    # --- write-back -------------------------------------------------------------
    def ship(self, platform_order_id: str, carrier_code: str, tracking_number: str,
             line_ids: Optional[Sequence[str]] = None) -> None:
        """``carrier_code`` is PDD's logistics_id (a number, as text)."""
        if line_ids:  # ships_parts() is False: callers never ask
            raise PlatformError("unsupported", f"拼多多接口按整单发货，不能只回传部分子订单（订单 {platform_order_id}）",
                                kind="bad_request")
        api = "pdd.logistics.online.send"
        body = self._response(api, {"order_sn": platform_order_id, "logistics_id": carrier_code,
                                    "tracking_number": tracking_number}, "logistics_online_send_response")
        if body.get("is_success") not in (True, "true"):
            raise PlatformError("ship_failed", f"拼多多订单 {platform_order_id} 发货回传失败：平台未确认成功",
                                kind="bad_request")

    def push_stock(self, merchant_code: str, quantity: int, *, item_id: Optional[str] = None,
                   sku_id: Optional[str] = None) -> None:
        api = "pdd.goods.quantity.update"
        body = self._response(api, {"goods_id": item_id, "sku_id": sku_id, "outer_id": merchant_code,
                                    "quantity": int(quantity), "update_type": 1}, "goods_quantity_update_response")
        if body.get("is_success") not in (True, "true"):
            raise PlatformError("stock_failed", f"拼多多库存同步失败（商家编码 {merchant_code}）：平台未确认成功",
                                kind="bad_request")


# --- parsing ----------------------------------------------------------------------
def order_sn_of(o: dict) -> Optional[str]:
    return text(o.get("order_sn"))


def parse_order(o: dict) -> PlatformOrder:
    order_sn = text(o.get("order_sn"))
    if not order_sn:
        raise PlatformError("bad_response", "拼多多订单缺少 order_sn", kind="server")
    platform_status = text(o.get("order_status")) or ""
    refund = text(o.get("refund_status")) or "1"
    status = STATUS_MAP.get(platform_status)
    if status is None:
        log.warning("unknown PDD order_status %r on %s: treated as pending_payment", platform_status, order_sn)
        status = "pending_payment"
    hold_reason, refund_closed = None, False
    if status == "to_audit":  # before shipping
        if refund == REFUND_DONE:
            status, refund_closed = "closed", True
        elif refund in REFUND_HOLD:
            hold_reason = "refunding"
    items = as_list(o.get("item_list"))
    ids = unique_line_ids([text(i.get("sku_id")) for i in items])
    lines = []
    for line_id, item in zip(ids, items):
        quantity = integer(item.get("goods_count"), 1)
        price = money(item.get("goods_price"))
        lines.append(PlatformLine(
            platform_line_id=line_id,
            title=text(item.get("goods_name")) or "",
            quantity=quantity,
            price=price,
            # PDD has no per-line paid amount: price × quantity (order discounts stay on the order).
            paid_amount=(price * Decimal(quantity)).quantize(Decimal("0.01")),
            merchant_code=text(item.get("outer_id")) or text(item.get("outer_goods_id")),
            spec=text(item.get("goods_spec")),
        ))
    created = cn_time(o.get("created_time"))
    modified = cn_time(o.get("updated_at")) or created
    if modified is None:
        raise PlatformError(BAD_ORDER, f"拼多多订单 {order_sn} 缺少 updated_at", kind="server")
    return PlatformOrder(
        platform_order_id=order_sn,
        platform_status=platform_status,
        status=status,
        modified_at=modified,
        created_at=created,
        paid_at=cn_time(o.get("pay_time")),
        shipped_at=cn_time(o.get("shipping_time")),
        goods_amount=money(o.get("goods_amount")),
        discount_amount=money(o.get("discount_amount")),
        post_fee=money(o.get("postage")),
        paid_amount=money(o.get("pay_amount")),
        buyer_nick=text(o.get("buyer_nick")),  # not in the order payload of the real API; None then
        receiver_name=_plain(o, "receiver_name", "receiver_name_mask"),
        receiver_phone=_plain(o, "receiver_phone", "receiver_phone_mask"),
        receiver_province=text(o.get("province")),
        receiver_city=text(o.get("city")),
        receiver_district=text(o.get("town")),
        # Detail only: ``receiver_address`` when sent, else ``address`` without its region prefix.
        receiver_address=address_detail(
            _plain(o, "receiver_address" if o.get("receiver_address") else "address", "receiver_address_mask"),
            text(o.get("province")), text(o.get("city")), text(o.get("town"))),
        buyer_message=text(o.get("buyer_memo")),
        seller_memo=text(o.get("remark")),
        flag=flag(o.get("remark_tag")),
        tracking_number=text(o.get("tracking_number")),
        carrier_code=text(o.get("logistics_id")) if text(o.get("logistics_id")) not in (None, "0") else None,
        hold_reason=hold_reason,
        refund_closed=refund_closed,
        lines=lines,
    )
