"""商品匹配 (issue #5 item 1): order lines → our SKUs, and re-matching the orders held
as 未匹配商品 when the mapping changes.

The rule for one order line (shop S, merchant code C):

1. the SKU whose 商家编码 is C;
2. otherwise the SKU that shop S's listings (店铺商品) with merchant code C are mapped
   to, when they all agree on one SKU (a listing mapped by hand to a SKU with
   another code: many listings → one SKU).

One implementation (:class:`SkuCatalogue`) serves every path: the paths that create
order lines (``orders.create_order``, the platform sync, the order import, per order
and in bulk) load it once per run, import or page and look each line up in one dict;
:func:`resolve` (re-matching) is the same thing for one shop and a few codes.

A line *matches* when it is linked to a SKU that can be stocked: a plain SKU, or a
bundle (组合装) that has its components defined. A bundle without components is not
matched yet (it cannot reserve stock), so the hold stays until they are defined.

Re-matching (:func:`rematch_orders`): for each order held 未匹配商品 (待审核 or 待发货)
whose unmatched lines carry one of the changed codes, every unmatched line is
resolved again; newly linked lines get the SKU and its cost price, the order's
cost is recomputed (one ``edit`` event on 成本 with the codes in its note), and the
hold is released (a ``release`` event) once every line matches; otherwise the
hold's note lists the codes still unmatched. It runs as the system (every shop):
a mapping is not a shop's private matter, and the user who edited it may not see
every shop.

When: any change of the mapping, whatever path made it (SKU form, SKU REST API and
grid, the SKU import template, 店铺商品 form/API/import, bundle components form/API),
is collected by an ``after_flush`` listener (:func:`_collect`) and re-matched in the
same transaction just before it commits (:func:`_before_commit`): the mapping
change and its re-match commit together or not at all. Services may also call
:func:`rematch_orders` directly.
"""
from __future__ import annotations

import logging
from decimal import Decimal
from types import SimpleNamespace
from typing import Iterable, Optional

from sqlalchemy import event, inspect, or_, select, tuple_
from sqlalchemy.orm import Session

from app.extensions import db
from app.models import BundleComponent, Order, OrderEvent, OrderHold, OrderLine, ShopListing, Sku
from app.models.types import utcnow

from . import order_status
from .scope import as_scope

log = logging.getLogger(__name__)

UNMATCHED = "unmatched_sku"
_INFO_KEY = "oms_mapping_changed"


# --- resolving ---------------------------------------------------------------------------
def _stockable(sku_ids: Iterable[int]) -> set[int]:
    """Of these SKU ids, those that can be stocked: plain SKUs, bundles with components."""
    ids = sorted(set(sku_ids))
    if not ids:
        return set()
    plain = set(db.session.scalars(select(Sku.id).where(Sku.id.in_(ids), Sku.is_bundle.is_(False))))
    bundles = set(db.session.scalars(select(BundleComponent.bundle_sku_id)
                                     .where(BundleComponent.bundle_sku_id.in_(ids)).distinct()))
    return plain | bundles


LOOKUP_CHUNK = 5000  # codes per IN (…) of a lookup

# What the paths that cannot keep ORM objects across commits (the sync's bulk path) get.
_PLAIN = (Sku.id, Sku.merchant_code, Sku.cost_price, Sku.name, Sku.is_bundle)


class SkuCatalogue:
    """The rule of this module for many order lines at once, loaded in two queries (per
    chunk of LOOKUP_CHUNK codes): the SKUs by merchant code (rule 1) and the listing codes
    of each shop that map to exactly one SKU (rule 2). :meth:`for_shop` is one shop's
    lookup, a plain dict merchant code → SKU: one dict lookup per line.

    Values are ORM ``Sku`` objects, or with ``orm=False`` plain values with the attributes
    ``id``, ``merchant_code``, ``cost_price``, ``name`` and ``is_bundle`` (they survive a
    commit). A SKU found through a listing is the same value as when found by its own code
    (a bundle stays a bundle: the line is linked to it, its cost price, no hold)."""

    def __init__(self, by_code: dict, listed: dict):
        self.by_code = by_code  # rule 1: merchant code → SKU
        self._listed = listed  # rule 2: shop id → {listing code → SKU}, codes no SKU has
        self._shops: dict = {}

    @classmethod
    def load(cls, codes: Optional[Iterable[str]] = None, *, shop_ids: Optional[Iterable[int]] = None,
             orm: bool = True) -> "SkuCatalogue":
        """The SKUs of these merchant codes (None: every SKU) and the listing mappings of
        these shops (None: every shop) for those codes."""
        by_code: dict = {}
        by_id: dict = {}

        def value(row, at: int = 0):
            if orm:
                return row[at]
            sid = row[at]
            sku = by_id.get(sid)
            if sku is None:
                sku = SimpleNamespace(id=sid, merchant_code=row[at + 1], cost_price=row[at + 2],
                                      name=row[at + 3], is_bundle=row[at + 4])
            return sku

        entity = (Sku,) if orm else _PLAIN
        if codes is None:
            chunks: list = [None]
        else:
            wanted = sorted({c for c in codes if c})
            chunks = [wanted[i:i + LOOKUP_CHUNK] for i in range(0, len(wanted), LOOKUP_CHUNK)]
        shops = None if shop_ids is None else sorted({s for s in shop_ids if s is not None})
        for chunk in chunks:
            q = select(*entity)
            if chunk is not None:
                q = q.where(Sku.merchant_code.in_(chunk))
            for row in db.session.execute(q):
                sku = value(row)
                by_code[sku.merchant_code] = by_id[sku.id] = sku
        mapped: dict = {}
        for chunk in chunks if shops != [] else ():
            # A listing whose code is its own SKU's code adds nothing to rule 1: only the others.
            q = (select(ShopListing.shop_id, ShopListing.merchant_code, *entity)
                 .join(Sku, Sku.id == ShopListing.sku_id)
                 .where(ShopListing.merchant_code != Sku.merchant_code, ShopListing.merchant_code != ""))
            if chunk is not None:
                q = q.where(ShopListing.merchant_code.in_(chunk))
            if shops is not None:
                q = q.where(ShopListing.shop_id.in_(shops))
            for row in db.session.execute(q):
                sku = value(row, 2)
                sku = by_id.setdefault(sku.id, sku)
                mapped.setdefault((row[0], row[1]), {})[sku.id] = sku
        listed: dict = {}
        for (shop_id, code), skus in mapped.items():
            if len(skus) == 1 and code not in by_code:  # all agree on one SKU; rule 1 first
                listed.setdefault(shop_id, {})[code] = next(iter(skus.values()))
        if not orm:  # plain values carry line_cost's cost: a bundle without its own, its components'
            bundles = sorted(sid for sid, sku in by_id.items() if sku.is_bundle and not sku.cost_price)
            for sid, cost in _bundle_costs(bundles).items() if bundles else ():
                by_id[sid].cost_price = cost
        return cls(by_code, listed)

    def for_shop(self, shop_id: Optional[int]) -> dict:
        """Merchant code → SKU for lines of this shop (a dict: ``.get(code)``)."""
        view = self._shops.get(shop_id)
        if view is None:
            extra = self._listed.get(shop_id)
            view = self._shops[shop_id] = {**extra, **self.by_code} if extra else self.by_code
        return view


def resolve(shop_id: int, codes: Iterable[str]) -> dict[str, Sku]:
    """Merchant code → SKU for lines of this shop, by the rule in the module docstring."""
    return SkuCatalogue.load(codes, shop_ids=[shop_id]).for_shop(shop_id)


def _unmatched_lines(order: Order, stockable: set[int]) -> list[OrderLine]:
    return [ln for ln in order.lines if ln.sku_id is None or ln.sku_id not in stockable]


def line_cost(sku) -> Decimal:
    """The cost price of one unit of this SKU on an order line, the one rule for an order
    created (``orders.create_order``, the bulk paths) and for a line re-matched later: the
    SKU's own cost price; a bundle without its own cost costs its components. ``sku``: an
    ORM ``Sku``, or a :class:`SkuCatalogue` plain value (its ``cost_price`` already follows
    this rule)."""
    cost = Decimal(sku.cost_price or 0)
    if sku.is_bundle and cost == 0 and isinstance(sku, Sku):
        cost = sum((Decimal(c.component.cost_price or 0) * c.quantity for c in sku.components), Decimal("0.00"))
    return cost.quantize(Decimal("0.01"))


def _bundle_costs(bundle_ids: list) -> dict:
    """Bundle id → the cost of its components (one query per LOOKUP_CHUNK bundles)."""
    from sqlalchemy import func

    out: dict = {}
    for i in range(0, len(bundle_ids), LOOKUP_CHUNK):
        q = (select(BundleComponent.bundle_sku_id,
                    func.sum(func.coalesce(Sku.cost_price, 0) * BundleComponent.quantity))
             .join(Sku, Sku.id == BundleComponent.component_sku_id)
             .where(BundleComponent.bundle_sku_id.in_(bundle_ids[i:i + LOOKUP_CHUNK]))
             .group_by(BundleComponent.bundle_sku_id))
        for bid, total in db.session.execute(q):
            out[bid] = Decimal(total or 0).quantize(Decimal("0.01"))
    return out


# --- re-matching ------------------------------------------------------------------------------
def _candidates(codes: set[str], shop_codes: set[tuple[int, str]], bundle_ids: set[int]) -> list[Order]:
    held = select(OrderHold.order_id).where(OrderHold.reason == UNMATCHED, OrderHold.released_at.is_(None))
    conds = []
    if codes:
        conds.append(OrderLine.merchant_code.in_(sorted(codes)))
    if shop_codes:
        conds.append(tuple_(Order.shop_id, OrderLine.merchant_code).in_(sorted(shop_codes)))
    if bundle_ids:
        conds.append(OrderLine.sku_id.in_(sorted(bundle_ids)))
    q = (select(Order.id).join(OrderLine, OrderLine.order_id == Order.id)
         .where(Order.id.in_(held), Order.status.in_(sorted(order_status.HOLDABLE))))
    if conds:
        q = q.where(or_(*conds))
    ids = sorted(set(db.session.scalars(q)))
    return [db.session.get(Order, i) for i in ids]


def rematch_orders(*, codes: Optional[Iterable[str]] = None, shop_codes: Optional[Iterable[tuple[int, str]]] = None,
                   bundle_ids: Optional[Iterable[int]] = None, user_id: Optional[int] = None,
                   source: str = "rule") -> list[int]:
    """Re-match the held 未匹配商品 orders touched by these codes (all shops), these
    (shop id, code) pairs or lines linked to these bundles; with no arguments every
    held order is re-matched. The caller commits. Returns the ids of the orders whose
    hold was released."""
    codes, shop_codes, bundle_ids = set(codes or ()), set(shop_codes or ()), set(bundle_ids or ())
    released = []
    with as_scope(None):
        for order in _candidates(codes, shop_codes, bundle_ids):  # nothing given: every held order
            if _rematch_one(order, user_id=user_id, source=source):
                released.append(order.id)
    return released


def _rematch_one(order: Order, *, user_id: Optional[int], source: str) -> bool:
    skus = resolve(order.shop_id, (ln.merchant_code for ln in order.lines if ln.sku_id is None))
    stockable = _stockable([ln.sku_id for ln in order.lines if ln.sku_id is not None]
                           + [s.id for s in skus.values()])
    linked = []
    for ln in order.lines:
        if ln.sku_id is None:
            sku = skus.get(ln.merchant_code)
            if sku is None or sku.id not in stockable:
                continue
            ln.sku, ln.sku_id, ln.cost_price = sku, sku.id, line_cost(sku)
            linked.append(f"{ln.merchant_code} → {sku.merchant_code} {sku.name}" if ln.merchant_code != sku.merchant_code
                          else f"{ln.merchant_code} {sku.name}")
        elif ln.sku is not None and ln.sku.is_bundle and ln.sku_id in stockable and not ln.cost_price:
            # linked to a bundle before its components were defined: now it has a cost
            ln.cost_price = line_cost(ln.sku)
            linked.append(f"{ln.sku.merchant_code} {ln.sku.name}（组合装已设置组成商品）")
    if linked:
        order.cost_amount = sum((Decimal(ln.cost_price or 0) * ln.quantity for ln in order.lines), Decimal("0.00"))
        # No old/new cost in the trail: the event is read by roles that may not see costs.
        db.session.add(OrderEvent(order=order, action="edit", source=source, user_id=user_id,
                                  note="商品重新匹配（成本已重算）：" + "；".join(linked), created_at=utcnow()))
    still = sorted({ln.merchant_code or "（空）" for ln in _unmatched_lines(order, stockable)})
    if still:
        note = "商家编码未匹配：" + "、".join(still)
        empty = sorted({s.merchant_code for s in
                        [ln.sku if ln.sku_id is not None else skus.get(ln.merchant_code) for ln in order.lines]
                        if s is not None and s.is_bundle and s.id not in stockable})
        if empty:
            note += "（组合装 " + "、".join(empty) + " 未设置组成商品）"
        for h in order.holds:
            if h.reason == UNMATCHED and h.released_at is None and h.note != note:
                h.note = note[:500]
        return False
    if UNMATCHED not in order.active_hold_reasons:
        return False
    order_status.release(order, UNMATCHED, note="商家编码已全部匹配 SKU，自动解除", source=source, user_id=user_id)
    return True


# --- hooks: any writer of the mapping ----------------------------------------------------------------
def _changed(obj, *keys) -> bool:
    state = inspect(obj)
    return any(state.attrs[k].history.has_changes() for k in keys)


@event.listens_for(Session, "after_flush")
def _collect(session, _flush_context) -> None:
    """Remember what changed in the mapping; re-matched before this transaction commits."""
    codes, shop_codes, bundles = set(), set(), set()
    for obj in list(session.new) + list(session.dirty):
        is_new = obj in session.new
        if isinstance(obj, Sku):
            if is_new or _changed(obj, "merchant_code", "is_bundle"):
                codes.add(obj.merchant_code)
                bundles.add(obj.id)
        elif isinstance(obj, ShopListing):
            if obj.sku_id is not None and obj.merchant_code and (is_new or _changed(obj, "merchant_code", "sku_id")):
                shop_codes.add((obj.shop_id, obj.merchant_code))
        elif isinstance(obj, BundleComponent):
            if is_new or _changed(obj, "quantity", "bundle_sku_id", "component_sku_id"):
                bundles.add(obj.bundle_sku_id)
    if codes or shop_codes or bundles:
        info = session.info.setdefault(_INFO_KEY, (set(), set(), set()))
        info[0].update(c for c in codes if c)
        info[1].update(shop_codes)
        info[2].update(b for b in bundles if b is not None)


@event.listens_for(Session, "before_commit")
def _before_commit(session) -> None:
    if not session.info.get(_INFO_KEY) and not (session.new or session.dirty):
        return
    session.flush()
    pending = session.info.pop(_INFO_KEY, None)
    if not pending:
        return
    codes, shop_codes, bundles = pending
    bundle_codes = set(session.scalars(select(Sku.merchant_code).where(Sku.id.in_(sorted(bundles))))) \
        if bundles else set()
    rematch_orders(codes=codes | bundle_codes, shop_codes=shop_codes, bundle_ids=bundles,
                   user_id=_acting_user_id(), source="rule")
    session.flush()
    session.info.pop(_INFO_KEY, None)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session) -> None:
    session.info.pop(_INFO_KEY, None)


def _acting_user_id() -> Optional[int]:
    from flask import has_request_context

    if not has_request_context():
        return None
    from flask_login import current_user

    try:
        return current_user.id if current_user.is_authenticated else None
    except Exception:  # pragma: no cover - no login manager
        return None
