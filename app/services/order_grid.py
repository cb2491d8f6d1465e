"""The 订单工作台 grid's order-specific filters and status tabs (services/grid.py does the rest).

Tabs: 待付款 … 已关闭 show an order by its status; a held order (挂起) shows under
异常 only, because it cannot be audited or shipped until released, and a batch
on 待审核 should not trip over it.
"""
from __future__ import annotations

import re
from typing import Mapping

from sqlalchemy import exists, or_, select

from app.models import Order, OrderLine, Sku

from . import crypto, grid, grid_ui
from .errors import ValidationError
from .order_status import STATUS_ZH

TABS = list(STATUS_ZH) + ["held"]
TAB_LABELS = dict(STATUS_ZH, held="异常")
# Statuses an order can be held in: those tabs leave held orders to 异常.
_HOLDABLE_TABS = {"to_audit", "to_ship"}


def tab_filter(stmt, tab: str):
    if tab == "held":
        # the bare column, as the partial index ix_order_held is defined (``WHERE is_held``):
        # PostgreSQL proves that predicate from ``is_held`` or ``is_held = true``, not from
        # ``is_held IS true``
        return stmt.where(Order.is_held, Order.status != "closed")
    if tab not in STATUS_ZH:
        raise ValidationError(f"没有这个状态页签：{tab}", "tab")
    stmt = stmt.where(Order.status == tab)
    if tab in _HOLDABLE_TABS:
        stmt = stmt.where(Order.is_held.is_(False))
    return stmt


@grid.register_filter(Order, "tab")
def _tab(stmt, value, joins):
    return tab_filter(stmt, str(value))


def _ids(value, label: str) -> list[int]:
    values = value if isinstance(value, list) else [value]
    try:
        return [int(v) for v in values]
    except (TypeError, ValueError):
        raise ValidationError(f"「{label}」筛选值无效", "filters") from None


@grid.register_filter(Order, "shop_id")
def _shop(stmt, value, joins):
    return stmt.where(Order.shop_id.in_(_ids(value, "店铺")))


@grid.register_filter(Order, "carrier_id")
def _carrier(stmt, value, joins):
    return stmt.where(Order.carrier_id.in_(_ids(value, "快递公司")))


@grid.register_filter(Order, "warehouse_id")
def _warehouse(stmt, value, joins):
    return stmt.where(Order.warehouse_id.in_(_ids(value, "仓库")))


@grid.register_filter(Order, "sku")
def _sku(stmt, value, joins):
    """SKU or merchant code: orders with a line of that code (the line's own code or
    its matched SKU's)."""
    code = str(value).strip()
    if not code:
        return stmt
    line = select(OrderLine.id).where(OrderLine.order_id == Order.id)
    sku_ids = select(Sku.id).where(Sku.merchant_code == code)
    return stmt.where(exists(line.where(or_(OrderLine.merchant_code == code, OrderLine.sku_id.in_(sku_ids)))))


_PHONE = re.compile(r"^1\d{10}$")


@grid.register_filter(Order, "keyword")
def _keyword(stmt, value, joins):
    """Order number, tracking number, buyer nick, or a receiver's full mobile number
    (matched through its keyed hash: the number itself is encrypted)."""
    text = str(value).strip()
    if not text:
        return stmt
    terms = [Order.platform_order_id == text, Order.tracking_number == text, Order.buyer_nick == text]
    if _PHONE.match(text):
        terms.append(Order.receiver_phone_hash == crypto.phone_index(text))
    return stmt.where(or_(*terms))


@grid_ui.register_tabs("order_status")
def tab_counts(filters: Mapping) -> list[dict]:
    """Counts per tab for the current filters (except the tab itself).

    With no filter but shop / platform the maintained counters answer
    (services/order_counts.py); any other filter counts, capped.
    """
    rest = {k: v for k, v in filters.items() if k != "tab"}
    if set(rest) <= {"shop_id", "platform"}:
        counted = _maintained(rest)
        if counted is not None:
            return counted
    spec = grid.spec_for("order")
    out = []
    for code in TABS:
        n, capped = grid.count(spec, dict(rest, tab=code))
        out.append({"code": code, "label": TAB_LABELS[code], "count": n, "capped": capped})
    return out


def _maintained(filters: Mapping):
    try:
        from . import order_counts
    except ImportError:  # counters not installed
        return None
    shop_ids = filters.get("shop_id")
    platforms = filters.get("platform")
    rows = order_counts.tab_counts(
        shop_ids=_ids(shop_ids, "店铺") if shop_ids not in (None, []) else None,
        platforms=(platforms if isinstance(platforms, list) else [platforms]) if platforms else None,
    )
    by_code = {r["code"]: r["count"] for r in rows}
    return [{"code": code, "label": TAB_LABELS[code], "count": by_code.get(code, 0), "capped": False}
            for code in TABS]
