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


def _parcel(order: Order, client) -> tuple[str, object, str]:
    """What the write-back of one part of a split trade (拆分订单) sends, and why:

    * ``("part", ids, "")``: only these sub-orders (platform line ids), on a platform that
      ships sub-orders apart (Taobao ``is_split``/``sub_tid``): the part's sub-orders that
      the platform still shows waiting. A sub-order cut in two (on two parts) ships with
      the first parcel that holds it; asking the platform, not our records, also covers a
      parcel written back whole by an older version or shipped in the platform's back-end,
      and a sibling's call that timed out after it reached the platform.
    * ``("whole", None, note)``: the whole trade: this parcel holds every sub-order and
      none has shipped (Taobao wants sub_tid to be a proper subset; ``note`` says so), or
      the platform ships whole orders only and no part has been written back (``note``
      empty: the usual split note).
    * ``("skip", None, note)``: nothing left to tell the platform; ``note`` says why.
    """
    from . import order_split

    pid = order_split.root_platform_order_id(order)
    mine = list(dict.fromkeys(ln.platform_line_id for ln in order.lines))
    if not client.partial_shipment or not client.ships_parts(mine):
        why = "（平台接口按整单发货）" if not client.partial_shipment else "（缺少平台子订单编号，按整单回传）"
        done = [o for o in order_split.family(order) if o.id != order.id and o.writeback_status == "done"]
        if not done:
            return "whole", None, ""
        first = min(done, key=lambda o: (o.writeback_at is None, o.writeback_at, o.id))
        return "skip", None, (f"拆分订单：平台订单 {pid} 已由 {first.platform_order_id}（{first.tracking_number}）"
                              f"回传发货，本包裹 {order.tracking_number or ''} 未单独回传{why}")
    shipments = client.sub_order_shipments(pid)
    waiting = [x for x in mine if x in shipments and shipments[x] is None]
    if not waiting:
        sent = sorted({shipments[x] for x in mine if shipments.get(x)})
        by = f"已随运单 {'、'.join(sent)} 发货" if sent else "在平台上已发货或已关闭"
        return "skip", None, (f"拆分订单：平台订单 {pid} 中本包裹的子订单{by}，本包裹 "
                              f"{order.tracking_number or ''} 未单独回传")
    if set(waiting) == set(shipments) and all(v is None for v in shipments.values()):
        return "whole", None, f"（拆分订单：本包裹含平台订单 {pid} 的全部子订单，按整单回传）"
    return "part", waiting, ""


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
            kind, what, why = _parcel(order, client) if order_split.is_split(order) else ("whole", None, "")
            if kind == "skip":
                return _done(order, why)
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
        elif why:
            note += why
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
