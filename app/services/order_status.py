"""The order state machine (GLOSSARY.md "Order status").

Statuses and transitions live here and nowhere else. Each transition has a
guard; every accepted transition writes an OrderEvent; an illegal one raises
IllegalTransition with a zh message. A hold is not a status: it sits on top of
``to_audit`` or ``to_ship`` and blocks audit and ship until released.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from app.extensions import db
from app.models import HOLD_REASONS, Order, OrderEvent, OrderHold
from app.models.types import utcnow

from .errors import IllegalTransition, ValidationError

STATUS_ZH = {
    "pending_payment": "待付款",
    "to_audit": "待审核",
    "to_ship": "待发货",
    "shipped": "已发货",
    "completed": "已完成",
    "closed": "已关闭",
}
HOLD_ZH = {
    "out_of_stock": "缺货",
    "refunding": "退款中",
    "address_incomplete": "地址不全",
    "blacklist": "黑名单",
    "unmatched_sku": "未匹配商品",
    "platform_locked": "平台锁定",
    "platform_data": "平台数据异常",
    "manual": "人工挂起",
}
HOLDABLE = {"to_audit", "to_ship"}
# Holds that mirror a platform fact: only the sync releases them, once the platform no
# longer reports it (退款中, 平台锁定), or once the platform's copy of the order can be saved
# again (平台数据异常: a newer copy the sync had to refuse, services/sync.py).
PLATFORM_HOLDS = ("refunding", "platform_locked", "platform_data")


@dataclass(frozen=True)
class Transition:
    name: str
    zh: str
    sources: frozenset[str]
    target: str
    guard: Optional[Callable[[Order, dict], None]] = None
    stamp: Optional[str] = None  # the time column set when it happens


def _not_held(order: Order, action_zh: str) -> None:
    reasons = order.active_hold_reasons
    if order.is_held or reasons:
        names = "、".join(HOLD_ZH.get(r, r) for r in reasons) or "异常"
        raise IllegalTransition(f"订单 {order.platform_order_id} 处于挂起状态（{names}），不能{action_zh}")


def _guard_audit(order: Order, kw: dict) -> None:
    _not_held(order, "审单")
    if not order.lines:
        raise IllegalTransition(f"订单 {order.platform_order_id} 没有商品明细，不能审单")


def _guard_ship(order: Order, kw: dict) -> None:
    _not_held(order, "发货")
    if not order.carrier_id:
        raise ValidationError(f"订单 {order.platform_order_id} 未指定快递公司，不能发货", "carrier")
    if not (order.tracking_number or "").strip():
        raise ValidationError(f"订单 {order.platform_order_id} 没有快递单号，不能发货", "tracking_number")


def _guard_close(order: Order, kw: dict) -> None:
    if not (kw.get("reason") or "").strip():
        raise ValidationError("关闭订单必须填写原因", "close_reason")


def _guard_platform_only(order: Order, kw: dict) -> None:
    if kw.get("source") not in ("sync", "import"):
        raise IllegalTransition("该状态变化只能由平台同步或导入产生")


TRANSITIONS: dict[str, Transition] = {
    t.name: t
    for t in [
        # Payment and completion happen on the platform: sync/import only.
        Transition("pay", "付款", frozenset({"pending_payment"}), "to_audit", _guard_platform_only, "paid_at"),
        Transition("audit", "审单", frozenset({"to_audit"}), "to_ship", _guard_audit, "audited_at"),
        Transition("unaudit", "反审核", frozenset({"to_ship"}), "to_audit"),
        Transition("ship", "发货", frozenset({"to_ship"}), "shipped", _guard_ship, "shipped_at"),
        # The seller shipped in the platform's own back-end: sync/import only.
        Transition("ship_on_platform", "平台发货", frozenset({"to_audit", "to_ship"}), "shipped",
                   _guard_platform_only, "shipped_at"),
        Transition("complete", "完成", frozenset({"shipped"}), "completed", _guard_platform_only, "completed_at"),
        Transition("cancel", "取消", frozenset({"pending_payment", "to_audit", "to_ship"}), "closed",
                   _guard_close, "closed_at"),
        # Closed after a full refund, before or after shipping.
        Transition("refund_close", "退款关闭", frozenset({"to_audit", "to_ship", "shipped"}), "closed",
                   _guard_close, "closed_at"),
    ]
}

# The order of the life cycle; a re-sync never moves an order backwards along it.
LIFECYCLE = ["pending_payment", "to_audit", "to_ship", "shipped", "completed"]


def allowed_actions(order: Order) -> list[str]:
    return [t.name for t in TRANSITIONS.values() if order.status in t.sources]


def _event(order: Order, action: str, field: str | None, old, new, source: str,
           user_id: Optional[int], note: Optional[str] = None) -> OrderEvent:
    ev = OrderEvent(order=order, action=action, field=field,
                    old_value=None if old is None else str(old),
                    new_value=None if new is None else str(new),
                    source=source, user_id=user_id, note=note, created_at=utcnow())
    db.session.add(ev)
    return ev


def apply(order: Order, action: str, *, source: str = "user", user_id: Optional[int] = None,
          reason: Optional[str] = None, note: Optional[str] = None, stock: bool = True,
          prepared=None) -> Order:
    """Run transition ``action`` on ``order``; the caller commits.

    ``stock=False`` skips the stock side (:func:`_move_stock`); only for recorded
    history whose stock effects are already in the opening stock (the demo).
    ``prepared``: 审单's reservation already decided for a batch (:func:`prepare_audit`)."""
    t = check(order, action, source=source, reason=reason, prepared=prepared)
    if stock:
        _move_stock(order, action, source, user_id, prepared)
    old = order.status
    now = utcnow()
    order.status = t.target
    if t.stamp and getattr(order, t.stamp) is None:
        setattr(order, t.stamp, now)
    if stock and action == "pay":
        _reserve_at_payment(order, source, user_id)
    if t.target == "closed":
        order.close_reason = (reason or "").strip()[:200]
        for hold in order.holds:
            if hold.released_at is None:
                hold.released_at = now
                hold.released_by_id = user_id
        order.is_held = False
    _event(order, action, "status", old, t.target, source, user_id, note or reason)
    from .orders import update_customer_spend

    update_customer_spend(order, old, t.target)
    if action == "audit":  # 快递规则 choose the carrier (services/carrier_rules.py)
        from .carrier_rules import on_audit

        on_audit(order, source=source, user_id=user_id)
    if action == "ship" and source not in ("sync", "import"):  # shipped here: tell the platform (发货回传)
        from .writeback import mark_pending

        mark_pending(order)
    # Track the parcel at Kuaidi100 (services/tracking.py; polled after commit). A ship
    # recorded from sync or an import is history (the demo's, a team's old sheets):
    # tracking it would poll thousands of old parcels and raise stale 物流异常.
    if action == "ship" and source not in ("sync", "import"):
        from .tracking import start_tracking

        start_tracking(order)
    return order


def check(order: Order, action: str, *, source: str = "user", reason: Optional[str] = None,
          prepared=None) -> Transition:
    """Everything :func:`apply` refuses before it writes anything (the status, the guard,
    and a batch's 缺货 decided by :func:`prepare_audit`): raises the same error."""
    t = TRANSITIONS.get(action)
    if t is None:
        raise ValidationError(f"未知的订单操作：{action}", "action")
    if order.status not in t.sources:
        raise IllegalTransition(
            f"订单 {order.platform_order_id} 当前为「{STATUS_ZH.get(order.status, order.status)}」，"
            f"不能{t.zh}（允许的状态：{'、'.join(STATUS_ZH[s] for s in sorted(t.sources, key=LIFECYCLE_INDEX))}）"
        )
    if t.guard:
        t.guard(order, {"reason": reason, "source": source})
    if action == "audit" and prepared is not None and not prepared.ok:
        _refuse_audit(order, prepared)
    return t


def _refuse_audit(order: Order, out) -> None:
    from . import stock, warehouse_choice

    if out.refused:
        raise warehouse_choice.WarehouseRefused(f"订单 {order.platform_order_id} 不能审单：{out.note}")
    raise stock.OutOfStock(f"订单 {order.platform_order_id} 缺货，不能审单（{out.note}）", order.id, out.note)


def _move_stock(order: Order, action: str, source: str, user_id: Optional[int], prepared=None) -> None:
    """The stock side of a transition (services/stock.py), before the status changes.

    审单 reserves (refused with a 缺货 hold if it cannot; refused without a hold if the
    warehouse a person chose cannot ship it whole); 反审核, 取消 and 退款关闭 release what
    the ledger says the order reserved (nothing if it reserved nothing; 反审核 keeps it
    in a shop that reserves at payment); 发货 and 平台发货 deduct (from 待审核: on hand
    only, if the stock is there). 付款 reserves in a shop that reserves at payment
    (:func:`_reserve_at_payment`, after the status change: a failure is a 缺货 hold).
    """
    from . import stock, warehouse_choice

    if action == "audit":
        # Chooses the warehouse (services/warehouse_choice.py) unless reserved at payment.
        out = prepared if prepared is not None else warehouse_choice.reserve(
            order, user_id=user_id, source=source, strict_manual=True)
        if out.refused or not out.ok:
            _refuse_audit(order, out)
    elif action == "unaudit":
        if not reserves_at_payment(order):  # reserved at payment: it stays reserved while paid
            stock.release_order(order, user_id=user_id)
    elif action in ("cancel", "refund_close"):
        stock.release_order(order, user_id=user_id)
    elif action in ("ship", "ship_on_platform"):
        stock.ship_order(order, user_id=user_id)


def prepare_audit(orders, *, source: str, user_id: Optional[int], lock: bool = False):
    """批量审单: decide the reservations of the orders 审单 can take, for the whole batch at
    once (services/warehouse_choice.py ``reserve_many``: first paid first served, the same
    rules and notes as one order), so each order's :func:`apply` (``prepared=``) finds
    its reservation or its 缺货 note ready. Orders the batch cannot decide alone (a
    person's warehouse, reserved at payment, a split) are absent: their 审单 reserves as
    usual. Returns the ``BatchReservation``; the caller runs ``finish()`` last, before
    COMMIT (the stock rows), and releases the reservation of an order whose 审单 failed
    for another reason (:func:`app.services.stock.release_order`).

    ``lock=False``: optimistic (the stock rows are written by ``finish()``, which raises
    ``StockMoved`` if they were taken meanwhile: roll back, run again with ``lock=True``)."""
    from . import warehouse_choice

    eligible = [o for o in orders if o.status == "to_audit" and not o.is_held and not o.active_hold_reasons
                and o.lines]
    return warehouse_choice.reserve_many(eligible, user_id=user_id, source=source, hold=False, fast_only=True,
                                         lock=lock, defer_stock=not lock)


def reserves_at_payment(order: Order) -> bool:
    """The order's shop reserves stock when an order is paid (Shop.reserve_at)."""
    from app.models import Shop

    shop = order.shop if order.shop is not None else db.session.get(Shop, order.shop_id)
    return shop is not None and shop.reserve_at == "payment"


def _reserve_at_payment(order: Order, source: str, user_id: Optional[int]) -> None:
    """付款 in a shop that reserves at payment: reserve now (the order waits in 待审核 with its
    stock); if it cannot, a 缺货 hold. Orders with an unmatched line reserve on 审单."""
    if not reserves_at_payment(order) or order.status not in HOLDABLE:
        return
    if not order.lines or any(ln.sku_id is None for ln in order.lines):
        return
    from . import warehouse_choice

    warehouse_choice.reserve(order, user_id=user_id, source=source)


def reserve_on_arrival(keys, *, source: str, user_id: Optional[int] = None) -> int:
    """Orders that arrive already paid (an import, sync) skip the 付款 transition; in a
    shop that reserves at payment they reserve now, as if paid here (a 缺货 hold when
    short). ``keys``: (shop_id, platform_order_id) pairs; others are left alone.
    The caller commits. Returns how many orders were considered."""
    from sqlalchemy import select, tuple_

    from app.models import Shop

    keys = list(keys)
    if not keys:
        return 0
    pay_shops = set(db.session.scalars(select(Shop.id).where(
        Shop.id.in_({k[0] for k in keys}), Shop.reserve_at == "payment")))
    keys = [k for k in keys if k[0] in pay_shops]
    from sqlalchemy.orm import selectinload

    from . import warehouse_choice

    n = 0
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        found = db.session.scalars(select(Order).where(
            tuple_(Order.shop_id, Order.platform_order_id).in_(chunk),
            Order.status.in_(sorted(HOLDABLE)), Order.is_held.is_(False))
            .options(selectinload(Order.lines), selectinload(Order.holds))).all()
        # Orders with an unmatched line reserve on 审单 (as _reserve_at_payment); those already
        # reserved (paid here) are kept by the rules. First paid first served, in one go.
        todo = [o for o in found if o.lines and all(ln.sku_id is not None for ln in o.lines)]
        warehouse_choice.reserve_many(todo, user_id=user_id, source=source)
        n += len(todo)
    return n


def LIFECYCLE_INDEX(status: str) -> int:
    return LIFECYCLE.index(status) if status in LIFECYCLE else len(LIFECYCLE)


def hold(order: Order, reason: str, *, note: Optional[str] = None, source: str = "user",
         user_id: Optional[int] = None) -> Optional[OrderHold]:
    """Put a hold on the order; a second hold with the same reason is a no-op."""
    if reason not in HOLD_REASONS:
        raise ValidationError(f"未知的挂起原因：{reason}", "reason")
    if order.status not in HOLDABLE:
        raise IllegalTransition(
            f"订单 {order.platform_order_id} 当前为「{STATUS_ZH[order.status]}」，只有待审核或待发货的订单可以挂起"
        )
    if reason in order.active_hold_reasons:
        return None
    h = OrderHold(order=order, reason=reason, note=note, created_by_id=user_id, created_at=utcnow())
    db.session.add(h)
    order.is_held = True
    _event(order, "hold", "hold", None, HOLD_ZH[reason], source, user_id, note)
    return h


def release(order: Order, reason: Optional[str] = None, *, note: Optional[str] = None,
            source: str = "user", user_id: Optional[int] = None) -> int:
    """Release one hold reason (or all); returns how many holds were released."""
    if reason is not None and reason not in HOLD_REASONS:
        raise ValidationError(f"未知的挂起原因：{reason}", "reason")
    now = utcnow()
    released = 0
    for h in order.holds:
        if h.released_at is None and (reason is None or h.reason == reason):
            h.released_at = now
            h.released_by_id = user_id
            released += 1
            _event(order, "release", "hold", HOLD_ZH[h.reason], None, source, user_id, note)
    if released == 0:
        raise IllegalTransition(f"订单 {order.platform_order_id} 没有可解除的挂起")
    order.is_held = any(h.released_at is None for h in order.holds)
    return released
