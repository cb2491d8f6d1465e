"""Shop rules."""
from __future__ import annotations

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
    if shop.sync_interval_seconds is not None and shop.sync_interval_seconds < 10:
        raise ValidationError("「同步间隔（秒）」至少为 10", "sync_interval_seconds")
    if shop.backfill_days is not None and not 0 <= shop.backfill_days <= 90:
        raise ValidationError("「首次回补天数」必须在 0–90 之间", "backfill_days")
