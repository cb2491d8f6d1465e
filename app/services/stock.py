"""库存: stock as a ledger (GLOSSARY.md "stock", "stock movement").

This module is the only writer of :class:`Stock`. Every change is one
:class:`StockMovement` and one conditional UPDATE of the stock row in the same
transaction (:func:`move`)::

    UPDATE oms_stock SET on_hand = on_hand + :d1, reserved = reserved + :d2
     WHERE warehouse_id = :w AND sku_id = :s
       AND on_hand + :d1 >= 0 AND reserved + :d2 >= 0 AND reserved + :d2 <= on_hand + :d1

The database evaluates the condition on the locked, current row (PostgreSQL
re-checks it after a concurrent writer commits), so two processes can never
both take the last unit: nothing is read in Python and then written back. A
rowcount of 0 means the change would oversell and raises
:class:`InsufficientStock`. Multi-row changes (an order) lock rows in
(warehouse, SKU) order, so concurrent orders cannot deadlock each other.

Bundles (组合装) never hold stock: every operation expands them to their
components × quantity.

Orders (hooked into :func:`app.services.order_status.apply`):

- :func:`reserve_order` (审单 → 待发货, or at payment if the shop says so) reserves every
  line in the warehouse(s) chosen by services/warehouse_choice.py, all or nothing (a
  SAVEPOINT); if none can, it puts a 缺货 hold naming the province and SKUs, returns False.
- :func:`release_order` (反审核, 取消, 退款关闭) releases what the ledger says this order
  still holds (sum of its movements), so it is idempotent and tolerates orders
  whose status was set without a reservation.
- :func:`ship_order` (发货) deducts on hand and the reservation together. An order
  without a reservation (shipped in the platform's back-end straight from 待审核)
  deducts on hand only, and only when its warehouse has the stock: a platform
  fact is recorded, never refused; if the stock is not there nothing is moved
  (best effort, see :func:`ship_order`).

:func:`check_ledger` proves each stock row equals the sums of its movements
(``flask oms stock-check``).
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Optional

from sqlalchemy import Integer, String, func, select, update

from app.extensions import db
from app.models import BundleComponent, Order, OrderHold, Sku, Stock, StockMovement, Warehouse
from app.models.inventory import MOVEMENT_TYPES
from app.models.types import utcnow

from .errors import DomainError, IllegalTransition, NotFound, ValidationError

OUT_OF_STOCK = "out_of_stock"
MOVEMENT_ZH = {"reserve": "占用", "release": "释放", "ship": "发货扣减", "inbound": "入库",
               "adjust": "调整", "stocktake": "盘点", "return": "退货入库"}


class InsufficientStock(DomainError):
    status_code = 409


class OutOfStock(IllegalTransition):
    """审单 refused: the order could not reserve its stock (it got a 缺货 hold)."""

    def __init__(self, message: str, order_id: int, note: str):
        super().__init__(message)
        self.order_id = order_id
        self.note = note


# --- names for messages --------------------------------------------------------------
def _sku_code(sku_id: int) -> str:
    code = db.session.execute(select(Sku.merchant_code).where(Sku.id == sku_id)).scalar()
    return code or f"#{sku_id}"


def _wh_name(warehouse_id: int) -> str:
    name = db.session.execute(select(Warehouse.name).where(Warehouse.id == warehouse_id)).scalar()
    return name or f"#{warehouse_id}"


# --- the one writer -----------------------------------------------------------------
def _ensure_row(warehouse_id: int, sku_id: int) -> None:
    conn = db.session.connection()
    t = Stock.__table__
    values = dict(warehouse_id=warehouse_id, sku_id=sku_id, on_hand=0, reserved=0, updated_at=utcnow())
    dialect = conn.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # portable fallback: insert when missing (the unique constraint still guards races)
        exists = conn.execute(select(t.c.id).where(t.c.warehouse_id == warehouse_id,
                                                   t.c.sku_id == sku_id)).first()
        if exists is None:
            conn.execute(t.insert().values(**values))
        return
    conn.execute(insert(t).values(**values).on_conflict_do_nothing(
        index_elements=["warehouse_id", "sku_id"]))


def move(warehouse_id: int, sku_id: int, movement_type: str, on_hand_delta: int = 0,
         reserved_delta: int = 0, *, order_id: Optional[int] = None, source_ref: Optional[str] = None,
         user_id: Optional[int] = None, note: Optional[str] = None, mark: bool = True) -> StockMovement:
    """Apply one signed change to a stock row and write its movement; the caller commits.

    ``mark=False``: the caller marks the listings (库存同步) itself after all its
    stock rows are locked, so listing locks are always taken after stock locks.
    Raises :class:`InsufficientStock` (nothing changed) if the result would have
    negative on hand or reserved, or reserved above on hand."""
    if movement_type not in MOVEMENT_TYPES:
        raise ValidationError(f"未知的库存流水类型：{movement_type}", "movement_type")
    for name, value in (("on_hand_delta", on_hand_delta), ("reserved_delta", reserved_delta)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(f"库存数量必须是整数：{value!r}", name)
    if on_hand_delta == 0 and reserved_delta == 0:
        raise ValidationError("库存变动数量不能为 0", "quantity")
    sku = db.session.get(Sku, sku_id)
    if sku is None:
        raise NotFound(f"SKU 不存在：{sku_id}")
    if sku.is_bundle:
        raise ValidationError(f"组合装 {sku.merchant_code} 没有自己的库存，请按组成商品记账", "sku")
    if db.session.get(Warehouse, warehouse_id) is None:
        raise NotFound(f"仓库不存在：{warehouse_id}")
    _ensure_row(warehouse_id, sku_id)
    t = Stock.__table__
    d1, d2 = int(on_hand_delta), int(reserved_delta)
    result = db.session.connection().execute(
        update(t)
        .where(t.c.warehouse_id == warehouse_id, t.c.sku_id == sku_id,
               t.c.on_hand + d1 >= 0, t.c.reserved + d2 >= 0, t.c.reserved + d2 <= t.c.on_hand + d1)
        .values(on_hand=t.c.on_hand + d1, reserved=t.c.reserved + d2, updated_at=utcnow()))
    if result.rowcount != 1:
        raise InsufficientStock(
            f"库存不足：{_wh_name(warehouse_id)} 的 {sku.merchant_code} "
            f"无法{MOVEMENT_ZH[movement_type]}（实物 {d1:+d}，占用 {d2:+d}）", "quantity")
    mv = StockMovement(warehouse_id=warehouse_id, sku_id=sku_id, movement_type=movement_type,
                       on_hand_delta=d1, reserved_delta=d2, order_id=order_id, source_ref=source_ref,
                       user_id=user_id, note=note, created_at=utcnow())
    db.session.add(mv)
    if mark:  # Core UPDATEs do not pass through the ORM flush listener: mark the listings here.
        deferred = db.session.info.get(_DEFERRED_MARKS)
        if deferred is not None:
            deferred.append(sku_id)
        else:
            _mark([sku_id])
    # Loaded Stock objects of this row are now stale.
    for obj in list(db.session.identity_map.values()):
        if isinstance(obj, Stock) and obj.warehouse_id == warehouse_id and obj.sku_id == sku_id:
            db.session.expire(obj)
    return mv


_DEFERRED_MARKS = "oms_stock_deferred_marks"


@contextlib.contextmanager
def marks_after_stock_locks():
    """For a writer that moves several stock rows in one transaction (a document's lines,
    a bundle's components, a return): inside the block :func:`move` collects the SKUs, and
    their listings (库存同步) are marked once at the end, after every stock row of the block
    is locked. Marking per move would lock a listing between two stock rows, against the
    order every writer keeps (stock rows, then listings), and such a document could
    deadlock with a reservation of the other row. Nested blocks join the outer one; a block
    that raises marks nothing (its transaction is rolled back)."""
    info = db.session.info
    if _DEFERRED_MARKS in info:
        yield
        return
    info[_DEFERRED_MARKS] = []
    try:
        yield
        skus = info.get(_DEFERRED_MARKS) or []
    finally:
        info.pop(_DEFERRED_MARKS, None)
    if skus:
        _mark(dict.fromkeys(skus))


def _mark(sku_ids) -> None:
    from .stock_alerts import note_changed
    from .stock_push import mark_skus_changed

    sku_ids = list(sku_ids)
    mark_skus_changed(sku_ids)
    note_changed(sku_ids)  # 库存预警: evaluated after this transaction commits (no SQL here)


# --- bundles ------------------------------------------------------------------------
def expand(items: Iterable[tuple[int, int]]) -> dict[int, int]:
    """(sku_id, quantity) pairs → {stock SKU id: quantity}, bundles replaced by components."""
    out: dict[int, int] = defaultdict(int)
    for sku_id, qty in items:
        sku = db.session.get(Sku, sku_id)
        if sku is None:
            raise NotFound(f"SKU 不存在：{sku_id}")
        if sku.is_bundle:
            comps = db.session.execute(
                select(BundleComponent.component_sku_id, BundleComponent.quantity)
                .where(BundleComponent.bundle_sku_id == sku_id)).all()
            if not comps:
                raise ValidationError(f"组合装 {sku.merchant_code} 没有组成商品", "sku")
            for comp_id, cq in comps:
                out[comp_id] += int(qty) * int(cq)
        else:
            out[sku_id] += int(qty)
    return dict(out)


def order_needs(order: Order) -> dict[int, int]:
    return expand((ln.sku_id, ln.quantity) for ln in order.lines if ln.sku_id is not None)


# --- helpers for documents ------------------------------------------------------------
def _check_qty(quantity) -> int:
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
        raise ValidationError(f"数量必须是正整数：{quantity!r}", "quantity")
    return quantity


def inbound(warehouse_id: int, sku_id: int, quantity: int, *, source_ref: Optional[str] = None,
            user_id: Optional[int] = None, note: Optional[str] = None, reallocate: bool = True) -> list[int]:
    """入库: add on hand, then reserve held 缺货 orders first-paid first-served.
    Returns the ids of the orders that got their stock."""
    _check_qty(quantity)
    with marks_after_stock_locks():  # a bundle adds to each of its components
        for comp_id, qty in sorted(expand([(sku_id, quantity)]).items()):
            move(warehouse_id, comp_id, "inbound", qty, source_ref=source_ref, user_id=user_id, note=note)
    return reallocate_held(user_id=user_id) if reallocate else []


def adjust(warehouse_id: int, sku_id: int, delta: int, *, source_ref: Optional[str] = None,
           user_id: Optional[int] = None, note: Optional[str] = None, reallocate: bool = True) -> list[int]:
    """调整: a signed change of on hand (a loss cannot take reserved stock)."""
    if isinstance(delta, bool) or not isinstance(delta, int) or delta == 0:
        raise ValidationError(f"调整数量必须是非零整数：{delta!r}", "quantity")
    move(warehouse_id, sku_id, "adjust", delta, source_ref=source_ref, user_id=user_id, note=note)
    return reallocate_held(user_id=user_id) if (reallocate and delta > 0) else []


# --- orders ---------------------------------------------------------------------------
def _ledger_by_order(order_id: int) -> dict[tuple[int, int], tuple[int, int]]:
    rows = db.session.execute(
        select(StockMovement.warehouse_id, StockMovement.sku_id,
               func.coalesce(func.sum(StockMovement.on_hand_delta), 0),
               func.coalesce(func.sum(StockMovement.reserved_delta), 0))
        .where(StockMovement.order_id == order_id)
        .group_by(StockMovement.warehouse_id, StockMovement.sku_id)).all()
    return {(w, s): (int(oh), int(r)) for w, s, oh, r in rows}


def reserved_by_order(order_id: int) -> dict[tuple[int, int], int]:
    return {k: r for k, (_oh, r) in _ledger_by_order(order_id).items() if r}


def _candidates(needs: dict[int, int]) -> list[int]:
    """Active warehouses, the ones that can ship the whole order now first, then by priority."""
    whs = db.session.execute(select(Warehouse.id, Warehouse.priority)
                             .where(Warehouse.active.is_(True))).all()
    if not whs or not needs:
        return [w for w, _ in sorted(whs, key=lambda r: (r[1], r[0]))]
    rows = db.session.execute(select(Stock.warehouse_id, Stock.sku_id, Stock.on_hand - Stock.reserved)
                              .where(Stock.sku_id.in_(list(needs)))).all()
    avail = {(w, s): a for w, s, a in rows}

    def whole(w):
        return all(avail.get((w, s), 0) >= q for s, q in needs.items())

    return [w for w, p in sorted(whs, key=lambda r: (not whole(r[0]), r[1], r[0]))]


def reserve_order(order: Order, *, user_id: Optional[int] = None, hold: bool = True,
                  source: str = "rule") -> bool:
    """Reserve the order in the warehouse(s) chosen by the rules (services/warehouse_choice.py:
    coverage, whole order first, priority, split if the shop allows it, a person's choice
    respected), all or nothing. Already reserved orders (per the ledger) are left alone. On
    failure puts a 缺货 hold (unless ``hold=False``) and returns False; nothing is reserved."""
    from . import warehouse_choice

    return warehouse_choice.reserve(order, user_id=user_id, source=source, hold=hold).ok


def reserve_orders(orders, *, user_id: Optional[int] = None, hold: bool = True,
                   source: str = "rule") -> dict[int, bool]:
    """:func:`reserve_order` for many orders in one transaction, first paid first served
    (services/warehouse_choice.py ``reserve_many``: the stock rows locked once, one
    conditional UPDATE per row, one ledger INSERT). {order id: reserved?}"""
    from . import warehouse_choice

    return {oid: out.ok for oid, out in warehouse_choice.reserve_many(
        orders, user_id=user_id, source=source, hold=hold).items()}


def reserve_rows(warehouse_id: int, needs: dict[int, int], *, order_id: Optional[int],
                 source_ref: Optional[str] = None, user_id: Optional[int] = None) -> bool:
    """Reserve ``needs`` ({stock SKU id: quantity}, no bundles) in one warehouse for an order,
    all or nothing; the caller commits and marks (:func:`_mark`). False: nothing reserved.

    The reservation path of :func:`move`, for ids the caller read from the database (the
    choice rules): the same conditional UPDATE and ``reserve`` ledger row, in one statement
    on PostgreSQL (``WITH u AS (UPDATE … RETURNING) INSERT … SELECT FROM u``: the ledger
    row exists exactly when the UPDATE matched), with no extra look-ups. Rows are taken in
    SKU order; a SAVEPOINT only when there is more than one SKU. Elsewhere: :func:`move`."""
    for sku_id, qty in needs.items():
        if isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
            raise ValidationError(f"占用数量必须是正整数：{qty!r}", "quantity")
    conn = db.session.connection()
    if conn.dialect.name != "postgresql":
        try:
            with db.session.begin_nested():
                for sku_id in sorted(needs):
                    move(warehouse_id, sku_id, "reserve", 0, needs[sku_id], order_id=order_id,
                         source_ref=source_ref, user_id=user_id, mark=False)
        except InsufficientStock:
            return False
        return True
    from sqlalchemy import insert, literal

    from app.models.types import UTCDateTime

    st, mv = Stock.__table__, StockMovement.__table__
    now = utcnow()

    def one(sku_id: int, qty: int) -> bool:
        u = (update(st).where(st.c.warehouse_id == warehouse_id, st.c.sku_id == sku_id,
                              st.c.reserved + qty <= st.c.on_hand)
             .values(reserved=st.c.reserved + qty, updated_at=now)
             .returning(st.c.warehouse_id, st.c.sku_id).cte("u"))
        rows = select(u.c.warehouse_id, u.c.sku_id, literal("reserve"), literal(0), literal(qty),
                      literal(order_id, Integer), literal(source_ref, String), literal(user_id, Integer),
                      literal(now, UTCDateTime()))
        stmt = insert(mv).from_select(["warehouse_id", "sku_id", "movement_type", "on_hand_delta",
                                       "reserved_delta", "order_id", "source_ref", "user_id", "created_at"],
                                      rows).returning(mv.c.id)
        return len(conn.execute(stmt).all()) == 1

    if len(needs) == 1:
        (sku_id, qty), = needs.items()
        ok = one(sku_id, qty)
    else:
        nested = db.session.begin_nested()
        ok = all(one(s, needs[s]) for s in sorted(needs))
        nested.commit() if ok else nested.rollback()
    if ok:
        for obj in list(db.session.identity_map.values()):
            if isinstance(obj, Stock) and obj.warehouse_id == warehouse_id and obj.sku_id in needs:
                db.session.expire(obj)
    return ok


def shortage_note(order: Order, needs: Optional[dict[int, int]] = None) -> str:
    needs = order_needs(order) if needs is None else needs
    where = f"{_wh_name(order.warehouse_id)} " if order.warehouse_id else ""
    parts = []
    for sku_id in sorted(needs):
        q = select(func.coalesce(func.sum(Stock.on_hand - Stock.reserved), 0)).where(Stock.sku_id == sku_id)
        if order.warehouse_id:
            q = q.where(Stock.warehouse_id == order.warehouse_id)
        else:
            q = q.join(Warehouse, Warehouse.id == Stock.warehouse_id).where(Warehouse.active.is_(True))
        parts.append(f"{_sku_code(sku_id)} 需要 {needs[sku_id]}，可用 {int(db.session.execute(q).scalar() or 0)}")
    return f"{where}缺货：" + "；".join(parts)


def release_order(order: Order, *, user_id: Optional[int] = None, note: Optional[str] = None) -> int:
    """Release whatever the ledger says this order still reserves; returns units released."""
    db.session.flush()
    total, skus = 0, set()
    for (wh, sku_id), r in sorted(reserved_by_order(order.id).items()):
        if r > 0:
            move(wh, sku_id, "release", 0, -r, order_id=order.id, source_ref=order.platform_order_id,
                 user_id=user_id, note=note, mark=False)
            total += r
            skus.add(sku_id)
    _mark(skus)
    return total


def ship_order(order: Order, *, user_id: Optional[int] = None) -> bool:
    """Deduct the order's stock: on hand and its reservation together.

    Without a reservation (shipped on the platform from 待审核, or a status set by
    hand) on hand is deducted in the order's warehouse (or the first one that has
    everything) when the stock exists, all or nothing; otherwise nothing is moved
    and False is returned — the parcel has left, a platform fact is not refused.
    Shipping twice deducts once (the ledger already has this order's ship rows)."""
    db.session.flush()
    ledger = _ledger_by_order(order.id)
    if any(oh < 0 for oh, _r in ledger.values()):
        return True  # already deducted
    reserved = {k: r for k, (_oh, r) in ledger.items() if r > 0}
    if reserved:
        for (wh, sku_id), r in sorted(reserved.items()):
            move(wh, sku_id, "ship", -r, -r, order_id=order.id, source_ref=order.platform_order_id,
                 user_id=user_id, mark=False)
        _mark(s for _w, s in reserved)
        return True
    needs = order_needs(order)
    if not needs:
        return True
    whs = [order.warehouse_id] if order.warehouse_id else _candidates(needs)
    for wh in whs:
        try:
            with db.session.begin_nested():
                for sku_id in sorted(needs):
                    move(wh, sku_id, "ship", -needs[sku_id], 0, order_id=order.id,
                         source_ref=order.platform_order_id, user_id=user_id, note="未占用，直接扣减实物库存",
                         mark=False)
        except InsufficientStock:
            continue
        order.warehouse_id = wh
        _mark(needs)
        return True
    return False


def reallocate_held(*, user_id: Optional[int] = None, limit: Optional[int] = None) -> list[int]:
    """Orders held 缺货 (only that hold) in 待审核 get their stock, first paid first served;
    those that can reserve lose the hold and are audited (待发货). Returns their ids.

    Decided a few hundred at a time by ``warehouse_choice.reserve_many`` (the same rules
    as one by one; an order that still cannot reserve keeps its hold untouched)."""
    from sqlalchemy.orm import selectinload

    from . import order_status, warehouse_choice

    held = select(OrderHold.order_id).where(OrderHold.reason == OUT_OF_STOCK, OrderHold.released_at.is_(None))
    q = (select(Order.id).where(Order.id.in_(held), Order.status.in_(("to_audit", "to_ship")))
         .order_by(Order.paid_at.is_(None), Order.paid_at, Order.id))
    if limit:
        q = q.limit(limit)
    ids = list(db.session.scalars(q))
    done = []
    for start in range(0, len(ids), 200):
        chunk = db.session.scalars(select(Order).where(Order.id.in_(ids[start:start + 200]))
                                   .options(selectinload(Order.lines), selectinload(Order.holds))).all()
        chunk = [o for o in chunk if not (set(o.active_hold_reasons) - {OUT_OF_STOCK})]
        outcomes = warehouse_choice.reserve_many(chunk, user_id=user_id, hold=False)
        for order in sorted(chunk, key=lambda o: (o.paid_at is None, o.paid_at or 0, o.id)):
            out = outcomes.get(order.id)
            if out is None or not out.ok:
                continue
            order_status.release(order, OUT_OF_STOCK, note="到货自动分配库存", source="rule", user_id=user_id)
            if order.status == "to_audit" and not order_status.reserves_at_payment(order):
                # held at 审单: audit it now. Held at payment: it waits in 待审核, reserved.
                order_status.apply(order, "audit", source="rule", user_id=user_id, note="到货自动审单",
                                   prepared=out)
            done.append(order.id)
    return done


# --- the proof ------------------------------------------------------------------------
@dataclass(frozen=True)
class LedgerMismatch:
    warehouse_id: int
    sku_id: int
    on_hand: int
    reserved: int
    ledger_on_hand: int
    ledger_reserved: int

    def zh(self) -> str:
        return (f"{_wh_name(self.warehouse_id)} {_sku_code(self.sku_id)}：库存 实物 {self.on_hand} 占用 {self.reserved}，"
                f"流水合计 实物 {self.ledger_on_hand} 占用 {self.ledger_reserved}")


def check_ledger() -> list[LedgerMismatch]:
    """Every (warehouse, SKU) whose stock row differs from the sums of its movements."""
    sums = {(w, s): (int(oh), int(r)) for w, s, oh, r in db.session.execute(
        select(StockMovement.warehouse_id, StockMovement.sku_id,
               func.sum(StockMovement.on_hand_delta), func.sum(StockMovement.reserved_delta))
        .group_by(StockMovement.warehouse_id, StockMovement.sku_id))}
    rows = {(w, s): (int(oh), int(r)) for w, s, oh, r in db.session.execute(
        select(Stock.warehouse_id, Stock.sku_id, Stock.on_hand, Stock.reserved))}
    out = []
    for key in sorted(set(sums) | set(rows)):
        have, want = rows.get(key, (0, 0)), sums.get(key, (0, 0))
        if have != want:
            out.append(LedgerMismatch(key[0], key[1], have[0], have[1], want[0], want[1]))
    return out


# --- 盘点 (stocktake) --------------------------------------------------------------------
@dataclass(frozen=True)
class StocktakeLine:
    sku_id: int
    on_hand: int  # the book quantity before the count
    reserved: int
    counted: int

    @property
    def delta(self) -> int:
        return self.counted - self.on_hand


def stocktake_preview(warehouse_id: int, counts: dict[int, int]) -> list[StocktakeLine]:
    """The difference between counted and book stock per SKU, without writing anything."""
    rows = {s: (oh, r) for s, oh, r in db.session.execute(
        select(Stock.sku_id, Stock.on_hand, Stock.reserved)
        .where(Stock.warehouse_id == warehouse_id, Stock.sku_id.in_(list(counts))))} if counts else {}
    return [StocktakeLine(sku_id, *rows.get(sku_id, (0, 0)), counted)
            for sku_id, counted in sorted(counts.items())]


def stocktake(warehouse_id: int, counts: dict[int, int], *, user_id: Optional[int] = None,
              source_ref: Optional[str] = None, note: Optional[str] = None) -> list[StocktakeLine]:
    """盘点: set on hand to the counted quantity of each SKU, one ``stocktake`` movement per
    difference; the caller commits. The stock rows are locked first (in SKU order), so a
    movement between reading the book quantity and writing the difference cannot be lost.
    A count below what is reserved raises :class:`InsufficientStock` (release orders first)."""
    if db.session.get(Warehouse, warehouse_id) is None:
        raise NotFound(f"仓库不存在：{warehouse_id}")
    for sku_id, counted in counts.items():
        if isinstance(counted, bool) or not isinstance(counted, int) or counted < 0:
            raise ValidationError(f"实盘数量必须是非负整数：{counted!r}", "quantity")
        sku = db.session.get(Sku, sku_id)
        if sku is None:
            raise NotFound(f"SKU 不存在：{sku_id}")
        if sku.is_bundle:
            raise ValidationError(f"组合装 {sku.merchant_code} 没有自己的库存，请盘点组成商品", "sku")
    for sku_id in sorted(counts):
        _ensure_row(warehouse_id, sku_id)
    if counts:
        db.session.execute(select(Stock.id).where(Stock.warehouse_id == warehouse_id,
                                                  Stock.sku_id.in_(list(counts)))
                           .order_by(Stock.sku_id).with_for_update())
    lines = stocktake_preview(warehouse_id, counts)
    changed = []
    for line in lines:
        if line.delta:
            move(warehouse_id, line.sku_id, "stocktake", line.delta, source_ref=source_ref, user_id=user_id,
                 note=note or f"盘点：账面 {line.on_hand}，实盘 {line.counted}", mark=False)
            changed.append(line.sku_id)
    _mark(changed)
    return lines
