"""覆盖范围: which provinces a warehouse ships to (services/warehouse_choice.py).

One row per (warehouse, province). The province is the short name (浙江, 内蒙古,
广西 …) or 全国 (everywhere). A warehouse without any row covers 全国 as well: a
new or upgraded warehouse keeps shipping until someone narrows it, and the
warehouse page says so (覆盖范围：全国（未设置）). To stop a warehouse from
shipping at all, deactivate it.
"""
from __future__ import annotations

from flask_babel import lazy_gettext as _l
from sqlalchemy import CheckConstraint, Column, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import backref, relationship

from .base import Model, col_info


class WarehouseCoverage(Model):
    """覆盖范围: one province (or 全国) a warehouse serves."""

    __tablename__ = "oms_warehouse_coverage"
    __table_args__ = (
        UniqueConstraint("warehouse_id", "province", name="uq_coverage_wh_province"),
        CheckConstraint("province <> ''", name="ck_coverage_province_nonempty"),
    )
    id = Column(Integer, primary_key=True)
    warehouse_id = Column(Integer, ForeignKey("oms_warehouse.id", ondelete="CASCADE"), nullable=False,
                          index=True)
    warehouse = relationship("Warehouse", info=col_info(_l("Warehouse")),
                             backref=backref("coverage", cascade="all, delete-orphan",
                                             order_by="WarehouseCoverage.province",
                                             info=col_info(_l("Coverage"))))
    province = Column(String(16), nullable=False, info=col_info(_l("Covered province")))

    def __repr__(self) -> str:
        return self.province or ""
