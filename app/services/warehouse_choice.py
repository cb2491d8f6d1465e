"""选仓: which warehouse ships an order, and its reservation there (issue #5 item 4).

Rules, in this order (:func:`reserve`):

1. **Coverage.** Only active warehouses covering the receiver's province take part.
   A warehouse's coverage is its :class:`WarehouseCoverage` rows: short province
   names (浙江, 内蒙古, 广西 …) or 全国. A warehouse *without* rows covers 全国 too —
   a new or upgraded warehouse keeps shipping until someone narrows it (the
   warehouse page shows 全国（未设置）); to stop a warehouse shipping, deactivate it.
   An order whose province is empty or unknown can only go to 全国 warehouses.
2. **Whole order first.** A covering warehouse that has every line's stock (bundles
   expanded into components) available beats one that has not.
3. **Priority.** Then the highest priority (the smallest number: 优先级1 first), then
   the warehouse id.
4. **Split** (拆单发货) only if the shop allows it (``Shop.allow_split``) and no single
   covering warehouse can ship the whole order: line by line, each line whole in
   the first covering warehouse by priority that has it. ``OrderLine.warehouse_id``
   records where each line is reserved; ``Order.warehouse_id`` is the warehouse of
   the first line.
5. Nothing covers, or nothing has the stock → nothing is reserved and the order gets
   a 缺货 hold whose note names the province and the SKUs short.

The reason is stored in ``Order.warehouse_reason`` ("杭州仓：覆盖浙江、库存齐全、
优先级1"; "拆分发货：杭州仓（TS-01×2）、广州仓（HAT-01×1）"), shown on the order page
and in the order grid. (The rule's choice writes no trail event of its own: a
transition writes exactly one event.)

**Override (人工指定).** A user may set the warehouse before audit (services/orders.py
``update_fields``; refused after audit). Who chose it is read from the order's trail:
the order's warehouse is a person's choice when the last change of the warehouse in
the trail (an ``edit`` by a user, their import or batch) set exactly this warehouse;
the rules write no such event, so a warehouse they chose never looks manual, and a
person who clears the warehouse hands the choice back to the rules. A person's choice is respected
if that warehouse can ship the whole order, coverage or not; otherwise 审单 is
refused with a zh message saying what is short (no hold: another warehouse may ship
it), and at payment the order gets a 缺货 hold. The reason becomes "人工指定：…".

**Atomicity.** The ranking reads available stock only to *order* the attempts; the
reservation itself is :func:`app.services.stock.move` (a conditional UPDATE and a
ledger row) per component inside a SAVEPOINT, so a warehouse that was emptied
meanwhile by another process simply fails and the next one is tried; nothing is
ever read and then written back.

**When.** On 审单 (the default), or at payment when ``Shop.reserve_at == 'payment'``
(services/order_status.py); then 审单 keeps the existing reservation, unless a person
has since chosen another warehouse, in which case the reservation moves there (all or
nothing) or 审单 is refused.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional

from sqlalchemy import bindparam, func, select, tuple_, update

from app.extensions import db
from app.models import (
    BundleComponent, Order, OrderEvent, OrderLine, Shop, Sku, Stock, Warehouse, WarehouseCoverage,
)

from app.models.types import utcnow

from .errors import IllegalTransition, ValidationError

ALL = "全国"
PROVINCES = (
    "北京", "天津", "河北", "山西", "内蒙古", "辽宁", "吉林", "黑龙江", "上海", "江苏", "浙江", "安徽", "福建",
    "江西", "山东", "河南", "湖北", "湖南", "广东", "广西", "海南", "重庆", "四川", "贵州", "云南", "西藏",
    "陕西", "甘肃", "青海", "宁夏", "新疆", "台湾", "香港", "澳门",
)
MANUAL_SOURCES_EXCLUDED = ("rule",)


class WarehouseRefused(IllegalTransition):
    """审单 refused: the warehouse a person chose cannot ship the whole order."""


# --- provinces -----------------------------------------------------------------------
def province_short(text: Optional[str]) -> Optional[str]:
    """浙江省 / 浙江 / 广西壮族自治区 / 上海市 → 浙江 / 浙江 / 广西 / 上海; None if unknown."""
    t = (text or "").strip().replace(" ", "")
    if not t:
        return None
    for p in PROVINCES:
        if t.startswith(p):
            return p
    return None


def clean_province(value) -> str:
    """A coverage province as stored: a short province name or 全国; zh error otherwise."""
    t = (str(value) if value is not None else "").strip()
    if t in (ALL, "全部", "全国各地"):
        return ALL
    short = province_short(t)
    if short is None:
        raise ValidationError(f"「覆盖省份」无法识别：{t or '（空）'}（填写省份名称，如 浙江、广东，或 全国）",
                              "province")
    return short


def validate_coverage(item: WarehouseCoverage) -> None:
    """Form/API hook: warehouse required, province normalised, no duplicate row."""
    wh_id = item.warehouse_id if item.warehouse_id is not None else (item.warehouse.id if item.warehouse else None)
    if wh_id is None:
        raise ValidationError("「仓库」不能为空", "warehouse")
    item.province = clean_province(item.province)
    with db.session.no_autoflush:
        dup = db.session.execute(
            select(WarehouseCoverage.id).where(WarehouseCoverage.warehouse_id == wh_id,
                                               WarehouseCoverage.province == item.province,
                                               WarehouseCoverage.id != (item.id or 0))).first()
    if dup is not None:
        name = db.session.get(Warehouse, wh_id).name
        raise ValidationError(f"{name} 已覆盖「{item.province}」", "province")


def set_coverage(warehouse_id: int, provinces) -> list[str]:
    """Replace a warehouse's coverage (the caller commits); returns the stored provinces."""
    if db.session.get(Warehouse, warehouse_id) is None:
        from .errors import NotFound

        raise NotFound(f"仓库不存在：{warehouse_id}")
    cleaned = []
    for p in provinces:
        c = clean_province(p)
        if c not in cleaned:
            cleaned.append(c)
    db.session.execute(WarehouseCoverage.__table__.delete().where(WarehouseCoverage.warehouse_id == warehouse_id))
    for c in cleaned:
        db.session.add(WarehouseCoverage(warehouse_id=warehouse_id, province=c))
    db.session.flush()
    wh = db.session.get(Warehouse, warehouse_id)
    db.session.expire(wh, ["coverage"])
    return cleaned


# --- candidates ----------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    id: int
    name: str
    priority: int
    via: str  # "province" | "all" | "unset"

    def covers_text(self, province: Optional[str]) -> str:
        return f"覆盖{province}" if self.via == "province" else "覆盖全国"


def coverage_table() -> list[tuple[int, str, int, frozenset]]:
    """Active warehouses with their coverage rows: (id, name, priority, provinces)."""
    whs: dict[int, tuple[str, int]] = {}
    cover: dict[int, set[str]] = defaultdict(set)
    for w, name, prio, p in db.session.execute(
            select(Warehouse.id, Warehouse.name, Warehouse.priority, WarehouseCoverage.province)
            .outerjoin(WarehouseCoverage, WarehouseCoverage.warehouse_id == Warehouse.id)
            .where(Warehouse.active.is_(True))):
        whs[w] = (name, prio)
        if p is not None:
            cover[w].add(p)
    return [(w, name, prio, frozenset(cover.get(w, ()))) for w, (name, prio) in whs.items()]


def covering(province: Optional[str], table=None) -> list[Candidate]:
    """Active warehouses covering this (short) province, by priority then id
    (``table``: :func:`coverage_table` read once for many orders)."""
    out = []
    for w, name, prio, rows in (coverage_table() if table is None else table):
        if not rows:
            via = "unset"
        elif province is not None and province in rows:
            via = "province"
        elif ALL in rows:
            via = "all"
        else:
            continue
        out.append(Candidate(w, name, prio if prio is not None else 10, via))
    return sorted(out, key=lambda c: (c.priority, c.id))


def _available(wh_ids, sku_ids) -> dict[tuple[int, int], int]:
    if not wh_ids or not sku_ids:
        return {}
    rows = db.session.execute(select(Stock.warehouse_id, Stock.sku_id, Stock.on_hand - Stock.reserved)
                              .where(Stock.warehouse_id.in_(list(wh_ids)), Stock.sku_id.in_(list(sku_ids))))
    return {(w, s): int(a) for w, s, a in rows}


# --- needs -----------------------------------------------------------------------------
def bundle_map(sku_ids) -> tuple[set[int], dict[int, list[tuple[int, int]]]]:
    """Of these SKU ids, the bundles, and each bundle's (component, quantity) list."""
    bundles: set[int] = set()
    comps: dict[int, list[tuple[int, int]]] = defaultdict(list)
    ids = sorted(set(sku_ids))
    if not ids:
        return bundles, comps
    for s, is_bundle, c, q in db.session.execute(
            select(Sku.id, Sku.is_bundle, BundleComponent.component_sku_id, BundleComponent.quantity)
            .outerjoin(BundleComponent, BundleComponent.bundle_sku_id == Sku.id).where(Sku.id.in_(ids))):
        if is_bundle:
            bundles.add(s)
            if c is not None:
                comps[s].append((c, int(q)))
    return bundles, comps


def _expand_lines(order: Order, bmap=None) -> list[tuple[OrderLine, dict[int, int]]]:
    """Each matched line with its stock needs (bundles → components × quantity)."""
    lines = [ln for ln in order.lines if ln.sku_id is not None]
    if not lines:
        return []
    bundles, comps = bundle_map({ln.sku_id for ln in lines}) if bmap is None else bmap
    out = []
    for ln in lines:
        need: dict[int, int] = defaultdict(int)
        if ln.sku_id in bundles:
            if not comps.get(ln.sku_id):
                code = db.session.get(Sku, ln.sku_id).merchant_code
                raise ValidationError(f"组合装 {code} 没有组成商品", "sku")
            for c, q in comps[ln.sku_id]:
                need[c] += int(ln.quantity) * q
        else:
            need[ln.sku_id] += int(ln.quantity)
        out.append((ln, dict(need)))
    return out


def _total(lines) -> dict[int, int]:
    out: dict[int, int] = defaultdict(int)
    for _ln, need in lines:
        for s, q in need.items():
            out[s] += q
    return dict(out)


def _codes(sku_ids) -> dict[int, str]:
    ids = list(sku_ids)
    if not ids:
        return {}
    return dict(db.session.execute(select(Sku.id, Sku.merchant_code).where(Sku.id.in_(ids))).all())


def _line_label(ln: OrderLine) -> str:
    code = ln.merchant_code or (ln.sku.merchant_code if ln.sku is not None else "") or ln.title
    return f"{code}×{ln.quantity}"


# --- who chose the warehouse ----------------------------------------------------------
def manual_warehouse(order: Order) -> Optional[int]:
    """The warehouse a person chose (the last change of the warehouse in the trail is not
    the rule's), else None."""
    if order.warehouse_id is None:
        return None
    if order.id is None:
        return order.warehouse_id
    last = db.session.execute(
        select(OrderEvent.source, OrderEvent.new_value)
        .where(OrderEvent.order_id == order.id, OrderEvent.field == "warehouse_id")
        .order_by(OrderEvent.id.desc()).limit(1)).first()
    if last is None or last.source in MANUAL_SOURCES_EXCLUDED or last.new_value != str(order.warehouse_id):
        return None  # chosen by the rules (or set without a trail, before warehouse rules existed)
    return order.warehouse_id


def _record(order: Order, warehouse_id: Optional[int], reason: str, lines_to: dict[int, int],
            user_id: Optional[int]) -> None:
    """Store the choice and its reason on the order and its lines."""
    order.warehouse_id = warehouse_id
    order.warehouse_reason = reason[:500]
    for ln in order.lines:
        ln.warehouse_id = lines_to.get(ln.id) if ln.sku_id is not None else None


# --- reserving ---------------------------------------------------------------------------
@dataclass
class Outcome:
    ok: bool
    reason: str = ""
    note: str = ""  # the 缺货 note when not ok
    refused: bool = False  # a person's warehouse cannot ship (审单 refused without a hold)
    kept: bool = False  # an existing reservation was kept
    warehouses: list[int] = field(default_factory=list)


def _reserve_whole(order: Order, warehouse_id: int, needs: dict[int, int], user_id) -> bool:
    from . import stock

    return stock.reserve_rows(warehouse_id, needs, order_id=order.id, source_ref=order.platform_order_id,
                              user_id=user_id)


def _shortage(needs: dict[int, int], cands: list[Candidate], avail=None, codes=None) -> str:
    """"TS-01 需要 5，可用 3（杭州仓 2、广州仓 1）" per SKU short anywhere in ``cands``."""
    ids = [c.id for c in cands]
    avail = _available(ids, needs) if avail is None else avail
    codes = _codes(needs) if codes is None else codes
    def best(s):
        return max((avail.get((c.id, s), 0) for c in cands), default=0)

    short = [s for s in needs if best(s) < needs[s]] or list(needs)  # or: enough, but not in one place
    parts = []
    for s in sorted(short, key=lambda s: codes.get(s, "")):
        per = [(c.name, avail.get((c.id, s), 0)) for c in cands]
        total = sum(max(a, 0) for _n, a in per)
        detail = "、".join(f"{n} {max(a, 0)}" for n, a in per if a > 0)
        parts.append(f"{codes.get(s, f'#{s}')} 需要 {needs[s]}，可用 {total}" + (f"（{detail}）" if detail and len(cands) > 1 else ""))
    return "；".join(parts)


def _province_label(order: Order, province: Optional[str]) -> str:
    if province:
        return province
    raw = (order.receiver_province or "").strip()
    return f"「{raw}」" if raw else "（收货省份为空）"


def reserve(order: Order, *, user_id: Optional[int] = None, source: str = "rule", hold: bool = True,
            strict_manual: bool = False) -> Outcome:
    """Choose the warehouse(s) and reserve the order there, all or nothing; the caller commits.

    Already reserved (per the ledger) → kept (or moved to a person's new choice). On
    failure nothing is reserved and, with ``hold``, a 缺货 hold names the province and
    the SKUs short. ``strict_manual``: a person's warehouse that cannot ship the whole
    order refuses (``Outcome.refused``; no hold) instead of holding the order."""
    from . import order_status, stock

    db.session.flush()
    lines = _expand_lines(order)
    needs = _total(lines)
    # Every reservation sets the order's warehouse: without one, nothing can be reserved yet.
    existing = stock.reserved_by_order(order.id) if (order.id is not None and order.warehouse_id) else {}
    manual = manual_warehouse(order)
    if existing:
        where = {w for (w, _s), r in existing.items() if r > 0}
        if manual is None or where == {manual}:
            return Outcome(True, order.warehouse_reason or "", kept=True, warehouses=sorted(where))
    if not needs:
        return Outcome(True, "")

    if manual is not None:
        return _reserve_manual(order, manual, lines, needs, existing, user_id=user_id, source=source, hold=hold,
                               strict=strict_manual)

    province = province_short(order.receiver_province)
    cands = covering(province)
    if not cands:
        return _fail(order, _no_cover_note(order, province, needs), hold=hold, source=source, user_id=user_id)

    # Availability only ranks the attempts (whole order first); one candidate needs no ranking.
    avail = _available([c.id for c in cands], needs) if len(cands) > 1 else {}

    def whole(c: Candidate) -> bool:
        return all(avail.get((c.id, s), 0) >= q for s, q in needs.items())

    ranked = sorted(cands, key=lambda c: (not whole(c), c.priority, c.id)) if len(cands) > 1 else cands
    for c in ranked:
        if _reserve_whole(order, c.id, needs, user_id):
            reason = _whole_reason(c, cands, province)
            _record(order, c.id, reason, {ln.id: c.id for ln, _n in lines}, user_id)
            stock._mark(needs)
            return Outcome(True, reason, warehouses=[c.id])

    shop = order.shop if order.shop is not None else db.session.get(Shop, order.shop_id)
    if shop is not None and shop.allow_split and len(lines) > 1:
        out = _reserve_split(order, lines, cands, province, user_id)
        if out is not None:
            stock._mark(needs)
            return out

    note = _short_note(order, province, cands, needs, shop, len(lines))
    return _fail(order, note, hold=hold, source=source, user_id=user_id)


# --- texts shared by one order and a batch ------------------------------------------------
def _whole_reason(c: Candidate, cands: list[Candidate], province: Optional[str]) -> str:
    skipped = [x.name for x in cands if (x.priority, x.id) < (c.priority, c.id)]
    reason = f"{c.name}：{c.covers_text(province)}、库存齐全、优先级{c.priority}"
    if skipped:
        reason += f"（{'、'.join(skipped)}库存不足）"
    return reason


def _no_cover_note(order: Order, province: Optional[str], needs: dict[int, int], codes=None) -> str:
    codes = _codes(needs) if codes is None else codes
    return (f"缺货：没有仓库覆盖{_province_label(order, province)}（"
            + "、".join(f"{codes.get(s, s)}×{q}" for s, q in sorted(needs.items(), key=lambda i: codes.get(i[0], "")))
            + "）")


def _short_note(order: Order, province, cands, needs, shop, n_lines: int, avail=None, codes=None) -> str:
    where = _province_label(order, province)
    note = f"{where}缺货（覆盖仓库：{'、'.join(c.name for c in cands)}）：" + _shortage(needs, cands, avail, codes)
    if shop is not None and not shop.allow_split and n_lines > 1:
        note += "；本店不允许拆单发货"
    return note


def _reserve_split(order: Order, lines, cands: list[Candidate], province, user_id) -> Optional[Outcome]:
    """Line by line, each line whole in the first covering warehouse (by priority) that has it;
    all lines or none (one outer SAVEPOINT)."""
    placed: dict[int, Candidate] = {}
    try:
        with db.session.begin_nested():
            for ln, need in lines:
                for c in cands:
                    if _reserve_whole(order, c.id, need, user_id):
                        placed[ln.id] = c
                        break
                else:
                    raise _SplitFailed()
    except _SplitFailed:
        return None
    used: list[Candidate] = []
    for ln, _n in lines:
        if placed[ln.id] not in used:
            used.append(placed[ln.id])
    if len(used) == 1:
        c = used[0]
        reason = f"{c.name}：{c.covers_text(province)}、库存齐全、优先级{c.priority}"
    else:
        parts = []
        for c in used:
            labels = "、".join(_line_label(ln) for ln, _n in lines if placed[ln.id] == c)
            parts.append(f"{c.name}（{labels}）")
        reason = "拆分发货：" + "、".join(parts)
    first = placed[lines[0][0].id]
    _record(order, first.id, reason, {ln.id: placed[ln.id].id for ln, _n in lines}, user_id)
    return Outcome(True, reason, warehouses=[c.id for c in used])


class _SplitFailed(Exception):
    pass


def _reserve_manual(order: Order, wh_id: int, lines, needs, existing, *, user_id, source, hold, strict) -> Outcome:
    from . import stock

    wh = db.session.get(Warehouse, wh_id)
    province = province_short(order.receiver_province)
    cand = next((c for c in covering(province) if c.id == wh_id), None)
    covers = cand.covers_text(province) if cand is not None else f"不覆盖{_province_label(order, province)}"
    ok = False
    if wh is not None and wh.active:
        try:
            with db.session.begin_nested():
                if existing:  # reserved elsewhere (at payment, by the rule): move it, all or nothing
                    stock.release_order(order, user_id=user_id, note=f"人工改仓：改由{wh.name}发货")
                if not _reserve_whole(order, wh_id, needs, user_id):
                    raise _SplitFailed()
            ok = True
        except _SplitFailed:
            ok = False
    if ok:
        reason = f"人工指定：{wh.name}，{covers}、库存齐全、优先级{wh.priority}"
        _record(order, wh_id, reason, {ln.id: wh_id for ln, _n in lines}, user_id)
        stock._mark(needs)
        return Outcome(True, reason, warehouses=[wh_id])
    name = wh.name if wh is not None else f"#{wh_id}"
    if wh is not None and not wh.active:
        why = f"人工指定的{name}已停用"
    else:
        why = f"人工指定的{name}库存不足，无法整单发货：" + _shortage(
            needs, [Candidate(wh_id, name, wh.priority if wh else 10, "unset")])
    if strict:
        return Outcome(False, note=why + "。请改选其他仓库，或清空仓库由系统选仓", refused=True)
    return _fail(order, why, hold=hold, source=source, user_id=user_id)


def _fail(order: Order, note: str, *, hold: bool, source: str, user_id) -> Outcome:
    from . import order_status, stock

    note = note[:500]
    if hold and order.status in order_status.HOLDABLE:
        order_status.hold(order, stock.OUT_OF_STOCK, note=note, source=source, user_id=user_id)
    return Outcome(False, note=note)


# --- many orders at once ------------------------------------------------------------------
@dataclass
class _Planned:
    order: Order
    lines: list
    needs: dict[int, int]
    province: Optional[str]
    cands: list[Candidate]


class StockMoved(Exception):
    """A deferred batch reservation (``reserve_many(defer_stock=True)``) found its stock
    taken meanwhile: roll the transaction back and run it again with ``lock=True``."""


class BatchReservation(dict):
    """{order id: Outcome} of :func:`reserve_many`; :meth:`finish` writes a deferred
    batch's stock rows (guarded; raises :class:`StockMoved`)."""

    def __init__(self, outcomes=(), finish=None):
        super().__init__(outcomes)
        self._finish = finish

    def finish(self) -> None:
        if self._finish is not None:
            fn, self._finish = self._finish, None
            fn()


def reserve_many(orders, *, user_id: Optional[int] = None, source: str = "rule", hold: bool = True,
                 fast_only: bool = False, lock: Optional[bool] = None,
                 defer_stock: bool = False) -> BatchReservation:
    """:func:`reserve` for many orders in one transaction (批量审单, a page of paid orders
    arriving, stock arriving for held orders), first paid first served; the caller commits.

    The same rules and texts as :func:`reserve`, with the database work done once for the
    batch instead of once per order:

    * one read of the orders' reservations, of the bundles and of the coverage;
    * the stock rows every order might use (covering warehouses × needed SKUs) are locked
      once, in (warehouse, SKU) order — the order in which every writer takes them — with
      ``SELECT … FOR UPDATE``; the allocation then runs in memory on the locked values;
    * one conditional UPDATE per stock row with the batch's total for it
      (``reserved + q <= on_hand``: a guard, it cannot fail under the lock), one
      multi-row ledger INSERT (one ``reserve`` movement per order and SKU).

    Orders the batch cannot decide alone go through :func:`reserve` one by one, at their
    place in the sequence (after the batch's allocations so far are written): an order
    already reserved or with a person's warehouse, and one that no single covering
    warehouse can ship whole in a shop that allows splitting. An order that cannot be
    reserved gets the same 缺货 hold and note as from :func:`reserve` (unless ``hold`` is
    False). ``fast_only``: those orders are left alone and absent from the result.

    On SQLite (no row locks) a guard that fails undoes the batch's writes (a SAVEPOINT)
    and every order goes through :func:`reserve` instead.

    ``lock=True`` locks the rows up front (no optimistic attempt). ``defer_stock`` (with
    ``fast_only``, PostgreSQL): the stock rows are written by ``result.finish()``, which
    the caller runs last, just before COMMIT, after its own writes for these orders (批量审单:
    the status changes, events and counters), so the hot rows stay locked for one
    statement and the commit; if the stock was taken meanwhile it raises
    :class:`StockMoved` and the caller rolls back and runs again with ``lock=True``."""
    from app.models import StockMovement

    from . import stock

    orders = sorted({o.id: o for o in orders}.values(),
                    key=lambda o: (o.paid_at is None, o.paid_at or 0, o.id))
    if not orders:
        return BatchReservation()
    db.session.flush()
    reserved = set()
    with_wh = [o.id for o in orders if o.warehouse_id is not None]
    if with_wh:
        t = StockMovement.__table__
        reserved = set(db.session.scalars(
            select(t.c.order_id).where(t.c.order_id.in_(with_wh)).group_by(t.c.order_id)
            .having(func.sum(t.c.reserved_delta) > 0)))
    bmap = bundle_map({ln.sku_id for o in orders for ln in o.lines if ln.sku_id is not None})
    table = coverage_table()
    cover_cache: dict[Optional[str], list[Candidate]] = {}
    shops = {s.id: s for s in db.session.scalars(select(Shop).where(Shop.id.in_({o.shop_id for o in orders})))}

    out: dict[int, Outcome] = {}
    plan: list = []  # _Planned, or an Order for the one-by-one path
    for o in orders:
        if o.warehouse_id is not None and (o.id in reserved or manual_warehouse(o) is not None):
            plan.append(o)
            continue
        lines = _expand_lines(o, bmap)
        needs = _total(lines)
        if not needs:
            out[o.id] = Outcome(True, "")
            continue
        province = province_short(o.receiver_province)
        if province not in cover_cache:
            cover_cache[province] = covering(province, table)
        plan.append(_Planned(o, lines, needs, province, cover_cache[province]))
    if not plan:
        return BatchReservation(out)

    pairs = sorted({(c.id, s) for p in plan if isinstance(p, _Planned) for c in p.cands for s in p.needs})
    codes = _codes({s for p in plan if isinstance(p, _Planned) for s in p.needs})
    postgres = db.session.connection().dialect.name == "postgresql"
    if defer_stock and postgres and fast_only and not lock:
        deferred: list = []
        out, marked = _allocate(plan, dict(out), pairs, codes, locked=False, user_id=user_id, source=source,
                                hold=hold, fast_only=True, shops=shops, deferred=deferred)

        def finish() -> None:
            conn = db.session.connection()
            for stmt, params in deferred:
                if conn.execute(stmt, params).rowcount != len(params):
                    raise StockMoved()
            if marked:
                stock._mark(marked)
        return BatchReservation(out, finish)
    # Optimistic first: allocate on an unlocked read, write the orders, holds and ledger,
    # and take the hot stock rows last (the guarded UPDATE, then COMMIT), so a row stays
    # locked for one statement and the commit. If another transaction took the stock in
    # between, a guard fails: undo and run again with the rows locked up front.
    attempts = (True,) if (lock and postgres) else ((False, True) if postgres else (False,))
    for locked in attempts:
        savepoint = db.session.begin_nested()
        try:
            out, marked = _allocate(plan, dict(out), pairs, codes, locked=locked, user_id=user_id,
                                    source=source, hold=hold, fast_only=fast_only, shops=shops)
            savepoint.commit()
            break
        except _GuardFailed:
            savepoint.rollback()
            for o in orders:
                db.session.expire(o)
    else:  # SQLite: no row locks; one order at a time (each guarded on its own)
        if fast_only:
            return BatchReservation()
        return BatchReservation({o.id: reserve(o, user_id=user_id, source=source, hold=hold) for o in orders})
    if marked:
        stock._mark(marked)
    return BatchReservation(out)


def _allocate(plan, out, pairs, codes, *, locked, user_id, source, hold, fast_only, shops, deferred=None):
    """One attempt of :func:`reserve_many` on ``plan``; raises :class:`_GuardFailed`."""
    from app.models import StockMovement

    st = Stock.__table__
    avail: dict[tuple[int, int], int] = {}
    row_id: dict[tuple[int, int], int] = {}

    def read(keys, lock: bool) -> None:
        keys = sorted(keys)
        for chunk in range(0, len(keys), 500):
            q = (select(st.c.id, st.c.warehouse_id, st.c.sku_id, st.c.on_hand, st.c.reserved)
                 .where(tuple_(st.c.warehouse_id, st.c.sku_id).in_(keys[chunk:chunk + 500]))
                 .order_by(st.c.warehouse_id, st.c.sku_id))
            for sid, w, s, oh, r in db.session.execute(q.with_for_update() if lock else q):
                avail[(w, s)] = int(oh) - int(r)
                row_id[(w, s)] = sid

    read(pairs, locked)  # locked: every row the batch may use, in (warehouse, SKU) order
    pending: dict[tuple[int, int], int] = defaultdict(int)
    ledger: list[dict] = []
    records: list = []
    now = utcnow()
    marked: set[int] = set()
    guard = (update(st).where(st.c.id == bindparam("rid"), st.c.reserved + bindparam("q") <= st.c.on_hand)
             .values(reserved=st.c.reserved + bindparam("q"), updated_at=now))

    def write_pending() -> None:
        """Write the allocations so far: the orders, the ledger, and the stock rows last."""
        if not pending:
            return
        for o, wh_id, reason, lines_to in records:
            _record(o, wh_id, reason, lines_to, user_id)
        db.session.flush()
        conn = db.session.connection()
        conn.execute(StockMovement.__table__.insert(), ledger)
        params = [{"rid": row_id[k], "q": q} for k, q in sorted(pending.items())]
        if deferred is not None:
            deferred.append((guard, params))
        elif conn.execute(guard, params).rowcount != len(params):
            raise _GuardFailed()
        marked.update(s for (_w, s) in pending)
        pending.clear()
        ledger.clear()
        records.clear()

    def one_by_one(o: Order) -> None:
        if fast_only:  # left to the caller
            return
        write_pending()
        out[o.id] = reserve(o, user_id=user_id, source=source, hold=hold)
        read(avail.keys(), False)

    for p in plan:
        if isinstance(p, Order):  # already reserved, or a person's warehouse
            one_by_one(p)
            continue
        o, needs = p.order, p.needs
        if not p.cands:  # nothing covers the province: the note of reserve()
            out[o.id] = _fail(o, _no_cover_note(o, p.province, needs, codes),
                              hold=hold, source=source, user_id=user_id)
            continue

        def whole(c: Candidate) -> bool:
            return all(avail.get((c.id, s), 0) >= q for s, q in needs.items())

        chosen = min((c for c in p.cands if whole(c)), key=lambda c: (c.priority, c.id), default=None)
        if chosen is not None:
            for s, q in needs.items():
                avail[(chosen.id, s)] -= q
                pending[(chosen.id, s)] += q
                ledger.append({"warehouse_id": chosen.id, "sku_id": s, "movement_type": "reserve",
                               "on_hand_delta": 0, "reserved_delta": q, "order_id": o.id,
                               "source_ref": o.platform_order_id, "user_id": user_id, "note": None,
                               "created_at": now})
            reason = _whole_reason(chosen, p.cands, p.province)
            records.append((o, chosen.id, reason, {ln.id: chosen.id for ln, _n in p.lines}))
            out[o.id] = Outcome(True, reason, warehouses=[chosen.id])
            continue
        shop = shops.get(o.shop_id)
        if shop is not None and shop.allow_split and len(p.lines) > 1:
            one_by_one(o)  # a split: reserve() at this place in the sequence
            continue
        note = _short_note(o, p.province, p.cands, needs, shop, len(p.lines), avail, codes)
        out[o.id] = _fail(o, note, hold=hold, source=source, user_id=user_id)
    write_pending()
    return out, marked


class _GuardFailed(Exception):
    """A guarded stock UPDATE matched fewer rows than planned: another writer took the stock."""
