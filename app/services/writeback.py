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
    try:
        return _write_back_locked(order_id, final_attempt)
    finally:
        with contextlib.suppress(Exception):  # expired: nothing to release
            lock.release()


def _write_back_locked(order_id: int, final_attempt: bool) -> str:
    with as_scope(None):
        order = db.session.get(Order, order_id)
        if order is None or order.writeback_status not in ("pending", "failed"):
            return "skipped"
        try:
            code = carrier_code(order)
            client_for(order.shop).ship(order.platform_order_id, code, order.tracking_number)
        except PlatformError as exc:
            if exc.retryable and not final_attempt:
                order.writeback_error = f"{exc.message}（将自动重试）"
                db.session.commit()
                raise
            return _fail(order, exc.message)
        except DomainError as exc:
            return _fail(order, exc.message)
        order.writeback_status = "done"
        order.writeback_error = None
        order.writeback_at = utcnow()
        db.session.add(OrderEvent(order=order, action="writeback", field="writeback_status", source="job",
                                  new_value="done", note=f"{code} {order.tracking_number}", created_at=utcnow()))
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
