from __future__ import annotations

from flask_babel import lazy_gettext as _l
from sqlalchemy import (
    Boolean, CheckConstraint, Column, ForeignKey, Index, Integer, String, Text, UniqueConstraint,
)
from sqlalchemy.orm import relationship

from .base import Model, col_info
from .types import UTCDateTime, utcnow

MOVEMENT_TYPES = {
    "reserve": _l("Reserve"),
    "release": _l("Release"),
    "ship": _l("Ship"),
    "inbound": _l("Inbound"),
    "adjust": _l("Adjust"),
    "stocktake": _l("Stocktake"),
    "return": _l("Return"),
}


class Warehouse(Model):
    """仓库: a place that holds stock and ships."""

    __tablename__ = "oms_warehouse"
    id = Column(Integer, primary_key=True)
    code = Column(String(32), unique=True, nullable=False, info=col_info(_l("Warehouse code")))
    name = Column(String(100), unique=True, nullable=False, info=col_info(_l("Warehouse name")))
    province = Column(String(32), info=col_info(_l("Province")))
    city = Column(String(32), info=col_info(_l("City")))
    address = Column(String(255), info=col_info(_l("Address")))
    contact = Column(String(64), info=col_info(_l("Contact")))
    phone = Column(String(32), info=col_info(_l("Phone")))
    priority = Column(Integer, nullable=False, default=10, info=col_info(_l("Priority")))
    active = Column(Boolean, nullable=False, default=True, info=col_info(_l("Active")))

    @property
    def coverage_label(self) -> str:
        """覆盖范围 in one line: the provinces, 全国, or 全国（未设置） without rows."""
        from flask_babel import gettext

        provinces = [c.province for c in self.coverage]
        if not provinces:
            return gettext("Nationwide (not set)")
        if "全国" in provinces:
            return "全国"
        return "、".join(provinces)

    def __repr__(self) -> str:
        return self.name or ""


class Stock(Model):
    """库存 per warehouse × SKU. Only the stock service writes it, always with a movement."""

    __tablename__ = "oms_stock"
    __table_args__ = (
        UniqueConstraint("warehouse_id", "sku_id", name="uq_stock_wh_sku"),
        CheckConstraint("on_hand >= 0", name="ck_stock_on_hand_nonneg"),
        CheckConstraint("reserved >= 0", name="ck_stock_reserved_nonneg"),
        # Never oversold: the database itself refuses reserving more than is on hand.
        CheckConstraint("reserved <= on_hand", name="ck_stock_reserved_le_on_hand"),
    )
    id = Column(Integer, primary_key=True)
    warehouse_id = Column(Integer, ForeignKey("oms_warehouse.id"), nullable=False)
    sku_id = Column(Integer, ForeignKey("oms_sku.id"), nullable=False, index=True)
    on_hand = Column(Integer, nullable=False, default=0, info=col_info(_l("On hand")))
    reserved = Column(Integer, nullable=False, default=0, info=col_info(_l("Reserved")))
    updated_at = Column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow,
                        info=col_info(_l("Updated at")))
    warehouse = relationship("Warehouse", info=col_info(_l("Warehouse")))
    sku = relationship("Sku", info=col_info(_l("SKU")))

    @property
    def available(self) -> int:
        return (self.on_hand or 0) - (self.reserved or 0)


class StockMovement(Model):
    """库存流水: one signed change of on-hand and/or reserved stock, with its source."""

    __tablename__ = "oms_stock_movement"
    __table_args__ = (
        CheckConstraint(
            "movement_type IN (%s)" % ",".join(f"'{t}'" for t in MOVEMENT_TYPES),
            name="ck_movement_type",
        ),
        Index("ix_movement_sku_wh_time", "sku_id", "warehouse_id", "created_at"),
    )
    id = Column(Integer, primary_key=True)
    warehouse_id = Column(Integer, ForeignKey("oms_warehouse.id"), nullable=False)
    sku_id = Column(Integer, ForeignKey("oms_sku.id"), nullable=False)
    movement_type = Column(String(16), nullable=False, info=col_info(_l("Movement type")))
    on_hand_delta = Column(Integer, nullable=False, default=0, info=col_info(_l("On-hand change")))
    reserved_delta = Column(Integer, nullable=False, default=0, info=col_info(_l("Reserved change")))
    order_id = Column(Integer, ForeignKey("oms_order.id"), index=True)
    source_ref = Column(String(100), info=col_info(_l("Source document")))
    user_id = Column(Integer, ForeignKey("ab_user.id"))
    note = Column(Text, info=col_info(_l("Note")))
    created_at = Column(UTCDateTime, nullable=False, default=utcnow, info=col_info(_l("Time")))
    warehouse = relationship("Warehouse", info=col_info(_l("Warehouse")))
    sku = relationship("Sku", info=col_info(_l("SKU")))
    order = relationship("Order", info=col_info(_l("Order")))
    user = relationship("OmsUser", info=col_info(_l("User")))
