"""Orders from sheets: rows → order drafts (grouped, joined, normalised) → upsert.

Drafts are plain dicts in the shape of :func:`app.services.orders.create_order`.
One order sheet (every profile but Taobao's order sheet + item sheet) is streamed:
:func:`stream` converts its rows and builds the drafts a chunk at a time, in the order
:func:`build` gives them (an order is built once its last row is converted), and
:class:`StreamApply` writes each chunk while the next is converted. Two sheets (joined
by order number) and ``bulk=False`` go through :func:`build` and :func:`apply` as a whole.
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
from app.services import bulk_orders, order_status, orders, sku_mapping, sync
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


def _order_key(ps: ParsedSheet, row: Row, default_shop: Optional[str]):
    """The (shop, order number) a row belongs to; None (and the row marked bad) without a number."""
    pid = row.values.get("platform_order_id")
    if pid is None:
        if not row.bad:
            ps.issue(row.index, "platform_order_id", "订单号不能为空")
        row.bad = True
        return None
    return (default_shop or row.values.get("shop_name"), pid)


def _group(ps: ParsedSheet, default_shop: Optional[str]) -> dict:
    groups: dict = {}
    for row in ps.rows:
        key = _order_key(ps, row, default_shop)
        if key is not None:
            groups.setdefault(key, []).append(row)
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


def pair(sheets: list) -> tuple:
    """(head, items): the sheet with the order-level columns and the one with the lines (the
    same sheet, except Taobao's order sheet + item sheet); refuses combinations that cannot be
    imported. ``sheets``: ParsedSheets (or anything with ``profile`` and ``sheet``)."""
    by_part = {ps.profile.part: ps for ps in sheets}
    if len(sheets) == 2:
        a, b = sheets
        if not (a.profile.family and a.profile.family == b.profile.family and {a.profile.part, b.profile.part}
                == {"orders", "items"}):
            raise ImportFileError(f"两个文件不能一起导入：「{a.sheet.label}」是{a.profile.title}，"
                                  f"「{b.sheet.label}」是{b.profile.title}；只有订单报表和宝贝报表可以一起导入")
        return by_part["orders"], by_part["items"]
    if len(sheets) == 1:
        ps = sheets[0]
        if ps.profile.part == "orders":
            raise ImportFileError(f"「{ps.sheet.label}」是{ps.profile.title}，没有商品明细："
                                  "请与宝贝报表一起导入（两个文件按 订单编号 合并）")
        if ps.profile.part == "items" and not ps.profile.standalone:
            raise ImportFileError(f"「{ps.sheet.label}」是{ps.profile.title}，只有商品明细："
                                  "请与订单报表一起导入（两个文件按 订单编号 合并）")
        return ps, ps
    raise ImportFileError("一次最多导入两个文件（订单报表和宝贝报表）")


def _draft(head: ParsedSheet, items: ParsedSheet, key: tuple, rows: list, line_rows: list,
           have_lines: tuple) -> Draft:
    """One order from its rows (and, with an item sheet, its item rows)."""
    items_have_lines, head_has_lines = have_lines
    shop, pid = key
    draft = Draft(shop, pid, {"platform_order_id": pid}, refs=[(head, r) for r in rows])
    if items is not head and line_rows:
        _order_fields(items, line_rows, draft)
    _order_fields(head, rows, draft)
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
    return draft


def build(sheets: list[ParsedSheet], default_shop: Optional[str]) -> list[Draft]:
    """Group rows into orders; join Taobao's order sheet with its item sheet."""
    head, items = pair(sheets)
    groups = _group(head, default_shop)
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
    have_lines = (_has_lines(items), _has_lines(head))
    return [_draft(head, items, key, rows, item_groups.get(key) or [], have_lines) for key, rows in groups.items()]


class IssueLog:
    """Issues in the order the whole-sheet path reports them, when the sheet is processed a
    chunk at a time: every cell issue (row order), then the order-number issues of the
    grouping, the orders' own issues, the shop issues, the notes of valid-rows-only and the
    write-time issues. :meth:`take` files the issues added since the last call under a phase."""

    PHASES = ("convert", "group", "build", "shops", "notes", "write")

    def __init__(self, ps: ParsedSheet):
        self.ps = ps
        self.by_phase = {p: [] for p in self.PHASES}

    def take(self, phase: str) -> None:
        if self.ps.issues:
            self.by_phase[phase] += self.ps.issues
            self.ps.issues = []

    def close(self) -> None:
        """Put every filed issue back on the sheet, phase by phase."""
        self.take("write")
        self.ps.issues = [i for p in self.PHASES for i in self.by_phase[p]]


def keys_of(parser, default_shop: Optional[str]) -> list:
    """Per data row of a single-sheet order import, the order it belongs to, (shop name,
    order number) as :func:`_group` will see it, or None (no order number)."""
    pids = parser.values_of("platform_order_id")
    shops = [default_shop] * len(pids) if default_shop else parser.values_of("shop_name")
    return [None if pid is None else (shop, pid) for shop, pid in zip(shops, pids)]


def stream(parser, default_shop: Optional[str], keys: list, log: IssueLog, *, chunk_orders: int,
           chunk_rows: Optional[int] = None):
    """The drafts :func:`build` gives a single sheet, in the same order, a chunk of about
    ``chunk_orders`` at a time, converting the rows as it goes. An order is complete when its
    last row (``keys``: :func:`keys_of`) has been converted; the rows of one order need not be
    adjacent (a later order's draft then waits for the earlier one, to keep the order)."""
    ps = parser.parsed
    head = items = ps
    have_lines = (_has_lines(items), _has_lines(head))
    chunk_rows = chunk_rows or CHUNK_ROWS
    first = min(chunk_orders, FIRST_CHUNK)  # a small first chunk: the database starts writing sooner
    start = parser.start
    last: dict = {}
    for k, key in enumerate(keys):
        if key is not None:
            last[key] = start + k
    groups: dict = {}  # open orders, in the order of their first row
    waiting: list = []  # their keys, same order
    at = 0  # waiting[at] is the first order not yet built
    done: set = set()
    drafts: list = []
    yielded = False
    lo = start
    while lo < parser.stop:
        hi = min(lo + (chunk_rows if yielded else min(chunk_rows, 2 * first)), parser.stop)
        rows = parser.convert(lo, hi)
        lo = hi
        log.take("convert")
        for row in rows:
            key = _order_key(ps, row, default_shop)
            if key is None:
                continue
            group = groups.get(key)
            if group is None:
                if key in done or last.get(key, -1) < row.index:  # keys_of and convert disagree: a bug
                    raise RuntimeError(f"import stream: row {row.index + 1} of order {key} was not foreseen")
                group = groups[key] = []
                waiting.append(key)
            group.append(row)
        log.take("group")
        while at < len(waiting) and last[waiting[at]] < hi:
            key = waiting[at]
            waiting[at] = None
            at += 1
            done.add(key)
            rows_of = groups.pop(key)
            drafts.append(_draft(head, items, key, rows_of, rows_of, have_lines))
            if len(drafts) >= (chunk_orders if yielded else first):
                log.take("build")
                yield drafts
                drafts = []
                yielded = True
        log.take("build")
        if at > 10_000:  # drop the built part of the queue
            del waiting[:at]
            at = 0
    if drafts:
        yield drafts


# --- applying -------------------------------------------------------------------------
@dataclass
class Counts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0


class CarrierNames:
    """A sheet's carrier names → carrier ids (None: unknown), every carrier read once: by
    name, code, 快递100 or Taobao code (any case), else by a unique prefix ("顺丰" for
    "顺丰速运", "中通" for "中通快递"). ``get`` as a dict's."""

    def __init__(self):
        self._keys: dict = {}
        for c in db.session.scalars(select(Carrier)):
            for key in (c.name, c.code, c.kuaidi100_code, c.taobao_code):
                if key:
                    self._keys[key] = c.id
                    self._keys[key.lower()] = c.id
        self._names: dict = {}

    def get(self, name, default=None):
        if not name:
            return default
        if name not in self._names:
            keys = self._keys
            cid = keys.get(name) or keys.get(name.lower())
            if cid is None:
                hits = {v for k, v in keys.items() if len(name) >= 2 and (k.startswith(name) or name.startswith(k))}
                cid = hits.pop() if len(hits) == 1 else None
            self._names[name] = cid
        return self._names[name]


def resolve_carriers(names: set) -> dict:
    if not names:
        return {}
    carriers = CarrierNames()
    return {n: carriers.get(n) for n in names}


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
    return bulk_orders.stored_checksums((d.shop_id, d.pid) for d in drafts)


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
CHUNK_ROWS = 5000  # sheet rows converted at a time by the streaming import
FIRST_CHUNK = 1000  # orders in its first chunk
UPDATE_BATCH = 1000  # changed orders loaded and updated per flush


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


class StreamApply:
    """Applies a single sheet's drafts a chunk at a time, as they come from :func:`stream`
    (service._orders_stream): the bulk path of :func:`apply` with the same rules and
    results, but the first orders are written while later rows are still being converted.

    On PostgreSQL the writer thread owns the session's connection from the first chunk on:
    shops, SKUs and carriers are looked up before it (:meth:`prefetch`, from the keys of
    every row), and each chunk's existing orders and customers on a second connection
    (committed rows: what the session would see of them too; orders and customers this
    import writes are known to it already). A key that was not foreseen is looked up after
    waiting for the writer (never, in practice). SQLite: everything on the session.

    All or nothing (not ``valid_only``): from the first bad order on nothing more is written
    (the caller rolls back), but every later chunk is still converted and checked, so the
    report names every bad row. Changed orders are updated one by one after the new ones."""

    def __init__(self, *, lookup: Callable, profile_platform: str, user_id: Optional[int], valid_only: bool,
                 issue: Callable, log: IssueLog, progress: Optional[Callable] = None, total: int = 0):
        self.lookup, self.platform = lookup, profile_platform
        self.user_id, self.valid_only, self.issue, self.log = user_id, valid_only, issue, log
        self.progress, self.total = progress, total
        self.counts = Counts()
        self.records = 0  # orders found in the sheet
        self.bad = 0  # orders refused before writing (bad cells, unknown shop)
        self.broken = False  # all or nothing, and an order was refused: nothing more is written
        self.done = 0
        self.shops: dict = {}  # shop id → Shop
        self.names: set = set()  # shop names looked up
        self.changed: list = []
        self.new_keys: list = []
        self.creator = None
        self.reader = None  # the second connection (PostgreSQL)

    # --- before the first chunk ------------------------------------------------------------
    def prefetch(self, keys: list, parser) -> None:
        """The shops, SKUs and carriers the sheet's rows name."""
        for name in {k[0] for k in keys if k is not None}:
            self._shop(name)
        shop_ids = {shop.id for shop in map(self.lookup, self.names) if shop is not None}
        self.sku_codes = {c for c in parser.values_of("merchant_code") if c}
        self.sku_shops = shop_ids
        self.skus = sku_mapping.SkuCatalogue.load(self.sku_codes, shop_ids=shop_ids, orm=False)
        self.carriers = CarrierNames()
        self.creator = bulk_path.Creator(user_id=self.user_id, valid_only=self.valid_only, issue=self.issue)
        if self.creator.pg:
            self.reader = db.engine.connect()

    def _shop(self, name):
        if name is not None and name not in self.names:
            self._idle()
            self.names.add(name)
        return self.lookup(name)

    def _idle(self) -> None:
        """Before the session is used between chunks: the writer thread must not be using it."""
        if self.creator is not None:
            self.creator.wait()

    def _read(self, fn, *args):
        """A lookup on the second connection (its own short transaction), else on the session."""
        if self.reader is None:
            return fn(*args)
        try:
            return fn(*args, self.reader)
        finally:
            self.reader.rollback()

    # --- one chunk -------------------------------------------------------------------------
    def add(self, drafts: list) -> None:
        log, issue = self.log, self.issue
        self.records += len(drafts)
        self.shops.update(resolve_shops(drafts, profile_platform=self.platform, lookup=self._shop, issue=issue))
        log.take("shops")
        bad = [d for d in drafts if d.bad]
        self.bad += len(bad)
        if bad and not self.valid_only:
            self.broken = True
        if self.valid_only:
            for d in bad:  # say why the order's other rows were skipped too
                for ps, row in d.refs:
                    if not row.bad:
                        ps.issue(row.index, None, "同一订单的其他行有错误，整单未导入")
                        row.bad = True
            log.take("notes")
        good = [d for d in drafts if not d.bad]
        keys = [(d.shop_id, d.pid) for d in good]
        existing = self._read(bulk_orders.stored_checksums, keys) if keys else {}  # each order is in one chunk only
        new = [d for d, k in zip(good, keys) if k not in existing]
        changed = [d for d, k in zip(good, keys) if k in existing and _changed(d, existing[k])]
        self.counts.unchanged += len(good) - len(new) - len(changed)
        self.changed += changed
        self._ensure_skus(new)
        prepared = []
        creator = self.creator
        for d in new:
            try:
                prepared.append(bulk_path.prepare(d, self.shops[d.shop_id], self.skus.for_shop(d.shop_id),
                                                  self.carriers.get(d.carrier_name), creator.max_text))
            except ValidationError as exc:
                issue(d, exc.message)
                self.counts.failed += 1
                if not self.valid_only:
                    self.broken = True
        log.take("write")
        if not self.broken and prepared:
            keys = {creator.key_of(p.draft, p.order["receiver_phone"]) for p in prepared}
            unseen = keys - creator.looked_up - {None, ""}
            if unseen:
                self._read(creator.load_customers_by_hash, unseen)
            creator.submit(prepared)
            self.counts.created += len(prepared)
            self.new_keys += [(p.draft.shop_id, p.draft.pid) for p in prepared]
        self.done += len(drafts)
        if self.progress and not self.broken:
            self.progress(self.done, max(self.total, self.done), f"已写入 {self.done}/{self.total} 个订单")

    def _ensure_skus(self, drafts: list) -> None:
        codes = {ln["merchant_code"] for d in drafts for ln in d.data["lines"] if ln["merchant_code"]}
        shops = {d.shop_id for d in drafts}
        if codes <= self.sku_codes and shops <= self.sku_shops:
            return
        self._idle()
        self.sku_codes |= codes
        self.sku_shops |= shops
        self.skus = sku_mapping.SkuCatalogue.load(self.sku_codes, shop_ids=self.sku_shops, orm=False)

    # --- after the last chunk --------------------------------------------------------------
    def finish(self) -> Counts:
        """The last batch written, paid orders reserved, changed orders updated (not when
        all or nothing has already failed: the caller rolls back)."""
        creator, self.creator = self.creator, None
        reader, self.reader = self.reader, None
        if reader is not None:
            reader.close()
        if creator is not None:
            if self.broken:
                creator.close()
                return self.counts
            creator.finish()
        if self.broken:
            return self.counts
        order_status.reserve_on_arrival(self.new_keys, source="import", user_id=self.user_id)
        changed, counts = self.changed, self.counts
        skus = _skus(changed) if changed else None  # ORM SKUs: the update path links lines to them
        done = self.done - len(changed)
        for start in range(0, len(changed), UPDATE_BATCH):
            batch = changed[start:start + UPDATE_BATCH]
            if not _update(batch, skus, self.carriers, user_id=self.user_id, valid_only=self.valid_only,
                           issue=self.issue, counts=counts):
                break
            db.session.flush()
            done += len(batch)
            if self.progress:
                self.progress(done, max(self.total, done), f"已写入 {done}/{self.total} 个订单")
        self.log.take("write")
        return counts

    def close(self) -> None:
        """Stop the writer and close the second connection, whatever happened (an error included)."""
        creator, self.creator = self.creator, None
        reader, self.reader = self.reader, None
        try:
            if creator is not None:
                creator.close()
        finally:
            if reader is not None:
                reader.close()


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
