from __future__ import annotations

from flask_babel import lazy_gettext as _l
from sqlalchemy import CheckConstraint, Column, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import relationship

from .base import Model, col_info
from .types import UTCDateTime, utcnow

SYNC_STATUSES = {
    "running": _l("Running"),
    "success": _l("Succeeded"),
    "failed": _l("Failed"),
}


class SyncRun(Model):
    """同步记录: one incremental pull of one shop, with its window, counts and errors."""

    __tablename__ = "oms_sync_run"
    __table_args__ = (
        CheckConstraint("status IN ('running','success','failed')", name="ck_sync_run_status"),
        Index("ix_sync_run_shop_started", "shop_id", "started_at"),
    )
    id = Column(Integer, primary_key=True)
    shop_id = Column(Integer, ForeignKey("oms_shop.id", ondelete="CASCADE"), nullable=False)
    shop = relationship("Shop", info=col_info(_l("Shop")))
    trigger = Column(String(16), nullable=False, default="schedule", info=col_info(_l("Trigger")))
    status = Column(String(16), nullable=False, default="running", info=col_info(_l("Status")))
    started_at = Column(UTCDateTime, nullable=False, default=utcnow, info=col_info(_l("Started at")))
    finished_at = Column(UTCDateTime, info=col_info(_l("Finished at")))
    window_start = Column(UTCDateTime, info=col_info(_l("Window start")))
    window_end = Column(UTCDateTime, info=col_info(_l("Window end")))
    pages = Column(Integer, nullable=False, default=0, info=col_info(_l("Pages")))
    fetched = Column(Integer, nullable=False, default=0, info=col_info(_l("Fetched")))
    created = Column(Integer, nullable=False, default=0, info=col_info(_l("Created")))
    updated = Column(Integer, nullable=False, default=0, info=col_info(_l("Updated")))
    unchanged = Column(Integer, nullable=False, default=0, info=col_info(_l("Unchanged")))
    retries = Column(Integer, nullable=False, default=0, info=col_info(_l("Retries")))
    # platform orders this run could not save (oms_sync_reject): the run goes on without them
    rejected = Column(Integer, nullable=False, default=0, server_default="0", info=col_info(_l("Rejected")))
    error = Column(Text, info=col_info(_l("Error")))

    @property
    def duration_seconds(self):
        if not self.finished_at or not self.started_at:
            return None
        return round((self.finished_at - self.started_at).total_seconds(), 1)

    @property
    def shop_scope_id(self):
        return self.shop_id


class SyncReject(Model):
    """无法保存的平台订单: a platform order the sync could not save (a value no order may hold,
    such as a quantity of 0 or a negative amount). The shop's sync goes on without it; the
    order is applied again whenever the platform lists it again, and the sync asks the
    platform for it again every ``RETRY_AFTER`` (services/sync.py). Saved: the row goes."""

    __tablename__ = "oms_sync_reject"
    __table_args__ = (
        UniqueConstraint("shop_id", "platform_order_id", name="uq_sync_reject_shop_order"),
    )
    id = Column(Integer, primary_key=True)
    shop_id = Column(Integer, ForeignKey("oms_shop.id", ondelete="CASCADE"), nullable=False)
    shop = relationship("Shop", info=col_info(_l("Shop")))
    platform_order_id = Column(String(64), nullable=False, info=col_info(_l("Order number")))
    error = Column(Text, nullable=False, info=col_info(_l("Error")))
    first_seen_at = Column(UTCDateTime, nullable=False, default=utcnow, info=col_info(_l("First seen at")))
    last_seen_at = Column(UTCDateTime, nullable=False, default=utcnow, info=col_info(_l("Last seen at")))
    last_tried_at = Column(UTCDateTime, info=col_info(_l("Last retried at")))
    times_seen = Column(Integer, nullable=False, default=1, info=col_info(_l("Times seen")))

    @property
    def shop_scope_id(self):
        return self.shop_id
