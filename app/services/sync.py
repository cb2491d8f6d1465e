"""Incremental order sync: every new or changed order of a shop, exactly once.

* Windows by modified time, no wider than the platform allows, each starting
  ``client.overlap`` before the checkpoint. The checkpoint never gets closer to now
  than ``client.safety_lag`` (PDD wants 3 minutes; Taobao and JD 1: a window paged
  backwards must not take in orders the index shows late), but the minutes after it are
  read too, in a window of their own (and again next run), so new orders show within one
  interval.
* The checkpoint advances only after a window's orders are committed, so an
  interrupted run resumes where the last committed window ended.
* Upsert keyed by (shop, platform order id) and (order, platform line id); an
  unchanged payload (same checksum) is skipped; the unified status only moves
  forward along the life cycle; platform refunds and locks raise holds, a full
  refund before shipping closes the order (GLOSSARY.md).
* One sync per shop at a time (a Redis lock); transient platform errors are
  retried in place with backoff that honours the ban time; a long ban ends the
  run and the scheduler waits until it is over.
* Each line's SKU: its merchant code's, else the one the shop's listings map that code
  to (services/sku_mapping.py, loaded once per run); unknown merchant codes are stored
  with an 未匹配商品 hold: nothing is dropped.
* Set-wise, a batch of pages at a time (:func:`apply_page`: the pages of consecutive
  windows, up to ``OMS_SYNC_BATCH_ORDERS`` orders): one checksum query per batch (unchanged
  orders cost nothing more); new orders computed in Python in the state the per-order
  path leaves them and written in bulk (services/bulk_orders.py, shared with the import);
  the state machine per order only where it may move stock, and for changed orders
  (loaded in one query per batch). The next batch is fetched while one is applied.
* The stored checksum starts with the digest of the order's payload as the gateway sent
  it (``checksum``): when most listed orders turn out unchanged, the client lists them
  unparsed and only new or changed ones are parsed (for Taobao: only they cost a
  ``fullinfo`` call). Like incremental sync itself, this relies on the platform moving an
  order's modified time, which is in its payload, whenever it changes the order.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import threading
import time
from dataclasses import asdict
from dataclasses import fields as dc_fields
from decimal import Decimal
from operator import attrgetter
from types import SimpleNamespace
from typing import Callable, Optional

from flask import current_app, has_app_context
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from app.extensions import db
from app.models import Order, OrderEvent, OrderLine, Shop, SyncReject, SyncRun
from app.models.types import utcnow
from app.platforms import PlatformError, PlatformOrder, client_for
from app.platforms.base import BAD_ORDER, Deferred, PlatformLine, Unparsed

from . import bulk_orders, order_split, order_status, orders, sku_mapping
from .errors import DomainError, ValidationError
from .scope import as_scope

log = logging.getLogger(__name__)

MAX_INLINE_WAIT = 30.0  # seconds: longer bans end the run instead of blocking a worker
SERVER_RETRIES = 4


class SyncBusy(DomainError):
    status_code = 409


# --- checksums --------------------------------------------------------------
# Every field of the normalised order and of its lines, in a fixed order. Orders stored
# with the older JSON + SHA-256 checksum look changed once on their next sync, which finds
# nothing to change and stores the new checksum. Bump the version when the clients' parsing
# or this normalisation changes: an order listed with a byte-identical payload is otherwise
# recognised as unchanged without being parsed again (``raw_key``).
_CHECKSUM_VERSION = "s2"
_ORDER_FIELDS = tuple(f.name for f in dc_fields(PlatformOrder) if f.name != "lines")
_LINE_FIELDS = tuple(f.name for f in dc_fields(PlatformLine))
_order_values = attrgetter(*_ORDER_FIELDS)
_line_values = attrgetter(*_LINE_FIELDS)


def legacy_payload_hash(po: PlatformOrder) -> str:
    """The checksum orders synced before the BLAKE2b one carry (JSON + SHA-256): such an
    order, unchanged on the platform, is still recognised as unchanged."""
    import json

    text = json.dumps(asdict(po), default=lambda v: str(v) if isinstance(v, (Decimal, dt.datetime)) else v,
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_RAW = 32  # hex digits of the raw digest (platforms.common.raw_digest) heading a stored checksum


def checksum(po: PlatformOrder) -> str:
    """What ``Order.platform_hash`` stores for a platform order (64 characters). From a
    gateway listing, which gives the digest of the order's payload as sent: that digest
    (32 hex) followed by the first half of ``payload_hash``, so a re-listed order whose
    payload is byte for byte the same is recognised before it is parsed (``apply_page``),
    and one whose payload differs is parsed and compared by content. Without a raw digest
    (``fetch_order``, scripted clients): ``payload_hash``."""
    full = payload_hash(po)
    raw = po.raw_digest
    return raw_key(raw) + full[:_RAW] if raw else full


def raw_key(raw_digest: str) -> str:
    """The stored form of a payload digest: tied to ``_CHECKSUM_VERSION`` like the content
    part, so bumping the version (as a change to parsing requires) re-applies every order,
    byte-identical payloads included."""
    return hashlib.blake2b(f"{_CHECKSUM_VERSION}:{raw_digest}".encode(), digest_size=16).hexdigest()


def same_payload(stored: Optional[str], po: PlatformOrder, digest: str) -> bool:
    """Whether the stored checksum says ``po`` (with ``digest = checksum(po)``) is unchanged:
    the same raw payload, or the same content (the stored checksum in any of its forms:
    raw + content, content alone, or the older JSON + SHA-256 one)."""
    if not stored:
        return False
    raw = po.raw_digest
    content = digest[_RAW:] if raw else digest[:_RAW]
    return (stored == digest or stored[_RAW:] == content or stored[:_RAW] == content
            or (raw is not None and stored[:_RAW] == digest[:_RAW]) or stored == legacy_payload_hash(po))


def payload_hash(po: PlatformOrder) -> str:
    """The content of a platform order as 64 hex digits (BLAKE2b over the fields as text;
    str of a Decimal or datetime is exact): an unchanged order is skipped on re-sync."""
    parts = [_CHECKSUM_VERSION]
    parts.extend("\0" if v is None else str(v) for v in _order_values(po))
    for line in po.lines:
        parts.append("\x1d")
        parts.extend("\0" if v is None else str(v) for v in _line_values(line))
    return hashlib.blake2b("\x1e".join(parts).encode("utf-8"), digest_size=32).hexdigest()


# --- locking ----------------------------------------------------------------
LOCK_SECONDS = 120  # OMS_SYNC_LOCK_SECONDS: renewed while the run lives, so a killed worker's lock goes soon


def lock_seconds() -> int:
    seconds = int(current_app.config.get("OMS_SYNC_LOCK_SECONDS", LOCK_SECONDS)) if has_app_context() else LOCK_SECONDS
    return max(1, seconds)  # a lock without a timeout would outlive a killed worker


def _lock(shop_id: int, timeout: Optional[int] = None):
    """The shop's sync lock. A run renews it before each batch and every quarter of its
    timeout while it waits for the platform, so it never lapses under a live run; a worker
    killed mid-run (OOM, deploy, job timeout) leaves it for at most one timeout."""
    from app.jobs.queue import redis_conn

    return redis_conn().lock(f"oms:sync:shop:{shop_id}", timeout=timeout or lock_seconds(), blocking=False)


class LockLost(DomainError):
    """The shop's sync lock expired and another run of the shop holds it now."""


def _keep_lock(lock) -> None:
    """Renew the shop's sync lock for another full timeout (a backfill may run longer than
    one), before each batch is applied and committed and while the run waits. If it
    expired, this run stops: another run may have taken it meanwhile, even come and gone
    (and marked this one abandoned), and two runs of one shop would apply the same orders
    twice. The next run goes on from the last committed checkpoint."""
    from redis.exceptions import LockNotOwnedError

    try:
        lock.reacquire()
    except LockNotOwnedError:
        raise LockLost("同步锁已超时（可能已被另一次同步占用），本次同步已停止（未写入本批订单），下次同步会继续") from None


def is_syncing(shop_id: int) -> bool:
    from app.jobs.queue import redis_conn

    return bool(redis_conn().exists(f"oms:sync:shop:{shop_id}"))


# --- applying one platform order --------------------------------------------
def _clip(value, limit: int):
    return value[:limit] if isinstance(value, str) and len(value) > limit else value


def _platform_texts(data: dict) -> dict:
    """Platform texts cut to what the columns hold (the order and lines are the platform's
    facts: an over-long address or spec must not stop the shop's sync, as it would refuse
    a typed-in order)."""
    max_text = current_app.config.get("OMS_MAX_TEXT", 2000) if has_app_context() else 2000
    for name, _label, limit in bulk_orders._ORDER_TEXT:
        data[name] = _clip(data.get(name), limit or max_text)
    data["platform_status"] = _clip(data.get("platform_status"), 64)
    for ln in data["lines"]:
        ln["title"], ln["spec"] = _clip(ln.get("title"), 255), _clip(ln.get("spec"), 255)
    return data


def _order_data(po: PlatformOrder, status: str) -> dict:
    return _platform_texts({
        "platform_order_id": po.platform_order_id, "status": status, "platform_status": po.platform_status,
        "goods_amount": po.goods_amount, "discount_amount": po.discount_amount, "post_fee": po.post_fee,
        "paid_amount": po.paid_amount, "buyer_nick": po.buyer_nick, "receiver_name": po.receiver_name,
        "receiver_phone": po.receiver_phone, "receiver_province": po.receiver_province,
        "receiver_city": po.receiver_city, "receiver_district": po.receiver_district,
        "receiver_address": po.receiver_address, "receiver_zip": po.receiver_zip,
        "buyer_message": po.buyer_message, "seller_memo": po.seller_memo, "flag": po.flag,
        "platform_created_at": po.created_at, "paid_at": po.paid_at, "platform_modified_at": po.modified_at,
        "tracking_number": po.tracking_number,
        "lines": [dict(zip(_LINE_FIELDS, _line_values(line))) for line in po.lines],  # asdict() deep-copies
    })


def _advance_status(order: Order, po: PlatformOrder, split: Optional[bool] = None) -> None:
    """Move the local status forward to match the platform, never backwards (``split``: the
    order is part of a trade split here, :func:`order_split.is_split`; None: look it up)."""
    target, local = po.status, order.status
    if local in ("closed", "completed") or target == local:
        return
    if target == "closed" or po.refund_closed:
        if local in order_status.HOLDABLE or local == "pending_payment":
            action = "refund_close" if po.refund_closed and local != "pending_payment" else "cancel"
            order_status.apply(order, action, source="sync", reason=f"平台已关闭（{po.platform_status}）")
        elif local == "shipped":
            order_status.apply(order, "refund_close", source="sync", reason=f"平台已关闭（{po.platform_status}）")
        return
    rank = order_status.LIFECYCLE_INDEX
    if rank(target) <= rank(local):
        return  # the local workflow is ahead (e.g. audited here, still "paid" there)
    if local == "pending_payment":
        order_status.apply(order, "pay", source="sync")
        local = order.status
    if target in ("shipped", "completed") and local in order_status.HOLDABLE:
        if (order_split.is_split(order) if split is None else split):
            return  # 拆分订单: each part ships here with its own parcel (the platform saw the first)
        order_status.apply(order, "ship_on_platform", source="sync")
        if po.shipped_at and order.shipped_at != po.shipped_at:
            order.shipped_at = po.shipped_at
        local = order.status
    if target == "completed" and local == "shipped":
        order_status.apply(order, "complete", source="sync")


def _apply_holds(order: Order, po: PlatformOrder) -> None:
    """The platform's holds (退款中, 平台锁定) follow the platform: raised while the order can
    still be stopped, released whenever the platform no longer reports them, also once the
    order has left 待审核/待发货 (the buyer withdrew the refund and the seller shipped in the
    platform's back-end): only the sync may release them, and a shipped order held for ever
    would stay in 异常."""
    active = set(order.active_hold_reasons)
    holdable = order.status in order_status.HOLDABLE
    if holdable and po.hold_reason and po.hold_reason not in active:
        order_status.hold(order, po.hold_reason, source="sync", note=f"平台状态：{po.platform_status}")
    for reason in order_status.PLATFORM_HOLDS:
        if reason in active and reason != po.hold_reason:
            order_status.release(order, reason, source="sync", note="平台已解除")


_SYNCED_FIELDS = ("platform_status", "goods_amount", "discount_amount", "post_fee", "paid_amount",
                  "buyer_nick", "receiver_name", "receiver_phone", "receiver_province", "receiver_city",
                  "receiver_district", "receiver_address", "receiver_zip", "buyer_message",
                  "platform_created_at", "paid_at", "platform_modified_at")


def _update_order(order: Order, po: PlatformOrder, skus_by_code: dict, split: Optional[bool] = None) -> bool:
    """Apply a changed platform order to the stored one. Returns whether its goods changed
    (a line added or dropped, or a line's SKU or quantity changed): stock reserved for the
    old goods must then be reserved again (:func:`_goods_changed`)."""
    data = _order_data(po, po.status)
    # 拆分订单 (``split``; None: look it up): the platform still shows the whole trade; the lines
    # and amounts are ours now.
    if split is None:
        split = order_split.is_split(order)
    for name in _SYNCED_FIELDS:
        if split and name in order_split.LOCAL_FIELDS:
            continue
        new = data.get(name)
        if name == "platform_created_at":
            new = po.created_at
        elif name == "platform_modified_at":
            new = po.modified_at
        old = getattr(order, name)
        if isinstance(old, Decimal) and new is not None:
            new = Decimal(new).quantize(Decimal("0.01"))
        if old != new and new is not None:
            if name == "paid_amount" and order.customer is not None and order.status in orders.SPEND_STATUSES:
                order.customer.total_spent = (order.customer.total_spent or Decimal("0")) + new - (old or 0)
            setattr(order, name, new)
            if name == "receiver_phone":
                order.receiver_phone_hash = orders.phone_hash(new)
            if name not in ("platform_modified_at", "platform_status"):
                db.session.add(OrderEvent(order=order, action="edit", field=name, source="sync",
                                          old_value=orders._display(name, old),
                                          new_value=orders._display(name, new),
                                          note=orders.event_note(name), created_at=utcnow()))
    if split:  # nor the platform's tracking number: it is one part's parcel
        return False
    by_id = {line.platform_line_id: line for line in order.lines}
    goods_changed = False
    for pl in po.lines:
        line = by_id.get(pl.platform_line_id)
        sku = skus_by_code.get(pl.merchant_code) if pl.merchant_code else None
        if line is None:
            order.lines.append(OrderLine(platform_line_id=pl.platform_line_id, merchant_code=pl.merchant_code,
                                         sku=sku, title=pl.title[:255], spec=_clip(pl.spec, 255),
                                         quantity=pl.quantity, price=pl.price, paid_amount=pl.paid_amount,
                                         cost_price=sku_mapping.line_cost(sku) if sku else Decimal("0.00"),
                                         refund_status=pl.refund_status))
            goods_changed = True
            continue
        if pl.merchant_code != line.merchant_code:  # the buyer or seller changed the item (same oid)
            line.merchant_code, line.sku = pl.merchant_code, sku
            line.cost_price = sku_mapping.line_cost(sku) if sku else Decimal("0.00")
            goods_changed = True
        if line.quantity != pl.quantity:
            goods_changed = True
        line.title, line.spec = pl.title[:255], _clip(pl.spec, 255)
        line.quantity, line.price, line.paid_amount = pl.quantity, pl.price, pl.paid_amount
        line.refund_status = pl.refund_status
    wanted = {pl.platform_line_id for pl in po.lines}
    for line in list(order.lines):
        if line.platform_line_id not in wanted:  # the platform dropped it (delete-orphan)
            order.lines.remove(line)
            goods_changed = True
    order.cost_amount = sum((ln.cost_price * ln.quantity for ln in order.lines), Decimal("0.00"))
    if po.tracking_number and not order.tracking_number:
        order.tracking_number = po.tracking_number
    return goods_changed


def _goods_changed(order: Order) -> None:
    """The platform changed the goods of an order that holds stock for the old ones (待发货,
    or 待审核 in a shop that reserves at payment): 发货 deducts what was reserved, so that
    reservation goes. A 待发货 order goes back to 待审核 (审单 reserves the new goods); in a shop
    that reserves at payment the new goods are reserved at once (缺货 hold when short)."""
    from . import stock, warehouse_choice

    if order.status not in order_status.HOLDABLE or not any(stock.reserved_by_order(order.id).values()):
        return
    note = "平台修改了订单商品，原占用库存已释放"
    if order.status == "to_ship":
        order_status.apply(order, "unaudit", source="sync", reason=note)
    stock.release_order(order, note=note)
    if order_status.reserves_at_payment(order) and not order.is_held and all(ln.sku_id or ln.sku for ln in order.lines):
        db.session.flush()
        warehouse_choice.reserve(order, source="sync")


def _hold_unmatched(order: Order) -> None:
    unmatched = sorted({ln.merchant_code or "（空）" for ln in order.lines if ln.sku_id is None and ln.sku is None})
    if unmatched and order.status in order_status.HOLDABLE and "unmatched_sku" not in order.active_hold_reasons:
        order_status.hold(order, "unmatched_sku", source="sync", note="商家编码未匹配：" + "、".join(unmatched))


_MISSING = object()


def existing_hashes(shop_id: int, platform_ids: list[str]) -> dict[str, str]:
    """One query per applied batch: the stored payload checksum of each order already known."""
    if not platform_ids:
        return {}
    return {pid: digest for (_s, pid), digest in
            bulk_orders.stored_checksums((shop_id, pid) for pid in platform_ids).items()}


def apply_platform_order(shop: Shop, po: PlatformOrder, skus_by_code: dict, known_hash=_MISSING) -> str:
    """Create or update one order from the platform; returns created/updated/unchanged.
    ``known_hash``: the stored checksum from ``existing_hashes`` (None: not stored yet),
    which lets an unchanged order be skipped without loading it. The per-order path:
    :func:`apply_page` writes new orders in bulk and uses this for the rest."""
    digest = checksum(po)
    if known_hash is not _MISSING:
        if same_payload(known_hash, po, digest):
            return "unchanged"
        if known_hash is None:
            order = None
        else:
            order = db.session.execute(select(Order).where(
                Order.shop_id == shop.id, Order.platform_order_id == po.platform_order_id)).scalar_one()
    else:
        order = db.session.execute(
            select(Order).where(Order.shop_id == shop.id, Order.platform_order_id == po.platform_order_id)
        ).scalar_one_or_none()
    if order is not None and same_payload(order.platform_hash, po, digest):
        return "unchanged"
    if order is None:
        initial = "pending_payment" if po.status == "pending_payment" else "to_audit"
        order = orders.create_order(shop, _order_data(po, initial), source="sync",
                                    skus_by_code=skus_by_code, trusted=True)
        order.platform_hash = digest
        _after_create_or_update(order, po, created=True)
        return "created"
    _apply_update(order, po, digest, skus_by_code)
    return "updated"


def _apply_update(order: Order, po: PlatformOrder, digest: str, skus_by_code: dict) -> None:
    split = order_split.is_split(order)  # one query, for every step below
    goods = _update_order(order, po, skus_by_code, split)
    order.platform_hash = digest
    _after_create_or_update(order, po, created=False, split=split)
    if goods:
        _goods_changed(order)


def _after_create_or_update(order: Order, po: PlatformOrder, *, created: bool, split: bool = False) -> None:
    # 拆分订单: the platform's cancellation, refund, lock or completion is the whole trade's,
    # so it reaches every part split off it here (a part never ships from the platform's word).
    parts = order_split.family(order) if split else [order]
    for part in parts:
        _advance_status(part, po, split)
        _apply_holds(part, po)
        if part is order and not created:
            _hold_unmatched(order)
        if po.refund_closed and part.status in order_status.HOLDABLE:
            order_status.apply(part, "refund_close", source="sync", reason="平台全额退款")


# --- applying a page set-wise -------------------------------------------------------------
class RunContext:
    """What one run keeps between pages: the SKU catalogue (services/sku_mapping.py: SKUs by
    merchant code and the shop's listing mappings) as plain values, for the bulk path; the
    ORM objects are loaded once per page only when the per-order path needs them, since
    every commit expires them. ``shop_id``: the run's shop (None: every shop's listings)."""

    def __init__(self, shop_id: Optional[int] = None):
        self._shop_ids = None if shop_id is None else [shop_id]
        self.catalogue = sku_mapping.SkuCatalogue.load(shop_ids=self._shop_ids, orm=False)
        self.max_text = current_app.config.get("OMS_MAX_TEXT", 2000) if has_app_context() else 2000
        self._orm = None

    def skus(self, shop_id: int) -> dict:
        """Merchant code → SKU (plain values) for lines of this shop."""
        return self.catalogue.for_shop(shop_id)

    def orm_skus(self, shop_id: int) -> dict:
        """Merchant code → ``Sku`` for lines of this shop (loaded again after a commit)."""
        if self._orm is None:
            self._orm = sku_mapping.SkuCatalogue.load(shop_ids=self._shop_ids)
        return self._orm.for_shop(shop_id)

    def page_done(self) -> None:
        self._orm = None  # the commit expires them: reload (two queries) when needed again


def _stocked_skus() -> set:
    """SKU ids (and bundles with such a component) that have available stock in an active
    warehouse: only for those can 平台发货 of a new order move stock (stock.ship_order)."""
    from app.models import BundleComponent, Stock, Warehouse

    stocked = set(db.session.scalars(
        select(Stock.sku_id).join(Warehouse, Warehouse.id == Stock.warehouse_id)
        .where(Warehouse.active.is_(True), Stock.on_hand - Stock.reserved > 0).distinct()))
    if stocked:
        stocked |= set(db.session.scalars(select(BundleComponent.bundle_sku_id).where(
            BundleComponent.component_sku_id.in_(sorted(stocked))).distinct()))
    return stocked


def plan_new(shop: Shop, po: PlatformOrder, digest: str, skus: dict, max_text: int) -> bulk_orders.Prepared:
    """A new platform order as rows, in the state ``apply_platform_order`` leaves it:
    ``create_order`` in 待付款 or 待审核 (same validation, 未匹配商品 hold), then the state
    machine's platform transitions (平台发货, 完成, 取消 / 退款关闭 with their stamps, close
    reason and released holds), the platform hold (退款中 / 平台锁定) and the events of each,
    in the same order. ``p.ships``: 平台发货 was applied (it may move stock)."""
    initial = "pending_payment" if po.status == "pending_payment" else "to_audit"
    draft = SimpleNamespace(data=_order_data(po, initial), digest=digest, hold=None, refund=None)
    p = bulk_orders.prepare(draft, shop, skus, None, max_text)
    o = p.order
    now = utcnow()
    holds = [[reason, note, None] for reason, note in p.holds]
    events = [("sync", "create", "status", None, initial, None)]
    events += [("sync", "hold", "hold", None, order_status.HOLD_ZH[r], n) for r, n, _x in holds]
    state = {"status": initial}

    def move(action: str, target: str, stamp: Optional[str], note: Optional[str] = None) -> None:
        events.append(("sync", action, "status", state["status"], target, note))
        state["status"] = target
        if stamp and o.get(stamp) is None:
            o[stamp] = now

    def close(action: str, reason: str) -> None:
        move(action, "closed", "closed_at", reason)
        o["close_reason"] = reason.strip()[:200]
        for h in holds:
            if h[2] is None:
                h[2] = now

    p.ships = False
    target = po.status
    if target != initial:  # _advance_status
        if target == "closed" or po.refund_closed:
            action = "refund_close" if po.refund_closed and initial != "pending_payment" else "cancel"
            close(action, f"平台已关闭（{po.platform_status}）")
        elif order_status.LIFECYCLE_INDEX(target) > order_status.LIFECYCLE_INDEX(initial):
            if target in ("shipped", "completed"):  # initial is 待审核 here
                move("ship_on_platform", "shipped", "shipped_at")
                p.ships = True
                if po.shipped_at:
                    o["shipped_at"] = po.shipped_at
            if target == "completed":
                move("complete", "completed", "completed_at")
    if state["status"] in order_status.HOLDABLE:  # _apply_holds
        active = {h[0] for h in holds if h[2] is None}
        reason = po.hold_reason
        if reason and reason not in active:
            if reason not in order_status.HOLD_ZH:
                raise DomainError(f"未知的挂起原因：{reason}")
            note = f"平台状态：{po.platform_status}"
            holds.append([reason, note, None])
            events.append(("sync", "hold", "hold", None, order_status.HOLD_ZH[reason], note))
    if po.refund_closed and state["status"] in order_status.HOLDABLE:
        close("refund_close", "平台全额退款")
    o["status"] = state["status"]
    p.holds = [tuple(h) for h in holds]
    p.events = events
    return p


_CUSTOMER_LOCKS = 0x4F4D5353  # "OMSS": the advisory-lock class of customer keys


def lock_customers(keys) -> None:
    """PostgreSQL: one transaction-level advisory lock per customer key (phone hash) of the
    page's new orders, all taken in one statement in a fixed order before the writer looks
    the customers up. Two shops synced at once (one job per shop on several workers) that
    bring the same new buyer would otherwise both insert the customer, and one page would
    fail on its unique phone hash; now the second waits for the first page's commit and
    then finds the customer. SQLite serializes writers itself."""
    ids = sorted({int(k[:7], 16) for k in keys if k})
    if not ids or db.session.get_bind().dialect.name != "postgresql":
        return
    db.session.connection().exec_driver_sql(
        "SELECT count(pg_advisory_xact_lock(%s, k)) FROM unnest(%s::int[]) AS k", (_CUSTOMER_LOCKS, ids))


def _write_new(plans: list, keys: dict) -> None:
    """``keys``: id(plan) → the customer key (phone hash) of its receiver phone."""
    writer = bulk_orders.BulkWriter(user_id=None, source="sync", threaded=False)
    try:
        writer.load_customers_by_hash([writer.key_of(p.draft, None, keys[id(p)]) for p in plans])
        writer.submit(plans)
        writer.finish()
    finally:
        writer.close()


def _readable(item) -> tuple:
    """(the PlatformOrder, None), or (None, the zh reason) for a listed order whose payload
    cannot be read (``Unparsed``, or a ``Deferred`` one failing now)."""
    if isinstance(item, Unparsed):
        return None, item.error
    if isinstance(item, Deferred):
        try:
            return item.parse(), None
        except PlatformError as exc:
            if exc.code != BAD_ORDER:
                raise
            return None, exc.message
    return item, None


def _planned_or_refused(shop: Shop, po: PlatformOrder, digest: str, ctx: RunContext):
    """(:func:`plan_new`, None), or (None, the zh reason) for an order no order may be saved
    as (a quantity of 0, a negative amount): the same checks a typed-in or imported order
    meets. Such an order is left out of the batch and recorded (:func:`_record_rejects`):
    one bad order must not stop the shop's sync on every run."""
    try:
        return plan_new(shop, po, digest, ctx.skus(shop.id), ctx.max_text), None
    except ValidationError as exc:
        return None, exc.message


def _create_new(shop: Shop, planned: list, ctx: RunContext) -> None:
    """New orders of a page, in page order, as [(po, plan)]: in bulk, except an order shipped
    on the platform whose SKUs have stock somewhere (the state machine deducts it: per order)."""
    stocked = None
    plans: list = []
    keys = {id(p): orders.phone_hash(p.order["receiver_phone"]) for _po, p in planned}
    lock_customers(keys.values())
    for po, p in planned:
        if p.ships and any(ln["sku_id"] for ln in p.lines):
            if stocked is None:
                stocked = _stocked_skus()
            if any(ln["sku_id"] in stocked for ln in p.lines):
                if plans:
                    _write_new(plans, keys)
                    plans = []
                apply_platform_order(shop, po, ctx.orm_skus(shop.id), None)
                db.session.flush()
                continue
        plans.append(p)
    if plans:
        _write_new(plans, keys)


def _update_changed(shop: Shop, items: list, ctx: RunContext) -> None:
    """Changed orders of a page: loaded in one query (lines and holds too), then the
    per-order update steps (events per changed field, forward-only status, holds)."""
    pids = [po.platform_order_id for po, _d in items]
    loaded = {o.platform_order_id: o for o in db.session.scalars(
        select(Order).where(Order.shop_id == shop.id, Order.platform_order_id.in_(pids))
        .options(selectinload(Order.lines), selectinload(Order.holds)))}
    skus = ctx.orm_skus(shop.id)
    for po, digest in items:
        _apply_update(loaded[po.platform_order_id], po, digest, skus)


def apply_page(shop: Shop, page_orders: list, ctx: RunContext, *, bulk: bool = True) -> dict:
    """Apply one page, or the pages of a batch of windows in order; returns the counts of
    created / updated / unchanged orders.

    One query for the stored checksums of the orders; unchanged ones cost nothing
    more (a listed order whose payload is the one stored is not even parsed: the page may
    hold ``Deferred`` orders, parsed here only when new or changed). New ones are written
    in bulk (``bulk=False``: one ``apply_platform_order`` each, the reference the tests
    compare with); changed ones are loaded in one query and
    updated one by one. An order listed twice (backwards paging) is applied after its
    first copy, as if one after the other.

    An order that cannot be saved (:func:`_readable`, :func:`_planned_or_refused`) is left
    out: ``counts["rejects"]`` maps its id to the zh reason, and ``counts["current"]`` lists
    the orders whose stored copy is now the platform's (saved or unchanged); for an order
    listed twice, its last copy decides (:func:`_record_rejects`)."""
    counts = {"created": 0, "updated": 0, "unchanged": 0, "rejected": 0}
    outcome: dict = {}  # platform order id → None (stored copy current) or the zh reason it was refused
    rounds: list = []
    seen: dict = {}
    for po in page_orders:
        k = seen.get(po.platform_order_id, 0)
        seen[po.platform_order_id] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(po)
    with db.session.no_autoflush:  # the run's counters and the checkpoint wait for the next commit
        known = existing_hashes(shop.id, list(seen))
    for batch in rounds:
        new, changed = [], []
        for item in batch:
            stored = known.get(item.platform_order_id)
            raw = item.raw_digest
            if raw is not None and stored is not None and stored[:_RAW] == raw_key(raw):
                counts["unchanged"] += 1  # the same payload as stored: not even parsed
                outcome[item.platform_order_id] = None
                continue
            po, unreadable = _readable(item)
            if unreadable is not None:
                outcome[item.platform_order_id] = unreadable
                continue
            digest = checksum(po)
            if same_payload(stored, po, digest):
                counts["unchanged"] += 1
                outcome[po.platform_order_id] = None
                continue
            plan, refusal = _planned_or_refused(shop, po, digest, ctx)
            if refusal is not None:
                outcome[po.platform_order_id] = refusal
                continue
            if stored is None:
                new.append((po, plan if bulk else digest))
            else:
                changed.append((po, digest))
            known[po.platform_order_id] = digest
            outcome[po.platform_order_id] = None
        if new:
            if bulk:
                _create_new(shop, new, ctx)
            else:
                skus = ctx.orm_skus(shop.id)
                for po, _d in new:
                    apply_platform_order(shop, po, skus, None)
            counts["created"] += len(new)
            # paid on arrival, in a shop that reserves at payment: reserve now (缺货 hold if short)
            db.session.flush()
            if shop.reserve_at == "payment":  # reserve_on_arrival's own filter, without its query
                order_status.reserve_on_arrival([(shop.id, po.platform_order_id) for po, _d in new], source="sync")
        if changed:
            _update_changed(shop, changed, ctx)
            counts["updated"] += len(changed)
        if new or changed:
            db.session.flush()
    counts["rejects"] = {pid: reason for pid, reason in outcome.items() if reason is not None}
    counts["current"] = [pid for pid, reason in outcome.items() if reason is None]
    counts["rejected"] = len(counts["rejects"])
    return counts


CONFLICT_RETRIES = 2
FETCH_AHEAD = 2  # batches fetched while the one before them is applied


def _apply_batch(shop: Shop, listed: list, ctx: RunContext, bulk: bool) -> dict:
    """``apply_page`` in a SAVEPOINT. A batch that meets a row another writer committed
    meanwhile (an import bringing the same new buyer: oms_customer's unique phone hash; two
    syncs are kept apart by ``lock_customers``) is rolled back to it and applied again,
    which then finds that row, instead of failing the run."""
    for attempt in range(CONFLICT_RETRIES + 1):
        try:
            with db.session.begin_nested():
                return apply_page(shop, listed, ctx, bulk=bulk)
        except Exception as exc:
            if attempt == CONFLICT_RETRIES or not bulk_orders.is_unique_conflict(exc):
                raise
            ctx.page_done()  # ORM SKUs loaded inside the rolled-back part: load them again
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


# --- platform orders that cannot be saved (无法保存的平台订单) ------------------------------
RETRY_AFTER = dt.timedelta(hours=1)  # a recorded order is asked for again this often
RETRY_FOR = dt.timedelta(days=7)  # and for this long after it was first seen (then: 立即重试 only)
RETRY_PER_RUN = 20
_REJECTS_SHOWN = 3  # in the run's message; every one is in oms_sync_reject


def _record_rejects(shop_id: int, counts: dict, open_rejects: set, now: dt.datetime) -> None:
    """In the batch's transaction: record the orders the batch left out (one row per order,
    its latest reason) and hold the stored copy of any of them (平台数据异常: the platform
    changed the order, perhaps closed or refunded it, and that could not be applied); drop
    the records of orders whose stored copy is the platform's now, and release their hold."""
    rejects = counts.get("rejects") or {}
    cleared = [pid for pid in counts.get("current") or () if pid in open_rejects]
    if cleared:
        db.session.execute(SyncReject.__table__.delete().where(
            SyncReject.shop_id == shop_id, SyncReject.platform_order_id.in_(cleared)))
        open_rejects.difference_update(cleared)
    touched = list(rejects) + cleared
    if not touched:
        return
    for order in db.session.scalars(select(Order).where(
            Order.shop_id == shop_id, Order.platform_order_id.in_(touched)).options(selectinload(Order.holds))):
        active = order.active_hold_reasons
        reason = rejects.get(order.platform_order_id)
        if reason is None and "platform_data" in active:
            order_status.release(order, "platform_data", source="sync", note="平台订单已可保存")
        elif reason is not None and "platform_data" not in active and order.status in order_status.HOLDABLE:
            order_status.hold(order, "platform_data", source="sync", note=f"平台的最新订单数据无法保存：{reason}"[:500])
    if not rejects:
        return
    rows = {r.platform_order_id: r for r in db.session.scalars(select(SyncReject).where(
        SyncReject.shop_id == shop_id, SyncReject.platform_order_id.in_(list(rejects))))}
    for pid, reason in rejects.items():
        row = rows.get(pid)
        if row is None:
            db.session.add(SyncReject(shop_id=shop_id, platform_order_id=pid, error=reason,
                                      first_seen_at=now, last_seen_at=now, times_seen=1))
        else:
            row.error, row.last_seen_at, row.times_seen = reason, now, (row.times_seen or 0) + 1
    open_rejects.update(rejects)


def _due_rejects(shop_id: int, now: dt.datetime) -> list:
    """Recorded orders to ask for again: never tried, or tried over RETRY_AFTER ago, and
    first seen within RETRY_FOR (older ones wait for 立即重试, which clears the stamp)."""
    never = SyncReject.last_tried_at.is_(None)
    return list(db.session.scalars(
        select(SyncReject).where(SyncReject.shop_id == shop_id,
                                 never | ((SyncReject.last_tried_at <= now - RETRY_AFTER)
                                          & (SyncReject.first_seen_at >= now - RETRY_FOR)))
        .order_by(never.desc(), SyncReject.last_tried_at, SyncReject.id)
        .limit(RETRY_PER_RUN)))


def _fetch_due_rejects(client, rows: list, keep_lock: Callable[[], None] = lambda: None) -> list:
    """The recorded orders due for another try, fetched whole, one call each without the
    run's retries. One the platform does not answer for (not found, or anything
    unexpected) stays recorded and is tried again later; a gateway that is down or
    limiting ends the tries (the windows will tell, with their retries)."""
    got = []
    policy, client.call_policy = client.call_policy, None
    try:
        for row in rows:
            keep_lock()
            if not _fetch_one_reject(client, row, got):
                break
    finally:
        client.call_policy = policy
    return got


def _fetch_one_reject(client, row, got: list) -> bool:
    """Appends the fetched order (or an Unparsed one) to ``got``; False: stop trying."""
    try:
        got.append(client.fetch_order(row.platform_order_id))
    except PlatformError as exc:
        if exc.kind == "auth":
            raise  # the whole shop's sync fails the same way: report it as such
        if exc.code == BAD_ORDER:  # still unreadable: its record says so again
            got.append(Unparsed(row.platform_order_id, None, exc.message))
        elif exc.retryable:
            return False
    except Exception:  # noqa: BLE001 - one order must not stop the shop's sync
        log.exception("sync: fetching recorded order %s failed", row.platform_order_id)
    return True


def _reject_summary(rejects: dict) -> str:
    shown = "；".join(f"平台订单 {pid}：{reason}" for pid, reason in list(rejects.items())[:_REJECTS_SHOWN])
    more = "……" if len(rejects) > _REJECTS_SHOWN else ""
    return f"{len(rejects)} 单平台订单无法保存，已跳过（见「无法保存的平台订单」）：{shown}{more}"[:2000]


def retry_rejects(reject_ids: list[int]) -> list[int]:
    """立即重试: the recorded orders are asked for again by their shops' next run (the
    caller queues one). Returns the ids of their shops."""
    rows = list(db.session.scalars(select(SyncReject).where(SyncReject.id.in_(reject_ids))))
    for row in rows:
        row.last_tried_at = None
    db.session.commit()
    return sorted({r.shop_id for r in rows})


# --- the run ------------------------------------------------------------------
def _call_with_retries(fn, retries: dict, sleep=time.sleep):
    """``fn()`` retried with backoff; ``retries["n"]`` counts the retries (a plain dict: the
    calls run in the prefetch thread, which never touches the session)."""
    attempt = 0
    while True:
        try:
            return fn()
        except PlatformError as exc:
            attempt += 1
            if not exc.retryable or attempt > SERVER_RETRIES:
                raise
            wait = exc.retry_after if exc.retry_after is not None else min(2 ** (attempt - 1), 8)
            if wait > MAX_INLINE_WAIT:
                raise
            retries["n"] += 1
            sleep(wait)


def _first_start(shop: Shop, now: dt.datetime) -> dt.datetime:
    return now - dt.timedelta(days=shop.backfill_days if shop.backfill_days is not None else 3)


COMMIT_EVERY_S = 2.0  # windows that wrote nothing: their checkpoint is committed at most this often
BATCH_ORDERS = 2000  # consecutive windows are fetched until they list this many orders, then applied at once


def _batch_orders() -> int:
    return int(current_app.config.get("OMS_SYNC_BATCH_ORDERS", BATCH_ORDERS)) if has_app_context() else BATCH_ORDERS


def sync_shop(shop_id: int, *, trigger: str = "schedule", now: Optional[dt.datetime] = None,
              progress: Optional[Callable[[int, int, str], None]] = None, sleep=time.sleep,
              client=None, stop_after_pages: Optional[int] = None, bulk: bool = True) -> SyncRun:
    """Pull every order of the shop changed since its checkpoint. Runs as the system.
    ``bulk=False``: new orders one ``create_order`` each (the reference path of the tests)."""
    lock = _lock(shop_id)
    if not lock.acquire():
        raise SyncBusy("该店铺正在同步，请稍后再试")
    try:
        with as_scope(None):
            return _sync_locked(shop_id, trigger, now, progress, sleep, client, stop_after_pages, bulk,
                                keep_lock=lambda: _keep_lock(lock))
    finally:
        with contextlib.suppress(Exception):  # expired: another run may hold it now
            lock.release()


def _sync_locked(shop_id, trigger, now, progress, sleep, client, stop_after_pages, bulk=True,
                 keep_lock: Callable[[], None] = lambda: None) -> SyncRun:
    shop = db.session.get(Shop, shop_id)
    if shop is None:
        raise DomainError(f"店铺不存在：{shop_id}")
    own_client = client is None
    client = client or client_for(shop)
    now = now or utcnow()
    retries = {"n": 0}
    stopping = threading.Event()

    def pause(seconds: float) -> None:
        """The backoff between retries, cut short when the run ends (a window fetched
        ahead is not needed then, and the run's lock is no longer renewed)."""
        if sleep is time.sleep:
            stopping.wait(seconds)
        else:
            sleep(seconds)
        if stopping.is_set():
            raise _Interrupted()

    def policy(fn):
        if stopping.is_set():  # the run has ended: a window fetched ahead is not needed
            raise _Interrupted()
        return _call_with_retries(fn, retries, pause)

    client.call_policy = policy
    end_limit = now - client.safety_lag
    start = (shop.sync_checkpoint - client.overlap) if shop.sync_checkpoint else _first_start(shop, now)
    _close_abandoned_runs(shop.id)
    run = SyncRun(shop_id=shop.id, trigger=trigger, status="running", started_at=utcnow(),
                  window_start=start, window_end=end_limit)
    db.session.add(run)
    db.session.commit()
    ctx = RunContext(shop.id)
    # A shop with orders already: listed orders are likely known, so the client lists them
    # unparsed (Deferred) and apply_page parses only the new or changed ones. Then, page by
    # page, the share of unchanged orders decides (parsing in the fetch thread overlaps
    # with the database; parsing an unchanged order is wasted).
    client.defer_parsing = db.session.execute(
        select(Order.id).where(Order.shop_id == shop.id).limit(1)).first() is not None
    windows = []
    while start < end_limit:
        end = min(start + client.max_window, end_limit)
        windows.append((start, end))
        start = end
    # The safety lag (PDD: keep the window end 3 minutes before its clock, or orders its
    # index has not caught up with may be missed) bounds the checkpoint, not what is read:
    # the last minutes are read too, and again by the next run, so a new order shows within
    # one sync interval instead of 3 minutes later, and one the index was late with is
    # still found. Only the windows up to the lag advance the checkpoint.
    advancing = len(windows)
    if client.safety_lag and start < now:
        windows.append((start, min(now, start + client.max_window)))
    total_windows = max(1, len(windows))
    pages_done = 0
    tally = {"created": 0, "updated": 0, "unchanged": 0, "fetched": 0, "pages": 0, "rejected": 0}
    rejected: dict = {}  # platform order id → reason, of this run (the last one), for its message
    open_rejects = set(db.session.scalars(select(SyncReject.platform_order_id).where(SyncReject.shop_id == shop.id)))

    def applied(listed: list) -> dict:
        """A batch applied, its left-out orders recorded and the run's counters set."""
        counts = _apply_batch(shop, listed, ctx, bulk) if listed else dict.fromkeys(tally, 0)
        _record_rejects(shop.id, counts, open_rejects, now)
        for pid in counts.get("current") or ():
            rejected.pop(pid, None)  # saved later in the run
        rejected.update(counts.get("rejects") or {})
        # Counters once per batch, not per order (each change would flush the run row),
        # kept here and set, not incremented: the run row is not reloaded after a commit.
        for outcome in ("created", "updated", "unchanged"):
            tally[outcome] += counts[outcome]
        tally["rejected"] = len(rejected)
        tally["fetched"] += len(listed)
        for name, value in tally.items():
            setattr(run, name, value)
        return counts
    last_commit = time.monotonic()
    batch_orders = _batch_orders()
    # Windows are fetched (HTTP + parsing, no database) in a thread while the previous ones
    # are applied: the gateway's and the database's work overlap. Consecutive windows are
    # fetched until they hold ``batch_orders`` orders and applied as one batch, in one
    # transaction: a backfill of 100,000 orders costs a hundred lookups, writes and commits
    # instead of one per page; an incremental run is one window anyway. Each gateway call is
    # retried in place (client.call_policy); a window is fetched whole before it is applied,
    # so a call that finally fails leaves nothing half-applied: the windows fetched before
    # it are applied and committed, the checkpoint stays at the last of them. Up to
    # FETCH_AHEAD batches wait fetched: a batch slow to fetch (Taobao windows with many
    # message look-ups) is then covered by the ones fetched while quicker ones were applied.
    import queue as queue_module
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="oms-sync-fetch")
    fetched = queue_module.Queue(maxsize=max(1, FETCH_AHEAD - 1))  # and one in the fetch thread's hands
    bulk_orders.short_switch.__enter__()

    def fetch(first: int):
        """The windows from ``first`` on until they hold ``batch_orders`` orders, as
        [(window index, pages)], and the platform error that ended the batch early."""
        got, listed = [], 0
        for i in range(first, len(windows)):
            try:
                pages = list(client.fetch_changed(*windows[i]))
            except PlatformError as exc:
                if not got:
                    raise
                return got, exc
            got.append((i, pages))
            listed += sum(len(page.orders) for page in pages)
            if listed >= batch_orders:
                break
        return got, None

    def hand_over(item) -> None:
        while not stopping.is_set():  # the run may end without taking it
            try:
                fetched.put(item, timeout=0.2)
                return
            except queue_module.Full:
                continue

    def produce() -> None:
        """Batches one after the other into ``fetched``; then None, or the error that ended them."""
        first = 0
        try:
            while first < len(windows) and not stopping.is_set():
                got, failed = fetch(first)
                hand_over((got, failed))
                if failed is not None:
                    return
                first = got[-1][0] + 1
        except BaseException as exc:  # raised again in the applying thread
            hand_over(exc)
            return
        hand_over(None)

    try:
        # Orders recorded as unsaveable, due for another try: fetched whole and applied first
        # (before the windows are fetched, so a copy listed in them is as new or newer).
        due = _due_rejects(shop.id, now) if open_rejects else []
        if due:
            for row in due:
                row.last_tried_at = now
            db.session.commit()  # tried, whatever comes of it: a failing order waits its hour
            got = _fetch_due_rejects(client, due, keep_lock)
            try:
                applied(got)
            except PlatformError:
                raise
            except Exception:  # noqa: BLE001 - the windows still run; the records stay
                db.session.rollback()
                log.exception("sync: applying recorded orders of shop %s failed", shop.id)
            else:
                keep_lock()
                db.session.commit()
            ctx.page_done()
        if windows:
            pool.submit(produce)
        renew_every = max(1.0, lock_seconds() / 4)
        while windows:
            while True:  # the platform may be slow or banning: the lock must outlive the wait
                try:
                    item = fetched.get(timeout=renew_every)
                    break
                except queue_module.Empty:
                    keep_lock()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            got, failed = item
            last = got[-1][0]
            keep_lock()
            run.retries = retries["n"]
            pages = [page for _i, window_pages in got for page in window_pages]
            listed = [po for page in pages for po in page.orders]
            tally["pages"] += len(pages)
            counts = applied(listed)
            if listed:
                client.defer_parsing = counts["unchanged"] * 2 > len(listed)
            pages_done += len(pages)
            # The checkpoint moves to the end of the batch's last window (not past the safety
            # lag) in the same commit as the batch's orders. A batch that wrote nothing is
            # committed with the next one that writes (or at most every COMMIT_EVERY_S, or at
            # the end): a checkpoint lost to a crash is only older, and re-reading is harmless.
            advanced = [i for i, _p in got if i < advancing]
            if advanced:
                shop.sync_checkpoint = windows[advanced[-1]][1]
            if (counts["created"] or counts["updated"] or counts["rejected"] or failed is not None
                    or time.monotonic() - last_commit >= COMMIT_EVERY_S):
                keep_lock()
                db.session.commit()
                ctx.page_done()
                last_commit = time.monotonic()
            if stop_after_pages is not None and pages_done >= stop_after_pages:
                raise _Interrupted()
            if progress:
                progress(last + 1, total_windows, f"已同步至 {windows[last][1].isoformat()}")
            if failed is not None:
                raise failed
        if shop.sync_checkpoint is None and not advancing:
            # no backfill (backfill_days 0): nothing to read yet; from now on
            shop.sync_checkpoint = min(end_limit, now)
        run.status = "success"
        run.retries = retries["n"]
        previous_error = shop.last_sync_error
        shop.last_sync_success_at = utcnow()
        shop.last_sync_error = None
        shop.sync_not_before = None
        run.error = _reject_summary(rejected) if rejected else None
        if open_rejects:  # recorded by this run or an earlier one, and still not saved
            shop.last_sync_error = f"有 {len(open_rejects)} 单平台订单无法保存，见「无法保存的平台订单」"
            if shop.last_sync_error != previous_error:
                shop.last_sync_error_at = utcnow()
    except _Interrupted:
        db.session.rollback()
        run.status = "failed"
        run.error = "同步被中断"
    except LockLost as exc:  # another run of this shop goes on: not the shop's error
        db.session.rollback()
        run.status = "failed"
        run.error = exc.message
    except PlatformError as exc:
        db.session.rollback()
        run.status = "failed"
        run.error = exc.message
        shop.last_sync_error = exc.message
        shop.last_sync_error_at = utcnow()
        if exc.kind == "rate_limit" and exc.retry_after:
            shop.sync_not_before = utcnow() + dt.timedelta(seconds=exc.retry_after)
    except Exception as exc:
        db.session.rollback()
        run.status = "failed"
        run.error = f"同步出错：{exc}"[:2000]
        run.retries = retries["n"]
        shop.last_sync_error = run.error
        shop.last_sync_error_at = utcnow()
        run.finished_at = utcnow()
        db.session.commit()
        raise
    finally:
        stopping.set()
        pool.shutdown(wait=True, cancel_futures=True)
        bulk_orders.short_switch.__exit__(None, None, None)
        if own_client:
            with contextlib.suppress(Exception):
                client.close()  # its kept-alive gateway connection
    run.retries = retries["n"]
    run.finished_at = utcnow()
    db.session.commit()
    return run


def _close_abandoned_runs(shop_id: int) -> None:
    """Runs of this shop still marked 运行中 belong to a worker that died mid-run (this run
    holds the shop's lock, so none of them is alive): 同步记录 shows them failed. What they
    committed stays, and this run goes on from their last checkpoint."""
    from sqlalchemy import update

    db.session.execute(update(SyncRun).where(SyncRun.shop_id == shop_id, SyncRun.status == "running").values(
        status="failed",  # finished_at stays empty: when it died is not known
        error="同步进程意外退出（如被终止或内存不足），本次同步未完成；已提交的订单保留，下次同步从检查点继续"))


class _Interrupted(Exception):
    """Raised by ``stop_after_pages`` (tests, benchmarks) to cut a run short."""


# A shop is due this long before its interval has passed: the dispatcher runs every 5 s
# (app/jobs/schedule.py), so two runs of a shop start at most interval − 10 + 5 s apart,
# and an order created just after one run's window is in the next within the interval.
SCHEDULE_SLACK_S = 10


def due_shops(now: Optional[dt.datetime] = None) -> list[int]:
    """Active shops whose interval (less SCHEDULE_SLACK_S) has passed since their last run
    and that are not banned."""
    now = now or utcnow()
    due = []
    with as_scope(None):
        for shop in db.session.scalars(select(Shop).where(Shop.active.is_(True), Shop.sync_enabled.is_(True),
                                                          Shop.app_key.isnot(None), Shop.app_key != "",
                                                          Shop.platform.in_(("taobao", "tmall", "pdd", "jd")))):
            if shop.sync_not_before and shop.sync_not_before > now:
                continue
            last = db.session.execute(select(SyncRun.started_at).where(SyncRun.shop_id == shop.id)
                                      .order_by(SyncRun.started_at.desc()).limit(1)).scalar()
            interval = shop.sync_interval_seconds or 60
            if last is None or (now - last).total_seconds() >= max(interval - SCHEDULE_SLACK_S, interval / 2):
                due.append(shop.id)
    return due

