"""Parcel tracking (物流轨迹): start on ship, poll Kuaidi100 adaptively, show the timeline.

* Shipping an order (order_status ``ship``) creates its Parcel in the same
  transaction (so a rolled-back ship tracks nothing), and after the commit a job
  polls it once at once (like the write-back, app/services/writeback.py).
* The dispatcher (app/jobs/tracking.py, every minute) claims parcels whose
  ``next_poll_at`` has come and queues polls. Each poll stores the new events,
  moves the parcel's state, detects 物流异常 (services/logistics_exceptions.py)
  and sets the next poll: often while 派件, every 2 h in transit, never again
  once 签收 or 退签; errors back off (10 min, 20 min, … up to 12 h).
* ``timeline_for_order`` feeds the order page; ``public_lookup`` the buyer-facing
  page (order number + last 4 phone digits, no PII).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
from typing import Optional

from flask import current_app
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from app.extensions import db
from app.models import Carrier, Order
from app.models.tracking import FINAL_STATES, TRACKING_STATES, Parcel, ParcelEvent
from app.models.types import utcnow
from app.platforms.kuaidi100 import PHONE_REQUIRED, TrackingError, TrackingResult, client_from_config

from .scope import as_scope

log = logging.getLogger(__name__)

MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
# How long until the next poll, by state. 派件 moves fast; transit is slow.
POLL_INTERVALS = {
    "pending": HOUR,
    "collected": 2 * HOUR,
    "in_transit": 2 * HOUR,
    "delivering": 30 * MINUTE,
    "problem": 2 * HOUR,
    "returning": 4 * HOUR,
    "redirected": 2 * HOUR,
    "customs": 6 * HOUR,
    "customs_problem": 4 * HOUR,
    "refused": 4 * HOUR,
}
ERROR_BACKOFF_BASE = 10 * MINUTE
ERROR_BACKOFF_MAX = 12 * HOUR
# A claimed parcel is not claimed again for this long (its poll job sets the real next time).
CLAIM_LEASE = 15 * MINUTE

STATE_ZH = {"pending": "待揽收", "collected": "已揽收", "in_transit": "运输中", "delivering": "派件中",
            "signed": "已签收", "problem": "疑难件", "return_signed": "退签", "returning": "退回中",
            "redirected": "转投", "customs": "清关中", "customs_problem": "清关异常", "refused": "拒签"}
assert set(STATE_ZH) == set(TRACKING_STATES)


# --- start on ship ------------------------------------------------------------------
_NEW_KEY = "oms_tracking_new_parcels"


def start_tracking(order: Order) -> Optional[Parcel]:
    """Called by the state machine when an order ships; the caller commits. A second
    call for the same order and number is a no-op."""
    number = (order.tracking_number or "").strip()
    if not number:
        return None
    for pending in db.session.new:
        if isinstance(pending, Parcel) and pending.order is order and pending.tracking_number == number:
            return pending
    if order.id is not None:
        existing = db.session.execute(select(Parcel).where(Parcel.order_id == order.id,
                                                           Parcel.tracking_number == number)).scalar_one_or_none()
        if existing is not None:
            return existing
    carrier = db.session.get(Carrier, order.carrier_id) if order.carrier_id else None
    now = utcnow()
    code = ((carrier.kuaidi100_code or "").strip().lower() if carrier is not None else "") or None
    parcel = Parcel(order=order, carrier_id=order.carrier_id, tracking_number=number, kuaidi100_code=code,
                    state="pending", shipped_at=order.shipped_at or now, created_at=now,
                    next_poll_at=now if code else None,
                    last_error=None if code else _no_code_message(carrier))
    db.session.add(parcel)
    db.session.info.setdefault(_NEW_KEY, []).append(parcel)
    return parcel


def _no_code_message(carrier) -> str:
    name = carrier.name if carrier is not None else "未指定"
    return f"快递公司「{name}」没有配置快递100编码，无法查询物流轨迹：请在「快递公司」中填写"


@event.listens_for(Session, "after_commit")
def _poll_after_commit(session) -> None:
    if session.in_nested_transaction():
        return
    parcels = session.info.pop(_NEW_KEY, None)
    if not parcels:
        return
    from app.jobs.tracking import CHUNK, enqueue_poll

    ids = [p.__dict__.get("id") for p in parcels
           if p.__dict__.get("id") is not None and p.__dict__.get("kuaidi100_code")]
    for i in range(0, len(ids), CHUNK):  # a batch ship of 500 orders: 10 jobs, not 500
        enqueue_poll(ids[i:i + CHUNK])


@event.listens_for(Session, "after_soft_rollback")
def _forget_after_rollback(session, previous_transaction) -> None:
    if previous_transaction.nested or previous_transaction.parent is not None:
        return
    session.info.pop(_NEW_KEY, None)


# --- polling ----------------------------------------------------------------------------
def _cfg(name: str, default: float) -> float:
    try:
        return float(current_app.config.get(name) or default)
    except (TypeError, ValueError):
        return default


def backoff(errors: int, kind: str) -> dt.timedelta:
    wait = min(ERROR_BACKOFF_MAX, ERROR_BACKOFF_BASE * (2 ** max(0, errors - 1)))
    if kind == "auth":  # a person must fix the account: do not hammer the service
        wait = max(wait, 2 * HOUR)
    return wait


def next_poll(parcel: Parcel, now: dt.datetime) -> Optional[dt.datetime]:
    if parcel.state in FINAL_STATES or not parcel.kuaidi100_code:
        return None
    if now - parcel.shipped_at > dt.timedelta(days=_cfg("OMS_TRACKING_MAX_DAYS", 30)):
        return None
    return now + POLL_INTERVALS.get(parcel.state, 2 * HOUR)


def claim_due(now: Optional[dt.datetime] = None, limit: int = 500) -> list[int]:
    """Parcels whose poll is due, claimed (``next_poll_at`` pushed by CLAIM_LEASE) so
    a second dispatcher does not queue them again. Safe to run concurrently."""
    now = now or utcnow()
    with as_scope(None):
        ids = list(db.session.scalars(select(Parcel.id).where(Parcel.next_poll_at <= now)
                                      .order_by(Parcel.next_poll_at).limit(limit)))
        if not ids:
            return []
        claimed = list(db.session.scalars(
            update(Parcel).where(Parcel.id.in_(ids), Parcel.next_poll_at <= now)
            .values(next_poll_at=now + CLAIM_LEASE).returning(Parcel.id),
            execution_options={"synchronize_session": False}))
        db.session.commit()
    return claimed


def poll_parcel(parcel_id: int, *, now: Optional[dt.datetime] = None, client=None) -> str:
    """Query Kuaidi100 for one parcel and store what changed. Returns the parcel's
    state, "no_result", "error" or "skipped". Owns its transaction."""
    from . import logistics_exceptions

    with as_scope(None):
        parcel = db.session.get(Parcel, parcel_id)
        if parcel is None:
            return "skipped"
        now = now or utcnow()
        outcome = _poll(parcel, now, client)
        logistics_exceptions.evaluate_parcel(parcel, now)
        db.session.commit()
        return outcome


def _poll(parcel: Parcel, now: dt.datetime, client) -> str:
    if not parcel.kuaidi100_code:
        carrier = db.session.get(Carrier, parcel.carrier_id) if parcel.carrier_id else None
        code = (carrier.kuaidi100_code or "").strip().lower() if carrier is not None else ""
        if not code:
            parcel.last_error = _no_code_message(carrier)
            parcel.next_poll_at = None
            return "error"
        parcel.kuaidi100_code = code  # configured since: track from now on
    if parcel.state in FINAL_STATES:
        parcel.next_poll_at = None
        return "skipped"
    client = client or client_from_config(current_app.config)
    phone = ""
    if parcel.kuaidi100_code in PHONE_REQUIRED:
        order = db.session.get(Order, parcel.order_id)
        phone = re.sub(r"\D", "", (order.receiver_phone or "") if order is not None else "")[-4:]
    parcel.last_polled_at = now
    try:
        result = client.query(parcel.kuaidi100_code, parcel.tracking_number, phone)
    except TrackingError as exc:
        if exc.kind == "no_result":  # nothing at the carrier yet: not an error of ours
            parcel.poll_errors = 0
            parcel.last_error = None
            parcel.next_poll_at = next_poll(parcel, now)
            return "no_result"
        parcel.poll_errors = (parcel.poll_errors or 0) + 1
        parcel.last_error = exc.message
        parcel.next_poll_at = now + backoff(parcel.poll_errors, exc.kind)
        if parcel.state not in FINAL_STATES and now - parcel.shipped_at > dt.timedelta(
                days=_cfg("OMS_TRACKING_MAX_DAYS", 30)):
            parcel.next_poll_at = None
        log.info("tracking poll failed for parcel %s: %s", parcel.id, exc.message)
        return "error"
    apply_result(parcel, result, now)
    return parcel.state


def fingerprint(when: dt.datetime, context: str) -> str:
    stamp = when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return hashlib.sha1(f"{stamp}|{context}".encode("utf-8")).hexdigest()


def apply_result(parcel: Parcel, result: TrackingResult, now: dt.datetime) -> int:
    """Store new events and move the parcel on; returns how many events were new."""
    known = set(db.session.scalars(select(ParcelEvent.fingerprint).where(ParcelEvent.parcel_id == parcel.id))) \
        if parcel.id is not None else set()
    added = 0
    for ev in result.events:
        fp = fingerprint(ev.time, ev.context)
        if fp in known:
            continue
        known.add(fp)
        db.session.add(ParcelEvent(parcel=parcel, event_time=ev.time, context=ev.context[:2000],
                                   area=(ev.area or None) and ev.area[:100],
                                   status_text=(ev.status_text or None) and ev.status_text[:32],
                                   fingerprint=fp, created_at=now))
        added += 1
    if result.events:
        times = [e.time for e in result.events]
        first, last = min(times), max(times)
        parcel.picked_up_at = min(parcel.picked_up_at, first) if parcel.picked_up_at else first
        parcel.last_event_at = max(parcel.last_event_at, last) if parcel.last_event_at else last
    if result.state is not None:
        parcel.state = result.state
        parcel.state_code = result.state_code[:8] or None
    elif result.events and parcel.state == "pending":
        parcel.state = "collected"  # events but a state code we do not know: at least picked up
    if parcel.state == "signed" and parcel.signed_at is None:
        parcel.signed_at = parcel.last_event_at or now
    parcel.poll_errors = 0
    parcel.last_error = None
    parcel.next_poll_at = next_poll(parcel, now)
    return added


# --- display ------------------------------------------------------------------------------
def timeline_for_order(order_id: int) -> list[dict]:
    """The order page's timeline: each parcel with its events, newest first (row scope applies)."""
    parcels = db.session.scalars(select(Parcel).where(Parcel.order_id == order_id).order_by(Parcel.id)).all()
    out = []
    for p in parcels:
        carrier = db.session.get(Carrier, p.carrier_id) if p.carrier_id else None
        out.append({
            "id": p.id, "carrier": carrier.name if carrier else "", "tracking_number": p.tracking_number,
            "state": p.state, "state_label": STATE_ZH.get(p.state, p.state), "shipped_at": p.shipped_at,
            "last_event_at": p.last_event_at, "signed_at": p.signed_at, "next_poll_at": p.next_poll_at,
            "last_error": p.last_error,
            "events": [{"time": e.event_time, "context": e.context, "area": e.area, "status": e.status_text}
                       for e in _events(p.id)],
        })
    return out


def _events(parcel_id: int) -> list[ParcelEvent]:
    return list(db.session.scalars(select(ParcelEvent).where(ParcelEvent.parcel_id == parcel_id)
                                   .order_by(ParcelEvent.event_time.desc(), ParcelEvent.id.desc())))


# --- the public page ----------------------------------------------------------------------
_MOBILE = re.compile(r"(?<!\d)(1\d{2})\d{4}(\d{4})(?!\d)")
_LANDLINE = re.compile(r"(?<!\d)(0\d{2,3})-?\d{3,4}(\d{4})(?!\d)")
_SIGNER = re.compile(r"(签收人|收件人|代收人|收货人)(\s*[:：]\s*)([^\s，,。；;（(]{1,8})")
_SIGNER_OK = ("本人", "本人签收", "寄件人", "家人", "同事", "前台", "门卫", "快递柜", "驿站")


def public_context(text: str, receiver_name: Optional[str] = None) -> str:
    """A carrier's event text made safe for the public page: phone numbers masked,
    the signer's name and the receiver's name hidden."""
    out = _MOBILE.sub(r"\1****\2", text or "")
    out = _LANDLINE.sub(r"\1-****\2", out)

    def signer(m):
        who = m.group(3)
        return m.group(0) if who in _SIGNER_OK else f"{m.group(1)}{m.group(2)}*"

    out = _SIGNER.sub(signer, out)
    name = (receiver_name or "").strip()
    if name:
        out = out.replace(name, name[0] + "*" * (len(name) - 1) if len(name) > 1 else "*")
    return out


def _last4_matches(phone: Optional[str], last4: str) -> bool:
    digits = re.sub(r"\D", "", phone or "")
    return len(digits) >= 4 and hmac.compare_digest(digits[-4:], last4)


def public_lookup(order_number: str, last4: str) -> Optional[dict]:
    """What the buyer-facing page may show for an order number + the last 4 digits of
    the receiver's phone: the tracking state and timeline, nothing personal. None when
    the order is unknown *or* the digits are wrong (the caller shows the same page).

    A trade split here (拆分订单) is one order to the buyer: its number (or a part's
    ``…-拆N``) shows the parcels of every part that goes to a receiver with the same last
    4 phone digits (a part's receiver may have been changed), under the platform's number."""
    number = (order_number or "").strip()
    last4 = (last4 or "").strip()
    if not number or len(number) > 64 or not re.fullmatch(r"\d{4}", last4):
        return None
    with as_scope(None):
        found = None
        for order in db.session.scalars(select(Order).where(Order.platform_order_id == number).limit(20)):
            if _last4_matches(order.receiver_phone, last4):
                found = order
                break
        if found is None:
            return None
        from . import order_split

        family = order_split.family(found)
        root = family[0] if family else found
        shown = {o.id: o for o in family if o.id == found.id or _last4_matches(o.receiver_phone, last4)}
        shown.setdefault(found.id, found)
        parcels = []
        for p in db.session.scalars(select(Parcel).where(Parcel.order_id.in_(sorted(shown)))
                                    .order_by(Parcel.shipped_at, Parcel.id)):
            receiver = shown[p.order_id].receiver_name
            carrier = db.session.get(Carrier, p.carrier_id) if p.carrier_id else None
            parcels.append({
                "carrier": carrier.name if carrier else "",
                "tracking_number": p.tracking_number,
                "state_label": STATE_ZH.get(p.state, p.state),
                "signed": p.state == "signed",
                "events": [{"time": e.event_time, "context": public_context(e.context, receiver),
                            "area": e.area} for e in _events(p.id)],
            })
        return {"order_number": root.platform_order_id, "parcels": parcels}
