"""扫描发货: scan (or type) a tracking number, and the order carrying it ships.

The order ships through the state machine (services/order_status.py: stock deducted,
发货回传 queued after the commit, and whatever hooks run on 发货), in the user's row
scope. Every refusal is a zh error naming the number and the order:

* no order in the user's shops has the number (NotFound);
* several orders have it (ValidationError, listing them: ship them from the grid);
* the order is held (挂起), already shipped (with when), or in another status.
"""
from __future__ import annotations

import re
from typing import Optional

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from app.extensions import db
from app.models import Order

from . import ewaybill, order_status
from .display import format_time
from .errors import IllegalTransition, NotFound, ValidationError
from .order_status import HOLD_ZH, STATUS_ZH

_SCANNED = re.compile(r"^[\x21-\x7e]{4,64}$")


def clean_number(raw) -> str:
    # A scanner types the code and Enter; people paste with spaces or full-width characters.
    text = str(raw or "").strip().replace(" ", "")
    text = text.translate({c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)})  # full-width → ASCII
    if not text:
        raise ValidationError("请扫描或输入快递单号", "tracking_number")
    if not _SCANNED.match(text):
        raise ValidationError(f"快递单号格式不对：{text[:64]}（应为 4–64 位字母、数字或符号）", "tracking_number")
    return text


def ship_by_tracking(raw, *, user_id: Optional[int]) -> dict:
    """Ship the one order with this tracking number; returns what the page lists."""
    number = clean_number(raw)
    orders = db.session.scalars(
        select(Order).where(Order.tracking_number == number)
        .options(selectinload(Order.holds), selectinload(Order.carrier), selectinload(Order.shop))
        .order_by(Order.id)).all()
    if not orders:
        raise NotFound(f"没有快递单号为 {number} 的订单（或不在你负责的店铺）")
    if len(orders) > 1:
        names = "、".join(f"订单 {o.platform_order_id}（{STATUS_ZH.get(o.status, o.status)}）" for o in orders[:10])
        raise ValidationError(f"快递单号 {number} 同时用于 {names}，不能扫描发货，请在订单工作台核对", "tracking_number")
    order = orders[0]
    pid = order.platform_order_id
    if order.status in ("shipped", "completed"):
        when = format_time(order.shipped_at) if order.shipped_at else ""
        raise IllegalTransition(f"订单 {pid} 已发货{('（' + when + '）') if when else ''}，不要重复发货")
    held = order.active_hold_reasons
    if order.is_held or held:
        names = "、".join(HOLD_ZH.get(r, r) for r in held) or "异常"
        raise IllegalTransition(f"订单 {pid} 处于挂起状态（{names}），不能发货：请先处理异常")
    if order.status != "to_ship":
        raise IllegalTransition(f"订单 {pid} 当前为「{STATUS_ZH.get(order.status, order.status)}」，只有待发货的订单可以发货")
    try:
        ewaybill.check_unique(order)
        order_status.apply(order, "ship", source="user", user_id=user_id, note="扫描发货")
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return {"id": order.id, "platform_order_id": pid, "tracking_number": number,
            "carrier": order.carrier.name if order.carrier else "", "shop": order.shop.name,
            "shipped_at": format_time(order.shipped_at)}
