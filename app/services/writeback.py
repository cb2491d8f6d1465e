"""发货回传: tell the platform the carrier and tracking number of a shipped order.

Shipping (the state machine's ``ship``) marks the order ``pending`` in the same
transaction; a job then calls the platform. Transient errors are retried with
backoff; a final failure is stored on the order with a zh reason and listed
among the write-back exceptions. Pending orders whose job was lost (Redis down
at commit time) are re-queued by the sweeper.
"""
from __future__ import annotations

import contextlib
import datetime as dt
from typing import Optional

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from app.extensions import db
from app.models import Carrier, Order, OrderEvent
from app.models.types import utcnow
from app.platforms import PlatformError, client_for

from .errors import DomainError
from .scope import as_scope

PLATFORM_CODE_FIELD = {"taobao": "taobao_code", "tmall": "taobao_code", "pdd": "pdd_code", "jd": "jd_code"}
SYNCED_PLATFORMS = tuple(PLATFORM_CODE_FIELD)


def needs_writeback(order: Order) -> bool:
    return order.platform in SYNCED_PLATFORMS


def mark_pending(order: Order) -> None:
    """Called when an order ships. The job is queued after the transaction commits
    (never for a rolled-back ship), whoever the caller is."""
    if needs_writeback(order):
        order.writeback_status = "pending"
        order.writeback_error = None
        db.session.info.setdefault(_PENDING_KEY, []).append(order)


_PENDING_KEY = "oms_writeback_orders"


@event.listens_for(Session, "after_commit")
def _queue_after_commit(session) -> None:
    # SQLAlchemy also fires after_commit when a savepoint is released: wait for the
    # outermost commit, or a fast worker would find the order not yet pending.
    if session.in_nested_transaction():
        return
    orders = session.info.pop(_PENDING_KEY, None)
    if not orders:
        return
    from app.jobs.writeback import enqueue_writeback

    for order in orders:
        oid = order.__dict__.get("id")  # committed: no lazy load inside the hook
        if oid is not None:
            enqueue_writeback(oid)


@event.listens_for(Session, "after_soft_rollback")
def _forget_after_rollback(session, previous_transaction) -> None:
    """Forget pending write-backs when the whole transaction rolls back. A savepoint
    rolled back (one refused order in a batch) keeps the others' write-backs; an order
    marked inside that savepoint may stay in the list, and its job then finds it not
    pending and skips it."""
    if previous_transaction.nested or previous_transaction.parent is not None:
        return
    session.info.pop(_PENDING_KEY, None)


def carrier_code(order: Order) -> str:
    carrier = db.session.get(Carrier, order.carrier_id) if order.carrier_id else None
    if carrier is None:
        raise DomainError(f"订单 {order.platform_order_id} 没有快递公司，无法回传")
    code = getattr(carrier, PLATFORM_CODE_FIELD[order.platform]) or ""
    if not code:
        raise DomainError(f"快递公司「{carrier.name}」没有配置{order.shop.platform_label}的编码，无法回传")
    return code


def write_back(order_id: int, *, final_attempt: bool = True) -> str:
    """Call the platform for one order. Returns done/failed; raises PlatformError when a
    retry is worthwhile and this is not the final attempt."""
    from app.jobs.queue import redis_conn

    # One call per order at a time, whoever queued it (job, sweeper, retry button).
    lock = redis_conn().lock(f"oms:writeback:{order_id}", timeout=120, blocking=False)
    if not lock.acquire():
        return "skipped"
    family = None
    try:
        # The parts of a split order (拆分订单) are one platform trade: one at a time, so that
        # the second parcel sees the first one's outcome (see _write_back_locked).
        root = _split_root(order_id)
        if root is not None:
            family = redis_conn().lock(f"oms:writeback:trade:{root}", timeout=120, blocking_timeout=60)
            if not family.acquire():
                family = None
                return "skipped"  # still pending: the sweeper queues it again
        return _write_back_locked(order_id, final_attempt)
    finally:
        with contextlib.suppress(Exception):  # expired: nothing to release
            lock.release()
        if family is not None:
            with contextlib.suppress(Exception):
                family.release()


def _split_root(order_id: int) -> Optional[int]:
    """The original trade's id when this order is part of a split (拆分订单), else None."""
    from . import order_split

    with as_scope(None):
        order = db.session.get(Order, order_id)
        if order is None or not order_split.is_split(order):
            return None
        return order_split.root_id(order)


def _parcel(order: Order, client) -> tuple[str, object, bool]:
    """What the write-back of one part of a split trade (拆分订单) sends:

    * ``("part", ids)``: only these sub-orders (platform line ids), on a platform that
      ships sub-orders apart (Taobao ``is_split``/``sub_tid``): the part's lines not yet
      written back with another part's parcel (a line cut in two keeps its sub-order on
      both parts: the first parcel ships it);
    * ``("whole", None)``: the whole trade: this parcel holds every sub-order and none has
      shipped, or the platform ships whole orders only and no part has been written back;
    * ``("skip", sibling)``: every sub-order of this part was already written back with
      ``sibling``'s parcel (on a whole-order platform: the first part's shipped the trade).

    The third value: whether the platform ships this trade's sub-orders apart."""
    from . import order_split

    family = order_split.family(order)
    done = sorted((o for o in family if o.id != order.id and o.writeback_status == "done"),
                  key=lambda o: (o.writeback_at or utcnow(), o.id))
    every = [ln.platform_line_id for o in family for ln in o.lines]
    if not client.ships_parts(every):
        return ("skip", done[0], False) if done else ("whole", None, False)
    sent = {ln.platform_line_id: o for o in done for ln in o.lines}
    mine = list(dict.fromkeys(ln.platform_line_id for ln in order.lines))
    left = [x for x in mine if x not in sent]
    if not left:
        return "skip", sent[mine[0]] if mine else (done[0] if done else None), True
    if not sent and set(left) == set(every):
        return "whole", None, True
    return "part", left, True


def _write_back_locked(order_id: int, final_attempt: bool) -> str:
    from . import order_split

    with as_scope(None):
        order = db.session.get(Order, order_id)
        if order is None or order.writeback_status not in ("pending", "failed"):
            return "skipped"
        # A part split off here (拆分订单) is written back under the original trade's number:
        # the platform knows only that one. Taobao ships the sub-orders of each parcel apart
        # (is_split + sub_tid: the buyer sees each parcel's own tracking number); PDD and JD
        # ship whole orders only: the first parcel of the trade tells the platform, a later
        # parcel is not sent again (the platform already shows the trade shipped and would
        # refuse it) and its event says so.
        platform_id = order_split.root_platform_order_id(order)
        try:
            client = client_for(order.shop)
            kind, what, parts = _parcel(order, client) if order_split.is_split(order) else ("whole", None, False)
            if kind == "skip":
                by = f"{what.platform_order_id}（{what.tracking_number}）" if what is not None else "其他包裹"
                return _done(order, f"拆分订单：平台订单 {platform_id} 已由 {by}回传发货，本包裹 "
                                    f"{order.tracking_number or ''} 未单独回传"
                                    + ("（本包裹的子订单已随其发货）" if parts else "（平台接口按整单发货）"))
            code = carrier_code(order)
            client.ship(platform_id, code, order.tracking_number, line_ids=what if kind == "part" else None)
        except PlatformError as exc:
            if exc.retryable and not final_attempt:
                order.writeback_error = f"{exc.message}（将自动重试）"
                db.session.commit()
                raise
            return _fail(order, exc.message)
        except DomainError as exc:
            return _fail(order, exc.message)
        note = f"{code} {order.tracking_number}"
        if kind == "part":
            note += f"（拆单发货：平台订单 {platform_id} 的子订单 {'、'.join(what)}）"
        elif platform_id != order.platform_order_id:
            note += f"（拆分订单，按平台订单 {platform_id} 回传）"
        return _done(order, note)


def _done(order: Order, note: str) -> str:
    order.writeback_status = "done"
    order.writeback_error = None
    order.writeback_at = utcnow()
    db.session.add(OrderEvent(order=order, action="writeback", field="writeback_status", source="job",
                              new_value="done", note=note, created_at=utcnow()))
    db.session.commit()
    return "done"


def _fail(order: Order, message: str) -> str:
    order.writeback_status = "failed"
    order.writeback_error = message
    db.session.add(OrderEvent(order=order, action="writeback", field="writeback_status", source="job",
                              new_value="failed", note=message, created_at=utcnow()))
    db.session.commit()
    return "failed"


def stale_pending(older_than: dt.timedelta = dt.timedelta(minutes=10), limit: int = 500) -> list[int]:
    cutoff = utcnow() - older_than
    with as_scope(None):
        return list(db.session.scalars(
            select(Order.id).where(Order.writeback_status == "pending", Order.shipped_at < cutoff).limit(limit)))


def retry_failed(order_ids: list[int]) -> list[int]:
    """Set failed write-backs back to pending (the caller queues them)."""
    out = []
    for order in db.session.scalars(select(Order).where(Order.id.in_(order_ids),
                                                        Order.writeback_status == "failed")):
        order.writeback_status = "pending"
        out.append(order.id)
    db.session.commit()
    return out
