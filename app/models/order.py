from __future__ import annotations

from flask_babel import lazy_gettext as _l
from sqlalchemy import (
    Boolean, CheckConstraint, Column, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text,
)
from sqlalchemy.orm import relationship

from .base import PLATFORMS, Model, col_info
from .types import ZERO, EncryptedText, Money, UTCDateTime, utcnow

# Unified order status (GLOSSARY.md). The transitions live in services/order_status.py.
ORDER_STATUSES = {
    "pending_payment": _l("Pending payment"),
    "to_audit": _l("To audit"),
    "to_ship": _l("To ship"),
    "shipped": _l("Shipped"),
    "completed": _l("Completed"),
    "closed": _l("Closed"),
}

HOLD_REASONS = {
    "out_of_stock": _l("Out of stock"),
    "refunding": _l("Refunding"),
    "address_incomplete": _l("Incomplete address"),
    "blacklist": _l("Blacklist"),
    "unmatched_sku": _l("Unmatched SKU"),
    "platform_locked": _l("Locked by platform"),
    "platform_data": _l("Unsaveable platform data"),
    "manual": _l("Manual hold"),
}

EVENT_SOURCES = {
    "user": _l("User"),
    "sync": _l("Sync"),
    "import": _l("Import"),
    "rule": _l("Rule"),
    "job": _l("Job"),
}

WRITEBACK_STATUSES = {"pending": _l("Pending"), "done": _l("Done"), "failed": _l("Failed")}

FLAGS = {0: _l("No flag"), 1: _l("Red"), 2: _l("Yellow"), 3: _l("Green"), 4: _l("Blue"), 5: _l("Purple")}


def _in_list(column: str, values) -> str:
    return "%s IN (%s)" % (column, ",".join(f"'{v}'" for v in values))


class Order(Model):
    """订单: one platform trade, unique per shop. Changes go through services/orders.py."""

    __tablename__ = "oms_order"
    __table_args__ = (
        UniqueConstraint("shop_id", "platform_order_id", name="uq_order_shop_platform_id"),
        CheckConstraint(_in_list("status", ORDER_STATUSES), name="ck_order_status"),
        CheckConstraint(_in_list("platform", PLATFORMS), name="ck_order_platform"),
        CheckConstraint("flag >= 0 AND flag <= 5", name="ck_order_flag"),
        CheckConstraint(
            "goods_amount >= 0 AND discount_amount >= 0 AND post_fee >= 0 AND paid_amount >= 0"
            " AND cost_amount >= 0",
            name="ck_order_amounts_nonneg",
        ),
        # The list filters: status tabs by paid time, shop + status, modified time.
        # ``id`` breaks ties in the grid's keyset order (paid_at DESC, id DESC), so a
        # page is one index range scan with no sort, page 1 or page 200: per status
        # tab, per shop and tab, the 全部 tab (paid_at, id), and 异常 (is_held, ...).
        Index("ix_order_status_paid", "status", "paid_at", "id"),
        Index("ix_order_shop_status_paid", "shop_id", "status", "paid_at", "id"),
        Index("ix_order_paid", "paid_at", "id"),
        Index("ix_order_updated", "updated_at"),
        # Sparse columns get partial indexes (migration 0015): a new order (not held, no
        # write-back, no tracking number, not split) adds no entry to them, and they stay
        # small. Each predicate is implied by the queries that use it: 异常 by the bare
        # ``is_held`` (order_grid; not ``IS true``, which PostgreSQL cannot match), write-back jobs and exceptions by
        # ``writeback_status = 'pending' / 'failed'``, lookups by ``= value``.
        Index("ix_order_held", "paid_at", "id", postgresql_where=text("is_held"), sqlite_where=text("is_held")),
        Index("ix_order_writeback", "writeback_status",
              postgresql_where=text("writeback_status IN ('pending', 'failed')"),
              sqlite_where=text("writeback_status IS NOT NULL")),  # SQLite proves only IS NOT NULL
        Index("ix_oms_order_tracking_number", "tracking_number", postgresql_where=text("tracking_number IS NOT NULL"),
              sqlite_where=text("tracking_number IS NOT NULL")),
        Index("ix_oms_order_split_from_id", "split_from_id", postgresql_where=text("split_from_id IS NOT NULL"),
              sqlite_where=text("split_from_id IS NOT NULL")),
        CheckConstraint("writeback_status IN ('pending','done','failed')", name="ck_order_writeback"),
    )

    id = Column(Integer, primary_key=True)
    shop_id = Column(Integer, ForeignKey("oms_shop.id"), nullable=False)
    shop = relationship("Shop", info=col_info(_l("Shop")))
    platform = Column(String(16), nullable=False, info=col_info(_l("Platform")))
    platform_order_id = Column(String(64), nullable=False, info=col_info(_l("Order number")))
    status = Column(String(20), nullable=False, default="pending_payment", info=col_info(_l("Status")))
    platform_status = Column(String(64), info=col_info(_l("Platform status")))
    is_held = Column(Boolean, nullable=False, default=False, info=col_info(_l("On hold")))

    goods_amount = Column(Money, nullable=False, default=ZERO, info=col_info(_l("Goods amount")))
    discount_amount = Column(Money, nullable=False, default=ZERO, info=col_info(_l("Discount")))
    post_fee = Column(Money, nullable=False, default=ZERO, info=col_info(_l("Postage")))
    paid_amount = Column(Money, nullable=False, default=ZERO, info=col_info(_l("Paid amount")))
    cost_amount = Column(Money, nullable=False, default=ZERO, info=col_info(_l("Cost"), "finance"))

    buyer_nick = Column(String(100), index=True, info=col_info(_l("Buyer nick")))
    receiver_name = Column(EncryptedText("pii"), info=col_info(_l("Receiver"), "pii", mask="name"))
    receiver_phone = Column(EncryptedText("pii"), info=col_info(_l("Receiver phone"), "pii", mask="phone"))
    receiver_phone_hash = Column(String(64), index=True, info=col_info(_l("Phone hash"), hidden=True))
    receiver_province = Column(String(32), index=True, info=col_info(_l("Province")))
    receiver_city = Column(String(32), info=col_info(_l("City")))
    receiver_district = Column(String(32), info=col_info(_l("District")))
    receiver_address = Column(
        EncryptedText("pii"), info=col_info(_l("Address detail"), "pii", mask="address")
    )
    receiver_zip = Column(String(16), info=col_info(_l("Postcode")))
    buyer_message = Column(Text, info=col_info(_l("Buyer message")))
    seller_memo = Column(Text, info=col_info(_l("Seller memo")))
    flag = Column(Integer, nullable=False, default=0, info=col_info(_l("Flag")))
    close_reason = Column(String(200), info=col_info(_l("Close reason")))

    platform_created_at = Column(UTCDateTime, info=col_info(_l("Created on platform")))
    paid_at = Column(UTCDateTime, info=col_info(_l("Paid at")))
    platform_modified_at = Column(UTCDateTime, info=col_info(_l("Modified on platform")))
    # Hash of the last platform payload applied: an unchanged re-sync skips the order.
    platform_hash = Column(String(64), info=col_info(_l("Platform checksum"), hidden=True))
    audited_at = Column(UTCDateTime, info=col_info(_l("Audited at")))
    shipped_at = Column(UTCDateTime, info=col_info(_l("Shipped at")))
    completed_at = Column(UTCDateTime, info=col_info(_l("Completed at")))
    closed_at = Column(UTCDateTime, info=col_info(_l("Closed at")))
    created_at = Column(UTCDateTime, nullable=False, default=utcnow, info=col_info(_l("Created at")))
    updated_at = Column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow,
                        info=col_info(_l("Updated at")))

    warehouse_id = Column(Integer, ForeignKey("oms_warehouse.id"))
    warehouse = relationship("Warehouse", info=col_info(_l("Warehouse")))
    # Why this warehouse (services/warehouse_choice.py), e.g. "杭州仓：覆盖浙江、库存齐全、优先级1".
    warehouse_reason = Column(String(500), info=col_info(_l("Warehouse choice")))
    carrier_id = Column(Integer, ForeignKey("oms_carrier.id"))
    carrier = relationship("Carrier", info=col_info(_l("Carrier")))
    # The 快递规则 that chose the carrier (services/carrier_rules.py); NULL when chosen by hand.
    carrier_rule_id = Column(Integer, ForeignKey("oms_carrier_rule.id", ondelete="SET NULL",
                                                 name="fk_order_carrier_rule"))
    carrier_rule = relationship("CarrierRule", info=col_info(_l("Carrier rule")))
    tracking_number = Column(String(64), info=col_info(_l("Tracking number")))
    # 发货回传: pending → done, or failed with a zh reason (and retried).
    writeback_status = Column(String(16), info=col_info(_l("Write-back")))
    writeback_error = Column(Text, info=col_info(_l("Write-back error")))
    writeback_at = Column(UTCDateTime, info=col_info(_l("Written back at")))
    # 拆分订单 (services/order_split.py): a part split off here points to the original
    # platform trade (always the root, even when a part is split again); the platform
    # knows only the root's order number, so write-back and re-sync go through the root.
    split_from_id = Column(Integer, ForeignKey("oms_order.id", name="fk_order_split_from"),
                           info=col_info(_l("Split from")))
    split_from = relationship("Order", remote_side=[id], foreign_keys=[split_from_id],
                              info=col_info(_l("Split from")))
    customer_id = Column(Integer, ForeignKey("oms_customer.id"), index=True)
    customer = relationship("Customer", back_populates="orders", info=col_info(_l("Customer")))
    is_returning_customer = Column(Boolean, nullable=False, default=False,
                                   info=col_info(_l("Returning customer")))

    lines = relationship("OrderLine", back_populates="order", cascade="all, delete-orphan",
                         order_by="OrderLine.id", info=col_info(_l("Order lines")))
    holds = relationship("OrderHold", back_populates="order", cascade="all, delete-orphan",
                         order_by="OrderHold.id", info=col_info(_l("Holds")))
    events = relationship("OrderEvent", back_populates="order", cascade="all, delete-orphan",
                          order_by="OrderEvent.id", info=col_info(_l("Order events")))

    @property
    def profit(self):
        return (self.paid_amount or ZERO) - (self.cost_amount or ZERO)

    @property
    def status_label(self) -> str:
        return str(ORDER_STATUSES.get(self.status, self.status))

    @property
    def active_hold_reasons(self) -> list[str]:
        return [h.reason for h in self.holds if h.released_at is None]

    def __repr__(self) -> str:
        return self.platform_order_id or ""


class OrderLine(Model):
    """子订单/订单明细: one item line of an order."""

    __tablename__ = "oms_order_line"
    __table_args__ = (
        UniqueConstraint("order_id", "platform_line_id", name="uq_line_order_platform_id"),
        CheckConstraint("quantity > 0", name="ck_line_qty_pos"),
        CheckConstraint("price >= 0 AND paid_amount >= 0 AND cost_price >= 0", name="ck_line_amounts_nonneg"),
    )
    id = Column(Integer, primary_key=True)
    order_id = Column(Integer, ForeignKey("oms_order.id", ondelete="CASCADE"), nullable=False)
    order = relationship("Order", back_populates="lines", info=col_info(_l("Order")))
    platform_line_id = Column(String(64), nullable=False, info=col_info(_l("Line ID")))
    merchant_code = Column(String(64), index=True, info=col_info(_l("Merchant code")))
    sku_id = Column(Integer, ForeignKey("oms_sku.id"), index=True)
    sku = relationship("Sku", info=col_info(_l("SKU")))
    title = Column(String(255), nullable=False, info=col_info(_l("Title")))
    spec = Column(String(255), info=col_info(_l("Spec")))
    quantity = Column(Integer, nullable=False, default=1, info=col_info(_l("Quantity")))
    price = Column(Money, nullable=False, default=ZERO, info=col_info(_l("Price")))
    paid_amount = Column(Money, nullable=False, default=ZERO, info=col_info(_l("Paid amount")))
    cost_price = Column(Money, nullable=False, default=ZERO, info=col_info(_l("Cost price"), "finance"))
    refund_status = Column(String(32), info=col_info(_l("Refund status")))
    # Where this line's stock is reserved (a split order ships from several warehouses).
    warehouse_id = Column(Integer, ForeignKey("oms_warehouse.id"))
    warehouse = relationship("Warehouse", info=col_info(_l("Shipping warehouse")))

    def __repr__(self) -> str:
        return f"{self.title} × {self.quantity}"


class OrderHold(Model):
    """挂起/异常: a reason that stops an order from moving on, until released."""

    __tablename__ = "oms_order_hold"
    __table_args__ = (CheckConstraint(_in_list("reason", HOLD_REASONS), name="ck_hold_reason"),)
    id = Column(Integer, primary_key=True)
    order_id = Column(Integer, ForeignKey("oms_order.id", ondelete="CASCADE"), nullable=False, index=True)
    order = relationship("Order", back_populates="holds", info=col_info(_l("Order")))
    reason = Column(String(32), nullable=False, info=col_info(_l("Hold reason")))
    note = Column(String(500), info=col_info(_l("Note")))
    created_at = Column(UTCDateTime, nullable=False, default=utcnow, info=col_info(_l("Held at")))
    created_by_id = Column(Integer, ForeignKey("ab_user.id"))
    released_at = Column(UTCDateTime, info=col_info(_l("Released at")))
    released_by_id = Column(Integer, ForeignKey("ab_user.id"))

    @property
    def reason_label(self) -> str:
        return str(HOLD_REASONS.get(self.reason, self.reason))


class OrderEvent(Model):
    """The audit trail: who changed what on an order, when, old → new, and from where."""

    __tablename__ = "oms_order_event"
    __table_args__ = (
        CheckConstraint(_in_list("source", EVENT_SOURCES), name="ck_event_source"),
        Index("ix_event_order_time", "order_id", "created_at"),
    )
    id = Column(Integer, primary_key=True)
    order_id = Column(Integer, ForeignKey("oms_order.id", ondelete="CASCADE"), nullable=False)
    order = relationship("Order", back_populates="events", info=col_info(_l("Order")))
    created_at = Column(UTCDateTime, nullable=False, default=utcnow, info=col_info(_l("Time")))
    user_id = Column(Integer, ForeignKey("ab_user.id"))
    user = relationship("OmsUser", info=col_info(_l("User")))
    source = Column(String(16), nullable=False, default="user", info=col_info(_l("Source")))
    action = Column(String(32), nullable=False, info=col_info(_l("Action")))
    field = Column(String(64), info=col_info(_l("Field")))
    old_value = Column(Text, info=col_info(_l("Old value")))
    new_value = Column(Text, info=col_info(_l("New value")))
    note = Column(Text, info=col_info(_l("Note")))


class PiiAccessLog(Model):
    """Every reveal of masked buyer data: who, what, when, from where."""

    __tablename__ = "oms_pii_access_log"
    id = Column(Integer, primary_key=True)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow, index=True, info=col_info(_l("Time")))
    user_id = Column(Integer, ForeignKey("ab_user.id"), nullable=False)
    user = relationship("OmsUser", info=col_info(_l("User")))
    entity = Column(String(32), nullable=False, info=col_info(_l("Entity")))
    entity_id = Column(Integer, nullable=False, info=col_info(_l("Record ID")))
    fields = Column(String(255), nullable=False, info=col_info(_l("Fields")))
    purpose = Column(String(32), nullable=False, default="view", info=col_info(_l("Purpose")))
    remote_addr = Column(String(64), info=col_info(_l("IP address")))
