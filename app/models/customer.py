from __future__ import annotations

from flask_babel import lazy_gettext as _l
from sqlalchemy import CheckConstraint, Column, ForeignKey, Integer, String, Text
from sqlalchemy.orm import relationship

from .base import Model, col_info
from .types import ZERO, EncryptedText, Money, UTCDateTime, utcnow


class Customer(Model):
    """客户: one buyer across shops and platforms, matched by the keyed hash of the phone."""

    __tablename__ = "oms_customer"
    __table_args__ = (
        CheckConstraint("order_count >= 0", name="ck_customer_orders_nonneg"),
        CheckConstraint("total_spent >= 0", name="ck_customer_spent_nonneg"),
    )
    id = Column(Integer, primary_key=True)
    name = Column(EncryptedText("pii"), info=col_info(_l("Customer name"), "pii", mask="name"))
    phone = Column(EncryptedText("pii"), info=col_info(_l("Phone"), "pii", mask="phone"))
    phone_hash = Column(String(64), unique=True, info=col_info(_l("Phone hash"), hidden=True))
    buyer_nick = Column(String(100), index=True, info=col_info(_l("Buyer nick")))
    province = Column(String(32), info=col_info(_l("Province")))
    city = Column(String(32), info=col_info(_l("City")))
    # Aggregates over every shop: readable only by users who see all shops
    # (column scope "all_shops"), or they would reveal other shops' sales.
    first_order_at = Column(UTCDateTime, info=col_info(_l("First order"), "all_shops"))
    last_order_at = Column(UTCDateTime, index=True, info=col_info(_l("Last order"), "all_shops"))
    order_count = Column(Integer, nullable=False, default=0, info=col_info(_l("Orders"), "all_shops"))
    total_spent = Column(Money, nullable=False, default=ZERO, info=col_info(_l("Total spent"), "all_shops"))
    tier = Column(String(16), info=col_info(_l("Customer tier"), "all_shops"))
    note = Column(Text, info=col_info(_l("Note")))
    created_at = Column(UTCDateTime, nullable=False, default=utcnow, info=col_info(_l("Created at")))
    shops = relationship("Shop", secondary="oms_customer_shop", viewonly=True, info=col_info(_l("Shops")))
    orders = relationship("Order", back_populates="customer", viewonly=True, info=col_info(_l("Orders")))

    def __repr__(self) -> str:
        return self.buyer_nick or f"#{self.id}"


class CustomerShop(Model):
    """Which shops a customer bought from: the customer's row scope."""

    __tablename__ = "oms_customer_shop"
    customer_id = Column(Integer, ForeignKey("oms_customer.id", ondelete="CASCADE"), primary_key=True)
    shop_id = Column(Integer, ForeignKey("oms_shop.id", ondelete="CASCADE"), primary_key=True, index=True)
