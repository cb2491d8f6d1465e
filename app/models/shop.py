from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import Boolean, CheckConstraint, Column, Integer, Numeric, String, Text, false, func, select
from sqlalchemy.orm import object_session

from .base import PLATFORMS, Model, col_info
from .types import EncryptedText, UTCDateTime, utcnow
from flask_babel import lazy_gettext as _l


# When an order reserves its stock (Shop.reserve_at).
RESERVE_AT = {"audit": _l("At audit"), "payment": _l("At payment")}


class Shop(Model):
    """店铺: one seller account on one platform, with credentials and sync settings."""

    __tablename__ = "oms_shop"
    __table_args__ = (
        CheckConstraint(
            "platform IN (%s)" % ",".join(f"'{p}'" for p in PLATFORMS), name="ck_shop_platform"
        ),
        CheckConstraint("sync_interval_seconds >= 10", name="ck_shop_sync_interval"),
        CheckConstraint("backfill_days >= 0 AND backfill_days <= 90", name="ck_shop_backfill"),
        CheckConstraint("stock_ratio >= 0 AND stock_ratio <= 1", name="ck_shop_stock_ratio"),
        CheckConstraint("stock_max IS NULL OR stock_max >= 0", name="ck_shop_stock_max"),
        CheckConstraint("stock_floor >= 0", name="ck_shop_stock_floor"),
        CheckConstraint("stock_max IS NULL OR stock_floor <= stock_max", name="ck_shop_stock_floor_le_max"),
        CheckConstraint("reserve_at IN ('audit','payment')", name="ck_shop_reserve_at"),
    )

    id = Column(Integer, primary_key=True)
    name = Column(String(100), unique=True, nullable=False, info=col_info(_l("Shop name")))
    platform = Column(String(16), nullable=False, index=True, info=col_info(_l("Platform")))
    platform_shop_id = Column(String(64), info=col_info(_l("Platform shop ID")))
    app_key = Column(String(128), info=col_info(_l("App key")))
    # Credentials are encrypted at rest with their own key.
    app_secret = Column(EncryptedText("credentials"), info=col_info(_l("App secret"), secret=True))
    access_token = Column(EncryptedText("credentials"), info=col_info(_l("Access token"), secret=True))
    token_expires_at = Column(UTCDateTime, info=col_info(_l("Token expires at")))
    gateway_url = Column(String(255), info=col_info(_l("Gateway URL")))
    sync_enabled = Column(Boolean, nullable=False, default=True, info=col_info(_l("Sync enabled")))
    sync_interval_seconds = Column(
        Integer, nullable=False, default=60, info=col_info(_l("Sync interval (s)"))
    )
    backfill_days = Column(Integer, nullable=False, default=3, info=col_info(_l("Backfill days")))
    sync_checkpoint = Column(UTCDateTime, info=col_info(_l("Sync checkpoint")))
    last_sync_success_at = Column(UTCDateTime, info=col_info(_l("Last successful sync")))
    last_sync_error = Column(Text, info=col_info(_l("Last sync error")))
    last_sync_error_at = Column(UTCDateTime, info=col_info(_l("Last sync error at")))
    # After a platform ban (rate limit) the scheduler waits until this time.
    sync_not_before = Column(UTCDateTime, info=col_info(_l("Next sync not before")))
    # 库存同步: the quantity published to each listing is derived from our available
    # stock with ratio (比例), max (上限) and floor (保底); see services/stock_push.derive.
    stock_push_enabled = Column(Boolean, nullable=False, default=False, server_default=false(),
                                info=col_info(_l("Stock push enabled")))
    stock_ratio = Column(Numeric(5, 2), nullable=False, default=Decimal("1.00"), server_default="1.00",
                         info=col_info(_l("Stock ratio")))
    stock_max = Column(Integer, info=col_info(_l("Stock max")))
    stock_floor = Column(Integer, nullable=False, default=0, server_default="0", info=col_info(_l("Stock floor")))
    last_stock_push_at = Column(UTCDateTime, info=col_info(_l("Last stock push")))
    last_stock_push_error = Column(Text, info=col_info(_l("Last stock push error")))
    last_stock_push_error_at = Column(UTCDateTime, info=col_info(_l("Last stock push error at")))
    # 选仓 (services/warehouse_choice.py): split an order across warehouses when no single
    # covering warehouse can ship it whole; reserve stock at audit (审单, the default) or
    # at payment (付款: the order waits in 待审核 with its stock already reserved).
    allow_split = Column(Boolean, nullable=False, default=False, server_default=false(),
                         info=col_info(_l("Allow split shipment")))
    reserve_at = Column(String(16), nullable=False, default="audit", server_default="audit",
                        info=col_info(_l("Reserve stock at")))
    active = Column(Boolean, nullable=False, default=True, index=True, info=col_info(_l("Active")))
    created_at = Column(UTCDateTime, nullable=False, default=utcnow, info=col_info(_l("Created at")))

    @property
    def sync_state(self) -> str:
        """A sync of this shop queued or running, with its progress (from the job)."""
        from app.jobs.sync import sync_state

        return sync_state(self.id) if self.id else ""

    @property
    def sync_lag_seconds(self):
        """now − checkpoint: how far behind the platform this shop's orders are."""
        if self.sync_checkpoint is None:
            return None
        return max(0, int((utcnow() - self.sync_checkpoint).total_seconds()))

    @property
    def stock_push_lag_seconds(self):
        """now − the oldest stock change not yet on the platform, over this shop's listings
        (None when every listing is up to date or the shop does not push stock)."""
        session = object_session(self)
        if not self.stock_push_enabled or session is None or self.id is None:
            return None
        from .listing import ShopListing

        oldest = session.scalar(select(func.min(ShopListing.push_pending_since))
                                .where(ShopListing.shop_id == self.id, ShopListing.sku_id.is_not(None)))
        if oldest is None:
            return None
        if oldest.tzinfo is None:  # SQLite aggregate: no type processing
            oldest = dt.datetime.fromisoformat(str(oldest)).replace(tzinfo=dt.timezone.utc)
        return max(0, int((utcnow() - oldest).total_seconds()))

    @property
    def platform_label(self) -> str:
        return str(PLATFORMS.get(self.platform, self.platform))

    def __repr__(self) -> str:
        return self.name or ""
