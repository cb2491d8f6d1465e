"""物流异常: parcels that need a person, each with its reason, assignee and resolution.

Rules (thresholds from config, OMS_TRACKING_NO_PICKUP_HOURS / OMS_TRACKING_STALL_HOURS):
* ``no_pickup``: no tracking event within 24 h of shipping;
* ``stalled``: no new event for 48 h (not once signed or return-signed);
* the states 疑难 (``problem``), 退签 (``return_signed``), 退回 (``returning``),
  and also 拒签 (``refused``) and 清关异常 (``customs_problem``).

Detected by every poll (services/tracking.py) and by a periodic check
(app/jobs/tracking.py) that catches the time rules when polls fail. At most one
open entry per parcel and reason (a partial unique index backs the check).
``no_pickup`` and ``stalled`` entries close themselves when the parcel moves
again (resolution written by the system); the state entries stay open until a
person resolves them.
"""
from __future__ import annotations

import datetime as dt
from typing import Optional

from flask import current_app
from sqlalchemy import and_, exists, or_, select
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.models import OmsUser
from app.models.tracking import EXCEPTION_REASONS, FINAL_STATES, LogisticsException, Parcel, ParcelEvent
from app.models.types import utcnow

from .errors import NotFound, ValidationError
from .scope import as_scope

STATE_REASONS = {"problem": "疑难", "return_signed": "退签", "returning": "退回", "refused": "拒签",
                 "customs_problem": "清关异常"}
REASON_ZH = {"no_pickup": "超时未揽收", "stalled": "超时未更新", **STATE_REASONS}
assert set(REASON_ZH) == set(EXCEPTION_REASONS)


def thresholds() -> tuple[dt.timedelta, dt.timedelta]:
    cfg = current_app.config
    return (dt.timedelta(hours=float(cfg.get("OMS_TRACKING_NO_PICKUP_HOURS") or 24)),
            dt.timedelta(hours=float(cfg.get("OMS_TRACKING_STALL_HOURS") or 48)))


def _hours(delta: dt.timedelta) -> str:
    return f"{delta.total_seconds() / 3600:g}"


def _open(parcel: Parcel, reason: str) -> Optional[LogisticsException]:
    return db.session.execute(select(LogisticsException).where(
        LogisticsException.parcel_id == parcel.id, LogisticsException.reason == reason,
        LogisticsException.status == "open")).scalar_one_or_none()


def _latest_context(parcel: Parcel) -> str:
    text = db.session.execute(select(ParcelEvent.context).where(ParcelEvent.parcel_id == parcel.id)
                              .order_by(ParcelEvent.event_time.desc(), ParcelEvent.id.desc()).limit(1)).scalar()
    return (text or "")[:120]


def raise_exception(parcel: Parcel, reason: str, detail: str, now: dt.datetime) -> Optional[LogisticsException]:
    """Open an entry unless one is open for this parcel and reason; the caller commits."""
    if _open(parcel, reason) is not None:
        return None
    entry = LogisticsException(parcel_id=parcel.id, order_id=parcel.order_id, reason=reason, detail=detail,
                               status="open", detected_at=now)
    try:
        with db.session.begin_nested():
            db.session.add(entry)
    except IntegrityError:  # another poller or the periodic check was first
        return None
    return entry


def _auto_resolve(parcel: Parcel, reason: str, note: str, now: dt.datetime) -> None:
    entry = _open(parcel, reason)
    if entry is not None:
        entry.status = "resolved"
        entry.resolved_at = now
        entry.resolution = note


def evaluate_parcel(parcel: Parcel, now: Optional[dt.datetime] = None) -> list[LogisticsException]:
    """Apply every rule to one parcel; the caller commits. Returns the new entries."""
    now = now or utcnow()
    db.session.flush()
    no_pickup, stall = thresholds()
    made = []
    if parcel.state in STATE_REASONS:
        latest = _latest_context(parcel)
        entry = raise_exception(parcel, parcel.state,
                                f"快递状态为「{STATE_REASONS[parcel.state]}」" + (f"：{latest}" if latest else ""), now)
        made.append(entry)
    if parcel.picked_up_at is None:
        waited = now - parcel.shipped_at
        if waited >= no_pickup:
            made.append(raise_exception(parcel, "no_pickup", f"发货 {waited.total_seconds() / 3600:.0f} 小时仍未揽收"
                                        f"（阈值 {_hours(no_pickup)} 小时）", now))
    else:
        _auto_resolve(parcel, "no_pickup", f"系统：已于 {_cn(parcel.picked_up_at)} 揽收", now)
    if parcel.state not in FINAL_STATES and parcel.last_event_at is not None:
        quiet = now - parcel.last_event_at
        if quiet >= stall:
            latest = _latest_context(parcel)
            made.append(raise_exception(parcel, "stalled", f"已 {quiet.total_seconds() / 3600:.0f} 小时没有新的物流轨迹"
                                        f"（阈值 {_hours(stall)} 小时）" + (f"，最后一条：{latest}" if latest else ""),
                                        now))
        else:
            _auto_resolve(parcel, "stalled", f"系统：{_cn(parcel.last_event_at)} 起恢复更新", now)
    elif parcel.state in FINAL_STATES:
        _auto_resolve(parcel, "stalled", "系统：包裹已签收或退签", now)
    return [e for e in made if e is not None]


def _cn(moment: dt.datetime) -> str:
    from app.platforms.common import cn_text

    return cn_text(moment)[:16]


def check_all(now: Optional[dt.datetime] = None, limit: int = 5000) -> dict:
    """The periodic check of the time rules over every parcel still travelling."""
    now = now or utcnow()
    no_pickup, stall = thresholds()
    max_days = dt.timedelta(days=float(current_app.config.get("OMS_TRACKING_MAX_DAYS") or 30))
    with as_scope(None):
        open_for = lambda reason: exists().where(  # noqa: E731
            LogisticsException.parcel_id == Parcel.id, LogisticsException.reason == reason,
            LogisticsException.status == "open")
        candidates = db.session.scalars(select(Parcel).where(
            Parcel.state.notin_(FINAL_STATES), Parcel.shipped_at >= now - max_days - stall,
            or_(and_(Parcel.picked_up_at.is_(None), Parcel.shipped_at <= now - no_pickup, ~open_for("no_pickup")),
                and_(Parcel.last_event_at.is_not(None), Parcel.last_event_at <= now - stall, ~open_for("stalled"))),
        ).order_by(Parcel.id).limit(limit)).all()
        made = []
        for parcel in candidates:
            made.extend(evaluate_parcel(parcel, now))
        db.session.commit()
    counts: dict[str, int] = {}
    for e in made:
        counts[e.reason] = counts.get(e.reason, 0) + 1
    return {"checked": len(candidates), "opened": counts}


# --- editing (the 物流异常 page) ---------------------------------------------------------------
def update_entry(entry_id: int, changes: dict, *, user_id: Optional[int]) -> LogisticsException:
    """Assign, note a resolution, resolve or reopen one entry (row scope applies:
    an entry of another shop's order is not found). Owns its transaction.

    ``changes``: ``assignee_id`` (a user id or None), ``resolution`` (text),
    ``resolved_at`` (aware datetime or None). An entry is resolved when it has a
    resolution time, which needs a resolution note; a note alone keeps it open."""
    entry = db.session.execute(select(LogisticsException).where(LogisticsException.id == entry_id)) \
        .scalar_one_or_none()
    if entry is None:
        raise NotFound(f"物流异常 #{entry_id} 不存在或无权访问")
    unknown = set(changes) - {"assignee_id", "resolution", "resolved_at"}
    if unknown:
        raise ValidationError(f"物流异常不能修改这些字段：{'、'.join(sorted(unknown))}", sorted(unknown)[0])
    if "assignee_id" in changes:
        aid = changes["assignee_id"]
        if aid is not None:
            user = db.session.get(OmsUser, int(aid))
            if user is None or not user.active:
                raise ValidationError(f"处理人不存在或已停用（用户 #{aid}）", "assignee")
        entry.assignee_id = aid
    if "resolution" in changes:
        text = (changes["resolution"] or "").strip()
        if len(text) > 2000:
            raise ValidationError("处理结果最多 2000 个字符", "resolution")
        entry.resolution = text or None
    if "resolved_at" in changes:
        when = changes["resolved_at"]
        if when is not None:
            if when.tzinfo is None:
                raise ValidationError("处理时间必须带时区", "resolved_at")
            if when > utcnow() + dt.timedelta(minutes=5):
                raise ValidationError("处理时间不能晚于现在", "resolved_at")
            if when < entry.detected_at.replace(microsecond=0):  # the form has whole seconds
                raise ValidationError("处理时间不能早于发现时间", "resolved_at")
        entry.resolved_at = when
    if entry.resolved_at is not None and not entry.resolution:
        raise ValidationError("标记为已处理前请填写处理结果", "resolution")
    if entry.resolved_at is not None:
        if entry.status != "resolved":
            entry.resolved_by_id = user_id
        entry.status = "resolved"
    else:
        if entry.status == "resolved" and _other_open(entry):
            raise ValidationError("该包裹已有同类的未处理异常，不能重新打开", "resolved_at")
        entry.status = "open"
        entry.resolved_by_id = None
    db.session.commit()
    return entry


def _other_open(entry: LogisticsException) -> bool:
    return db.session.execute(select(LogisticsException.id).where(
        LogisticsException.parcel_id == entry.parcel_id, LogisticsException.reason == entry.reason,
        LogisticsException.status == "open", LogisticsException.id != entry.id)).first() is not None
