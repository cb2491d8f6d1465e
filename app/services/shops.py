"""Shop rules."""
from __future__ import annotations

from decimal import Decimal, InvalidOperation
from urllib.parse import urlparse

from app.models import PLATFORMS, Shop

from .errors import ValidationError


def validate_shop(shop: Shop) -> None:
    if not (shop.name or "").strip():
        raise ValidationError("「店铺名称」不能为空", "name")
    if len(shop.name) > 100:
        raise ValidationError("「店铺名称」过长，最多 100 个字符", "name")
    if shop.platform not in PLATFORMS:
        raise ValidationError(f"「平台」的值无效：{shop.platform}", "platform")
    if shop.gateway_url:
        parsed = urlparse(shop.gateway_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValidationError(f"「网关地址」不是有效的 http(s) 地址：{shop.gateway_url}", "gateway_url")
        allowed = allowed_gateway_hosts()
        if parsed.netloc.lower() not in allowed and (parsed.hostname or "").lower() not in allowed:
            # The access token goes to this host on every call: only known gateways.
            raise ValidationError(
                f"「网关地址」的主机 {parsed.netloc} 不在允许列表中（平台官方网关、本地沙箱或"
                "OMS_ALLOWED_GATEWAY_HOSTS）", "gateway_url")
    if shop.sync_interval_seconds is not None and shop.sync_interval_seconds < 10:
        raise ValidationError("「同步间隔（秒）」至少为 10", "sync_interval_seconds")
    if shop.backfill_days is not None and not 0 <= shop.backfill_days <= 90:
        raise ValidationError("「首次回补天数」必须在 0–90 之间", "backfill_days")
    _validate_stock_push(shop)


def allowed_gateway_hosts() -> set[str]:
    from flask import current_app

    from app.platforms import REAL_GATEWAYS

    hosts = {urlparse(url).netloc.lower() for url in REAL_GATEWAYS.values()}
    hosts |= {"gw.api.taobao.com", "gw.api.tbsandbox.com"}
    sandbox = current_app.config.get("OMS_SANDBOX_URL")
    if sandbox:
        hosts.add(urlparse(sandbox).netloc.lower())
    extra = current_app.config.get("OMS_ALLOWED_GATEWAY_HOSTS") or ""  # "host" (any port) or "host:port"
    hosts |= {h.strip().lower() for h in extra.split(",") if h.strip()}
    return hosts


def _validate_stock_push(shop: Shop) -> None:
    """库存同步 settings: ratio 0–1, max and floor non-negative, floor ≤ max."""
    if shop.stock_ratio is not None:
        try:
            ratio = Decimal(str(shop.stock_ratio))
        except InvalidOperation:
            raise ValidationError(f"「库存比例」不是有效的数字：{shop.stock_ratio}", "stock_ratio")
        if not Decimal("0") <= ratio <= Decimal("1"):
            raise ValidationError(f"「库存比例」必须在 0–1 之间：{shop.stock_ratio}", "stock_ratio")
        if ratio != ratio.quantize(Decimal("0.01")):
            raise ValidationError(f"「库存比例」最多两位小数：{shop.stock_ratio}", "stock_ratio")
        shop.stock_ratio = ratio.quantize(Decimal("0.01"))
    if shop.stock_max is not None and shop.stock_max < 0:
        raise ValidationError(f"「库存上限」不能为负数：{shop.stock_max}", "stock_max")
    if shop.stock_floor is not None and shop.stock_floor < 0:
        raise ValidationError(f"「库存保底」不能为负数：{shop.stock_floor}", "stock_floor")
    if shop.stock_max is not None and (shop.stock_floor or 0) > shop.stock_max:
        raise ValidationError(f"「库存保底」（{shop.stock_floor}）不能大于「库存上限」（{shop.stock_max}）",
                              "stock_floor")
    from .stock_push import PUSH_PLATFORMS

    if shop.stock_push_enabled and shop.platform not in PUSH_PLATFORMS:
        raise ValidationError(f"平台「{shop.platform_label}」不支持库存同步", "stock_push_enabled")
