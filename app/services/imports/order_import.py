"""Orders from sheets: rows → order drafts (grouped, joined, normalised) → upsert.

Drafts are plain dicts in the shape of :func:`app.services.orders.create_order`.
Applying a draft:

* new orders are written in bulk, in batches of ``BATCH_SIZE`` (:mod:`.bulk`: Core
  statements, COPY on PostgreSQL, one query per batch for customers), directly in the
  status the sheet gives, with the sheet's times (history: no stock is moved for an
  order that was shipped before it was imported, as for the demo's recorded history);
  each line's SKU by services/sku_mapping.py's rule (its own merchant code, else the
  shop's listing mapping; one catalogue per import); unknown merchant codes give an
  未匹配商品 hold. The rows are the ones
  ``orders.create_order`` (source ``import``) would write — ``bulk=False`` still takes
  that path, one order at a time, and the tests compare the two;
* a known order (same shop + platform order id) whose content is unchanged
  (same checksum) is skipped; a changed one goes through the sync engine's own
  update steps (``sync._update_order``, ``_advance_status``, ``_apply_holds``,
  ``_hold_unmatched``), one order at a time: fields and lines upserted with one event
  per change, the status only moves forward (platform-only transitions are allowed for
  imports, and move stock), refunds and locks raise holds. Their events are recorded
  with source ``import``.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Callable, Optional

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from app.extensions import db
from app.models import Carrier, Order, OrderEvent, Shop
from app.platforms.base import PlatformLine, PlatformOrder
from app.platforms.common import unique_line_ids
from app.services import order_status, orders, sku_mapping, sync
from app.services.errors import DomainError, ValidationError
from app.services.validation import check_phone

from . import bulk as bulk_path
from .errors import CellIssue, ImportFileError
from .parse import ParsedSheet, Row

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
PLATFORM_GROUPS = {"taobao": ("taobao", "tmall"), "pdd": ("pdd",), "jd": ("jd",)}
PLATFORM_ZH = {"taobao": "淘宝/天猫", "tmall": "天猫", "pdd": "拼多多", "jd": "京东", "douyin": "抖音",
               "manual": "手工"}
# The checksum's format (1: JSON + SHA-256, before the bulk path, still recognised: legacy_checksum).
_CHECKSUM_VERSION = "2"
LINE_FIELDS = ("merchant_code", "title", "quantity", "price", "line_total", "line_paid_amount", "line_id")


@dataclass
class Draft:
    shop_name: Optional[str]
    pid: str
    data: dict
    refs: list = field(default_factory=list)  # (ParsedSheet, Row) that make up the order
    refund: Optional[str] = None  # "refunding" | "refunded"
    hold: Optional[str] = None  # a platform hold reason (JD 锁定)
    carrier_name: Optional[str] = None
    bad: bool = False
    shop_id: Optional[int] = None
    digest: str = ""

    def first(self) -> tuple:
        return self.refs[0]


def _has_lines(ps: ParsedSheet) -> bool:
    return any(f in ps.mapping for f in ("merchant_code", "title"))


def _group(ps: ParsedSheet, default_shop: Optional[str]) -> dict:
    groups: dict = {}
    for row in ps.rows:
        pid = row.values.get("platform_order_id")
        if pid is None:
            if not row.bad:
                ps.issue(row.index, "platform_order_id", "订单号不能为空")
            row.bad = True
            continue
        shop = default_shop or row.values.get("shop_name")
        groups.setdefault((shop, pid), []).append(row)
    return groups


def _lines(ps: ParsedSheet, rows: list[Row]) -> tuple[list[dict], bool]:
    bad = False
    ids = unique_line_ids([r.values.get("line_id") for r in rows])
    out = []
    for line_id, r in zip(ids, rows):
        v = r.values
        qty = v.get("quantity")
        if qty is None:
            if not r.bad:
                ps.issue(r.index, "quantity", "数量不能为空")
            bad = r.bad = True
            qty = 1
        code, title = v.get("merchant_code"), v.get("title")
        if not code and not title:
            ps.issue(r.index, "merchant_code", "商家编码和商品名称不能都为空")
            bad = r.bad = True
        price, total, paid = v.get("price"), v.get("line_total"), v.get("line_paid_amount")
        if price is None:
            price = (total / qty).quantize(CENT, rounding=ROUND_HALF_UP) if total is not None else ZERO
        if paid is None:
            paid = total if total is not None else (price * qty).quantize(CENT)
        out.append({"platform_line_id": line_id, "merchant_code": code, "title": title or code,
                    "spec": v.get("spec"), "quantity": qty, "price": price, "paid_amount": paid,
                    "refund_status": v.get("line_refund_status"), "_total": total})
    return out, bad


ORDER_FIELD_NAMES = ("goods_amount", "discount_amount", "post_fee", "paid_amount", "buyer_nick",
                     "receiver_name", "receiver_phone", "receiver_province", "receiver_city", "receiver_district",
                     "receiver_address", "receiver_zip", "buyer_message", "seller_memo", "flag",
                     "platform_created_at", "paid_at", "shipped_at", "completed_at", "close_reason",
                     "tracking_number")


def _merged(rows: list[Row]) -> dict:
    """Field → the first non-empty value over the order's rows."""
    if len(rows) == 1:
        return rows[0].values
    out = dict(rows[0].values)
    for r in rows[1:]:
        for k, v in r.values.items():
            if v is not None and out.get(k) is None:
                out[k] = v
    return out


_NORM_CACHE: dict = {}


def _norm(raw) -> str:
    """profiles.norm, remembered: a sheet has a handful of distinct status texts."""
    key = _NORM_CACHE.get(raw)
    if key is None:
        from .profiles import norm

        key = _NORM_CACHE[raw] = norm(raw)
    return key


def _order_fields(ps: ParsedSheet, rows: list[Row], draft: Draft) -> None:
    """Order-level values (first non-empty over the order's rows), status mapped."""
    profile = ps.profile
    data = draft.data
    merged = _merged(rows)
    get = merged.get
    for name in ORDER_FIELD_NAMES:
        value = get(name)
        if value is not None or name not in data:
            data[name] = value
    raw = get("status")
    head = rows[0]
    if raw is not None and profile.status_map:
        key = _norm(raw)
        status = profile.status_map.get(key)
        if status is None:
            known = "、".join(sorted(profile.status_map))
            ps.issue(head.index, "status", f"无法识别的订单状态「{raw}」（可用：{known}）")
            draft.bad = True
            status = "pending_payment"
        data["status"], data["platform_status"] = status, raw
        draft.hold = profile.hold_map.get(key) or draft.hold
    elif raw is None and "status" not in data:
        if "status" in ps.mapping and profile.status_map:
            ps.issue(head.index, "status", "订单状态不能为空")
            draft.bad = True
        data["status"] = "to_audit" if data.get("paid_at") else "pending_payment"
        data["platform_status"] = None
    refund = get("refund_state")
    if refund is not None and profile.refund_map:
        draft.refund = profile.refund_map.get(_norm(refund)) or None
    carrier = get("carrier_name")
    if carrier is not None:
        draft.carrier_name = carrier
    if profile.template and data.get("receiver_phone"):
        try:
            data["receiver_phone"] = check_phone(data["receiver_phone"])
        except ValidationError as exc:
            ps.issue(next(r.index for r in rows if r.values.get("receiver_phone")), "receiver_phone",
                     exc.message.split("：", 1)[0].replace("「收货人手机」", "") + "：" + str(data["receiver_phone"]))
            draft.bad = True


def _finish(draft: Draft) -> None:
    """Derived values: goods total from the lines, refunds, close reason, stamps, checksum."""
    data = draft.data
    lines = data["lines"]
    if data.get("goods_amount") is None and lines:
        data["goods_amount"] = sum(((ln["_total"] if ln.get("_total") is not None else ln["price"] * ln["quantity"])
                                    for ln in lines), ZERO).quantize(CENT)
    if data.get("paid_amount") is None and lines and data.get("status") != "pending_payment":
        data["paid_amount"] = sum((ln["paid_amount"] for ln in lines), ZERO)
    for key in ("goods_amount", "discount_amount", "post_fee", "paid_amount"):
        if data.get(key) is None:
            data[key] = ZERO
    if data.get("flag") is None:
        data["flag"] = 0
    status = data["status"]
    if draft.refund == "refunded" and status in ("to_audit", "to_ship"):
        status = data["status"] = "closed"
        data["close_reason"] = data.get("close_reason") or "平台已全额退款"
    if status == "closed" and not data.get("close_reason"):
        data["close_reason"] = f"平台已关闭（{data.get('platform_status') or '已关闭'}）"
    times = [t for t in (data.get("platform_created_at"), data.get("paid_at"), data.get("shipped_at"),
                         data.get("completed_at")) if t is not None]
    data["platform_modified_at"] = max(times) if times else None
    if status == "closed":
        data["closed_at"] = data["platform_modified_at"]
    if status not in ("shipped", "completed"):
        data["shipped_at"] = None if status != "closed" else data.get("shipped_at")
    if status != "completed":
        data["completed_at"] = None
    draft.digest = checksum(draft)


def checksum(draft: Draft) -> str:
    """The content of a draft as 64 hex digits: an unchanged order is skipped on re-import.

    BLAKE2b over the draft's fields (sorted by name) and lines as text (str of a
    Decimal or datetime is exact), several times cheaper than JSON + SHA-256."""
    data = draft.data
    parts = [_CHECKSUM_VERSION, str(draft.refund), str(draft.hold), str(draft.carrier_name)]
    for k, v in sorted(data.items()):
        if k == "lines":
            continue
        parts.append(k)
        parts.append("\0" if v is None else str(v))
    for ln in data["lines"]:
        parts.append("\x1d")
        for k, v in ln.items():
            if k[0] != "_":
                parts.append(k)
                parts.append("\0" if v is None else str(v))
    return hashlib.blake2b("\x1e".join(parts).encode("utf-8"), digest_size=32).hexdigest()


def legacy_checksum(draft: Draft) -> str:
    """The checksum orders imported before the bulk path carry (JSON + SHA-256): an order
    stored with it and unchanged on the sheet is still recognised as unchanged."""
    import json

    data = draft.data
    payload = {k: v for k, v in data.items() if k != "lines"}
    payload["lines"] = [{k: v for k, v in ln.items() if not k.startswith("_")} for ln in data["lines"]]
    payload["_refund"], payload["_hold"], payload["_carrier"] = draft.refund, draft.hold, draft.carrier_name
    text = json.dumps(payload, default=str, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _changed(draft: Draft, stored: str) -> bool:
    return stored != draft.digest and stored != legacy_checksum(draft)


def build(sheets: list[ParsedSheet], default_shop: Optional[str]) -> list[Draft]:
    """Group rows into orders; join Taobao's order sheet with its item sheet."""
    by_part = {ps.profile.part: ps for ps in sheets}
    if len(sheets) == 2:
        a, b = sheets
        if not (a.profile.family and a.profile.family == b.profile.family and {a.profile.part, b.profile.part}
                == {"orders", "items"}):
            raise ImportFileError(f"两个文件不能一起导入：「{a.sheet.label}」是{a.profile.title}，"
                                  f"「{b.sheet.label}」是{b.profile.title}；只有订单报表和宝贝报表可以一起导入")
        head, items = by_part["orders"], by_part["items"]
    elif len(sheets) == 1:
        ps = sheets[0]
        if ps.profile.part == "orders":
            raise ImportFileError(f"「{ps.sheet.label}」是{ps.profile.title}，没有商品明细："
                                  "请与宝贝报表一起导入（两个文件按 订单编号 合并）")
        if ps.profile.part == "items" and not ps.profile.standalone:
            raise ImportFileError(f"「{ps.sheet.label}」是{ps.profile.title}，只有商品明细："
                                  "请与订单报表一起导入（两个文件按 订单编号 合并）")
        head, items = ps, ps
    else:
        raise ImportFileError("一次最多导入两个文件（订单报表和宝贝报表）")
    groups = _group(head, default_shop)
    drafts: list[Draft] = []
    item_groups = groups if items is head else {}
    if items is not head:
        by_pid: dict = {}
        for row in items.rows:
            pid = row.values.get("platform_order_id")
            if pid is None:
                items.issue(row.index, "platform_order_id", "订单号不能为空")
                row.bad = True
                continue
            by_pid.setdefault(pid, []).append(row)
        known = {pid for (_shop, pid) in groups}
        for pid, rows in by_pid.items():
            if pid not in known:
                for r in rows:
                    items.issue(r.index, "platform_order_id", f"订单报表中没有订单 {pid}")
                    r.bad = True
        item_groups = {key: by_pid.get(key[1], []) for key in groups}
    items_have_lines, head_has_lines = _has_lines(items), _has_lines(head)
    for key, rows in groups.items():
        shop, pid = key
        draft = Draft(shop, pid, {"platform_order_id": pid}, refs=[(head, r) for r in rows])
        if items is not head and item_groups.get(key):
            _order_fields(items, item_groups[key], draft)
        _order_fields(head, rows, draft)
        line_rows = item_groups.get(key) or []
        if items is not head:
            draft.refs += [(items, r) for r in line_rows]
            if not line_rows:
                head.issue(rows[0].index, "platform_order_id", f"宝贝报表中没有订单 {pid} 的商品")
                draft.bad = True
        lines, bad = _lines(items, line_rows) if line_rows and items_have_lines else ([], False)
        if not lines and items is head and not head_has_lines:
            head.issue(rows[0].index, None, "没有商品明细")
            draft.bad = True
        draft.data["lines"] = lines
        draft.bad = draft.bad or bad or any(r.bad for _ps, r in draft.refs)
        _finish(draft)
        drafts.append(draft)
    return drafts


# --- applying -------------------------------------------------------------------------
@dataclass
class Counts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0


def resolve_carriers(names: set) -> dict:
    if not names:
        return {}
    out = {}
    for c in db.session.scalars(select(Carrier)):
        for key in (c.name, c.code, c.kuaidi100_code, c.taobao_code):
            if key:
                out[key] = c.id
                out[key.lower()] = c.id
    result = {}
    for n in names:
        cid = out.get(n) or out.get(n.lower())
        if cid is None:  # "顺丰" for "顺丰速运", "中通" for "中通快递"
            hits = {v for k, v in out.items() if len(n) >= 2 and (k.startswith(n) or n.startswith(k))}
            cid = hits.pop() if len(hits) == 1 else None
        result[n] = cid
    return result


@contextlib.contextmanager
def as_import_events(order: Order, user_id: Optional[int]):
    """The sync engine's update steps write events with source ``sync``: relabel the ones
    written inside this block as ``import`` (by the importing user)."""
    before = {id(ev) for ev in order.events}
    yield
    for ev in order.events:
        if id(ev) not in before and ev.source == "sync":
            ev.source = "import"
            ev.user_id = user_id


def _platform_order(draft: Draft) -> PlatformOrder:
    d = draft.data
    return PlatformOrder(
        platform_order_id=draft.pid, platform_status=d.get("platform_status") or "", status=d["status"],
        modified_at=d.get("platform_modified_at"), created_at=d.get("platform_created_at"),
        paid_at=d.get("paid_at"), shipped_at=d.get("shipped_at"), goods_amount=d["goods_amount"],
        discount_amount=d["discount_amount"], post_fee=d["post_fee"], paid_amount=d["paid_amount"],
        buyer_nick=d.get("buyer_nick"), receiver_name=d.get("receiver_name"),
        receiver_phone=d.get("receiver_phone"), receiver_province=d.get("receiver_province"),
        receiver_city=d.get("receiver_city"), receiver_district=d.get("receiver_district"),
        receiver_address=d.get("receiver_address"), receiver_zip=d.get("receiver_zip"),
        buyer_message=d.get("buyer_message"), seller_memo=d.get("seller_memo"), flag=d.get("flag") or 0,
        tracking_number=d.get("tracking_number"),
        hold_reason=draft.hold or ("refunding" if draft.refund == "refunding" else None),
        refund_closed=draft.refund == "refunded" and d["status"] == "closed",
        lines=[PlatformLine(platform_line_id=ln["platform_line_id"], title=(ln["title"] or "")[:255],
                            quantity=ln["quantity"], price=ln["price"], paid_amount=ln["paid_amount"],
                            merchant_code=ln["merchant_code"], spec=ln["spec"],
                            refund_status=ln["refund_status"]) for ln in d["lines"]],
    )


def create_one(shop: Shop, draft: Draft, skus_by_code: dict, carrier_id: Optional[int],
               user_id: Optional[int]) -> Order:
    data = {k: v for k, v in draft.data.items()}
    data["lines"] = [{k: v for k, v in ln.items() if not k.startswith("_")} for ln in draft.data["lines"]]
    for ln in data["lines"]:
        if not ln["title"]:
            sku = skus_by_code.get(ln["merchant_code"])
            ln["title"] = sku.name if sku is not None else ln["merchant_code"]
    data["carrier_id"] = carrier_id
    order = orders.create_order(shop, data, source="import", user_id=user_id, skus_by_code=skus_by_code,
                                trusted=True)
    order.platform_hash = draft.digest
    # create_order does not take receiver_zip (nor does sync's create): set it here.
    if data.get("receiver_zip"):
        order.receiver_zip = data["receiver_zip"]
    reason = draft.hold or ("refunding" if draft.refund == "refunding" else None)
    if reason and order.status in order_status.HOLDABLE:
        order_status.hold(order, reason, source="import", user_id=user_id,
                          note=f"平台状态：{data.get('platform_status') or ''}")
    return order


def update_one(order: Order, draft: Draft, skus_by_code: dict, carrier_id: Optional[int],
               user_id: Optional[int]) -> None:
    po = _platform_order(draft)
    with as_import_events(order, user_id):
        sync._update_order(order, po, skus_by_code)
        sync._advance_status(order, po)
        sync._apply_holds(order, po)
        sync._hold_unmatched(order)
        if po.refund_closed and order.status in order_status.HOLDABLE:
            order_status.apply(order, "refund_close", source="import", user_id=user_id, reason="平台全额退款")
    changes = {}
    if carrier_id and order.carrier_id != carrier_id:
        changes["carrier_id"] = carrier_id
    for name in ("seller_memo", "flag"):
        value = draft.data.get(name)
        if value not in (None, 0) and getattr(order, name) != value:
            changes[name] = value
    if changes:
        orders.update_fields(order, changes, source="import", user_id=user_id)
    order.platform_hash = draft.digest


def _existing(drafts: list[Draft]) -> dict:
    """(shop id, platform order id) → stored checksum ("" if none) of the drafts already imported."""
    by_shop: dict = {}
    for d in drafts:
        by_shop.setdefault(d.shop_id, []).append(d.pid)
    out = {}
    for shop_id, pids in by_shop.items():
        for i in range(0, len(pids), LOOKUP_CHUNK):
            for pid, digest in db.session.execute(select(Order.platform_order_id, Order.platform_hash).where(
                    Order.shop_id == shop_id, Order.platform_order_id.in_(pids[i:i + LOOKUP_CHUNK]))):
                out[(shop_id, pid)] = digest or ""
    return out


def _skus(drafts: list[Draft]) -> sku_mapping.SkuCatalogue:
    """The SKUs of the drafts' merchant codes and their shops' listing mappings (chunked
    lookups); ``.for_shop(shop_id)`` is one shop's code → SKU."""
    return sku_mapping.SkuCatalogue.load(
        {ln["merchant_code"] for d in drafts for ln in d.data["lines"] if ln["merchant_code"]},
        shop_ids={d.shop_id for d in drafts})


def _update(changed: list[Draft], skus: sku_mapping.SkuCatalogue, carriers: dict, *, user_id, valid_only, issue,
            counts) -> bool:
    """The per-order update steps for changed orders; False: stop (all or nothing failed)."""
    by_shop: dict = {}
    for d in changed:
        by_shop.setdefault(d.shop_id, []).append(d.pid)
    loaded = {}
    for shop_id, pids in by_shop.items():
        for o in db.session.scalars(select(Order).where(
                Order.shop_id == shop_id, Order.platform_order_id.in_(pids)).options(
                selectinload(Order.lines), selectinload(Order.holds), selectinload(Order.events))):
            loaded[(shop_id, o.platform_order_id)] = o
    for d in changed:
        order = loaded[(d.shop_id, d.pid)]
        try:
            with (db.session.begin_nested() if valid_only else contextlib.nullcontext()):
                update_one(order, d, skus.for_shop(d.shop_id), carriers.get(d.carrier_name), user_id)
            counts.updated += 1
        except DomainError as exc:
            issue(d, exc.message)
            counts.failed += 1
            if not valid_only:
                return False
    return True


BATCH_SIZE = 5000  # new orders per bulk batch (one set of COPY statements)
UPDATE_BATCH = 1000  # changed orders loaded and updated per flush
LOOKUP_CHUNK = 5000  # ids per IN (…) of a lookup


def apply(drafts: list[Draft], shops: dict, *, user_id: Optional[int], valid_only: bool,
          issue: Callable, progress: Optional[Callable] = None, bulk: Optional[bool] = None,
          batch_size: Optional[int] = None) -> Counts:
    """Upsert the drafts (already validated); ``shops`` maps the drafts' shop ids to Shops.
    The caller owns the transaction. ``issue(draft, message)`` records a write-time failure.

    New orders are written in bulk (:mod:`.bulk`) unless ``bulk`` is False (then one
    ``create_order`` each, as before); changed orders always go through the per-order
    update steps (they may move status, stock and holds), after the new ones.
    ``progress`` is called while the bulk writer may be using the session's connection
    (PostgreSQL): it must not use the database (RQ's set_progress writes to Redis)."""
    bulk = True if bulk is None else bulk
    carriers = resolve_carriers({d.carrier_name for d in drafts if d.carrier_name})
    if not bulk:
        return _apply_per_order(drafts, shops, carriers, user_id=user_id, valid_only=valid_only, issue=issue,
                                progress=progress, batch_size=batch_size or 1000)
    counts = Counts()
    batch_size = batch_size or BATCH_SIZE
    total = len(drafts)
    existing = _existing(drafts)
    new = [d for d in drafts if (d.shop_id, d.pid) not in existing]
    changed = [d for d in drafts if _changed(d, existing.get((d.shop_id, d.pid), d.digest))]
    counts.unchanged = total - len(new) - len(changed)
    skus = _skus(drafts)
    done = counts.unchanged
    creator = bulk_path.Creator(user_id=user_id, valid_only=valid_only, issue=issue)
    try:
        creator.load_customers(new)
        for start in range(0, len(new), batch_size):
            batch = new[start:start + batch_size]
            created, failed = creator.create(batch, shops, skus, carriers)
            counts.created += created
            counts.failed += failed
            if failed and not valid_only:
                return counts
            done += len(batch)
            if progress:
                progress(done, total, f"已写入 {done}/{total} 个订单")
        creator.finish()
    finally:
        creator.close()
    # Paid orders of shops that reserve at payment reserve now (they skipped 付款 here).
    order_status.reserve_on_arrival([(d.shop_id, d.pid) for d in new], source="import", user_id=user_id)
    for start in range(0, len(changed), UPDATE_BATCH):
        batch = changed[start:start + UPDATE_BATCH]
        if not _update(batch, skus, carriers, user_id=user_id, valid_only=valid_only, issue=issue, counts=counts):
            return counts
        db.session.flush()
        done += len(batch)
        if progress:
            progress(done, total, f"已写入 {done}/{total} 个订单")
    return counts


def _apply_per_order(drafts, shops, carriers, *, user_id, valid_only, issue, progress, batch_size) -> Counts:
    """One ``create_order`` per new order (``bulk=False``), batch by batch as before the bulk path."""
    counts = Counts()
    total = len(drafts)
    done = 0
    for start in range(0, total, batch_size):
        batch = drafts[start:start + batch_size]
        skus = _skus(batch)
        existing = _existing(batch)
        new = [d for d in batch if (d.shop_id, d.pid) not in existing]
        changed = [d for d in batch if _changed(d, existing.get((d.shop_id, d.pid), d.digest))]
        counts.unchanged += len(batch) - len(new) - len(changed)
        for d in new:
            try:
                with (db.session.begin_nested() if valid_only else contextlib.nullcontext()):
                    create_one(shops[d.shop_id], d, skus.for_shop(d.shop_id), carriers.get(d.carrier_name),
                               user_id)
                counts.created += 1
            except DomainError as exc:
                issue(d, exc.message)
                counts.failed += 1
                if not valid_only:
                    return counts
        if changed and not _update(changed, skus, carriers, user_id=user_id, valid_only=valid_only, issue=issue,
                                   counts=counts):
            return counts
        db.session.flush()
        order_status.reserve_on_arrival([(d.shop_id, d.pid) for d in new], source="import", user_id=user_id)
        done += len(batch)
        if progress:
            progress(done, total, f"已写入 {done}/{total} 个订单")
    return counts


def resolve_shops(drafts: list[Draft], *, profile_platform: str, lookup: Callable, issue: Callable) -> dict:
    """Shop per draft (by name, within the user's row scope); wrong platform or unknown → issue."""
    names = {d.shop_name for d in drafts}
    found: dict = {}
    for name in names:
        if name is None:
            continue
        shop = lookup(name)
        found[name] = shop
    shops_by_id = {}
    for d in drafts:
        if d.shop_name is None:
            issue(d, "请选择店铺：表格中没有店铺列，导入时需要指定店铺", field="shop_name")
            d.bad = True
            continue
        shop = found.get(d.shop_name)
        if shop is None:
            issue(d, f"店铺不存在或无权访问：{d.shop_name}", field="shop_name")
            d.bad = True
            continue
        allowed = PLATFORM_GROUPS.get(profile_platform)
        if allowed and shop.platform not in allowed:
            issue(d, f"店铺「{shop.name}」是{PLATFORM_ZH.get(shop.platform, shop.platform)}店铺，"
                     f"不能导入{PLATFORM_ZH.get(profile_platform, profile_platform)}订单", field="shop_name")
            d.bad = True
            continue
        d.shop_id = shop.id
        shops_by_id[shop.id] = shop
    return shops_by_id


_ = (OrderEvent, dt)  # re-exported names used by the bulk path
