from __future__ import annotations

from flask_babel import lazy_gettext as _l
from sqlalchemy import CheckConstraint, Column, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import relationship

from .base import Model, col_info
from .types import UTCDateTime, utcnow


class ShopListing(Model):
    """店铺商品: one listing SKU of one shop on its platform (item id + SKU id), matched to
    our SKU by merchant code, with the state of its stock push (库存同步).

    ``push_pending_since`` is the time of the oldest stock change not yet on the
    platform (the debounce marker, NULL when the platform is up to date);
    ``stock_change_seq`` counts changes, so a push clears the marker only when no
    change arrived while it was talking to the platform (services/stock_push.py).
    """

    __tablename__ = "oms_shop_listing"
    __table_args__ = (
        # Platform ids are '' when unknown (listings addressed by merchant code only),
        # so the key has no NULLs (NULLs never collide in a unique constraint).
        UniqueConstraint("shop_id", "merchant_code", "platform_item_id", "platform_sku_id",
                         name="uq_listing_shop_code_item_sku"),
        CheckConstraint("last_pushed_quantity IS NULL OR last_pushed_quantity >= 0",
                        name="ck_listing_pushed_qty_nonneg"),
        CheckConstraint("stock_change_seq >= 0", name="ck_listing_change_seq_nonneg"),
    )
    id = Column(Integer, primary_key=True)
    shop_id = Column(Integer, ForeignKey("oms_shop.id", ondelete="CASCADE"), nullable=False)
    shop = relationship("Shop", info=col_info(_l("Shop")))
    # Our SKU: NULL until the merchant code matches one (未匹配商品 listings are never pushed).
    sku_id = Column(Integer, ForeignKey("oms_sku.id", ondelete="SET NULL"), index=True)
    sku = relationship("Sku", info=col_info(_l("SKU")))
    merchant_code = Column(String(64), nullable=False, default="", info=col_info(_l("Merchant code")))
    platform_item_id = Column(String(64), nullable=False, default="", info=col_info(_l("Platform item ID")))
    platform_sku_id = Column(String(64), nullable=False, default="", info=col_info(_l("Platform SKU ID")))
    title = Column(String(255), info=col_info(_l("Listing title")))
    last_pushed_quantity = Column(Integer, info=col_info(_l("Last pushed quantity")))
    last_pushed_at = Column(UTCDateTime, info=col_info(_l("Last pushed at")))
    last_push_error = Column(Text, info=col_info(_l("Last push error")))
    last_push_error_at = Column(UTCDateTime, info=col_info(_l("Last push error at")))
    push_pending_since = Column(UTCDateTime, index=True, info=col_info(_l("Push pending since")))
    stock_change_seq = Column(Integer, nullable=False, default=0, server_default="0",
                              info=col_info(_l("Stock changes")))
    created_at = Column(UTCDateTime, nullable=False, default=utcnow, info=col_info(_l("Created at")))

    @property
    def shop_scope_id(self):
        return self.shop_id

    @property
    def push_lag_seconds(self):
        """How long the oldest stock change of this listing has waited for the platform."""
        if self.push_pending_since is None:
            return None
        return max(0, int((utcnow() - self.push_pending_since).total_seconds()))

    @property
    def quantity_derivation(self) -> str:
        """推送数量推导: how the quantity to publish is derived now (services/stock_push.py)."""
        from app.services import stock_push

        return stock_push.explain_listing(self)

    def __repr__(self) -> str:
        return f"{self.merchant_code} {self.title or ''}".strip()
