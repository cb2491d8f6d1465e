"""Maintained order counters for the status tabs (待付款 … 已关闭, 异常).

``oms_order_count_delta`` is insert-only for writers: database triggers on
``oms_order`` (migration 0005, PostgreSQL and SQLite) add one row per change of
(shop, platform, status, is_held) with ``n`` = +k / −k, so concurrent transactions
never update a shared counter row (no hot-row locks, no deadlocks) and a rollback
takes its deltas with it. The count of a group is ``sum(n)`` over its rows; a
periodic compaction (services/order_counts.compact) folds the rows into one per
group. Python never writes this table except through that service.
"""
from __future__ import annotations

from flask_babel import lazy_gettext as _l
from sqlalchemy import BigInteger, Boolean, Column, Integer, String

from .base import Model, col_info


class OrderCountDelta(Model):
    """One signed change of the number of orders in one (shop, platform, status, is_held) group."""

    __tablename__ = "oms_order_count_delta"

    # BIGINT on PostgreSQL (rows are inserted and deleted for ever); SQLite needs
    # INTEGER for an auto-incrementing primary key.
    id = Column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    # No foreign key: a counter row must never block or lock a shop, and the
    # deltas of a deleted shop's orders sum to 0 and vanish at the next compaction.
    shop_id = Column(Integer, nullable=False, info=col_info(_l("Shop")))
    platform = Column(String(16), nullable=False, info=col_info(_l("Platform")))
    status = Column(String(20), nullable=False, info=col_info(_l("Status")))
    is_held = Column(Boolean, nullable=False, info=col_info(_l("On hold")))
    n = Column(Integer, nullable=False, info=col_info(_l("Quantity")))

    def __repr__(self) -> str:
        return f"{self.shop_id}/{self.platform}/{self.status}/{int(bool(self.is_held))}: {self.n:+d}"
