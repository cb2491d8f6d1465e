"""库存预警: one alert per fall of a SKU's available stock to its threshold (预警值).

An alert is *open* (``recovered_at`` NULL) while the SKU stays at or below its
threshold; it is closed when available recovers above it, which re-arms the
SKU. A partial unique index allows at most one open alert per SKU, so two
concurrent evaluations can never raise the same alert twice.
"""
from __future__ import annotations

from flask_babel import lazy_gettext as _l
from sqlalchemy import Column, ForeignKey, Index, Integer, UniqueConstraint, text
from sqlalchemy.orm import relationship

from .base import Model, col_info
from .types import UTCDateTime, utcnow


class StockAlert(Model):
    __tablename__ = "oms_stock_alert"
    __table_args__ = (
        Index("uq_stock_alert_open", "sku_id", unique=True,
              sqlite_where=text("recovered_at IS NULL"), postgresql_where=text("recovered_at IS NULL")),
        Index("ix_stock_alert_created", "created_at"),
    )
    id = Column(Integer, primary_key=True)
    sku_id = Column(Integer, ForeignKey("oms_sku.id", ondelete="CASCADE"), nullable=False, index=True)
    sku = relationship("Sku", info=col_info(_l("SKU")))
    threshold = Column(Integer, nullable=False, info=col_info(_l("Low-stock threshold")))
    available = Column(Integer, nullable=False, info=col_info(_l("Available")))
    created_at = Column(UTCDateTime, nullable=False, default=utcnow, info=col_info(_l("Alerted at")))
    recovered_at = Column(UTCDateTime, info=col_info(_l("Recovered at")))
    recovered_available = Column(Integer, info=col_info(_l("Available at recovery")))


class StockAlertRead(Model):
    """A user has read (dismissed) an alert in the notification area."""

    __tablename__ = "oms_stock_alert_read"
    __table_args__ = (UniqueConstraint("alert_id", "user_id", name="uq_stock_alert_read"),)
    id = Column(Integer, primary_key=True)
    alert_id = Column(Integer, ForeignKey("oms_stock_alert.id", ondelete="CASCADE"), nullable=False)
    user_id = Column(Integer, ForeignKey("ab_user.id", ondelete="CASCADE"), nullable=False, index=True)
    read_at = Column(UTCDateTime, nullable=False, default=utcnow)
