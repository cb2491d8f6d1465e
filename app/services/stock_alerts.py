"""库存预警 (issue #5 item 5): low-stock thresholds, alerts that fire once and re-arm,
and the list with sales velocity, days of cover and a suggested reorder quantity.

Definitions (one place; the 库存预警 page prints the same text):

* 可用 (available) of a SKU = Σ(on hand − reserved) over its stock rows in active
  warehouses. Bundles (组合装) hold no stock and are not watched; inactive SKUs neither.
* 预警值 (threshold) = the SKU's own ``low_stock_threshold``, else the global default
  ``OMS_LOW_STOCK_DEFAULT`` (empty: the SKU is not watched).
* A SKU is *low* when available ≤ threshold.
* An alert (:class:`StockAlert`) is raised when a SKU becomes low and has no open
  alert; it stays open while the SKU is low, so no second alert is raised; it is
  closed (``recovered_at``) when available rises above the threshold, which re-arms
  the SKU. A partial unique index keeps at most one open alert per SKU, so
  concurrent evaluations cannot raise it twice (INSERT … ON CONFLICT DO NOTHING).
* 日均销量 (30-day velocity) = units sold in the last 30 days ÷ 30: lines of orders
  paid in the window that are not closed or unpaid (待审核, 待发货, 已发货, 已完成), over
  all shops, bundle lines counted as their components × quantity.
* 可售天数 (days of cover) = available ÷ velocity (none when nothing sold).
* 建议补货 (suggested reorder) = max(0, max(⌈velocity × (lead + safety days)⌉,
  threshold + 1) − available): enough for the supplier's lead time plus safety days
  of sales, and at least enough to lift the SKU above its threshold.

When evaluated: the stock service marks every SKU whose stock it changed
(``stock._mark``) with :func:`note_changed` (no SQL: a set on the session); after
that transaction commits, :func:`_after_commit` evaluates just those SKUs on a fresh
connection (two small queries; writes only when a state changes). An evaluation
is state-based (low now? open alert now?), so it is idempotent; a SKU whose
threshold or active flag is edited is evaluated the same way, and
:func:`evaluate_all` (a scheduled job) corrects anything missed, e.g. after the
default threshold changed or a crash between commit and evaluation.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Iterable, Optional

from flask import current_app
from sqlalchemy import and_, event, func, inspect, literal, select, update
from sqlalchemy.orm import Session

from app.extensions import db
from app.models import BundleComponent, Order, OrderLine, Sku, Stock, StockAlert, StockAlertRead, Warehouse
from app.models.types import utcnow

from .errors import ValidationError
from .scope import as_scope

log = logging.getLogger(__name__)

VELOCITY_DAYS = 30
SOLD_STATUSES = ("to_audit", "to_ship", "shipped", "completed")
NOTIFY_DAYS = 30  # alerts older than this no longer appear in the notification area
_INFO_KEY = "oms_alert_skus"

FORMULA_ZH = (
    "可用 = 各启用仓库（实物库存 − 占用）之和；预警值 = SKU 自己的预警值，未设置时用全局默认值 {default}；"
    "可用 ≤ 预警值 即列入预警。日均销量 = 最近 30 天付款且未关闭订单的销量 ÷ 30（组合装按组成商品 × 数量计）；"
    "可售天数 = 可用 ÷ 日均销量；建议补货 = ⌈日均销量 × (到货周期 {lead} 天 + 安全天数 {safety} 天)⌉ 与 "
    "(预警值 + 1) 两者中较大的一个减去可用，小于 0 时为 0。"
)


# --- configuration ---------------------------------------------------------------------
def default_threshold() -> Optional[int]:
    raw = current_app.config.get("OMS_LOW_STOCK_DEFAULT")
    if raw is None or str(raw).strip() == "":
        return None
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ValidationError(f"全局预警值 OMS_LOW_STOCK_DEFAULT 必须是非负整数：{raw!r}",
                              "OMS_LOW_STOCK_DEFAULT") from None
    if value < 0:
        raise ValidationError(f"全局预警值 OMS_LOW_STOCK_DEFAULT 不能为负数：{value}", "OMS_LOW_STOCK_DEFAULT")
    return value


def reorder_days() -> tuple[float, float]:
    cfg = current_app.config
    return float(cfg.get("OMS_REORDER_LEAD_DAYS", 7)), float(cfg.get("OMS_REORDER_SAFETY_DAYS", 7))


def formula_text() -> str:
    lead, safety = reorder_days()
    default = default_threshold()
    return FORMULA_ZH.format(default="（未设置）" if default is None else default, lead=_num(lead),
                             safety=_num(safety))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# --- state -----------------------------------------------------------------------------
def _available_subquery(sku_ids: Optional[list] = None):
    q = (select(Stock.sku_id.label("sku_id"), func.sum(Stock.on_hand - Stock.reserved).label("available"),
                func.sum(Stock.on_hand).label("on_hand"), func.sum(Stock.reserved).label("reserved"))
         .join(Warehouse, Warehouse.id == Stock.warehouse_id)
         .where(Warehouse.active.is_(True)))
    if sku_ids is not None:  # only the SKUs asked about, not the whole stock table per evaluation
        q = q.where(Stock.sku_id.in_(sku_ids))
    return q.group_by(Stock.sku_id).subquery()


def _state_query(sku_ids: Optional[Iterable[int]], default: Optional[int]):
    sku_ids = None if sku_ids is None else sorted(sku_ids)
    av = _available_subquery(sku_ids)
    threshold = func.coalesce(Sku.low_stock_threshold, literal(default)) if default is not None \
        else Sku.low_stock_threshold
    q = (select(Sku.id, threshold.label("threshold"), func.coalesce(av.c.available, 0), StockAlert.id)
         .outerjoin(av, av.c.sku_id == Sku.id)
         .outerjoin(StockAlert, and_(StockAlert.sku_id == Sku.id, StockAlert.recovered_at.is_(None))))
    if sku_ids is not None:
        q = q.where(Sku.id.in_(sorted(sku_ids)))
    return q


@dataclass
class Evaluation:
    triggered: list[int]  # SKU ids that got a new alert
    recovered: list[int]  # SKU ids whose alert closed (re-armed)


def evaluate(sku_ids: Optional[Iterable[int]] = None, *, connection=None,
             now: Optional[dt.datetime] = None) -> Evaluation:
    """Raise or close alerts for these SKUs (all when None) from their state now.

    With ``connection`` the caller's transaction is used (and not committed);
    otherwise a fresh connection runs and commits its own short transaction."""
    ids = None if sku_ids is None else sorted({int(i) for i in sku_ids if i is not None})
    if ids is not None and not ids:
        return Evaluation([], [])
    if connection is None:
        engine = db.engine
        with engine.begin() as conn:
            return evaluate(ids, connection=conn, now=now)
    now = now or utcnow()
    default = default_threshold()
    out = Evaluation([], [])
    chunks = [None] if ids is None else [ids[i:i + 500] for i in range(0, len(ids), 500)]
    for chunk in chunks:
        q = _state_query(chunk, default).where(Sku.is_bundle.is_(False), Sku.active.is_(True))
        to_open, to_close = [], []
        for sku_id, threshold, available, open_id in connection.execute(q):
            low = threshold is not None and int(available) <= int(threshold)
            if low and open_id is None:
                to_open.append({"sku_id": sku_id, "threshold": int(threshold), "available": int(available),
                                "created_at": now})
            elif not low and open_id is not None:
                to_close.append((open_id, sku_id, int(available)))
        for row in to_open:
            if _insert_open(connection, row):
                out.triggered.append(row["sku_id"])
        t = StockAlert.__table__
        for open_id, sku_id, available in to_close:
            result = connection.execute(update(t).where(t.c.id == open_id, t.c.recovered_at.is_(None))
                                        .values(recovered_at=now, recovered_available=available))
            if result.rowcount:
                out.recovered.append(sku_id)
    return out


def _insert_open(conn, row: dict) -> bool:
    t = StockAlert.__table__
    where = t.c.recovered_at.is_(None)
    dialect = conn.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - other databases: the unique index still refuses a second open alert
        return bool(conn.execute(t.insert().values(**row)).rowcount)
    stmt = insert(t).values(**row).on_conflict_do_nothing(index_elements=["sku_id"], index_where=where)
    return bool(conn.execute(stmt).rowcount)


def evaluate_all(now: Optional[dt.datetime] = None) -> Evaluation:
    """Every watched SKU (the scheduled sweep); also closes alerts of SKUs no longer
    watched (threshold removed, SKU deactivated or made a bundle)."""
    result = evaluate(None, now=now)
    t = StockAlert.__table__
    default = default_threshold()
    unwatched = select(Sku.id).where((Sku.is_bundle.is_(True)) | (Sku.active.is_(False))
                                     | (Sku.low_stock_threshold.is_(None) if default is None else literal(False)))
    with db.engine.begin() as conn:
        closed = conn.execute(update(t).where(t.c.recovered_at.is_(None), t.c.sku_id.in_(unwatched))
                              .values(recovered_at=now or utcnow()).returning(t.c.sku_id)).scalars().all()
    result.recovered.extend(closed)
    return result


# --- marking (hooked into stock._mark and SKU edits) ----------------------------------------
def note_changed(sku_ids: Iterable[int], session: Optional[Session] = None) -> None:
    """Remember SKUs whose stock changed in the current transaction; evaluated after commit."""
    session = session if session is not None else db.session()
    session.info.setdefault(_INFO_KEY, set()).update(int(i) for i in sku_ids if i is not None)


@event.listens_for(Session, "after_flush")
def _sku_edits(session, _flush_context) -> None:
    ids = set()
    for obj in session.new:
        if isinstance(obj, Sku):
            ids.add(obj.id)
    for obj in session.dirty:
        if isinstance(obj, Sku):
            state = inspect(obj)
            if any(state.attrs[k].history.has_changes() for k in ("low_stock_threshold", "active", "is_bundle")):
                ids.add(obj.id)
    if ids:
        note_changed(ids, session)


@event.listens_for(Session, "after_commit")
def _after_commit(session) -> None:
    ids = session.info.pop(_INFO_KEY, None)
    if not ids:
        return
    try:
        evaluate(ids)
    except Exception:  # the stock change is committed; the scheduled sweep catches up
        log.exception("库存预警评估失败：%s", sorted(ids)[:20])


@event.listens_for(Session, "after_rollback")
def _after_rollback(session) -> None:
    session.info.pop(_INFO_KEY, None)


# --- the list ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LowStockRow:
    sku_id: int
    merchant_code: str
    name: str
    on_hand: int
    reserved: int
    available: int
    threshold: int
    threshold_is_default: bool
    sold_30d: int
    velocity: Decimal  # units per day, 2 decimals
    days_of_cover: Optional[Decimal]  # None: nothing sold in 30 days
    reorder: int
    alerted_at: Optional[dt.datetime]


def sales_30d(sku_ids: Optional[Iterable[int]] = None, *, now: Optional[dt.datetime] = None,
              days: int = VELOCITY_DAYS) -> dict[int, int]:
    """Units of each stock SKU sold in the last ``days`` days, over all shops (stock is
    shared by every shop), bundle lines as their components × quantity."""
    now = now or utcnow()
    since = now - dt.timedelta(days=days)
    window = (Order.paid_at >= since, Order.paid_at <= now, Order.status.in_(SOLD_STATUSES))
    ids = None if sku_ids is None else sorted(set(sku_ids))
    out: dict[int, int] = {}
    with as_scope(None):
        direct = (select(OrderLine.sku_id, func.sum(OrderLine.quantity))
                  .join(Order, Order.id == OrderLine.order_id).join(Sku, Sku.id == OrderLine.sku_id)
                  .where(*window, Sku.is_bundle.is_(False)).group_by(OrderLine.sku_id))
        comps = (select(BundleComponent.component_sku_id, func.sum(OrderLine.quantity * BundleComponent.quantity))
                 .join(Order, Order.id == OrderLine.order_id)
                 .join(BundleComponent, BundleComponent.bundle_sku_id == OrderLine.sku_id)
                 .where(*window).group_by(BundleComponent.component_sku_id))
        if ids is not None:
            direct = direct.where(OrderLine.sku_id.in_(ids))
            comps = comps.where(BundleComponent.component_sku_id.in_(ids))
        for q in (direct, comps):
            for sku_id, qty in db.session.execute(q):
                out[sku_id] = out.get(sku_id, 0) + int(qty or 0)
    return out


def suggest_reorder(available: int, threshold: int, velocity: Decimal, lead: float, safety: float) -> int:
    cover = math.ceil(Decimal(velocity) * Decimal(str(lead + safety)))
    return max(0, max(cover, threshold + 1) - available)


def low_stock(*, now: Optional[dt.datetime] = None) -> list[LowStockRow]:
    """Every watched SKU at or below its threshold, fewest days of cover first."""
    default = default_threshold()
    av = _available_subquery()
    threshold = func.coalesce(Sku.low_stock_threshold, literal(default)) if default is not None \
        else Sku.low_stock_threshold
    available = func.coalesce(av.c.available, 0)
    rows = db.session.execute(
        select(Sku.id, Sku.merchant_code, Sku.name, func.coalesce(av.c.on_hand, 0), func.coalesce(av.c.reserved, 0),
               available, threshold, Sku.low_stock_threshold.is_(None), StockAlert.created_at)
        .outerjoin(av, av.c.sku_id == Sku.id)
        .outerjoin(StockAlert, and_(StockAlert.sku_id == Sku.id, StockAlert.recovered_at.is_(None)))
        .where(Sku.is_bundle.is_(False), Sku.active.is_(True), threshold.is_not(None), available <= threshold)
        .order_by(Sku.merchant_code)).all()
    sold = sales_30d([r[0] for r in rows], now=now) if rows else {}
    lead, safety = reorder_days()
    out = []
    for sku_id, code, name, on_hand, reserved, avail, thr, is_default, alerted_at in rows:
        units = sold.get(sku_id, 0)
        velocity = (Decimal(units) / VELOCITY_DAYS).quantize(Decimal("0.01"), ROUND_HALF_UP)
        exact = Decimal(units) / VELOCITY_DAYS
        cover = (Decimal(int(avail)) / exact).quantize(Decimal("0.1"), ROUND_HALF_UP) if units else None
        out.append(LowStockRow(sku_id, code, name, int(on_hand), int(reserved), int(avail), int(thr),
                               bool(is_default), units, velocity, cover,
                               suggest_reorder(int(avail), int(thr), exact, lead, safety), alerted_at))
    out.sort(key=lambda r: (r.days_of_cover is None, r.days_of_cover or 0, r.merchant_code))
    return out


# --- the notification area --------------------------------------------------------------------------
@dataclass(frozen=True)
class Notice:
    alert_id: int
    sku_id: int
    merchant_code: str
    name: str
    available: int
    threshold: int
    created_at: dt.datetime
    open: bool


def _unread_query(user_id: int, now: Optional[dt.datetime] = None):
    since = (now or utcnow()) - dt.timedelta(days=NOTIFY_DAYS)
    read = select(StockAlertRead.alert_id).where(StockAlertRead.user_id == user_id)
    return (select(StockAlert.id, Sku.id, Sku.merchant_code, Sku.name, StockAlert.available, StockAlert.threshold,
                   StockAlert.created_at, StockAlert.recovered_at.is_(None))
            .join(Sku, Sku.id == StockAlert.sku_id)
            .where(StockAlert.created_at >= since, StockAlert.id.not_in(read)))


def unread(user_id: int, *, limit: int = 10) -> tuple[int, list[Notice]]:
    """(number of unread alerts, the newest ``limit`` of them) for this user."""
    q = _unread_query(user_id).subquery()
    count = db.session.execute(select(func.count()).select_from(q)).scalar() or 0
    rows = db.session.execute(_unread_query(user_id).order_by(StockAlert.created_at.desc(), StockAlert.id.desc())
                              .limit(limit)).all()
    return int(count), [Notice(*r) for r in rows]


def mark_read(user_id: int, alert_ids: Optional[Iterable[int]] = None) -> int:
    """Mark these alerts (all unread when None) read for this user. Commits."""
    q = select(StockAlert.id).where(StockAlert.id.in_(select(_unread_query(user_id).subquery().c.id)))
    if alert_ids is not None:
        wanted = sorted({int(i) for i in alert_ids})
        if not wanted:
            return 0
        q = q.where(StockAlert.id.in_(wanted))
    ids = db.session.scalars(q).all()
    now = utcnow()
    for alert_id in ids:
        db.session.add(StockAlertRead(alert_id=alert_id, user_id=user_id, read_at=now))
    db.session.commit()
    return len(ids)


def recent_alerts(limit: int = 50) -> list[StockAlert]:
    return db.session.scalars(select(StockAlert).order_by(StockAlert.created_at.desc(), StockAlert.id.desc())
                              .limit(limit)).all()

