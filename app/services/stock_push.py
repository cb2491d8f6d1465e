"""库存同步: publish to each shop listing the quantity derived from our available stock.

Available (可用) of a SKU is the sum of ``on_hand − reserved`` over its stock rows
in active warehouses. A bundle (组合装) is available as many times as its scarcest
component allows: ``min(available(component) // quantity)`` over its components
(0 for a bundle without components).

The quantity published to a listing is derived per shop, in this order
(:func:`derive`):

1. available ≤ 0 → 0 (nothing else applies);
2. ratio (比例, 0–1): ``q = floor(available × ratio)``;
3. max (上限, optional): ``q = min(q, max)``;
4. floor (保底): ``q = max(q, min(floor, available))`` — a small stock is still
   offered, but never more than is really available.

The shop form refuses ``floor > max`` (and the database too), so the floor never
undoes the max. Example: available 120, ratio 0.8, max 50, floor 5 →
"可用 120 × 比例 0.8 = 96，上限 50 → 50，保底 5 → 50".

Debounce: a stock change marks the listings of that SKU (and of every bundle
containing it) with ``push_pending_since`` — kept at the *first* unpublished
change, so a SKU that changes all the time is still published at least once per
debounce period — and bumps ``stock_change_seq``. :func:`push_due` (an RQ job
every 10 s) pushes the listings whose marker is older than the debounce; many
changes within the period make one push. After a push the marker is cleared only
if ``stock_change_seq`` is still what it was before the quantity was read, so a
change that lands during the platform call is published by the next run.
A failed listing keeps its marker (its lag keeps growing, shown per listing and
per shop) and is retried after :data:`RETRY_AFTER_FAILURE` seconds.

Who marks: whatever writes stock. There is no stock service yet, so an
``after_flush`` listener (:func:`_mark_after_flush`) marks the listings whenever
any session flushes a change to a Stock row's on_hand/reserved (or its SKU or
warehouse), a warehouse's ``active`` flag, a bundle's components, a listing's
SKU match, or a shop's push settings. The marks are plain UPDATEs in the same
transaction, so they commit or roll back with the change itself. A future
inventory service may also call :func:`mark_sku_changed` explicitly; marking
twice is harmless.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable, Iterable, Optional

from rq.timeouts import JobTimeoutException
from sqlalchemy import event, func, inspect, literal, or_, select, update
from sqlalchemy.orm import Session

from app.extensions import db
from app.models import BundleComponent, Shop, ShopListing, Sku, Stock, Warehouse
from app.models.types import UTCDateTime, utcnow
from app.platforms import PlatformError, client_for

from .errors import DomainError, ValidationError
from .scope import as_scope

log = logging.getLogger(__name__)

DEBOUNCE_SECONDS = 10
RETRY_AFTER_FAILURE = 60  # seconds a failed listing waits before the next attempt
PUSH_PLATFORMS = ("taobao", "tmall", "pdd", "jd")
# These failures concern the whole shop (credentials, ban, gateway down): the
# shop's other listings are not tried in the same run.
SHOP_WIDE_FAILURES = ("auth", "rate_limit", "network")
# A shop whose gateway fails this many pushes in a row (timeouts, 5xx) is left for the retry:
# one slow gateway must not spend the run on every listing of its shop.
SHOP_FAILURE_STREAK = 2
# A run starts no new push after this many seconds; what is left stays marked for the next
# run (the job's timeout, JOB_TIMEOUT, is well above it, and the run lock above that).
RUN_BUDGET_SECONDS = 120
JOB_TIMEOUT = 300
LOCK_TIMEOUT = JOB_TIMEOUT + 60


class StockPushBusy(DomainError):
    status_code = 409


# --- availability -------------------------------------------------------------
@dataclass(frozen=True)
class Availability:
    quantity: int
    note: str = ""  # zh; for a bundle, how its quantity comes from its components


def _stock_available(sku_ids: Iterable[int]) -> dict[int, int]:
    ids = sorted(set(sku_ids))
    if not ids:
        return {}
    rows = db.session.execute(
        select(Stock.sku_id, func.sum(Stock.on_hand - Stock.reserved))
        .join(Warehouse, Warehouse.id == Stock.warehouse_id)
        .where(Warehouse.active.is_(True), Stock.sku_id.in_(ids))
        .group_by(Stock.sku_id))
    out = {i: 0 for i in ids}
    out.update({sku_id: int(total or 0) for sku_id, total in rows})
    return out


def availability(sku_id: int) -> Availability:
    """Available quantity of one SKU; a bundle's is the minimum over its components."""
    sku = db.session.get(Sku, sku_id)
    if sku is None:
        return Availability(0, "SKU 不存在 → 0")
    if not sku.is_bundle:
        return Availability(max(0, _stock_available([sku_id])[sku_id]))
    comps = db.session.execute(
        select(BundleComponent.component_sku_id, BundleComponent.quantity, Sku.merchant_code)
        .join(Sku, Sku.id == BundleComponent.component_sku_id)
        .where(BundleComponent.bundle_sku_id == sku_id)
        .order_by(Sku.merchant_code)).all()
    if not comps:
        return Availability(0, "组合装没有组成商品 → 0")
    # An order's bundle line ships from one warehouse: a bundle is made up in each active
    # warehouse from that warehouse's components, and the warehouses add up.
    ids = sorted({c[0] for c in comps})
    by_wh: dict = {}
    for wh_id, wh_name, comp_id, avail in db.session.execute(
            select(Stock.warehouse_id, Warehouse.name, Stock.sku_id, Stock.on_hand - Stock.reserved)
            .join(Warehouse, Warehouse.id == Stock.warehouse_id)
            .where(Warehouse.active.is_(True), Stock.sku_id.in_(ids))
            .order_by(Warehouse.priority, Warehouse.id)):
        by_wh.setdefault((wh_id, wh_name), {})[comp_id] = int(avail or 0)
    terms = []
    for (_wh_id, wh_name), stock in by_wh.items():
        parts, counts = [], []
        for comp_id, qty, code in comps:
            avail = max(0, stock.get(comp_id, 0))
            n = avail // qty if qty and qty > 0 else 0
            counts.append(n)
            parts.append(f"{code} {avail}÷{qty}={n}")
        terms.append((wh_name, min(counts), "，".join(parts)))
    if not terms:
        parts = "，".join(f"{code} 0÷{qty}=0" for _c, qty, code in comps)
        return Availability(0, f"组合装 min({parts}) = 0")
    quantity = sum(n for _w, n, _p in terms)
    if len(terms) == 1:
        return Availability(quantity, f"组合装 min({terms[0][2]}) = {quantity}")
    shown = " + ".join(f"{w} min({p})={n}" for w, n, p in terms)
    return Availability(quantity, f"组合装按仓库：{shown} = {quantity}")


def available_for_sku(sku_id: int) -> int:
    """可用: Σ(on_hand − reserved) over active warehouses; bundles: Σ over active warehouses
    of min(component // qty) in that warehouse."""
    return availability(sku_id).quantity


# --- derivation -----------------------------------------------------------------
def _num(value: Decimal) -> str:
    """0.80 → "0.8", 1.00 → "1"."""
    return format(Decimal(value).normalize(), "f")


def derive(shop, available: int) -> tuple[int, str]:
    """The quantity to publish for ``available`` under the shop's ratio, max and floor,
    with its zh explanation. Order: ratio (floor of the product), then max, then floor
    (never above available); 0 when nothing is available. See the module docstring."""
    available = int(available)
    if available <= 0:
        return 0, f"可用 {available} → 0"
    ratio = Decimal(shop.stock_ratio) if shop.stock_ratio is not None else Decimal("1")
    cap = shop.stock_max
    floor_ = shop.stock_floor or 0
    quantity = math.floor(Decimal(available) * ratio)
    parts = [f"可用 {available} × 比例 {_num(ratio)} = {quantity}"]
    if cap is not None:
        quantity = min(quantity, int(cap))
        parts.append(f"上限 {cap} → {quantity}")
    if floor_:
        quantity = max(quantity, min(int(floor_), available))
        if floor_ <= available:
            parts.append(f"保底 {floor_} → {quantity}")
        else:
            parts.append(f"保底 {floor_}（不超过可用 {available}）→ {quantity}")
    return quantity, "，".join(parts)


def listing_quantity(listing: ShopListing, cache: Optional[dict] = None) -> tuple[int, str]:
    """(quantity to publish, zh explanation) for one matched listing."""
    if cache is not None and listing.sku_id in cache:
        av = cache[listing.sku_id]
    else:
        av = availability(listing.sku_id)
        if cache is not None:
            cache[listing.sku_id] = av
    quantity, text = derive(listing.shop, av.quantity)
    return quantity, f"{av.note}；{text}" if av.note else text


def explain_listing(listing: ShopListing) -> str:
    """推送数量推导 of a listing as it would be pushed now."""
    if listing.sku_id is None:
        # Not pushed at all (not 0): the listing may sell goods this OMS does not count;
        # its platform quantity stays what was last published, said here so nobody
        # mistakes it for a live figure.
        text = f"未匹配 SKU（商家编码 {listing.merchant_code or '空'}），不推送"
        if listing.last_pushed_quantity is not None:
            text += f"；平台上仍是上次推送的 {listing.last_pushed_quantity}，请匹配 SKU 或在平台修改"
        return text
    _quantity, text = listing_quantity(listing)
    shop = listing.shop
    if shop is not None and not shop.stock_push_enabled:
        text += "（店铺未开启库存同步）"
    return text


# --- marking (debounce) -----------------------------------------------------------
def _mark(conn, where, now: Optional[dt.datetime] = None) -> int:
    t = ShopListing.__table__
    stamp = literal(now or utcnow(), UTCDateTime())
    # Lock the rows in id order first (PostgreSQL; SQLite ignores FOR UPDATE): two stock
    # transactions marking overlapping listings (a bundle shares components) then
    # queue behind each other instead of deadlocking.
    rows = select(t.c.id).where(where).order_by(t.c.id).with_for_update()
    result = conn.execute(update(t).where(t.c.id.in_(rows)).values(
        push_pending_since=func.coalesce(t.c.push_pending_since, stamp),
        stock_change_seq=t.c.stock_change_seq + 1))
    return result.rowcount or 0


def mark_skus_changed(sku_ids: Iterable[int], *, connection=None, now: Optional[dt.datetime] = None) -> int:
    """Mark the listings of these SKUs, and of every bundle containing one of them, as
    needing a push. Joins the caller's transaction (does not commit). Returns the
    number of listings marked."""
    ids = {int(i) for i in sku_ids if i is not None}
    if not ids:
        return 0
    conn = connection if connection is not None else db.session.connection()
    bc = BundleComponent.__table__
    ids |= set(conn.execute(select(bc.c.bundle_sku_id).where(bc.c.component_sku_id.in_(ids))).scalars())
    return _mark(conn, ShopListing.__table__.c.sku_id.in_(sorted(ids)), now)


def mark_sku_changed(sku_id: int, *, connection=None, now: Optional[dt.datetime] = None) -> int:
    """A SKU's available stock changed: its listings (and its bundles') need a push."""
    return mark_skus_changed([sku_id], connection=connection, now=now)


def _mark_listings(conn, listing_ids, now=None) -> int:
    t = ShopListing.__table__
    return _mark(conn, t.c.id.in_(sorted(listing_ids)) & t.c.sku_id.is_not(None), now)


def _mark_shops(conn, shop_ids, now=None) -> int:
    t = ShopListing.__table__
    return _mark(conn, t.c.shop_id.in_(sorted(shop_ids)) & t.c.sku_id.is_not(None), now)


def _changed(obj, *keys) -> bool:
    state = inspect(obj)
    return any(state.attrs[k].history.has_changes() for k in keys)


def _old_values(obj, key) -> list:
    return [v for v in inspect(obj).attrs[key].history.deleted if v is not None]


@event.listens_for(Session, "after_flush")
def _mark_after_flush(session, flush_context) -> None:
    """Any writer of stock marks the affected listings, in its own transaction."""
    skus: set[int] = set()
    warehouses: set[int] = set()
    listings: set[int] = set()
    shops: set[int] = set()
    for obj in session.new:
        if isinstance(obj, Stock):
            if obj.on_hand or obj.reserved:
                skus.add(obj.sku_id)
        elif isinstance(obj, BundleComponent):
            skus.add(obj.bundle_sku_id)
        elif isinstance(obj, ShopListing):
            if obj.sku_id is not None:
                listings.add(obj.id)
    for obj in session.dirty:
        if isinstance(obj, Stock):
            if _changed(obj, "on_hand", "reserved", "sku_id", "warehouse_id"):
                skus.add(obj.sku_id)
                skus.update(_old_values(obj, "sku_id"))
        elif isinstance(obj, Warehouse):
            if _changed(obj, "active"):
                warehouses.add(obj.id)
        elif isinstance(obj, BundleComponent):
            if _changed(obj, "quantity", "bundle_sku_id", "component_sku_id"):
                skus.add(obj.bundle_sku_id)
                skus.update(_old_values(obj, "bundle_sku_id"))
        elif isinstance(obj, Sku):
            if _changed(obj, "is_bundle"):
                skus.add(obj.id)
        elif isinstance(obj, ShopListing):
            if _changed(obj, "sku_id") and obj.sku_id is not None:
                listings.add(obj.id)
        elif isinstance(obj, Shop):
            if _changed(obj, "stock_push_enabled", "stock_ratio", "stock_max", "stock_floor"):
                shops.add(obj.id)
    for obj in session.deleted:
        if isinstance(obj, Stock):
            skus.add(obj.__dict__.get("sku_id"))
        elif isinstance(obj, BundleComponent):
            skus.add(obj.__dict__.get("bundle_sku_id"))
    skus.discard(None)
    if not (skus or warehouses or listings or shops):
        return
    conn = session.connection()
    if warehouses:
        st = Stock.__table__
        skus.update(conn.execute(select(st.c.sku_id).where(st.c.warehouse_id.in_(sorted(warehouses)))).scalars())
    if skus:
        mark_skus_changed(skus, connection=conn)
    if listings:
        _mark_listings(conn, listings)
    if shops:
        _mark_shops(conn, shops)


def request_push(listing_ids: Iterable[int]) -> int:
    """立即推送: make these listings (those the current user may see) due now."""
    ids = list(db.session.scalars(select(ShopListing.id).where(ShopListing.id.in_(list(listing_ids)),
                                                               ShopListing.sku_id.is_not(None))))
    if not ids:
        return 0
    now = utcnow() - dt.timedelta(seconds=DEBOUNCE_SECONDS)
    count = _mark_listings(db.session.connection(), ids, now)
    db.session.commit()
    return count


# --- pushing ------------------------------------------------------------------------
def _lock(timeout: int = LOCK_TIMEOUT):
    from app.jobs.queue import redis_conn

    return redis_conn().lock("oms:stock_push", timeout=timeout, blocking=False)


def push_due(debounce_seconds: float = DEBOUNCE_SECONDS, *, now: Optional[dt.datetime] = None,
             client_factory: Callable = client_for, limit: int = 5000,
             budget_seconds: float = RUN_BUDGET_SECONDS) -> dict:
    """Push every listing whose pending marker is older than the debounce, the longest
    waiting first, until ``budget_seconds`` have passed (the rest waits for the next run).
    Runs as the system (all shops), one run at a time. Returns counts."""
    lock = _lock()
    if not lock.acquire():
        raise StockPushBusy("库存同步正在进行，请稍后再试")
    try:
        with as_scope(None):
            deadline = time.monotonic() + budget_seconds
            return _push_due(debounce_seconds, now or utcnow(), client_factory, limit, deadline)
    finally:
        with contextlib.suppress(Exception):  # expired: another run may hold it now
            lock.release()


def _due(now: dt.datetime, debounce_seconds: float, limit: int) -> list[tuple[int, int, int]]:
    cutoff = now - dt.timedelta(seconds=debounce_seconds)
    retry_cutoff = now - dt.timedelta(seconds=RETRY_AFTER_FAILURE)
    return [tuple(r) for r in db.session.execute(
        select(ShopListing.shop_id, ShopListing.id, ShopListing.stock_change_seq)
        .join(Shop, Shop.id == ShopListing.shop_id)
        .where(ShopListing.push_pending_since.is_not(None), ShopListing.push_pending_since <= cutoff,
               ShopListing.sku_id.is_not(None), Shop.active.is_(True), Shop.stock_push_enabled.is_(True),
               Shop.platform.in_(PUSH_PLATFORMS),
               or_(ShopListing.last_push_error_at.is_(None), ShopListing.last_push_error_at <= retry_cutoff))
        .order_by(ShopListing.push_pending_since, ShopListing.id)
        .limit(limit))]


def _pushed(listing: ShopListing, seen_seq: int, quantity: int) -> None:
    listing.last_pushed_quantity = quantity
    listing.last_pushed_at = utcnow()
    listing.last_push_error = None
    listing.last_push_error_at = None
    db.session.flush()
    t = ShopListing.__table__
    # Clear the marker only if no stock change arrived since the quantity was read.
    db.session.connection().execute(update(t).where(t.c.id == listing.id, t.c.stock_change_seq == seen_seq)
                                    .values(push_pending_since=None))
    db.session.commit()


def _failed(listing: ShopListing, message: str) -> None:
    """Keep the marker (the lag keeps growing) and record the zh reason."""
    listing.last_push_error = message[:2000]
    listing.last_push_error_at = utcnow()
    db.session.commit()


def _push_due(debounce_seconds, now, client_factory, limit, deadline=None) -> dict:
    due = _due(now, debounce_seconds, limit)
    by_shop: dict[int, list[tuple[int, int]]] = {}  # shops in the order of their longest wait
    for shop_id, listing_id, seq in due:
        by_shop.setdefault(shop_id, []).append((listing_id, seq))
    totals = {"pushed": 0, "failed": 0, "shops": len(by_shop), "left": 0}
    cache: dict = {}
    for shop_id, items in by_shop.items():
        pushed, failed, left = _push_shop(shop_id, items, client_factory, cache, deadline)
        totals["pushed"] += pushed
        totals["failed"] += failed
        totals["left"] += left
    return totals


def _push_shop(shop_id: int, items, client_factory, cache, deadline=None) -> tuple[int, int, int]:
    """Push one shop's due listings; returns (pushed, failed, left for the next run)."""
    shop = db.session.get(Shop, shop_id)
    pushed = failed = streak = 0
    error: Optional[str] = None
    if deadline is not None and time.monotonic() >= deadline:
        return 0, 0, len(items)
    try:
        client = client_factory(shop)
    except PlatformError as exc:
        client, error = None, exc.message
    left = 0
    for n, (listing_id, seq) in enumerate(items):
        if client is not None and deadline is not None and time.monotonic() >= deadline:
            left = len(items) - n  # still marked: the next run (10 s later) goes on
            break
        listing = db.session.get(ShopListing, listing_id)
        if listing is None or listing.sku_id is None:
            continue
        if client is None:  # a shop-wide failure: the rest of the shop waits for the retry
            _failed(listing, error)
            failed += 1
            continue
        try:
            quantity, _text = listing_quantity(listing, cache)
            client.push_stock(listing.merchant_code, quantity, item_id=listing.platform_item_id or None,
                              sku_id=listing.platform_sku_id or None)
        except PlatformError as exc:
            _failed(listing, exc.message)
            failed += 1
            error = exc.message
            streak = streak + 1 if exc.kind == "server" else 0
            if exc.kind in SHOP_WIDE_FAILURES or streak >= SHOP_FAILURE_STREAK:
                client = None  # the rest of the shop is recorded with this error, retried later
            continue
        except JobTimeoutException:
            raise  # the job's own timeout: end the run (its lock is released), do not record it
        except Exception as exc:  # a bug or bad data: recorded, the other shops go on
            log.exception("stock push of listing %s failed", listing_id)
            db.session.rollback()
            listing = db.session.get(ShopListing, listing_id)
            error = f"库存同步出错：{exc}"[:2000]
            _failed(listing, error)
            failed += 1
            client = None
            continue
        _pushed(listing, seq, quantity)
        pushed += 1
        streak = 0
    shop = db.session.get(Shop, shop_id)
    if pushed:
        shop.last_stock_push_at = utcnow()
    if failed:
        shop.last_stock_push_error = error
        shop.last_stock_push_error_at = utcnow()
    elif pushed:
        shop.last_stock_push_error = None
        shop.last_stock_push_error_at = None
    db.session.commit()
    return pushed, failed, left


# --- listings -------------------------------------------------------------------------
def _text(value) -> str:
    return "" if value is None else str(value).strip()


def match_sku(merchant_code: str) -> Optional[Sku]:
    code = _text(merchant_code)
    if not code:
        return None
    return db.session.execute(select(Sku).where(Sku.merchant_code == code)).scalar_one_or_none()


def upsert_listing(shop_id: int, merchant_code: str, *, platform_item_id=None, platform_sku_id=None,
                   title: Optional[str] = None) -> tuple[ShopListing, bool]:
    """Create or update one listing of a shop, keyed by its platform ids (or by its
    merchant code when it has none), and match its merchant code to our SKU.
    Returns (listing, created). Does not commit."""
    code, item, psku = _text(merchant_code), _text(platform_item_id), _text(platform_sku_id)
    if not code and not item:
        raise ValidationError("店铺商品缺少「商家编码」和「平台商品ID」", "merchant_code")
    if len(code) > 64 or len(item) > 64 or len(psku) > 64:
        raise ValidationError("「商家编码」或平台ID过长，最多 64 个字符", "merchant_code")
    query = select(ShopListing).where(ShopListing.shop_id == shop_id)
    if item or psku:
        query = query.where(ShopListing.platform_item_id == item, ShopListing.platform_sku_id == psku)
    else:
        query = query.where(ShopListing.merchant_code == code, ShopListing.platform_item_id == "",
                            ShopListing.platform_sku_id == "")
    listing = db.session.execute(query).scalars().first()
    created = listing is None
    if created:
        listing = ShopListing(shop_id=shop_id, platform_item_id=item, platform_sku_id=psku)
        db.session.add(listing)
    old_code = listing.merchant_code
    listing.merchant_code = code
    if title:
        listing.title = str(title)[:255]
    sku = match_sku(code)
    if sku is not None and listing.sku_id != sku.id:
        listing.sku_id = sku.id  # the flush listener makes it due for its first push
    elif sku is None and not created and old_code and old_code != code and listing.sku_id is not None:
        # Re-coded on the platform to a code we do not know yet: a link the old code made goes
        # (our stock of the old SKU is no longer this listing's, and orders with the new code
        # must not match the old SKU through it); a link a person made to another SKU stays.
        old = match_sku(old_code)
        if old is not None and old.id == listing.sku_id:
            listing.sku_id = None
    return listing, created


def upsert_listings(shop_id: int, rows: Iterable[dict]) -> dict:
    """Import a shop's listings (dicts with merchant_code, item_id, sku_id, title: the
    platform's names) and match them to SKUs. Commits. Returns counts."""
    if db.session.get(Shop, shop_id) is None:
        raise DomainError(f"店铺不存在：{shop_id}")
    counts = {"created": 0, "updated": 0, "matched": 0, "unmatched": 0}
    for row in rows:
        listing, created = upsert_listing(shop_id, row.get("merchant_code"), platform_item_id=row.get("item_id"),
                                          platform_sku_id=row.get("sku_id"), title=row.get("title"))
        counts["created" if created else "updated"] += 1
        counts["matched" if listing.sku_id is not None else "unmatched"] += 1
    db.session.commit()
    return counts


def match_listings(shop_id: Optional[int] = None) -> int:
    """Match unmatched listings whose merchant code now names a SKU. Commits."""
    query = select(ShopListing).where(ShopListing.sku_id.is_(None), ShopListing.merchant_code != "")
    if shop_id is not None:
        query = query.where(ShopListing.shop_id == shop_id)
    matched = 0
    for listing in db.session.scalars(query).all():
        sku = match_sku(listing.merchant_code)
        if sku is not None:
            listing.sku_id = sku.id
            matched += 1
    db.session.commit()
    return matched


def validate_listing(listing: ShopListing) -> None:
    """Form rules for a listing entered by hand; an unset SKU is matched by merchant code."""
    listing.merchant_code = _text(listing.merchant_code)
    listing.platform_item_id = _text(listing.platform_item_id)
    listing.platform_sku_id = _text(listing.platform_sku_id)
    if listing.shop is None and listing.shop_id is None:
        raise ValidationError("「店铺」不能为空", "shop")
    if not listing.merchant_code and not listing.platform_item_id:
        raise ValidationError("「商家编码」和「平台商品ID」至少填写一个", "merchant_code")
    if listing.sku is None and listing.sku_id is None:
        sku = match_sku(listing.merchant_code)
        if sku is not None:
            listing.sku = sku
