"""JD open platform (JOS) client (../shared/platform-apis.md §3).

One POST per call to ``/routerjson``: common parameters ``method, app_key,
access_token``, ``timestamp`` (Beijing ``yyyy-MM-dd HH:mm:ss.SSS+0800``, as the
official Python SDK sends it), ``v=2.0``, ``360buy_param_json`` (all business
parameters as one compact JSON string, signed exactly as sent) and ``sign``.
Responses are keyed ``<method with _>_responce`` (JD's spelling).

Receiver data: the real gateway returns masked/encrypted consignee data
(``jingdong.pop.order.enSearch``, masked ``mobile``) that must be decrypted through
JD's security (TDE) API. This first version reads the plaintext ``consigneeInfo``
``fullname``/``mobile``/``fullAddress`` the sandbox serves; decryption is a follow-up.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import re
from decimal import Decimal
from typing import Any, Iterator, Optional, Sequence

from . import signing
from .base import BAD_ORDER, Page, PlatformError, PlatformLine, PlatformOrder
from .common import (DEFAULT_BAN_SECONDS, GatewayClient, address_detail, as_list, cn_text, cn_time, integer, money,
                     seconds_in, text, unique_line_ids)

log = logging.getLogger(__name__)

ORDER_STATES = "WAIT_SELLER_STOCK_OUT,WAIT_GOODS_RECEIVE_CONFIRM,FINISHED_L,TRADE_CANCELED,LOCKED,POP_ORDER_PAUSE,PAUSE"
OPTIONAL_FIELDS = ",".join([
    "orderId", "venderId", "orderType", "payType", "orderTotalPrice", "orderSellerPrice", "orderPayment",
    "freightPrice", "sellerDiscount", "orderState", "orderStateRemark", "orderRemark", "orderStartTime",
    "orderEndTime", "modified", "paymentConfirmTime", "pin", "venderRemark", "waybill", "logisticsId",
    "consigneeInfo", "itemInfoList",
])
STATUS_MAP = {
    "WAIT_SELLER_STOCK_OUT": "to_audit",
    "WAIT_SELLER_DELIVERY": "to_audit",  # not in GLOSSARY.md: JD's 等待发货 of some order types
    "WAIT_GOODS_RECEIVE_CONFIRM": "shipped",
    "FINISHED_L": "completed",
    "TRADE_CANCELED": "closed",
    "LOCKED": "to_audit", "POP_ORDER_PAUSE": "to_audit", "PAUSE": "to_audit",
}
LOCKED_STATES = {"LOCKED", "POP_ORDER_PAUSE", "PAUSE"}

# JD's error code list is UNCONFIRMED beyond 15 (Invalid Method). 19 = invalid access_token;
# 7 / 18 = app key / signature; 4 = call limit (UNCONFIRMED; the sandbox uses it).
AUTH_HINTS = {
    "19": "京东店铺授权（access_token）无效或已过期（code 19）：请重新授权店铺",
    "18": "京东接口签名或 App Key 无效（code 18）：请检查 App Key 与 App Secret",
    "7": "京东接口签名或 App Key 无效（code 7）：请检查 App Key 与 App Secret",
}
RATE_LIMIT_CODES = {"4"}


def _json(params: dict[str, Any]) -> str:
    """The compact JSON string sent (and signed) as ``360buy_param_json``."""
    return json.dumps(params, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


class JdClient(GatewayClient):
    platform = "jd"
    label = "京东"
    # The API allows a month; we keep windows small like the other platforms.
    max_window = dt.timedelta(days=1)
    # JD lists oldest first (sortType 0), read from the last page backwards: an order its
    # index shows late lands on a page already read. The windows that advance the
    # checkpoint end a minute ago, so the next run reads such an order (services/sync.py).
    safety_lag = dt.timedelta(minutes=1)

    # --- transport ------------------------------------------------------------
    def call(self, method: str, params: Optional[dict[str, Any]] = None) -> dict:
        """Call one JOS API; returns its ``<name>_responce`` object."""
        now = self._now()
        timestamp = now.strftime("%Y-%m-%d %H:%M:%S.") + f"{now.microsecond // 1000:03d}+0800"
        form = signing.clean_params({
            "method": method, "app_key": self.app_key, "access_token": self.access_token, "timestamp": timestamp,
            "v": "2.0", "360buy_param_json": _json(params or {}),
        })
        form["sign"] = signing.jd_sign(form, self.app_secret)
        payload = self._post(form, method)
        key = method.replace(".", "_") + "_responce"
        body = payload.get(key)
        if not isinstance(body, dict):
            raise self._missing(method, key)
        code = text(body.get("code"))
        if code not in (None, "0"):
            self._raise(code, text(body.get("zh_desc")) or text(body.get("en_desc")) or "", method)
        return body

    def _check_error(self, payload: Any, api: str) -> None:
        err = payload.get("error_response")
        if isinstance(err, dict):
            self._raise(str(err.get("code", "")), text(err.get("zh_desc")) or text(err.get("en_desc")) or "", api)

    def _raise(self, code: str, detail: str, api: str) -> None:
        if code in RATE_LIMIT_CODES or re.search(r"限流|频率|频繁|调用次数", detail):
            wait = seconds_in(detail) or DEFAULT_BAN_SECONDS
            raise PlatformError(code, f"京东接口限流，请 {wait:g} 秒后重试", kind="rate_limit", retry_after=wait)
        if code in AUTH_HINTS:
            raise PlatformError(code, AUTH_HINTS[code] + (f"（{detail}）" if detail else ""), kind="auth")
        if re.search(r"系统繁忙|服务不可用|内部错误|超时", detail):
            raise PlatformError(code, f"京东服务暂不可用（code {code}）：{detail}，稍后重试", kind="server")
        raise PlatformError(code, f"京东接口 {api} 调用失败（code {code}）：{detail}", kind="bad_request")

    def _result(self, body: dict, key: str, api: str, what: str) -> dict:
        result = body.get(key)
        if not isinstance(result, dict):
            raise self._missing(api, key)
        api_result = result.get("apiResult")
        if isinstance(api_result, dict) and api_result.get("success") in (False, "false"):
            detail = text(api_result.get("chineseErrCode")) or text(api_result.get("englishErrCode")) or ""
            raise PlatformError(text(api_result.get("numberCode")) or "api_result",
                                f"京东{what}失败：{detail}", kind="bad_request")
        return result

    # --- orders ---------------------------------------------------------------
    def fetch_changed(self, start: dt.datetime, end: dt.datetime, page_size: int = 100) -> Iterator[Page]:
        start_cn, end_cn = self._window(start, end)
        page_size = max(1, min(int(page_size), 100))
        base = {"start_date": cn_text(start_cn), "end_date": cn_text(end_cn), "order_state": ORDER_STATES,
                "page_size": str(page_size), "optional_fields": OPTIONAL_FIELDS, "sortType": 0, "dateType": 0}
        api = "jingdong.pop.order.search"

        def fetch(page: int):
            body = self.call(api, {**base, "page": str(page)})
            result = self._result(body, "searchorderinfo_result", api, "订单查询")
            orders = [self._listed(o, order_id_of, parse_order) for o in as_list(result.get("orderInfoList"))]
            return orders, integer(result.get("orderTotal"))

        yield from self._pages(fetch, page_size)

    def fetch_order(self, platform_order_id: str) -> PlatformOrder:
        api = "jingdong.pop.order.get"
        body = self.call(api, {"order_id": str(platform_order_id), "optional_fields": OPTIONAL_FIELDS})
        result = self._result(body, "orderDetailInfo", api, "订单查询")
        info = result.get("orderInfo")
        if not isinstance(info, dict):
            raise PlatformError("not_found", f"京东订单 {platform_order_id} 不存在或无权查看", kind="bad_request")
        return parse_order(info)

    # --- write-back -------------------------------------------------------------
    def ship(self, platform_order_id: str, carrier_code: str, tracking_number: str,
             line_ids: Optional[Sequence[str]] = None) -> None:
        """``carrier_code`` is JD's logistics company id (logiCoprId)."""
        if line_ids:  # ships_parts() is False: callers never ask
            raise PlatformError("unsupported", f"京东接口按整单发货，不能只回传部分子订单（订单 {platform_order_id}）",
                                kind="bad_request")
        api = "jingdong.pop.order.shipment"
        body = self.call(api, {"orderId": str(platform_order_id), "logiCoprId": str(carrier_code),
                               "logiNo": tracking_number})
        result = self._result(body, "sopjosshipment_result", api, "发货回传")
        if result.get("success") not in (True, "true"):
            detail = text(result.get("chineseErrCode")) or "平台未确认成功"
            raise PlatformError("ship_failed", f"京东订单 {platform_order_id} 发货回传失败：{detail}",
                                kind="bad_request")

    def push_stock(self, merchant_code: str, quantity: int, *, item_id: Optional[str] = None,
                   sku_id: Optional[str] = None) -> None:
        api = "jingdong.stock.write.updateSkuStock"
        params = {"skuId": sku_id, "outerId": merchant_code, "stockNum": int(quantity)}
        body = self.call(api, {k: v for k, v in params.items() if v not in (None, "")})
        if body.get("success") not in (True, "true"):
            raise PlatformError("stock_failed", f"京东库存同步失败（商家编码 {merchant_code}）：平台未确认成功",
                                kind="bad_request")


# --- parsing ----------------------------------------------------------------------
def order_id_of(o: dict) -> Optional[str]:
    return text(o.get("orderId"))


def parse_order(o: dict) -> PlatformOrder:
    order_id = text(o.get("orderId"))
    if not order_id:
        raise PlatformError("bad_response", "京东订单缺少 orderId", kind="server")
    platform_status = text(o.get("orderState")) or ""
    status = STATUS_MAP.get(platform_status)
    if status is None:
        log.warning("unknown JD orderState %r on %s: treated as pending_payment", platform_status, order_id)
        status = "pending_payment"
    consignee = o.get("consigneeInfo") if isinstance(o.get("consigneeInfo"), dict) else {}
    items = as_list(o.get("itemInfoList"))
    ids = unique_line_ids([text(i.get("skuId")) for i in items])
    lines = []
    for line_id, item in zip(ids, items):
        quantity = integer(item.get("itemTotal"), 1)
        price = money(item.get("jdPrice"))
        lines.append(PlatformLine(
            platform_line_id=line_id,
            title=text(item.get("skuName")) or "",
            quantity=quantity,
            price=price,
            # JD has no per-line paid amount in the search result: price × quantity.
            paid_amount=(price * Decimal(quantity)).quantize(Decimal("0.01")),
            merchant_code=text(item.get("outerSkuId")),
        ))
    created = cn_time(o.get("orderStartTime"))
    modified = cn_time(o.get("modified")) or created
    if modified is None:
        raise PlatformError(BAD_ORDER, f"京东订单 {order_id} 缺少修改时间", kind="server")
    logistics_id = text(o.get("logisticsId"))
    return PlatformOrder(
        platform_order_id=order_id,
        platform_status=platform_status,
        status=status,
        modified_at=modified,
        created_at=created,
        paid_at=cn_time(o.get("paymentConfirmTime")),
        goods_amount=money(o.get("orderTotalPrice")),
        discount_amount=money(o.get("sellerDiscount")),
        post_fee=money(o.get("freightPrice")),
        paid_amount=money(o.get("orderPayment")),
        buyer_nick=text(o.get("pin")),
        receiver_name=text(consignee.get("fullname")),
        receiver_phone=text(consignee.get("mobile")) or text(consignee.get("telephone")),
        receiver_province=text(consignee.get("province")),
        receiver_city=text(consignee.get("city")),
        receiver_district=text(consignee.get("county")),
        receiver_address=address_detail(text(consignee.get("fullAddress")), text(consignee.get("province")),
                                        text(consignee.get("city")), text(consignee.get("county")),
                                        text(consignee.get("town"))),
        buyer_message=text(o.get("orderRemark")),
        seller_memo=text(o.get("venderRemark")),
        tracking_number=text(o.get("waybill")),
        carrier_code=logistics_id if logistics_id not in (None, "0") else None,
        hold_reason="platform_locked" if platform_status in LOCKED_STATES else None,
        lines=lines,
    )
