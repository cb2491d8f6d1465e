"""Row scope: a user sees only the orders, customers, shops and listings of their shops.

One mechanism, applied centrally: a SQLAlchemy ``do_orm_execute`` hook adds
``with_loader_criteria`` for every scoped entity to every ORM statement (select,
update, delete, relationship loads) run while a scope is active. Views, REST
APIs, exports, jobs and charts therefore cannot forget it; none opts in by hand.

The active scope is, in order:
1. an explicit ``as_scope(...)`` / ``as_user(user_id)`` block (jobs, CLI, tests);
2. inside a request, the logged-in user's shops (all shops if ``all_shops``),
   and nothing at all for an anonymous request;
3. otherwise (CLI, workers, migrations) unrestricted: the system itself.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterable, Optional

from flask import has_request_context, request
from sqlalchemy import event, select
from sqlalchemy.orm import Session, with_loader_criteria

UNRESTRICTED = None  # sentinel: no row scope
_explicit: contextvars.ContextVar = contextvars.ContextVar("oms_scope", default=("unset",))


def _criteria(shop_ids: frozenset[int]):
    from app.models import (
        Customer, CustomerShop, Order, OrderCountDelta, OrderEvent, OrderHold, OrderLine, Shop, ShopListing,
        SyncReject, SyncRun,
    )
    from app.models.tracking import LogisticsException, Parcel, ParcelEvent
    from app.models import PrintRecord, Waybill
    from app.models.scorecard import CarrierBillLine

    ids = sorted(shop_ids) or [-1]

    # Lambdas, so that aliased joins (FAB joins relationships through aliases)
    # are restricted as well; ``ids`` becomes a bound parameter.
    return [
        with_loader_criteria(Shop, lambda cls: cls.id.in_(ids), include_aliases=True),
        with_loader_criteria(Order, lambda cls: cls.shop_id.in_(ids), include_aliases=True),
        with_loader_criteria(OrderLine, lambda cls: cls.order_id.in_(
            select(Order.id).where(Order.shop_id.in_(ids))), include_aliases=True),
        with_loader_criteria(OrderHold, lambda cls: cls.order_id.in_(
            select(Order.id).where(Order.shop_id.in_(ids))), include_aliases=True),
        with_loader_criteria(OrderEvent, lambda cls: cls.order_id.in_(
            select(Order.id).where(Order.shop_id.in_(ids))), include_aliases=True),
        with_loader_criteria(CustomerShop, lambda cls: cls.shop_id.in_(ids), include_aliases=True),
        with_loader_criteria(SyncRun, lambda cls: cls.shop_id.in_(ids), include_aliases=True),
        with_loader_criteria(SyncReject, lambda cls: cls.shop_id.in_(ids), include_aliases=True),
        with_loader_criteria(ShopListing, lambda cls: cls.shop_id.in_(ids), include_aliases=True),
        with_loader_criteria(OrderCountDelta, lambda cls: cls.shop_id.in_(ids), include_aliases=True),
        with_loader_criteria(Customer, lambda cls: cls.id.in_(
            select(CustomerShop.customer_id).where(CustomerShop.shop_id.in_(ids))), include_aliases=True),
        # Parcel tracking and logistics exceptions (issue #6): through their order.
        with_loader_criteria(Parcel, lambda cls: cls.order_id.in_(
            select(Order.id).where(Order.shop_id.in_(ids))), include_aliases=True),
        with_loader_criteria(ParcelEvent, lambda cls: cls.parcel_id.in_(
            select(Parcel.id).join(Order, Order.id == Parcel.order_id).where(Order.shop_id.in_(ids))),
            include_aliases=True),
        with_loader_criteria(LogisticsException, lambda cls: cls.order_id.in_(
            select(Order.id).where(Order.shop_id.in_(ids))), include_aliases=True),
        # 打印记录 and 电子面单 numbers (issue #6): through their order.
        with_loader_criteria(PrintRecord, lambda cls: cls.order_id.in_(
            select(Order.id).where(Order.shop_id.in_(ids))), include_aliases=True),
        with_loader_criteria(Waybill, lambda cls: cls.order_id.in_(
            select(Order.id).where(Order.shop_id.in_(ids))), include_aliases=True),
        # 快递账单 lines (issue #6 scorecard): through their parcel's order.
        with_loader_criteria(CarrierBillLine, lambda cls: cls.order_id.in_(
            select(Order.id).where(Order.shop_id.in_(ids))), include_aliases=True),
    ]


def user_shop_ids(user) -> Optional[frozenset[int]]:
    """The shops a user may see: ``None`` means all shops."""
    if user is None or not getattr(user, "is_authenticated", False):
        return frozenset()
    if getattr(user, "all_shops", False):
        return UNRESTRICTED
    return frozenset(s.id for s in (user.shops or []))


def current_scope() -> Optional[frozenset[int]]:
    explicit = _explicit.get()
    if explicit != ("unset",):
        return explicit
    if has_request_context():
        # Cached per request (not on ``g``: an app context can outlive a request).
        env = request.environ
        if "oms.scope" not in env:
            env["oms.scope"] = _COMPUTING
            from flask_login import current_user

            try:
                env["oms.scope"] = user_shop_ids(current_user)
            except BaseException:
                env.pop("oms.scope", None)
                raise
        scope = env["oms.scope"]
        if scope is _COMPUTING:  # loading the user and their shops: not a user query
            return UNRESTRICTED
        return scope
    return UNRESTRICTED


_COMPUTING = object()


def reset_request_scope() -> None:
    if has_request_context():
        request.environ.pop("oms.scope", None)
        request.environ.pop("oms.grant", None)


@contextlib.contextmanager
def as_scope(shop_ids: Optional[Iterable[int]]):
    token = _explicit.set(None if shop_ids is None else frozenset(shop_ids))
    try:
        yield
    finally:
        _explicit.reset(token)


@contextlib.contextmanager
def as_user(user_id: Optional[int]):
    """Run a block (a job, a CLI export) with the row scope of ``user_id``."""
    if user_id is None:
        with as_scope(None):
            yield
        return
    from app.extensions import db
    from app.models import OmsUser

    with as_scope(None):
        user = db.session.get(OmsUser, user_id)
        # A job of a user deleted since it was queued sees nothing, not everything.
        ids = frozenset() if user is None else user_shop_ids(_Authed(user))
    with as_scope(ids):
        yield


class _Authed:
    def __init__(self, user):
        self.is_authenticated = True
        self.all_shops = user.all_shops
        self.shops = user.shops


def can_see_shop(shop_id: int) -> bool:
    scope = current_scope()
    return scope is UNRESTRICTED or shop_id in scope


@event.listens_for(Session, "do_orm_execute")
def _apply_row_scope(state) -> None:
    if state.is_column_load:
        return
    if not (state.is_select or state.is_update or state.is_delete):
        return
    # No early exit on ``state.all_mappers``: FAB's count wraps the ORM query in a
    # subquery whose outer statement names no mapper, and it must be scoped too.
    # Criteria for entities absent from a statement are simply not used.
    scope = current_scope()
    if scope is UNRESTRICTED:
        return
    state.statement = state.statement.options(*_criteria(scope))
