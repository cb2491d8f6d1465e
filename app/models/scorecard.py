"""Carrier costs for the scorecard (快递考核, issue #6 item 7): the rate card (运费价目)
per carrier × destination province, and the lines of imported carrier bills (快递账单).

A parcel's cost is its bill line's amount when a bill covers it, else the rate card's
price for its weight (services/carrier_scorecard.py)."""
from __future__ import annotations

from flask_babel import lazy_gettext as _l
from sqlalchemy import (
    Boolean, CheckConstraint, Column, ForeignKey, Integer, Numeric, String, UniqueConstraint,
)
from sqlalchemy.orm import relationship

from .base import Model, col_info
from .types import Money, UTCDateTime, utcnow


class CarrierRate(Model):
    """运费价目: what a carrier charges for a parcel to one province (or, with the province
    left empty, to every province without its own row).

    Either a flat price per parcel (一口价), or 首重 + 续重: ``first_price`` covers the
    first ``first_weight_kg``; each started kilogram beyond costs ``additional_price``."""

    __tablename__ = "oms_carrier_rate"
    __table_args__ = (
        UniqueConstraint("carrier_id", "province", name="uq_carrier_rate_province"),
        CheckConstraint("first_weight_kg >= 0", name="ck_carrier_rate_first_weight"),
        CheckConstraint("first_price IS NULL OR first_price >= 0", name="ck_carrier_rate_first_price"),
        CheckConstraint("additional_price >= 0", name="ck_carrier_rate_additional_price"),
        CheckConstraint("flat_price IS NULL OR flat_price >= 0", name="ck_carrier_rate_flat_price"),
        CheckConstraint("flat_price IS NOT NULL OR first_price IS NOT NULL", name="ck_carrier_rate_has_price"),
    )
    id = Column(Integer, primary_key=True)
    carrier_id = Column(Integer, ForeignKey("oms_carrier.id", ondelete="CASCADE"), nullable=False, index=True)
    carrier = relationship("Carrier", info=col_info(_l("Carrier")))
    # Short province name (浙江, 新疆); "" = every other province.
    province = Column(String(32), nullable=False, default="", info=col_info(_l("Destination province")))
    first_weight_kg = Column(Numeric(10, 3), nullable=False, default=1, info=col_info(_l("First weight (kg)")))
    first_price = Column(Money, info=col_info(_l("First weight price"), "finance"))
    additional_price = Column(Money, nullable=False, default=0,
                              info=col_info(_l("Price per additional kg"), "finance"))
    flat_price = Column(Money, info=col_info(_l("Flat price per parcel"), "finance"))
    note = Column(String(200), info=col_info(_l("Note")))
    updated_at = Column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow,
                        info=col_info(_l("Updated at")))

    def __repr__(self) -> str:
        return f"{self.carrier.name if self.carrier else ''} {self.province or '*'}"


class CarrierBillLine(Model):
    """快递账单: one parcel's line of an imported carrier bill. A later bill for the same
    parcel replaces the line (the latest bill is the truth)."""

    __tablename__ = "oms_carrier_bill_line"
    __table_args__ = (
        UniqueConstraint("parcel_id", name="uq_carrier_bill_line_parcel"),
        CheckConstraint("amount >= 0", name="ck_carrier_bill_line_amount"),
        CheckConstraint("weight_kg IS NULL OR weight_kg >= 0", name="ck_carrier_bill_line_weight"),
    )
    id = Column(Integer, primary_key=True)
    parcel_id = Column(Integer, ForeignKey("oms_parcel.id", ondelete="CASCADE"), nullable=False)
    parcel = relationship("Parcel", info=col_info(_l("Parcel")))
    # The parcel's order: row scope (a user sees the bill lines of their shops' parcels).
    order_id = Column(Integer, ForeignKey("oms_order.id", ondelete="CASCADE"), nullable=False, index=True)
    order = relationship("Order", info=col_info(_l("Order")))
    carrier_id = Column(Integer, ForeignKey("oms_carrier.id"), index=True)
    carrier = relationship("Carrier", info=col_info(_l("Carrier")))
    tracking_number = Column(String(64), nullable=False, index=True, info=col_info(_l("Tracking number")))
    weight_kg = Column(Numeric(10, 3), info=col_info(_l("Billed weight (kg)")))
    amount = Column(Money, nullable=False, info=col_info(_l("Billed amount"), "finance"))
    source = Column(String(200), info=col_info(_l("Bill file")))
    imported_at = Column(UTCDateTime, nullable=False, default=utcnow, info=col_info(_l("Imported at")))
    imported_by_id = Column(Integer, ForeignKey("ab_user.id"))
    imported_by = relationship("OmsUser", info=col_info(_l("Imported by")))

    def __repr__(self) -> str:
        return self.tracking_number or ""
