"""Parcel tracking (物流轨迹) and logistics exceptions (物流异常), issue #6.

One Parcel per shipped order's tracking number; its events come from Kuaidi100
(services/tracking.py polls); exceptions are raised by services/logistics_exceptions.py.
"""
from __future__ import annotations

from flask_babel import lazy_gettext as _l
from sqlalchemy import CheckConstraint, Column, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import relationship

from .base import Model, col_info
from .types import UTCDateTime, utcnow

# Our tracking states; Kuaidi100 state codes map onto them (platforms/kuaidi100.py).
TRACKING_STATES = {
    "pending": _l("Awaiting pickup"),       # 待揽收: shipped, no event yet
    "collected": _l("Picked up"),           # 揽收 (1)
    "in_transit": _l("In transit"),         # 在途 (0)
    "delivering": _l("Out for delivery"),   # 派件 (5)
    "signed": _l("Signed for"),             # 签收 (3)
    "problem": _l("Problem parcel"),        # 疑难 (2)
    "return_signed": _l("Return signed"),   # 退签 (4)
    "returning": _l("Returning"),           # 退回 (6)
    "redirected": _l("Redirected"),         # 转投 (7)
    "customs": _l("Customs clearance"),     # 待清关/清关中/已清关 (10-12)
    "customs_problem": _l("Customs problem"),  # 清关异常 (13)
    "refused": _l("Refused"),               # 拒签 (14)
}
# Polling stops in these states.
FINAL_STATES = ("signed", "return_signed")

EXCEPTION_REASONS = {
    "no_pickup": _l("No pickup"),            # 发货后超时未揽收
    "stalled": _l("No update"),              # 超时未更新
    "problem": _l("Problem parcel"),         # 疑难
    "return_signed": _l("Return signed"),    # 退签
    "returning": _l("Returning"),            # 退回
    "refused": _l("Refused"),                # 拒签
    "customs_problem": _l("Customs problem"),  # 清关异常
}
EXCEPTION_STATUSES = {"open": _l("Open"), "resolved": _l("Resolved")}


def _in_list(column: str, values) -> str:
    return "%s IN (%s)" % (column, ",".join(f"'{v}'" for v in values))


class Parcel(Model):
    """包裹: one tracking number of a shipped order, tracked at Kuaidi100."""

    __tablename__ = "oms_parcel"
    __table_args__ = (
        UniqueConstraint("order_id", "tracking_number", name="uq_parcel_order_number"),
        CheckConstraint(_in_list("state", TRACKING_STATES), name="ck_parcel_state"),
        # The poller's due list: one index range scan.
        Index("ix_parcel_next_poll", "next_poll_at"),
    )

    id = Column(Integer, primary_key=True)
    order_id = Column(Integer, ForeignKey("oms_order.id", ondelete="CASCADE"), nullable=False, index=True)
    order = relationship("Order", info=col_info(_l("Order")))
    carrier_id = Column(Integer, ForeignKey("oms_carrier.id"))
    carrier = relationship("Carrier", info=col_info(_l("Carrier")))
    tracking_number = Column(String(64), nullable=False, index=True, info=col_info(_l("Tracking number")))
    # Kuaidi100 ``com`` used for the queries (from the carrier when tracking started).
    kuaidi100_code = Column(String(32), info=col_info(_l("Kuaidi100 code")))
    state = Column(String(20), nullable=False, default="pending", info=col_info(_l("Tracking state")))
    state_code = Column(String(8), info=col_info(_l("Kuaidi100 state")))
    shipped_at = Column(UTCDateTime, nullable=False, index=True, info=col_info(_l("Shipped at")))
    picked_up_at = Column(UTCDateTime, info=col_info(_l("Picked up at")))
    last_event_at = Column(UTCDateTime, info=col_info(_l("Last event at")))
    signed_at = Column(UTCDateTime, info=col_info(_l("Signed at")))
    last_polled_at = Column(UTCDateTime, info=col_info(_l("Last polled at")))
    # NULL: polling has stopped (signed, return signed, no Kuaidi100 code, too old).
    next_poll_at = Column(UTCDateTime, info=col_info(_l("Next poll at")))
    poll_errors = Column(Integer, nullable=False, default=0, info=col_info(_l("Consecutive errors")))
    last_error = Column(Text, info=col_info(_l("Last error")))
    created_at = Column(UTCDateTime, nullable=False, default=utcnow, info=col_info(_l("Created at")))

    events = relationship("ParcelEvent", back_populates="parcel", cascade="all, delete-orphan",
                          order_by="ParcelEvent.event_time.desc()", info=col_info(_l("Tracking events")))

    @property
    def state_label(self) -> str:
        return str(TRACKING_STATES.get(self.state, self.state))

    def __repr__(self) -> str:
        return self.tracking_number or ""


class ParcelEvent(Model):
    """物流轨迹: one step of a parcel's journey, as the carrier reported it."""

    __tablename__ = "oms_parcel_event"
    __table_args__ = (
        # Kuaidi100 returns the whole history on every query: one row per (time, text).
        UniqueConstraint("parcel_id", "fingerprint", name="uq_parcel_event_fingerprint"),
        Index("ix_parcel_event_parcel_time", "parcel_id", "event_time"),
    )

    id = Column(Integer, primary_key=True)
    parcel_id = Column(Integer, ForeignKey("oms_parcel.id", ondelete="CASCADE"), nullable=False)
    parcel = relationship("Parcel", back_populates="events", info=col_info(_l("Parcel")))
    event_time = Column(UTCDateTime, nullable=False, info=col_info(_l("Time")))
    context = Column(Text, nullable=False, info=col_info(_l("Tracking detail")))
    area = Column(String(100), info=col_info(_l("Area")))
    status_text = Column(String(32), info=col_info(_l("Event status")))
    fingerprint = Column(String(40), nullable=False, info=col_info(_l("Fingerprint"), hidden=True))
    created_at = Column(UTCDateTime, nullable=False, default=utcnow, info=col_info(_l("Created at")))


class LogisticsException(Model):
    """物流异常: a parcel that needs a person, with its reason, assignee and resolution.
    At most one open entry per parcel and reason."""

    __tablename__ = "oms_logistics_exception"
    __table_args__ = (
        CheckConstraint(_in_list("reason", EXCEPTION_REASONS), name="ck_logistics_exception_reason"),
        CheckConstraint(_in_list("status", EXCEPTION_STATUSES), name="ck_logistics_exception_status"),
        Index("uq_logistics_exception_open", "parcel_id", "reason", unique=True,
              sqlite_where=text("status = 'open'"), postgresql_where=text("status = 'open'")),
        Index("ix_logistics_exception_status_detected", "status", "detected_at"),
    )

    id = Column(Integer, primary_key=True)
    parcel_id = Column(Integer, ForeignKey("oms_parcel.id", ondelete="CASCADE"), nullable=False)
    parcel = relationship("Parcel", info=col_info(_l("Parcel")))
    order_id = Column(Integer, ForeignKey("oms_order.id", ondelete="CASCADE"), nullable=False, index=True)
    order = relationship("Order", info=col_info(_l("Order")))
    reason = Column(String(24), nullable=False, info=col_info(_l("Exception reason")))
    detail = Column(Text, info=col_info(_l("Detail")))
    status = Column(String(16), nullable=False, default="open", info=col_info(_l("Status")))
    detected_at = Column(UTCDateTime, nullable=False, default=utcnow, info=col_info(_l("Detected at")))
    assignee_id = Column(Integer, ForeignKey("ab_user.id"))
    assignee = relationship("OmsUser", foreign_keys=[assignee_id], info=col_info(_l("Assignee")))
    resolution = Column(Text, info=col_info(_l("Resolution")))
    resolved_at = Column(UTCDateTime, info=col_info(_l("Resolved at")))
    resolved_by_id = Column(Integer, ForeignKey("ab_user.id"))
    resolved_by = relationship("OmsUser", foreign_keys=[resolved_by_id], info=col_info(_l("Resolved by")))

    @property
    def reason_label(self) -> str:
        return str(EXCEPTION_REASONS.get(self.reason, self.reason))
