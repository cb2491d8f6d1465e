"""Logistics: carriers, carrier rules, e-waybill accounts and the numbers they issued,
print templates and the print log (issue #6)."""
from __future__ import annotations

from flask_babel import lazy_gettext as _l
from sqlalchemy import (
    Boolean, CheckConstraint, Column, ForeignKey, Index, Integer, Numeric, String, Text,
)
from sqlalchemy.orm import relationship

from .base import Model, col_info
from .types import EncryptedText, Money, UTCDateTime, utcnow


class Carrier(Model):
    """快递公司, with its code on each platform and at Kuaidi100."""

    __tablename__ = "oms_carrier"
    id = Column(Integer, primary_key=True)
    code = Column(String(32), unique=True, nullable=False, info=col_info(_l("Carrier code")))
    name = Column(String(64), unique=True, nullable=False, info=col_info(_l("Carrier name")))
    kuaidi100_code = Column(String(32), info=col_info(_l("Kuaidi100 code")))
    taobao_code = Column(String(32), info=col_info(_l("Taobao code")))
    pdd_code = Column(String(32), info=col_info(_l("Pinduoduo code")))
    jd_code = Column(String(32), info=col_info(_l("JD code")))
    active = Column(Boolean, nullable=False, default=True, info=col_info(_l("Active")))

    def __repr__(self) -> str:
        return self.name or ""


class CarrierRule(Model):
    """快递规则: the first active rule (by priority) whose conditions all match an order
    chooses its carrier; the default rule matches every order and is tried last.
    Conditions left empty match everything (services/carrier_rules.py)."""

    __tablename__ = "oms_carrier_rule"
    __table_args__ = (
        CheckConstraint("min_weight_kg IS NULL OR min_weight_kg >= 0", name="ck_carrier_rule_min_weight"),
        CheckConstraint("max_weight_kg IS NULL OR max_weight_kg >= 0", name="ck_carrier_rule_max_weight"),
        CheckConstraint("min_amount IS NULL OR min_amount >= 0", name="ck_carrier_rule_min_amount"),
        CheckConstraint("max_amount IS NULL OR max_amount >= 0", name="ck_carrier_rule_max_amount"),
        Index("ix_carrier_rule_priority", "active", "priority", "id"),
    )
    id = Column(Integer, primary_key=True)
    name = Column(String(100), unique=True, nullable=False, info=col_info(_l("Rule name")))
    priority = Column(Integer, nullable=False, default=100, info=col_info(_l("Priority")))
    carrier_id = Column(Integer, ForeignKey("oms_carrier.id"), nullable=False, index=True)
    carrier = relationship("Carrier", info=col_info(_l("Carrier")))
    is_default = Column(Boolean, nullable=False, default=False, info=col_info(_l("Default rule")))
    provinces = Column(Text, info=col_info(_l("Destination provinces")))
    min_weight_kg = Column(Numeric(10, 3), info=col_info(_l("Weight from (kg)")))
    max_weight_kg = Column(Numeric(10, 3), info=col_info(_l("Weight below (kg)")))
    min_amount = Column(Money, info=col_info(_l("Amount from")))
    max_amount = Column(Money, info=col_info(_l("Amount below")))
    shop_id = Column(Integer, ForeignKey("oms_shop.id", ondelete="CASCADE"), index=True)
    shop = relationship("Shop", info=col_info(_l("Shop")))
    merchant_codes = Column(Text, info=col_info(_l("Merchant codes")))
    active = Column(Boolean, nullable=False, default=True, info=col_info(_l("Active")))
    note = Column(String(200), info=col_info(_l("Note")))
    created_at = Column(UTCDateTime, nullable=False, default=utcnow, info=col_info(_l("Created at")))

    def __repr__(self) -> str:
        return self.name or ""


class EwaybillAccount(Model):
    """电子面单账号: one per carrier; its credentials and the sender printed on labels."""

    __tablename__ = "oms_ewaybill_account"
    id = Column(Integer, primary_key=True)
    carrier_id = Column(Integer, ForeignKey("oms_carrier.id"), unique=True, nullable=False)
    carrier = relationship("Carrier", info=col_info(_l("Carrier")))
    endpoint = Column(String(255), nullable=False, info=col_info(_l("Service URL")))
    app_key = Column(String(64), nullable=False, info=col_info(_l("Account key")))
    secret = Column(EncryptedText("credentials"), info=col_info(_l("Secret"), secret=True))
    partner_id = Column(String(64), info=col_info(_l("Customer code")))
    sender_name = Column(String(64), info=col_info(_l("Sender name")))
    sender_phone = Column(String(32), info=col_info(_l("Sender phone")))
    sender_province = Column(String(32), info=col_info(_l("Sender province")))
    sender_city = Column(String(32), info=col_info(_l("Sender city")))
    sender_district = Column(String(32), info=col_info(_l("Sender district")))
    sender_address = Column(String(255), info=col_info(_l("Sender address")))
    active = Column(Boolean, nullable=False, default=True, info=col_info(_l("Active")))
    created_at = Column(UTCDateTime, nullable=False, default=utcnow, info=col_info(_l("Created at")))

    def __repr__(self) -> str:
        return f"{self.carrier.name if self.carrier else ''} {self.app_key}".strip()


WAYBILL_STATUSES = {"issued": _l("Issued"), "cancelled": _l("Cancelled")}


class Waybill(Model):
    """One tracking number issued to an order from an e-waybill account (and maybe cancelled)."""

    __tablename__ = "oms_waybill"
    __table_args__ = (
        CheckConstraint("status IN ('issued','cancelled')", name="ck_waybill_status"),
        Index("ix_waybill_number", "carrier_id", "tracking_number"),
    )
    id = Column(Integer, primary_key=True)
    order_id = Column(Integer, ForeignKey("oms_order.id", ondelete="CASCADE"), nullable=False, index=True)
    order = relationship("Order", info=col_info(_l("Order")))
    account_id = Column(Integer, ForeignKey("oms_ewaybill_account.id"), nullable=False)
    account = relationship("EwaybillAccount", info=col_info(_l("E-waybill account")))
    carrier_id = Column(Integer, ForeignKey("oms_carrier.id"), nullable=False)
    carrier = relationship("Carrier", info=col_info(_l("Carrier")))
    tracking_number = Column(String(64), nullable=False, info=col_info(_l("Tracking number")))
    status = Column(String(16), nullable=False, default="issued", info=col_info(_l("Status")))
    issued_at = Column(UTCDateTime, nullable=False, default=utcnow, info=col_info(_l("Issued at")))
    issued_by_id = Column(Integer, ForeignKey("ab_user.id"))
    cancelled_at = Column(UTCDateTime, info=col_info(_l("Cancelled at")))
    cancelled_by_id = Column(Integer, ForeignKey("ab_user.id"))


PRINT_DOCUMENTS = {"label": _l("Waybill label"), "packing_list": _l("Packing list")}


class PrintTemplate(Model):
    """The Jinja HTML of one document type, edited in the browser; without a row the
    file in app/templates/print/ is used."""

    __tablename__ = "oms_print_template"
    __table_args__ = (CheckConstraint("document IN ('label','packing_list')", name="ck_print_template_doc"),)
    id = Column(Integer, primary_key=True)
    document = Column(String(32), unique=True, nullable=False, info=col_info(_l("Document")))
    source = Column(Text, nullable=False, info=col_info(_l("Template")))
    updated_at = Column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow,
                        info=col_info(_l("Updated at")))
    updated_by_id = Column(Integer, ForeignKey("ab_user.id"))
    updated_by = relationship("OmsUser", info=col_info(_l("Updated by")))


class PrintRecord(Model):
    """打印记录: one order in one print (who, when, which batch, the how-many-th print)."""

    __tablename__ = "oms_print_record"
    __table_args__ = (Index("ix_print_record_order", "order_id", "id"),)
    id = Column(Integer, primary_key=True)
    batch = Column(String(32), nullable=False, index=True, info=col_info(_l("Print batch")))
    order_id = Column(Integer, ForeignKey("oms_order.id", ondelete="CASCADE"), nullable=False)
    order = relationship("Order", info=col_info(_l("Order")))
    user_id = Column(Integer, ForeignKey("ab_user.id"), nullable=False)
    user = relationship("OmsUser", info=col_info(_l("Printed by")))
    created_at = Column(UTCDateTime, nullable=False, default=utcnow, info=col_info(_l("Printed at")))
    documents = Column(String(64), nullable=False, info=col_info(_l("Documents")))
    print_no = Column(Integer, nullable=False, default=1, info=col_info(_l("Print number")))
    is_reprint = Column(Boolean, nullable=False, default=False, info=col_info(_l("Reprint")))
    batch_size = Column(Integer, nullable=False, default=1, info=col_info(_l("Orders in batch")))
    source = Column(String(16), nullable=False, default="user", info=col_info(_l("Source")))
