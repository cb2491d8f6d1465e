"""拆分订单 (GLOSSARY "merge / split"): ship part of an order now and the rest later.

A team splits an order when one line is out of stock (the rest should not wait), or
when a line ships from another warehouse as its own parcel. :func:`split_order` moves
the given quantities of the given lines into a NEW order of the same shop, all or
nothing, in one transaction.

**What may be split.** Orders in 待审核 or 待发货 (``order_status.HOLDABLE``), within
the user's shops (another shop's order is simply not found), not held 退款中 or 平台锁定
(a platform fact in progress: wait until the platform clears it). At least one unit must
stay on the original order, and each quantity is a positive whole number no larger than
the line has.

**The new order** is the same trade: same shop, platform, buyer, receiver, customer,
messages, flag, times (created/paid/modified on the platform) and platform status. Its
number is the original platform order's number plus ``-拆N`` (N = 1, 2, … per original
trade; ``split_from_id`` always points to the original trade, also when a part is split
again), so it can never collide with a synced order. The customer's order count does not
change (one platform trade is one order of the customer).

**Lines.** A line moved whole moves (same line id, same platform line id: the platform's
``oid``); a line moved in part is cut in two with the same platform line id on both
orders. A line's 实付 is split in proportion to the quantity (rounded to the fen; the
original keeps the remainder), its unit price and cost price stay.

**Money** (the sum of the original and the new order always equals the amount before):

* 运费 (post fee) stays whole on the original order (the buyer paid postage once);
* the new order's share of 商品金额, 优惠 and 实付 excluding 运费 is the moved lines'
  实付 ÷ all lines' 实付 (by price × quantity when every line's 实付 is 0, else by
  quantity), rounded to the fen; the original keeps the remainder;
* 成本 is recomputed from the lines of each order.

**Stock and status.** The original's reservation is released (``stock.release_order``),
then each part re-enters the flow where the original was:

* **待发货:** each part reserves again now, by the warehouse rules (so a part that one
  warehouse can ship whole gets that warehouse); a part that cannot reserve goes back
  to 待审核 with a 缺货 hold, and stock arriving reserves and audits it automatically.
  The carrier rules choose again for each part (weight and amount changed), unless a
  person chose the carrier or a tracking number is already there.
* **待审核 with a 缺货 hold only** (its 审单 failed for want of stock): each part tries
  again as if stock had arrived (``stock.reallocate_held``): a part that can reserve loses
  the hold and is audited (in a shop that reserves at payment it stays 待审核, reserved);
  a part still short keeps a 缺货 hold with a fresh note. This is the common case: split
  off the missing line and the rest ships now.
* **待审核 otherwise:** a reservation made at payment is made again for each part (缺货
  hold when short); without one nothing is reserved (审单 will).

Holds: 人工挂起, 地址不全 and 黑名单 describe the trade and are copied to the new order;
未匹配商品 follows the unmatched lines; 缺货 is decided per part as above. A warehouse a
person chose for the original is kept by both parts; ``warehouse_id`` chooses one for the
new order (respected if it can ship the part whole; else that part gets a 缺货 hold).

**Events.** Both orders get a ``split`` event with the user ("拆分订单：…"), besides the
events of what followed (反审核, 挂起, 审单…).

**Sync.** The platform still shows the whole trade under the original number:
:func:`is_split` tells a re-sync not to overwrite the lines and amounts of an order
split here (services/sync.py calls it), and write-back of a part uses the original's
number (:func:`root_platform_order_id`, services/writeback.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Iterable, Mapping, Optional

from sqlalchemy import exists, func, select

from app.extensions import db
from app.models import Order, OrderEvent, OrderHold, OrderLine, Warehouse
from app.models.types import utcnow

from . import order_status, stock, warehouse_choice
from .errors import IllegalTransition, NotFound, ValidationError
from .order_status import HOLD_ZH, HOLDABLE, STATUS_ZH

SUFFIX = "-拆"
PID_MAX = Order.__table__.c.platform_order_id.type.length  # 64
# Platform facts in progress: no split until the platform clears them.
BLOCKING_HOLDS = order_status.PLATFORM_HOLDS
# Holds that describe the whole trade: the new order gets them too.
COPIED_HOLDS = ("manual", "address_incomplete", "blacklist")
# Fields a re-sync of a split original must leave alone (the platform shows the whole trade).
LOCAL_FIELDS = frozenset({"goods_amount", "discount_amount", "post_fee", "paid_amount"})
CENT = Decimal("0.01")


@dataclass(frozen=True)
class SplitResult:
    order_id: int             # the original order
    platform_order_id: str
    status: str
    new_order_id: int
    new_platform_order_id: str
    new_status: str
    moved: str                # "TS-BLK-L×1、TS-WHT-M×2"

    @property
    def summary(self) -> str:
        return (f"已拆分订单 {self.platform_order_id}：{self.moved} 移至新订单 {self.new_platform_order_id}"
                f"（{STATUS_ZH.get(self.new_status, self.new_status)}），原订单"
                f"{STATUS_ZH.get(self.status, self.status)}")

    def to_dict(self) -> dict:
        return {"id": self.order_id, "platform_order_id": self.platform_order_id, "status": self.status,
                "new_order": {"id": self.new_order_id, "platform_order_id": self.new_platform_order_id,
                              "status": self.new_status},
                "moved": self.moved, "message": self.summary}


# --- the split family (used by sync and write-back) ------------------------------------------
def root_id(order: Order) -> int:
    """The id of the platform trade this order belongs to (itself unless split off)."""
    return order.split_from_id or order.id


def root_platform_order_id(order: Order) -> str:
    """The order number the platform knows for this order: the original trade's number for
    a part split off here (the platform has never heard of "…-拆1")."""
    if order.split_from_id is None:
        return order.platform_order_id
    from .scope import as_scope

    with as_scope(None):  # same shop as the part, so never outside its user's scope anyway
        pid = db.session.execute(select(Order.platform_order_id)
                                 .where(Order.id == order.split_from_id)).scalar_one_or_none()
    return pid or order.platform_order_id


def is_split(order: Order) -> bool:
    """True when this order was split here: it is a part split off (``split_from_id``) or
    other orders were split off it. A platform re-sync must then leave its lines and
    amounts (:data:`LOCAL_FIELDS`) alone: the platform still shows the whole trade."""
    if order.split_from_id is not None:
        return True
    if order.id is None:
        return False
    return bool(db.session.execute(select(exists().where(Order.split_from_id == order.id))).scalar())


def split_order_ids(order_ids: Iterable[int]) -> set[int]:
    """:func:`is_split` for many originals at once (one query): the ids that have parts."""
    ids = [i for i in order_ids if i is not None]
    if not ids:
        return set()
    return set(db.session.scalars(select(Order.split_from_id).where(Order.split_from_id.in_(ids)).distinct()))


def family(order: Order) -> list[Order]:
    """The original trade and every part split off it, original first, in the current scope."""
    rid = root_id(order)
    return list(db.session.scalars(select(Order).where((Order.id == rid) | (Order.split_from_id == rid))
                                   .order_by(Order.split_from_id.is_not(None), Order.id)))


# --- parsing -----------------------------------------------------------------------------------
def _line_label(index: int, ln: OrderLine) -> str:
    code = ln.merchant_code or (ln.sku.merchant_code if ln.sku is not None else None)
    what = f"{code} {ln.title}" if code else ln.title
    return f"第 {index} 行（{what}）"


def _parse_qty(value, where: str) -> int:
    if isinstance(value, bool):
        raise ValidationError(f"{where}拆出数量必须是正整数：{value}", "quantity")
    text = value.strip() if isinstance(value, str) else value
    try:
        number = Decimal(str(text))
    except (InvalidOperation, TypeError, ValueError):
        raise ValidationError(f"{where}拆出数量必须是正整数：{value}", "quantity") from None
    if not number.is_finite() or number != number.to_integral_value():
        raise ValidationError(f"{where}拆出数量必须是整数：{value}", "quantity")
    if number <= 0:
        raise ValidationError(f"{where}拆出数量必须大于 0：{value}", "quantity")
    return int(number)


def _parse_parts(order: Order, parts: Mapping) -> dict[int, int]:
    """{line id: quantity} checked against the order's lines; zh errors name the line."""
    if not isinstance(parts, Mapping) or not parts:
        raise ValidationError("请填写要拆出的商品数量", "parts")
    index = {ln.id: (i, ln) for i, ln in enumerate(order.lines, start=1)}
    out: dict[int, int] = {}
    for key, value in parts.items():
        try:
            line_id = int(str(key).strip())
        except (TypeError, ValueError):
            line_id = None
        if line_id is None or line_id not in index:
            raise ValidationError(f"订单 {order.platform_order_id} 没有明细 {key}", "parts")
        i, ln = index[line_id]
        where = _line_label(i, ln)
        qty = _parse_qty(value, where)
        if qty > ln.quantity:
            raise ValidationError(f"{where}拆出数量 {qty} 超过该行数量 {ln.quantity}", "quantity")
        out[line_id] = qty
    if all(out.get(ln.id, 0) == ln.quantity for ln in order.lines):
        raise ValidationError(f"不能拆出订单 {order.platform_order_id} 的全部商品：原订单至少要保留一件商品",
                              "parts")
    return out


def why_not(order: Order) -> Optional[str]:
    """Why this order cannot be split now (zh), or None when it can."""
    pid = order.platform_order_id
    if order.status not in HOLDABLE:
        return (f"订单 {pid} 当前为「{STATUS_ZH.get(order.status, order.status)}」，不能拆分"
                f"（允许的状态：待审核、待发货）")
    blocking = [r for r in order.active_hold_reasons if r in BLOCKING_HOLDS]
    if blocking:
        names = "、".join(HOLD_ZH[r] for r in blocking)
        return f"订单 {pid} 处于挂起状态（{names}），不能拆分：请等平台解除后再拆分"
    if sum(ln.quantity for ln in order.lines) < 2:
        return f"订单 {pid} 只有一件商品，不能拆分"
    return None


def _check_order(order: Order) -> None:
    problem = why_not(order)
    if problem is not None:
        raise IllegalTransition(problem)


def _new_number(root: Order) -> str:
    """``<root number>-拆N``: the next N free in the shop (the root row is locked)."""
    base = root.platform_order_id + SUFFIX
    taken = set(db.session.scalars(select(Order.platform_order_id).where(
        Order.shop_id == root.shop_id, Order.platform_order_id.like(base.replace("%", r"\%").replace("_", r"\_")
                                                                    + "%", escape="\\"))))
    n = db.session.execute(select(func.count()).where(Order.split_from_id == root.id)).scalar() + 1
    while f"{base}{n}" in taken:
        n += 1
    pid = f"{base}{n}"
    if len(pid) > PID_MAX:
        raise ValidationError(f"订单号 {root.platform_order_id} 太长，拆分后的订单号 {pid} 超过 {PID_MAX} 个字符",
                              "platform_order_id")
    return pid


# --- money --------------------------------------------------------------------------------------
def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _share(total: Decimal, ratio: Decimal) -> Decimal:
    """``total × ratio`` to the fen, never more than ``total`` (ratio ≤ 1)."""
    return min(total, _cents(total * ratio)) if total > 0 else Decimal("0.00")


def _ratio(order: Order, moved: dict[int, int], line_paid: dict[int, Decimal]) -> Decimal:
    lines = order.lines
    total_paid = sum((ln.paid_amount or 0 for ln in lines), Decimal("0"))
    if total_paid > 0:
        return sum(line_paid.values(), Decimal("0")) / total_paid
    total_goods = sum(((ln.price or 0) * ln.quantity for ln in lines), Decimal("0"))
    if total_goods > 0:
        return sum(((ln.price or 0) * moved[ln.id] for ln in lines if ln.id in moved), Decimal("0")) / total_goods
    total_qty = sum(ln.quantity for ln in lines)
    return Decimal(sum(moved.values())) / Decimal(total_qty)


def _cost(order: Order) -> Decimal:
    return sum(((ln.cost_price or 0) * ln.quantity for ln in order.lines), Decimal("0.00"))


# --- the command ------------------------------------------------------------------------------
def _lock(order_id: int) -> Order:
    """The order within the current user's scope, its row locked (PostgreSQL) so that a
    concurrent 审单, edit or second split waits for this one."""
    order = db.session.execute(select(Order).where(Order.id == order_id).with_for_update()
                               .execution_options(populate_existing=True)).scalar_one_or_none()
    if order is None:
        raise NotFound(f"订单不存在：{order_id}")
    return order


def _event(order: Order, note: str, *, source: str, user_id: Optional[int], old=None, new=None) -> None:
    db.session.add(OrderEvent(order=order, action="split", field=None, old_value=old, new_value=new,
                              source=source, user_id=user_id, note=note[:2000], created_at=utcnow()))


def _warehouse(value) -> Optional[int]:
    if value in (None, ""):
        return None
    try:
        wh = db.session.get(Warehouse, int(value))
    except (TypeError, ValueError):
        wh = None
    if wh is None:
        raise ValidationError(f"「发货仓库」不存在：{value}", "warehouse_id")
    if not wh.active:
        raise ValidationError(f"「发货仓库」{wh.name} 已停用", "warehouse_id")
    return wh.id


def split_order(order_id: int, parts: Mapping, *, user_id: Optional[int], source: str = "user",
                warehouse_id=None) -> SplitResult:
    """Move ``parts`` ({line id: quantity}) of order ``order_id`` into a new order of the same
    shop (see the module docstring for every rule). ``warehouse_id``: the new order's
    warehouse (a person's choice), else the rules'. Commits; all or nothing."""
    try:
        result = _split(order_id, parts, user_id=user_id, source=source, warehouse_id=warehouse_id)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return result


def _split(order_id, parts, *, user_id, source, warehouse_id) -> SplitResult:
    order = _lock(int(order_id))
    root = _lock(order.split_from_id) if order.split_from_id is not None else order
    _check_order(order)
    moved = _parse_parts(order, parts)
    chosen_wh = _warehouse(warehouse_id)
    original_status = order.status
    holds_before = set(order.active_hold_reasons)
    was_short = "out_of_stock" in holds_before
    had_reservation = bool(stock.reserved_by_order(order.id))
    manual_wh = warehouse_choice.manual_warehouse(order)
    pid = _new_number(root)

    # 1. The original's reservation goes (each part reserves again below).
    stock.release_order(order, user_id=user_id, note=f"拆分订单：拆出 {pid}，重新占用")

    # 2. The new order: the same trade.
    child = Order(
        shop_id=order.shop_id, platform=order.platform, platform_order_id=pid, status=order.status,
        platform_status=order.platform_status, is_held=False,
        buyer_nick=order.buyer_nick, receiver_name=order.receiver_name, receiver_phone=order.receiver_phone,
        receiver_phone_hash=order.receiver_phone_hash, receiver_province=order.receiver_province,
        receiver_city=order.receiver_city, receiver_district=order.receiver_district,
        receiver_address=order.receiver_address, receiver_zip=order.receiver_zip,
        buyer_message=order.buyer_message, seller_memo=order.seller_memo, flag=order.flag,
        platform_created_at=order.platform_created_at, paid_at=order.paid_at,
        platform_modified_at=order.platform_modified_at, audited_at=order.audited_at,
        carrier_id=order.carrier_id, carrier_rule_id=order.carrier_rule_id,
        customer_id=order.customer_id, is_returning_customer=order.is_returning_customer,
        split_from_id=root.id,
    )
    db.session.add(child)

    # 3. Lines: whole lines move, others are cut in two (实付 by quantity).
    line_paid: dict[int, Decimal] = {}
    for ln in order.lines:
        if ln.id in moved:
            q = moved[ln.id]
            line_paid[ln.id] = (ln.paid_amount or Decimal("0.00")) if q == ln.quantity else _share(
                ln.paid_amount or Decimal("0.00"), Decimal(q) / Decimal(ln.quantity))
    ratio = _ratio(order, moved, line_paid)
    labels = []
    for i, ln in enumerate(list(order.lines), start=1):
        if ln.id not in moved:
            continue
        q = moved[ln.id]
        code = ln.merchant_code or (ln.sku.merchant_code if ln.sku is not None else None) or ln.title
        labels.append(f"{code}×{q}")
        if q == ln.quantity:
            order.lines.remove(ln)
            ln.warehouse_id = None
            child.lines.append(ln)
        else:
            child.lines.append(OrderLine(
                platform_line_id=ln.platform_line_id, merchant_code=ln.merchant_code, sku_id=ln.sku_id,
                title=ln.title, spec=ln.spec, quantity=q, price=ln.price, paid_amount=line_paid[ln.id],
                cost_price=ln.cost_price, refund_status=ln.refund_status))
            ln.quantity -= q
            ln.paid_amount = (ln.paid_amount or Decimal("0.00")) - line_paid[ln.id]

    # 4. Money: 运费 stays; the rest by the moved share; the original keeps the remainder.
    goods_paid = max((order.paid_amount or Decimal("0.00")) - (order.post_fee or Decimal("0.00")), Decimal("0.00"))
    child.goods_amount = _share(order.goods_amount or Decimal("0.00"), ratio)
    child.discount_amount = _share(order.discount_amount or Decimal("0.00"), ratio)
    child.paid_amount = _share(goods_paid, ratio)
    child.post_fee = Decimal("0.00")
    order.goods_amount = (order.goods_amount or Decimal("0.00")) - child.goods_amount
    order.discount_amount = (order.discount_amount or Decimal("0.00")) - child.discount_amount
    order.paid_amount = (order.paid_amount or Decimal("0.00")) - child.paid_amount
    child.cost_amount = _cost(child)
    order.cost_amount = _cost(order)
    db.session.flush()

    moved_text = "、".join(labels)
    _event(order, f"拆分订单：{moved_text} 移至新订单 {pid}", source=source, user_id=user_id, new=pid)
    _event(child, f"拆分订单：由订单 {order.platform_order_id} 拆出 {moved_text}", source=source, user_id=user_id,
           old=order.platform_order_id)

    # 5. Holds that describe the trade; 未匹配商品 follows the lines.
    for h in list(order.holds):
        if h.released_at is None and h.reason in COPIED_HOLDS:
            _copy_hold(child, h, order.platform_order_id, source=source, user_id=user_id)
    _unmatched(order, source=source, user_id=user_id)
    _unmatched(child, source=source, user_id=user_id)

    # 6. Warehouses a person chose.
    child_wh = chosen_wh or manual_wh
    if child_wh is not None:
        child.warehouse_id = child_wh
        why = "拆分订单时指定" if chosen_wh is not None else "拆分订单：沿用原订单的人工指定仓库"
        db.session.add(OrderEvent(order=child, action="edit", field="warehouse_id", source=source,
                                  user_id=user_id, new_value=str(child_wh), note=why, created_at=utcnow()))
    db.session.flush()

    # 7. Both parts re-enter the flow where the original was.
    for part in (order, child):
        _reenter(part, original_status, was_short=was_short, had_reservation=had_reservation,
                 source=source, user_id=user_id)
    db.session.flush()
    return SplitResult(order.id, order.platform_order_id, order.status, child.id, child.platform_order_id,
                       child.status, moved_text)


def _copy_hold(child: Order, h: OrderHold, from_pid: str, *, source: str, user_id) -> None:
    note = f"拆分自 {from_pid}" + (f"：{h.note}" if h.note else "")
    order_status.hold(child, h.reason, note=note[:500], source=source, user_id=user_id)


def _unmatched(order: Order, *, source: str, user_id) -> None:
    codes = sorted({ln.merchant_code or "（空）" for ln in order.lines if ln.sku_id is None})
    active = "unmatched_sku" in order.active_hold_reasons
    if codes and not active:
        order_status.hold(order, "unmatched_sku", note="商家编码未匹配：" + "、".join(codes), source=source,
                          user_id=user_id)
    elif not codes and active:
        order_status.release(order, "unmatched_sku", note="拆分订单后已无未匹配商品", source=source, user_id=user_id)


def _set_short(order: Order, note: str, *, source: str, user_id) -> None:
    """A 缺货 hold with this note (a fresh note on an existing one)."""
    for h in order.holds:
        if h.released_at is None and h.reason == stock.OUT_OF_STOCK:
            h.note = note[:500]
            return
    order_status.hold(order, stock.OUT_OF_STOCK, note=note[:500], source=source, user_id=user_id)


def _reenter(part: Order, original_status: str, *, was_short: bool, had_reservation: bool, source: str,
             user_id) -> None:
    from . import carrier_rules

    if not part.lines:
        return
    if original_status == "to_ship":
        out = warehouse_choice.reserve(part, user_id=user_id, source=source, hold=False)
        if out.ok:
            carrier_rules.on_audit(part, source=source, user_id=user_id)
            return
        order_status.apply(part, "unaudit", source=source, user_id=user_id, note="拆分订单后缺货，退回待审核")
        _set_short(part, out.note or "拆分订单后缺货", source=source, user_id=user_id)
        return
    # 待审核
    other_holds = set(part.active_hold_reasons) - {stock.OUT_OF_STOCK}
    if was_short and not other_holds:
        out = warehouse_choice.reserve(part, user_id=user_id, source=source, hold=False)
        if not out.ok:
            _set_short(part, out.note or "拆分订单后缺货", source=source, user_id=user_id)
            return
        if stock.OUT_OF_STOCK in part.active_hold_reasons:
            order_status.release(part, stock.OUT_OF_STOCK, note="拆分订单后库存充足", source=source, user_id=user_id)
        if not order_status.reserves_at_payment(part):
            order_status.apply(part, "audit", source=source, user_id=user_id, note="拆分订单后自动审单",
                               prepared=out)
        return
    if was_short:  # other holds too: it waits, short, like the original
        _set_short(part, "拆分订单：原订单缺货，到货后分配库存", source=source, user_id=user_id)
        return
    if had_reservation and not part.active_hold_reasons:
        warehouse_choice.reserve(part, user_id=user_id, source=source, hold=True)
