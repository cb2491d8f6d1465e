"""退货入库 (stock returns, issue #5): goods a buyer sent back for an order that has
shipped come back into a warehouse, through the stock ledger (services/stock.py).

* The order is named by id or by 订单号 (``platform_order_id``) and looked up with an
  ordinary ORM query, so the row scope (services/scope.py) applies: another shop's
  order is simply not found. An 订单号 that several of the user's shops share must be
  chosen by id.
* It must have shipped: 已发货 or 已完成, or 已关闭 after shipping (a ship time, a
  ``ship`` movement, or a status event from 已发货/已完成 in its trail).
* The warehouse is the one named (active), else the one the order shipped from (its
  ``ship`` movements; an order shipped without moving stock: ``Order.warehouse_id``);
  an order shipped from several warehouses (拆单) must name one.
* Quantities are per order line (``{OrderLine.id: quantity}``); without any, every
  line comes back whole (all that shipped and is not yet returned). Each given
  quantity is a positive integer, at most the line's quantity; bundles (组合装) come
  back as their components. Per stock SKU, what comes back may not exceed what the
  order shipped (its ``ship`` movements; an order shipped without moving stock: its
  lines) minus what earlier returns for this order booked (its ``return``
  movements). Every problem is reported at once, naming the line and field, and
  nothing is written (:class:`~app.services.stock_documents.DocumentInvalid`).
* One ``return`` movement per SKU (on hand +qty, the order, the source document
  TH-<time> unless given, the user and the note), one ``return`` OrderEvent that
  says what came back, one transaction (the order row is locked first, so two
  returns of one order cannot both take the last returnable unit); then, as after an
  入库, held 缺货 orders get the stock first paid first served
  (``stock_documents.reallocate``, its own transaction).

The ledger is per SKU, so the per-line 已退 / 可退 shown on the page are derived from
it (:func:`return_sheet`): returned and returnable units are attributed to the lines
in line order. The checks themselves are per SKU and exact.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional, Union

from sqlalchemy import func, or_, select

from app.extensions import db
from app.models import Order, OrderEvent, OrderLine, Sku, StockMovement, Warehouse
from app.models.types import utcnow

from . import stock, stock_documents
from .errors import DomainError, IllegalTransition, NotFound, ValidationError
from .order_status import STATUS_ZH
from .stock_documents import DocumentInvalid

SHIPPED_STATUSES = ("shipped", "completed")


# --- finding the order --------------------------------------------------------------------------
def find_orders(number: str) -> list[Order]:
    """Orders with this 订单号 in the current row scope (one per shop at most)."""
    text = (number or "").strip()
    if not text:
        return []
    return db.session.scalars(select(Order).where(Order.platform_order_id == text)
                              .order_by(Order.shop_id, Order.id)).all()


def get_order(order: Union[int, str, Order]) -> Order:
    """The order by id (an int), or by 订单号 (a str), within the current row scope."""
    if isinstance(order, Order):
        return order
    if isinstance(order, int) and not isinstance(order, bool):
        found = db.session.execute(select(Order).where(Order.id == order)).scalar_one_or_none()
        if found is None:
            raise NotFound(f"订单不存在：{order}", "order")
        return found
    text = str(order or "").strip()
    if not text:
        raise ValidationError("「订单号」不能为空", "order")
    orders = find_orders(text)
    if not orders:
        raise NotFound(f"订单不存在：{text}", "order")
    if len(orders) > 1:
        shops = "、".join(o.shop.name for o in orders)
        raise ValidationError(f"订单号 {text} 在多个店铺中存在（{shops}），请选择店铺", "order")
    return orders[0]


# --- what shipped and what came back (from the ledger) ---------------------------------------------
def _ledger_sums(order_id: int, movement_type: str) -> dict[int, int]:
    """{SKU id: Σ |on-hand change|} of the order's movements of one type."""
    rows = db.session.execute(
        select(StockMovement.sku_id, func.coalesce(func.sum(StockMovement.on_hand_delta), 0))
        .where(StockMovement.order_id == order_id, StockMovement.movement_type == movement_type)
        .group_by(StockMovement.sku_id)).all()
    return {s: abs(int(q)) for s, q in rows if q}


def _ship_warehouses(order_id: int) -> list[int]:
    return list(db.session.scalars(select(StockMovement.warehouse_id).distinct()
                                   .where(StockMovement.order_id == order_id,
                                          StockMovement.movement_type == "ship")
                                   .order_by(StockMovement.warehouse_id)))


def has_shipped(order: Order) -> bool:
    """已发货/已完成, or closed after shipping (ship time, ship movement or trail)."""
    if order.status in SHIPPED_STATUSES:
        return True
    if order.status != "closed":
        return False
    if order.shipped_at is not None or _ship_warehouses(order.id):
        return True
    return db.session.scalar(select(func.count()).select_from(OrderEvent).where(
        OrderEvent.order_id == order.id,
        or_(OrderEvent.action.in_(("ship", "ship_on_platform")),
            (OrderEvent.field == "status") & OrderEvent.old_value.in_(SHIPPED_STATUSES)))) > 0


def _components(line: OrderLine) -> dict[int, int]:
    """{stock SKU id: quantity} of one unit of the line (a bundle: its components)."""
    return stock.expand([(line.sku_id, 1)])


def _line_label(row: int, line: OrderLine) -> str:
    name = " ".join(x for x in (line.merchant_code or "", line.title or "") if x)
    return f"第 {row} 行（{name}）"


@dataclass
class SheetLine:
    """One order line on the 退货入库 page."""

    row: int
    line_id: int
    platform_line_id: str
    merchant_code: str
    title: str
    spec: str
    is_bundle: bool
    shipped: int  # the line's quantity
    returned: int  # attributed from the order's return movements
    returnable: int  # the default of this return
    problem: Optional[str] = None  # why it cannot come back (no SKU, bundle without parts)


@dataclass
class ReturnSheet:
    order: Order
    shipped: bool
    problem: Optional[str]  # why the order cannot be returned (not shipped)
    lines: list[SheetLine]
    warehouse_id: Optional[int]  # the default warehouse (None: the user must choose)
    shipped_from: list[str]  # warehouse names of the ship movements
    status_zh: str

    @property
    def returnable(self) -> int:
        return sum(ln.returnable for ln in self.lines)


def _attribute(units: dict[int, int], lines: list[tuple[OrderLine, dict[int, int]]]) -> dict[int, int]:
    """Spread per-SKU units over whole line units in line order: {line id: line units}."""
    left = dict(units)
    out = {}
    for line, comps in lines:
        n = min([line.quantity] + [left.get(c, 0) // q for c, q in comps.items()]) if comps else 0
        n = max(n, 0)
        for c, q in comps.items():
            left[c] = left.get(c, 0) - n * q
        out[line.id] = n
    return out


def _shipped_units(order: Order) -> dict[int, int]:
    """Per stock SKU, what the order shipped: its ship movements, or (shipped without moving
    stock: history, a platform fact) its lines."""
    shipped = _ledger_sums(order.id, "ship")
    return shipped if shipped else stock.order_needs(order)


def _default_warehouse(order: Order) -> tuple[Optional[int], list[int]]:
    ship_whs = _ship_warehouses(order.id)
    if len(ship_whs) == 1:
        return ship_whs[0], ship_whs
    if not ship_whs:
        return order.warehouse_id, ship_whs
    return None, ship_whs


def return_sheet(order: Union[int, str, Order]) -> ReturnSheet:
    """The order's lines with shipped, already returned and returnable quantities, and the
    default warehouse, for the page. Writes nothing."""
    order = get_order(order)
    shipped = has_shipped(order)
    problem = None if shipped else (f"订单 {order.platform_order_id} 当前为「{STATUS_ZH.get(order.status, order.status)}」，"
                                    "还没有发货，不能退货入库")
    parts: list[tuple[OrderLine, dict[int, int]]] = []
    problems: dict[int, str] = {}
    for line in order.lines:
        if line.sku_id is None:
            problems[line.id] = "商家编码未匹配 SKU，不能退货入库"
            continue
        try:
            parts.append((line, _components(line)))
        except DomainError as exc:
            problems[line.id] = exc.message
    shipped_units = _shipped_units(order) if shipped else {}
    returned_units = _ledger_sums(order.id, "return")
    left = {s: shipped_units.get(s, 0) - returned_units.get(s, 0) for s in set(shipped_units) | set(returned_units)}
    returned = _attribute(returned_units, parts)
    returnable = _attribute(left, parts) if shipped else {}
    lines = []
    for row, line in enumerate(order.lines, start=1):
        sku = line.sku
        lines.append(SheetLine(row, line.id, line.platform_line_id, line.merchant_code or "", line.title or "",
                               line.spec or "", bool(sku is not None and sku.is_bundle), line.quantity,
                               returned.get(line.id, 0), returnable.get(line.id, 0), problems.get(line.id)))
    wh_id, ship_whs = _default_warehouse(order)
    names = dict(db.session.execute(select(Warehouse.id, Warehouse.name)
                                    .where(Warehouse.id.in_(ship_whs))).all()) if ship_whs else {}
    return ReturnSheet(order, shipped, problem, lines, wh_id, [names.get(w, f"#{w}") for w in ship_whs],
                       STATUS_ZH.get(order.status, order.status))


# --- the return ------------------------------------------------------------------------------------
@dataclass
class ReturnResult:
    order_id: int
    platform_order_id: str
    warehouse_id: int
    warehouse_name: str
    source_ref: str
    lines: list[tuple[int, int]]  # (order line id, quantity)
    booked: dict[int, int]  # {stock SKU id: quantity} booked as ``return`` movements
    reallocated: list[int] = field(default_factory=list)

    @property
    def units(self) -> int:
        return sum(self.booked.values())

    @property
    def summary(self) -> str:
        text = (f"退货入库单 {self.source_ref}：订单 {self.platform_order_id} 退回 {len(self.lines)} 行共 "
                f"{self.units} 件，已入{self.warehouse_name}")
        if self.reallocated:
            text += f"；{len(self.reallocated)} 个缺货订单已分配到库存并解除挂起"
        return text


def _warehouse(order: Order, warehouse) -> Warehouse:
    if warehouse not in (None, ""):
        wh = stock_documents.resolve_warehouse(warehouse)
    else:
        wh_id, ship_whs = _default_warehouse(order)
        if wh_id is None and ship_whs:
            names = "、".join(db.session.scalars(select(Warehouse.name).where(Warehouse.id.in_(ship_whs))
                                                 .order_by(Warehouse.id)))
            raise ValidationError(f"订单 {order.platform_order_id} 从多个仓库发货（{names}），请选择退货入库的「仓库」",
                                  "warehouse")
        if wh_id is None:
            raise ValidationError(f"订单 {order.platform_order_id} 没有发货仓库记录，请选择退货入库的「仓库」",
                                  "warehouse")
        wh = db.session.get(Warehouse, wh_id)
    if not wh.active:
        raise ValidationError(f"「仓库」{wh.name} 已停用，不能退货入库", "warehouse")
    return wh


def _plan(order: Order, quantities: Optional[dict]) -> tuple[list[tuple[int, OrderLine, int]], dict[int, int]]:
    """The lines coming back [(row, line, quantity)] and {stock SKU: quantity}, or
    DocumentInvalid with every problem."""
    rows = {line.id: (row, line) for row, line in enumerate(order.lines, start=1)}
    issues: list[str] = []
    wanted: list[tuple[int, OrderLine, int]] = []
    if quantities is None:  # everything that shipped and has not come back
        sheet = return_sheet(order)
        for sl in sheet.lines:
            if sl.returnable > 0:
                wanted.append((sl.row, rows[sl.line_id][1], sl.returnable))
        if not wanted:
            raise DocumentInvalid([f"订单 {order.platform_order_id} 已全部退货入库，没有可退的商品"], "quantity")
    else:
        for key, raw in quantities.items():
            try:
                line_id = int(key)
            except (TypeError, ValueError):
                line_id = None
            if line_id not in rows:
                issues.append(f"订单明细 {key} 不属于订单 {order.platform_order_id}")
                continue
            row, line = rows[line_id]
            where = _line_label(row, line)
            if raw is None or str(raw).strip() == "":
                continue  # a blank line does not come back
            n = stock_documents._int(raw)
            if n is None or n <= 0:
                issues.append(f"{where}「退货数量」必须是正整数：{raw}")
                continue
            if line.sku_id is None:
                issues.append(f"{where}：商家编码未匹配 SKU，不能退货入库")
                continue
            if n > line.quantity:
                issues.append(f"{where}「退货数量」{n} 超过该行发货数量 {line.quantity}")
                continue
            wanted.append((row, line, n))
        if not wanted and not issues:
            issues.append("没有填写任何退货数量")
    booked: dict[int, int] = defaultdict(int)
    rows_of: dict[int, list[int]] = defaultdict(list)
    for row, line, n in sorted(wanted, key=lambda w: w[0]):
        try:
            comps = _components(line)
        except DomainError as exc:
            issues.append(f"{_line_label(row, line)}：{exc.message}")
            continue
        for c, q in comps.items():
            booked[c] += n * q
            rows_of[c].append(row)
    shipped = _shipped_units(order)
    returned = _ledger_sums(order.id, "return")
    codes = dict(db.session.execute(select(Sku.id, Sku.merchant_code).where(Sku.id.in_(list(booked)))).all()) \
        if booked else {}
    for sku_id in sorted(booked):
        left = shipped.get(sku_id, 0) - returned.get(sku_id, 0)
        if booked[sku_id] > left:
            which = "、".join(str(r) for r in sorted(set(rows_of[sku_id])))
            issues.append(f"第 {which} 行「退货数量」：{codes.get(sku_id, sku_id)} 退回 {booked[sku_id]} 件，"
                          f"超过可退数量 {max(left, 0)}（已发货 {shipped.get(sku_id, 0)}，"
                          f"已退货 {returned.get(sku_id, 0)}）")
    if issues:
        raise DocumentInvalid(issues, "quantity")
    return sorted(wanted, key=lambda w: w[0]), dict(booked)


def receive_return(order: Union[int, str, Order], quantities: Optional[dict] = None, *, warehouse=None,
                   note: Optional[str] = None, source_ref: Optional[str] = None,
                   user_id: Optional[int] = None) -> ReturnResult:
    """退货入库: book the returned goods of a shipped order (all or nothing), then give the
    stock to held 缺货 orders first paid first served. ``quantities``: {order line id:
    quantity}, blank values skipped; None returns everything still returnable."""
    try:
        order = get_order(order)
        # One return of this order at a time: the checks below read the ledger after the lock.
        db.session.execute(select(Order.id).where(Order.id == order.id).with_for_update())
        if not has_shipped(order):
            raise IllegalTransition(f"订单 {order.platform_order_id} 当前为「{STATUS_ZH.get(order.status, order.status)}」，"
                                    "还没有发货，不能退货入库", "order")
        wh = _warehouse(order, warehouse)
        ref = stock_documents._source_ref("return", source_ref)
        note = stock_documents._note(note)
        wanted, booked = _plan(order, quantities)
        mv_note = note or f"订单 {order.platform_order_id} 退货"
        with stock.marks_after_stock_locks():
            for sku_id in sorted(booked):
                try:
                    stock.move(wh.id, sku_id, "return", booked[sku_id], order_id=order.id, source_ref=ref,
                               user_id=user_id, note=mv_note)
                except DomainError as exc:
                    raise ValidationError(f"{exc.message}。未写入任何库存。", "quantity") from None
        what = "、".join(f"{line.title}{('（' + line.merchant_code + '）') if line.merchant_code else ''} ×{n}"
                         for _row, line, n in wanted)
        text = f"退货入库 {ref}（{wh.name}）：{what}"
        if note:
            text += f"；原因：{note}"
        db.session.add(OrderEvent(order=order, action="return", source="user", user_id=user_id, note=text,
                                  created_at=utcnow()))
        result = ReturnResult(order.id, order.platform_order_id, wh.id, wh.name, ref,
                              [(line.id, n) for _row, line, n in wanted], booked)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    result.reallocated = stock_documents.reallocate(user_id)
    return result
