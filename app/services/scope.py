"""Row scope: a user sees only the orders, customers and shops of their shops.

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
import functools
import contextvars
from typing import Iterable, Optional

from flask import g, has_request_context
from sqlalchemy import event, select
from sqlalchemy.orm import Session, with_loader_criteria

UNRESTRICTED = None  # sentinel: no row scope
_explicit: contextvars.ContextVar = contextvars.ContextVar("oms_scope", default=("unset",))


def _criteria(shop_ids: frozenset[int]):
    from app.models import Customer, CustomerShop, Order, OrderEvent, OrderHold, OrderLine, Shop

    ids = sorted(shop_ids) or [-1]
    scoped_orders = select(Order.id).where(Order.shop_id.in_(ids))
    scoped_customers = select(CustomerShop.customer_id).where(CustomerShop.shop_id.in_(ids))
    return [
        with_loader_criteria(Shop, Shop.id.in_(ids), include_aliases=True),
        with_loader_criteria(Order, Order.shop_id.in_(ids), include_aliases=True),
        with_loader_criteria(OrderLine, OrderLine.order_id.in_(scoped_orders), include_aliases=True),
        with_loader_criteria(OrderHold, OrderHold.order_id.in_(scoped_orders), include_aliases=True),
        with_loader_criteria(OrderEvent, OrderEvent.order_id.in_(scoped_orders), include_aliases=True),
        with_loader_criteria(CustomerShop, CustomerShop.shop_id.in_(ids), include_aliases=True),
        with_loader_criteria(Customer, Customer.id.in_(scoped_customers), include_aliases=True),
    ]


@functools.lru_cache(maxsize=1)
def _scoped_mappers():
    from app.models import Customer, CustomerShop, Order, OrderEvent, OrderHold, OrderLine, Shop

    return frozenset(m.__mapper__ for m in (Shop, Order, OrderLine, OrderHold, OrderEvent, Customer, CustomerShop))


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
        if "oms_scope" not in g.__dict__:
            g.oms_scope = ("computing",)
            from flask_login import current_user

            g.oms_scope = user_shop_ids(current_user)
        scope = g.oms_scope
        if scope == ("computing",):  # loading the user itself: not a scoped query
            return UNRESTRICTED
        return scope
    return UNRESTRICTED


def reset_request_scope() -> None:
    if has_request_context():
        g.__dict__.pop("oms_scope", None)


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
        ids = UNRESTRICTED if user is None else user_shop_ids(_Authed(user))
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
    if not any(m in _scoped_mappers() for m in state.all_mappers):
        return
    scope = current_scope()
    if scope is UNRESTRICTED:
        return
    state.statement = state.statement.options(*_criteria(scope))
