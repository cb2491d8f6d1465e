"""Writing new orders in bulk: one batch of prepared orders → a handful of statements.

Shared by the order import (services/imports/bulk.py: sheet drafts) and the platform
sync (services/sync.py: a page of platform orders). The caller prepares each order as
plain rows (:class:`Prepared`: the order's column values, its lines, its holds and, if
not the default ones, its trail events) exactly as the per-order ORM path
(``orders.create_order`` + ``link_customer`` + the state machine) would leave them;
this module writes them:

* buyer PII encrypted once per value (services/crypto.py; the customer row reuses the
  order's ciphertext), the customer key computed once (``orders.phone_hash``: none for
  a masked platform phone, so masks never join two buyers);
* customers, one per receiver-phone hash across shops: the batch's existing customers
  are read in one query (not row-scoped: a customer is shared by all shops), new ones
  inserted in bulk, order count / spend / first and last order times of existing ones
  updated in one statement, ``is_returning_customer`` decided in order exactly as
  ``link_customer`` decides it, and the CustomerShop links inserted when missing;
* orders, lines, events and holds; the status-tab counters follow by themselves (the
  triggers of migration 0005 fire for COPY and multi-row INSERT alike).

PostgreSQL: ids are drawn from the tables' sequences in one query per table and batch,
then every table is filled with binary COPY (psycopg), customer updates are one UPDATE …
FROM unnest(…) and links one INSERT … ON CONFLICT DO NOTHING; optionally (``threaded``)
a batch is written from a writer thread on the session's own connection while the caller
prepares the next: the caller's thread draws the ids (on a second connection: sequences
are not transactional), builds the rows and encodes them as COPY data, so the writer thread
only sends bytes and hardly needs the GIL (it would otherwise wait for it between every few
rows, and the database would wait with it). SQLite: multi-row INSERT … RETURNING through
SQLAlchemy Core (insertmanyvalues) and executemany. The caller owns the transaction.
"""
from __future__ import annotations

import datetime as dt
import sys
import threading
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from operator import itemgetter
from typing import Callable, Iterable, Optional

import sqlalchemy as sa
from flask import current_app, has_app_context

from app.extensions import db
from app.models import (
    ORDER_STATUSES, PLATFORMS, Customer, CustomerShop, Order, OrderEvent, OrderHold, OrderLine,
)
from app.models.types import EncryptedText, utcnow
from app.services import crypto, sku_mapping
from app.services.errors import ValidationError
from app.services.order_status import HOLD_REASONS, HOLD_ZH, HOLDABLE
from app.services.orders import SPEND_STATUSES, phone_hash

ZERO = Decimal("0.00")
_UNKNOWN = object()
_PII = ("receiver_name", "receiver_phone", "receiver_address")


@dataclass
class Prepared:
    """One new order as rows (ids filled in when written).

    ``holds``: (reason, note) or (reason, note, released_at); ``events``: None for the
    default trail (创建, then one 挂起 per hold, with the writer's source), else the
    order's events in order as (source, action, field, old value, new value, note)."""
    draft: object
    order: dict
    lines: list
    holds: list = field(default_factory=list)
    when: Optional[dt.datetime] = None
    customer: Optional["_CustomerState"] = None
    events: Optional[list] = None


# --- validating: create_order's checks on plain values ------------------------------------
CENT = Decimal("0.01")
_MAX_MONEY = Decimal("9999999999.99")

# create_order's text checks, in its order: (field, label, limit); None = OMS_MAX_TEXT.
_ORDER_TEXT = (("buyer_nick", "买家昵称", 100), ("receiver_name", "收货人", 100),
               ("receiver_phone", "收货人手机", 64), ("receiver_province", "省", 32),
               ("receiver_city", "市", 32), ("receiver_district", "区", 32),
               ("receiver_address", "详细地址", 500), ("receiver_zip", "邮编", 16),
               ("buyer_message", "买家留言", None), ("seller_memo", "卖家备注", None))


def _label(label: str) -> str:
    return label if "「" in label else f"「{label}」"


def _text(value, field: str, label: str, limit: int):
    if value is None:
        return None
    text = value if type(value) is str else str(value)
    if len(text) > limit:
        raise ValidationError(f"{_label(label)}过长：{len(text)} 个字符，最多 {limit} 个", field)
    return text


_MONEY_OK: dict = {}  # Decimal → its checked, quantized amount (amounts repeat across orders)
_MONEY_OK_MAX = 100_000


def _money(value, field: str, label: str) -> Decimal:
    """validation.parse_money for the values a draft holds (Decimal or None)."""
    if value is None:
        return ZERO
    if not isinstance(value, Decimal):
        from app.services.validation import parse_money

        return parse_money(value, field, label)
    if value < 0:
        raise ValidationError(f"{_label(label)}不能为负数：{value}", field)
    if abs(value) > _MAX_MONEY:
        raise ValidationError(f"{_label(label)}金额过大：{value}", field)
    result = value.quantize(CENT, rounding=ROUND_HALF_UP)
    if value and type(value) is Decimal:  # not 0: 0 and -0 are equal keys but quantize apart
        if len(_MONEY_OK) >= _MONEY_OK_MAX:
            _MONEY_OK.clear()
        _MONEY_OK[value] = result  # equal non-zero amounts quantize to the same value
    return result


def _checked_money(value) -> Optional[Decimal]:
    """The result :func:`_money` gave for an equal Decimal before (None: not seen, or not a Decimal)."""
    if type(value) is not Decimal:
        return None
    try:
        return _MONEY_OK.get(value)
    except TypeError:  # a signalling NaN cannot be hashed: _money says what is wrong
        return None


def _quantity(value, field: str, label: str) -> int:
    if type(value) is int and value >= 1:
        return value
    from app.services.validation import parse_quantity

    return parse_quantity(value, field, label)


def prepare(draft, shop, skus: dict, carrier_id: Optional[int], max_text: int) -> Prepared:
    """``create_one`` + ``create_order`` without the ORM: the order's values, lines and holds,
    validated the same way (raises ValidationError with create_order's message). ``skus``:
    this shop's merchant code → SKU (``sku_mapping.SkuCatalogue.for_shop``: the SKU's own
    code, else the shop's listing mapping), ORM SKUs or plain values with id, cost_price, name.

    The common case (text within its limit, an amount seen before) is checked inline; the
    zh labels of the messages are only formatted when a value is refused."""
    data = draft.data
    pid = str(data.get("platform_order_id") or "").strip()
    if not pid:
        raise ValidationError("「订单号」不能为空", "platform_order_id")
    status = data.get("status", "pending_payment")
    if status not in ORDER_STATUSES:
        raise ValidationError(f"「订单状态」的值无效：{status}", "status")
    if shop.platform not in PLATFORMS:
        raise ValidationError(f"「平台」的值无效：{shop.platform}", "platform")
    lines = []
    cost = ZERO
    price_total = ZERO
    unmatched = set()
    checked = _checked_money
    for i, ln in enumerate(data["lines"], start=1):
        code = ln.get("merchant_code")
        title = ln.get("title")
        if not title:  # create_one: the SKU's name, else the code
            sku = skus.get(code)
            title = sku.name if sku is not None else code
        if title is not None and (type(title) is not str or len(title) > 255):
            title = _text(title, "title", f"第 {i} 行商品「商品标题」", 255)
        if not title:
            raise ValidationError(f"第 {i} 行商品「商品标题」不能为空", "title")
        code = (code or "").strip() or None
        sku = skus.get(code) if code else None
        qty = ln.get("quantity", 1)
        if type(qty) is not int or qty < 1:
            qty = _quantity(qty, "quantity", f"第 {i} 行商品「数量」")
        spec = ln.get("spec")
        if spec is not None and (type(spec) is not str or len(spec) > 255):
            spec = _text(spec, "spec", f"第 {i} 行商品「规格」", 255)
        value = ln.get("price")
        price = checked(value)
        if price is None:
            price = _money(value, "price", f"第 {i} 行商品「单价」")
        value = ln.get("paid_amount")
        paid = checked(value)
        if paid is None:
            paid = _money(value, "paid_amount", f"第 {i} 行商品「实付金额」")
        if sku is not None:
            cost_price = sku.cost_price if not sku.is_bundle else sku_mapping.line_cost(sku)
        else:
            cost_price = ZERO
            unmatched.add(code or "（空）")
        cost += cost_price * qty
        price_total += price * qty
        lines.append({"platform_line_id": str(ln.get("platform_line_id") or i), "merchant_code": code,
                      "sku_id": sku.id if sku is not None else None, "title": title, "spec": spec,
                      "quantity": qty, "price": price, "paid_amount": paid, "cost_price": cost_price,
                      "refund_status": ln.get("refund_status")})
    platform_status = data.get("platform_status")
    if platform_status is not None and (type(platform_status) is not str or len(platform_status) > 64):
        platform_status = _text(platform_status, "platform_status", "平台状态", 64)
    get = data.get

    def amount(name: str, label: str):
        value = get(name)
        ok = checked(value)
        return ok if ok is not None else _money(value, name, label)

    goods = amount("goods_amount", "商品金额")
    discount = amount("discount_amount", "优惠金额")
    post_fee = amount("post_fee", "运费")
    paid_amount = amount("paid_amount", "实付金额")
    order = {
        "shop_id": shop.id, "platform": shop.platform, "platform_order_id": pid, "status": status,
        "platform_status": platform_status, "goods_amount": goods, "discount_amount": discount,
        "post_fee": post_fee, "paid_amount": paid_amount, "cost_amount": cost,
    }
    for name, label, limit in _ORDER_TEXT:
        value = get(name)
        if value is not None and (type(value) is not str or len(value) > (limit or max_text)):
            value = _text(value, name, label, limit or max_text)
        order[name] = value
    flag = get("flag", 0)
    if type(flag) is not int or not 0 <= flag <= 5:
        from app.services.validation import parse_flag

        flag = parse_flag(flag)
    if not get("goods_amount"):
        order["goods_amount"] = price_total
    order["flag"] = flag
    order["platform_created_at"] = get("platform_created_at")
    order["paid_at"] = get("paid_at")
    order["platform_modified_at"] = get("platform_modified_at")
    order["platform_hash"] = draft.digest
    order["carrier_id"] = carrier_id
    for key in ("audited_at", "shipped_at", "completed_at", "closed_at", "close_reason", "tracking_number",
                "warehouse_id"):
        order[key] = get(key)
    p = Prepared(draft, order, lines)
    holdable = status in HOLDABLE
    if unmatched and holdable:
        p.holds.append(("unmatched_sku", "商家编码未匹配：" + "、".join(sorted(unmatched))))
    reason = draft.hold or ("refunding" if draft.refund == "refunding" else None)
    if reason and holdable:
        if reason not in HOLD_REASONS:
            raise ValidationError(f"未知的挂起原因：{reason}", "reason")
        if reason not in (r for r, _n in p.holds):
            p.holds.append((reason, f"平台状态：{data.get('platform_status') or ''}"))
    return p


def is_unique_conflict(exc: BaseException) -> bool:
    """A unique-key violation, raised through SQLAlchemy (IntegrityError) or by a raw COPY
    of the writer (psycopg's UniqueViolation): another transaction committed the same key
    meanwhile, and running the work again will find that row."""
    orig = getattr(exc, "orig", None) if isinstance(exc, sa.exc.IntegrityError) else exc
    if getattr(orig, "sqlstate", None) == "23505":
        return True
    return isinstance(exc, sa.exc.IntegrityError) and "UNIQUE constraint failed" in str(orig)  # SQLite


# --- looking up -------------------------------------------------------------------------
LOOKUP_CHUNK = 5000  # ids per IN (…) on SQLite


def stored_checksums(keys, conn=None) -> dict:
    """(shop id, platform order id) → stored checksum ("" if none) of those orders that exist:
    which of a page's or a sheet's orders are new, and which are unchanged. PostgreSQL: one
    array parameter per shop and 50,000 ids (not thousands of bound values to render and
    send); SQLite: IN (…) of 5,000. ``conn``: a connection to read on instead of the session."""
    by_shop: dict = {}
    for shop_id, pid in keys:
        by_shop.setdefault(shop_id, []).append(pid)
    run = (conn or db.session).execute
    pg = (conn.dialect if conn is not None else db.session.get_bind().dialect).name == "postgresql"
    if pg:
        from sqlalchemy.dialects.postgresql import ARRAY

        wanted = Order.platform_order_id == sa.any_(sa.bindparam("pids", type_=ARRAY(sa.String)))
        size = 50_000
    else:
        wanted = Order.platform_order_id.in_(sa.bindparam("pids", expanding=True))
        size = LOOKUP_CHUNK
    query = sa.select(Order.platform_order_id, Order.platform_hash).where(
        Order.shop_id == sa.bindparam("shop"), wanted)
    out = {}
    for shop_id, pids in by_shop.items():
        for i in range(0, len(pids), size):
            for pid, digest in run(query, {"shop": shop_id, "pids": pids[i:i + size]}):
                out[(shop_id, pid)] = digest or ""
    return out


# --- writing --------------------------------------------------------------------------------
def _defaults(table: sa.Table, given: tuple) -> dict:
    """Python-side scalar defaults of the columns the bulk path does not set itself (a column
    another feature adds keeps working); server defaults are left to the database."""
    out = {}
    for c in table.columns:
        if c.name in given or c.name == "id" or c.default is None or not c.default.is_scalar:
            continue
        out[c.name] = c.default.arg
    return out


_ORDER_COLS = ("shop_id", "platform", "platform_order_id", "status", "platform_status", "is_held",
               "goods_amount", "discount_amount", "post_fee", "paid_amount", "cost_amount", "buyer_nick",
               "receiver_name", "receiver_phone", "receiver_phone_hash", "receiver_province", "receiver_city",
               "receiver_district", "receiver_address", "receiver_zip", "buyer_message", "seller_memo", "flag",
               "close_reason", "platform_created_at", "paid_at", "platform_modified_at", "platform_hash",
               "audited_at", "shipped_at", "completed_at", "closed_at", "created_at", "updated_at",
               "warehouse_id", "carrier_id", "tracking_number", "customer_id", "is_returning_customer")
_ORDER_ROW = itemgetter(*_ORDER_COLS)  # an order's values as a tuple in _ORDER_COLS order
_LINE_COLS = ("order_id", "platform_line_id", "merchant_code", "sku_id", "title", "spec", "quantity", "price",
              "paid_amount", "cost_price", "refund_status")
_EVENT_COLS = ("order_id", "created_at", "user_id", "source", "action", "field", "old_value", "new_value", "note")
_HOLD_COLS = ("order_id", "reason", "note", "created_at", "created_by_id", "released_at")
_CUSTOMER_COLS = ("name", "phone", "phone_hash", "buyer_nick", "province", "city", "first_order_at",
                  "last_order_at", "order_count", "total_spent", "created_at")


def _pg_type(column) -> str:
    """The PostgreSQL type name of a column, for a binary COPY."""
    t = column.type
    while isinstance(t, sa.types.TypeDecorator):
        t = t.impl_instance if hasattr(t, "impl_instance") else t.impl
    if isinstance(t, sa.BigInteger):
        return "int8"
    if isinstance(t, sa.Integer):
        return "int4"
    if isinstance(t, sa.Boolean):
        return "bool"
    if isinstance(t, sa.Numeric):
        return "numeric"
    if isinstance(t, sa.DateTime):
        return "timestamptz" if t.timezone else "timestamp"
    if isinstance(t, (sa.String, sa.Text)):
        return "text"
    raise TypeError(f"no COPY type for {column}")


@dataclass(eq=False)
class _CustomerState:
    id: Optional[int]  # a customer new in this import: None until its id is drawn
    order_count: int
    first: Optional[dt.datetime]
    last: Optional[dt.datetime]
    row: Optional[list] = None  # new in this import: the row to insert, until it is queued
    created_here: bool = False
    n: int = 0  # this batch's additions to a customer already written
    spent: Decimal = ZERO
    f: Optional[dt.datetime] = None
    la: Optional[dt.datetime] = None
    linked: set = field(default_factory=set)  # shops linked (or queued) in this import


class BulkWriter:
    """Writes batches of prepared new orders (:meth:`submit`). With ``threaded`` on
    PostgreSQL the statements of one batch run in a writer thread on the session's own
    connection (the same transaction) while the caller prepares the next batch, so Python
    and the database work at the same time; the caller does not touch the session between
    its first :meth:`submit` and :meth:`finish` (except after :meth:`wait`). Otherwise (and
    on SQLite) every batch is written at once, in the calling thread. ``source``: of the
    default trail events."""

    def __init__(self, *, user_id: Optional[int], source: str = "import", threaded: bool = True):
        db.session.flush()
        self.conn = db.session.connection()
        self.pg = self.conn.dialect.name == "postgresql"
        self.raw = self.conn.connection.driver_connection if self.pg else None
        self.user_id, self.source = user_id, source
        self.max_text = current_app.config.get("OMS_MAX_TEXT", 2000) if has_app_context() else 2000
        self.now = utcnow()
        self.customers: dict = {}  # phone hash → _CustomerState
        self._hash: dict = {}  # id(draft) → phone hash
        self._seq: dict = {}
        self._plain: dict = {}
        self._pool = None
        self._pending = None
        self._steps = None  # while a batch is staged for the writer thread: what it will run
        self._ids = None  # the connection ids are drawn on while the writer thread writes
        if self.pg and threaded:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="oms-import-writer")
            self._formatting = self.raw.cursor()  # adapts values to COPY data; never executes

    # --- before the first batch: every customer the new orders name, in one query per 5,000 --
    def key_of(self, draft, phone, key=_UNKNOWN) -> Optional[str]:
        """The customer key of a draft's receiver phone (``key``: already computed by the
        caller), remembered for :meth:`_plan`."""
        h = self._hash[id(draft)] = phone_hash(phone) if key is _UNKNOWN else key
        return h

    def load_customers_by_hash(self, hashes: Iterable, conn=None) -> None:
        """The customers of these keys that exist (not those already known). ``conn``: the
        connection to read on (default: the session's; the import reads on another one while
        the writer thread writes on the session's: it sees the same committed customers)."""
        known = self.customers
        hashes = sorted({h for h in hashes if h and h not in known})
        conn = conn if conn is not None else self.conn
        ct = Customer.__table__
        query = sa.select(ct.c.id, ct.c.phone_hash, ct.c.order_count, ct.c.first_order_at, ct.c.last_order_at)
        if self.pg:  # one array parameter, not thousands of bound values to render and send
            from sqlalchemy.dialects.postgresql import ARRAY

            query = query.where(ct.c.phone_hash == sa.any_(sa.bindparam("hashes", type_=ARRAY(sa.String))))
        else:
            query = query.where(ct.c.phone_hash.in_(sa.bindparam("hashes", expanding=True)))
        for i in range(0, len(hashes), 5000):
            for cid, h, count, first, last in conn.execute(query, {"hashes": hashes[i:i + 5000]}):
                known[h] = _CustomerState(cid, count or 0, first, last)

    # --- one batch ------------------------------------------------------------------------------
    def submit(self, prepared: list) -> None:
        """Queue (threaded) or write one batch of prepared orders."""
        if prepared:
            self._submit(self._plan(prepared))

    def _plan(self, prepared: list) -> tuple:
        """PII encrypted once per value, the phone's blind index, and link_customer's rules
        in sheet order; what the writer has to do for this batch."""
        now = self.now
        states = self.customers
        touched = []
        plain = [p.order[name] for p in prepared for name in _PII]
        sealed = iter(crypto.encrypt_many(plain, "pii"))
        hashes = self._hash
        for p in prepared:
            o = p.order
            # popped: a draft's id may be reused once it is freed (the import streams its drafts)
            h = hashes.pop(id(p.draft), _UNKNOWN)
            if h is _UNKNOWN:
                h = phone_hash(o["receiver_phone"])
            o["receiver_phone_hash"] = h
            for name in _PII:
                o[name] = next(sealed)
            when = p.when = o["paid_at"] or o["platform_created_at"] or now
            if not h:
                o["is_returning_customer"] = False
                continue
            st = states.get(h)
            if st is None:
                st = states[h] = _CustomerState(None, 0, when, when, created_here=True, row=[
                    o["receiver_name"], o["receiver_phone"], h, o["buyer_nick"], o["receiver_province"],
                    o["receiver_city"], when, when, 0, ZERO, now])
                o["is_returning_customer"] = False
            else:
                o["is_returning_customer"] = st.order_count > 0 and (st.first is None or st.first <= when)
                if st.first is None or when < st.first:
                    st.first = st.f = when
                if st.last is None or when > st.last:
                    st.last = st.la = when
            st.order_count += 1
            st.n += 1
            if o["status"] in SPEND_STATUSES:
                st.spent += o["paid_amount"] or 0
            p.customer = st
            touched.append(st)
        new, updates, links_new, links_old = [], [], [], []
        seen = set()
        for p in prepared:
            st = p.customer
            if st is None:
                continue
            if id(st) not in seen:
                seen.add(id(st))
                if st.row is not None:  # first written by this batch: the row as of its end
                    row = st.row
                    row[6], row[7], row[8], row[9] = st.first, st.last, st.order_count, ZERO + st.spent
                    new.append((st, tuple(row)))
                    st.row = None
                else:
                    updates.append((st, st.n, st.spent, st.f, st.la))
                st.n, st.spent, st.f, st.la = 0, ZERO, None, None
            shop_id = p.order["shop_id"]
            if shop_id not in st.linked:
                st.linked.add(shop_id)
                (links_new if st.created_here else links_old).append((st, shop_id))
        return prepared, new, updates, links_new, links_old

    def _submit(self, plan: tuple) -> None:
        if self._pool is None:
            self._write(*plan)
            return
        # Staged here: ids drawn (on another connection), rows built and encoded as COPY data;
        # the writer thread only sends them. It needs the GIL for little more than that, so
        # it never waits long for this thread (which converts and plans the next batch) to
        # let it send, and the database is kept busy.
        self._steps = []
        try:
            self._write(*plan)
            steps = self._steps
        finally:
            self._steps = None
        self._wait()  # one batch in flight
        self._pending = self._pool.submit(self._run, steps)

    def _run(self, steps: list) -> None:
        for fn, args in steps:
            fn(*args)

    def _do(self, fn, *args) -> None:
        """Run a write now, or stage it for the writer thread."""
        if self._steps is not None:
            self._steps.append((fn, args))
        else:
            fn(*args)

    def wait(self) -> None:
        """Wait for the batch in flight (if any): the caller may use the session until its next
        :meth:`submit` (a lookup the import could not make before the first batch)."""
        self._wait()

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            exc = pending.exception()
            if exc is not None:
                import psycopg

                if isinstance(exc, psycopg.errors.IntegrityError):  # as the ORM path would raise it
                    raise sa.exc.IntegrityError("COPY (bulk import)", None, exc) from exc
                raise exc

    def finish(self) -> None:
        """Wait for the last batch; the session may be used again."""
        try:
            self._wait()
        finally:
            self.close()
        for obj in list(db.session.identity_map.values()):  # changed behind the session's back
            if isinstance(obj, Customer):
                db.session.expire(obj)

    def close(self) -> None:
        """Stop the writer (after an error too: never leave a statement running)."""
        if self._pending is not None:
            self._pending.exception()  # wait; the caller is already failing
            self._pending = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._ids is not None:
            ids, self._ids = self._ids, None
            ids.close()
        if getattr(self, "_formatting", None) is not None:
            self._formatting.close()
            self._formatting = None

    # --- the writer ----------------------------------------------------------------------------
    def _write(self, prepared: list, new: list, updates: list, links_new: list, links_old: list) -> None:
        now, user_id, source = self.now, self.user_id, self.source
        cids = self._insert(Customer.__table__, _CUSTOMER_COLS, [row for _st, row in new], ids=True)
        for (st, _row), cid in zip(new, cids):
            st.id = cid
        if updates:
            self._do(self._update_customers, [(st.id, n, s, f, la) for st, n, s, f, la in updates])
        self._insert(CustomerShop.__table__, ("customer_id", "shop_id"), [(st.id, s) for st, s in links_new])
        if links_old:
            self._do(self._link_existing, [(st.id, s) for st, s in links_old])
        rows = []
        row_of = _ORDER_ROW
        for p in prepared:
            o = p.order
            o["customer_id"] = p.customer.id if p.customer is not None else None
            # closing an order releases its holds (a third value: the release time)
            o["is_held"] = any(len(h) < 3 or h[2] is None for h in p.holds) if p.holds else False
            o["created_at"] = o["updated_at"] = now
            rows.append(row_of(o))
        order_ids = self._insert(Order.__table__, _ORDER_COLS, rows, ids=True)
        lines, events, holds = [], [], []
        for p, oid in zip(prepared, order_ids):
            for ln in p.lines:
                lines.append((oid, ln["platform_line_id"], ln["merchant_code"], ln["sku_id"], ln["title"], ln["spec"],
                              ln["quantity"], ln["price"], ln["paid_amount"], ln["cost_price"], ln["refund_status"]))
            for hold in p.holds:
                reason, note = hold[0], hold[1]
                holds.append((oid, reason, note, now, user_id, hold[2] if len(hold) > 2 else None))
            if p.events is None:
                events.append((oid, now, user_id, source, "create", "status", None, p.order["status"], None))
                for hold in p.holds:
                    events.append((oid, now, user_id, source, "hold", "hold", None, HOLD_ZH[hold[0]], hold[1]))
            else:
                for src, action, fld, old, new, note in p.events:
                    events.append((oid, now, user_id, src, action, fld, old, new, note))
        self._insert(OrderLine.__table__, _LINE_COLS, lines)
        self._insert(OrderEvent.__table__, _EVENT_COLS, events)
        self._insert(OrderHold.__table__, _HOLD_COLS, holds)

    def _insert(self, table: sa.Table, cols: tuple, rows: list, *, ids: bool = False) -> Optional[list]:
        """Rows (tuples in ``cols`` order) into a model's table; with ``ids``, their new ids."""
        if not rows:
            return [] if ids else None
        extra = _defaults(table, cols)
        if extra:
            cols = cols + tuple(extra)
            tail = tuple(extra.values())
            rows = [r + tail for r in rows]
        if self.pg:
            new_ids = None
            if ids:  # drawn from the table's sequence up front, then written with the rows
                new_ids = self._pg_ids(table, len(rows))
                cols = ("id",) + cols
                rows = [(i,) + r for i, r in zip(new_ids, rows)]
            self._copy(table, cols, rows)
            return new_ids
        tc = self._table(table)
        stmt = sa.insert(tc)
        params = [dict(zip(cols, r)) for r in rows]
        if ids:
            result = self.conn.execute(stmt.returning(tc.c.id, sort_by_parameter_order=True), params)
            return [r[0] for r in result]
        self.conn.execute(stmt, params)
        return None

    def _pg_ids(self, table: sa.Table, n: int) -> list:
        if self._steps is None:
            raw = self.raw
        else:  # staging: the writer thread may be using the session's connection
            if self._ids is None:
                self._ids = db.engine.connect()
            raw = self._ids.connection.driver_connection
        try:
            with raw.cursor() as cur:
                seq = self._seq.get(table.name)
                if seq is None:
                    cur.execute("SELECT pg_get_serial_sequence(%s, 'id')", (table.name,))
                    seq = self._seq[table.name] = cur.fetchone()[0]
                cur.execute("SELECT nextval(%s::regclass) FROM generate_series(1, %s)", (seq, n))
                return [r[0] for r in cur.fetchall()]
        finally:
            if raw is not self.raw:
                self._ids.rollback()  # nextval is not undone: no transaction is kept open

    def _copy(self, table: sa.Table, cols: tuple, rows: list) -> None:
        """COPY … FROM STDIN in binary (no text parsing of numbers and times on either side)."""
        types = [_pg_type(table.c[c]) for c in cols]
        sql = f"COPY {table.name} ({', '.join(cols)}) FROM STDIN (FORMAT BINARY)"
        if self._steps is not None:  # staging: encode the data now, send it from the writer thread
            import io

            from psycopg.copy import Copy, FileWriter

            data = io.BytesIO()
            with Copy(self._formatting, binary=True, writer=FileWriter(data)) as cp:
                cp.set_types(types)
                write = cp.write_row
                for r in rows:
                    write(r)
            self._steps.append((self._send, (sql, data.getvalue())))
            return
        with self.raw.cursor() as cur:
            with cur.copy(sql) as cp:
                cp.set_types(types)
                write = cp.write_row
                for r in rows:
                    write(r)

    def _send(self, sql: str, data: bytes) -> None:
        """A COPY of data already encoded (signature, rows and trailer)."""
        with self.raw.cursor() as cur:
            with cur.copy(sql) as cp:
                cp.write(data)

    def _table(self, table: sa.Table) -> sa.Table:
        """SQLite: the table with plain Text for encrypted columns (values arrive encrypted)."""
        tc = self._plain.get(table.name)
        if tc is None:
            tc = self._plain[table.name] = sa.Table(table.name, sa.MetaData(), *[
                sa.Column(c.name, sa.Text() if isinstance(c.type, EncryptedText) else c.type,
                          primary_key=c.primary_key, autoincrement=c.autoincrement)
                for c in table.columns])
        return tc

    def _update_customers(self, changes: list) -> None:
        """Customers written before this batch: order count and spend added, first/last order
        times widened — one statement on PostgreSQL."""
        if self.pg:
            with self.raw.cursor() as cur:
                cur.execute(
                    "UPDATE oms_customer AS c SET order_count = c.order_count + v.n,"
                    " total_spent = c.total_spent + v.s,"
                    " first_order_at = CASE WHEN v.f IS NULL THEN c.first_order_at"
                    "   WHEN c.first_order_at IS NULL OR v.f < c.first_order_at THEN v.f ELSE c.first_order_at END,"
                    " last_order_at = CASE WHEN v.l IS NULL THEN c.last_order_at"
                    "   WHEN c.last_order_at IS NULL OR v.l > c.last_order_at THEN v.l ELSE c.last_order_at END"
                    " FROM unnest(%s::int[], %s::int[], %s::numeric[], %s::timestamptz[], %s::timestamptz[])"
                    " AS v(id, n, s, f, l) WHERE c.id = v.id",
                    ([c[0] for c in changes], [c[1] for c in changes], [c[2] for c in changes],
                     [c[3] for c in changes], [c[4] for c in changes]))
            return
        # SQLite (one writer at a time): read the current values, write them back computed
        ct = Customer.__table__
        by_id = {c[0]: c for c in changes}
        current = self.conn.execute(sa.select(ct.c.id, ct.c.order_count, ct.c.total_spent, ct.c.first_order_at,
                                              ct.c.last_order_at).where(ct.c.id.in_(sorted(by_id)))).all()
        params = []
        for cid, count, spent, first, last in current:
            _i, n, s, f, la = by_id[cid]
            if f is not None and (first is None or f < first):
                first = f
            if la is not None and (last is None or la > last):
                last = la
            params.append({"b_id": cid, "order_count": (count or 0) + n, "total_spent": (spent or ZERO) + s,
                           "first_order_at": first, "last_order_at": last})
        tc = self._table(ct)
        self.conn.execute(sa.update(tc).where(tc.c.id == sa.bindparam("b_id")).values(
            order_count=sa.bindparam("order_count"), total_spent=sa.bindparam("total_spent"),
            first_order_at=sa.bindparam("first_order_at"), last_order_at=sa.bindparam("last_order_at")), params)

    def _link_existing(self, links: list) -> None:
        """CustomerShop links of customers that existed before: inserted unless already there."""
        if self.pg:
            with self.raw.cursor() as cur:
                cur.execute("INSERT INTO oms_customer_shop (customer_id, shop_id)"
                            " SELECT * FROM unnest(%s::int[], %s::int[]) ON CONFLICT DO NOTHING",
                            ([c for c, _s in links], [s for _c, s in links]))
        else:
            self.conn.exec_driver_sql("INSERT OR IGNORE INTO oms_customer_shop (customer_id, shop_id) VALUES (?, ?)",
                                      links)


# --- the GIL while a second thread is busy ------------------------------------------------
class ShortSwitchInterval:
    """Shared by the sync runs and the streamed import (both keep a thread busy beside the
    one talking to the database). While a run's fetch thread parses, a database reply waits for the GIL up to the
    interpreter's switch interval (5 ms by default) before the applying thread sees it, and
    every round trip of a page pays that. Runs shorten it to 0.5 ms; the first run in the
    process sets it, the last one to end puts the old value back."""

    INTERVAL = 0.0005

    def __init__(self):
        self._lock = threading.Lock()
        self._runs = 0
        self._saved = None

    def __enter__(self):
        with self._lock:
            if self._runs == 0:
                self._saved = sys.getswitchinterval()
                sys.setswitchinterval(min(self._saved, self.INTERVAL))
            self._runs += 1

    def __exit__(self, *exc):
        with self._lock:
            self._runs -= 1
            if self._runs == 0:
                sys.setswitchinterval(self._saved)


short_switch = ShortSwitchInterval()
