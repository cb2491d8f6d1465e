"""The bulk write path of the order import (services/imports/bulk.py) leaves exactly the
database the per-order path (``bulk=False``: ``orders.create_order`` per order) leaves, for
the same sheets, on SQLite and on PostgreSQL: orders, lines, events, holds, customers
(counts, spend, first/last order, returning flags, shop links) and the status-tab counters;
re-import is idempotent; all or nothing leaves the database unchanged when the bad order is
in the last batch; valid rows only skips just the bad order."""
from __future__ import annotations

import contextlib
import datetime as dt
import re
import uuid
from pathlib import Path

import openpyxl
import pytest
import sqlalchemy as sa
from sqlalchemy import select

from tests import world
from tests.conftest import TEST_PG_URL, make_app, restore

UTC = dt.timezone.utc
HEADER = ["店铺", "订单号", "状态", "下单时间", "付款时间", "买家昵称", "收货人", "收货人手机", "省", "市", "区",
          "详细地址", "邮编", "商品金额", "优惠金额", "运费", "实付金额", "买家留言", "卖家备注", "旗帜",
          "快递公司", "快递单号", "子订单编号", "商家编码", "商品名称", "规格", "数量", "单价"]
SHOPS = ["A店-淘宝", "B店-拼多多", "C店-京东"]
STATUSES = ["待审核", "已发货", "已完成", "待付款", "待发货", "已关闭", "待审核"]
# a small pool, so customers repeat within and across batches and shops; two are world's customers
PHONES = [world.PHONE_A1, world.PHONE_B1, "13500000001", "13500000002", "13500000003", "13500000004", "",
          "13500000005"]
CODES = ["TS-BLK-L", "TS-WHT-M", "TS-BLK-L", "NOPE-1", "TS-WHT-M", "NOPE-2"]
BATCH = 7  # orders per batch in these tests: many batches, customers spanning them


def sheet_rows(n: int, *, prefix: str = "BK", status_shift: int = 0, message_for: dict | None = None) -> list:
    rows = [HEADER]
    base = dt.datetime(2026, 11, 10, 9, 0, 0)
    for k in range(n):
        pid = f"{prefix}{k:04d}"
        shop = SHOPS[k % 3]
        status = STATUSES[(k + status_shift) % len(STATUSES)] if k % 11 else STATUSES[k % len(STATUSES)]
        # times jump back and forth, so a customer's later row may be an earlier order
        created = base + dt.timedelta(hours=(k * 37) % 53, minutes=k)
        paid = None if status == "待付款" else created + dt.timedelta(minutes=5)
        phone = PHONES[(k * 5) % len(PHONES)]
        n_lines = 1 + (k % 4 == 0) + (k % 9 == 0)
        goods = "0" if k % 13 == 5 else None  # 0 → recomputed from the lines, as create_order does
        carrier = "顺丰" if status in ("已发货", "已完成") else None
        for j in range(n_lines):
            code = CODES[(k + j) % len(CODES)]
            head = j == 0
            rows.append([
                shop, pid, status, created.strftime("%Y-%m-%d %H:%M:%S") if head else None,
                paid.strftime("%Y-%m-%d %H:%M:%S") if head and paid else None,
                f"nick{k % 6}" if head else None, f"买家{k % 5}" if head else None, phone if head else None,
                "浙江省" if head else None, "杭州市" if head else None, "西湖区" if head else None,
                f"文三路{k}号" if head else None, "310000" if head and k % 2 else None,
                goods if head else None, "5.00" if head and k % 3 == 0 else None, "8" if head and k % 4 == 1 else None,
                None, (message_for or {}).get(k, "请尽快发货" if k % 7 == 2 else None) if head else None,
                "加急" if head and k % 10 == 3 else None, (k % 6) if head else None, carrier if head else None,
                f"SF{k:010d}" if head and carrier else None, f"{pid}-{j + 1}" if k % 5 else None, code,
                None if code.startswith("NOPE") and k % 2 else f"商品{code}", "黑色 L" if j else None,
                1 + (k + j) % 3, f"{39 + (k % 4) * 10}.90"])
    return rows


def write_xlsx(path: Path, rows: list) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    for r in rows:
        ws.append(r)
    wb.save(path)
    return path


# --- the database state, comparable across two databases ---------------------------------------
def snapshot(since: dt.datetime) -> dict:
    """Everything the import writes, keyed by business keys (not ids); PII decrypted; times
    stamped during the test (created/updated/event times) replaced by "NOW"."""
    from app.extensions import db
    from app.models import Customer, CustomerShop, Order, OrderEvent, OrderHold, OrderLine, Shop
    from app.services import order_counts

    db.session.expire_all()

    def norm(v):
        if isinstance(v, dt.datetime) and v >= since:
            return "NOW"
        return v

    shops = {s.id: s.name for s in db.session.scalars(select(Shop))}
    customers = {c.id: c for c in db.session.scalars(select(Customer))}
    links: dict = {}
    for link in db.session.scalars(select(CustomerShop)):
        links.setdefault(link.customer_id, []).append(shops[link.shop_id])
    skip = {"id", "shop_id", "customer_id", "created_at", "updated_at"}
    order_cols = [c.name for c in Order.__table__.columns if c.name not in skip]
    line_cols = [c.name for c in OrderLine.__table__.columns if c.name not in ("id", "order_id")]
    out_orders = {}
    for o in db.session.scalars(select(Order)):
        row = {c: norm(getattr(o, c)) for c in order_cols}
        row["customer"] = customers[o.customer_id].phone_hash if o.customer_id else None
        row["lines"] = sorted(tuple(norm(getattr(ln, c)) for c in line_cols) for ln in o.lines)
        row["events"] = sorted((e.action, e.field or "", e.old_value or "", e.new_value or "", e.source,
                                e.user_id or 0, e.note or "") for e in o.events)
        row["holds"] = sorted((h.reason, h.note or "", h.created_by_id or 0, h.released_at is None)
                              for h in o.holds)
        out_orders[(shops[o.shop_id], o.platform_order_id)] = row
    cust_cols = [c.name for c in Customer.__table__.columns if c.name not in ("id", "created_at")]
    out_customers = {c.phone_hash: {**{k: norm(getattr(c, k)) for k in cust_cols},
                                    "shops": sorted(links.get(c.id, []))} for c in customers.values()}
    counts = {
        "orders": db.session.scalar(select(sa.func.count()).select_from(Order)),
        "lines": db.session.scalar(select(sa.func.count()).select_from(OrderLine)),
        "events": db.session.scalar(select(sa.func.count()).select_from(OrderEvent)),
        "holds": db.session.scalar(select(sa.func.count()).select_from(OrderHold)),
    }
    db.session.commit()
    counters = order_counts.check()  # [] when the status-tab counters agree with the orders
    return {"orders": out_orders, "customers": out_customers, "counts": counts, "counters": counters}


def admin_id() -> int:
    from app.extensions import appbuilder

    return appbuilder.sm.find_user(username="admin").id


def scenario(app, tmp_path: Path, bulk: bool, tag: str, since: dt.datetime) -> list:
    """First import, re-import (idempotent), a changed sheet with new orders (updates move
    status through the per-order path), valid rows only with one refused order, and all or
    nothing with the refused order in the last batch. A snapshot after each step."""
    from app.extensions import db
    from app.services.imports import order_import, run_import

    snaps = []
    d = tmp_path / tag
    d.mkdir()
    first = write_xlsx(d / "first.xlsx", sheet_rows(60))
    with app.app_context():
        uid = admin_id()
        old = (order_import.BATCH_SIZE, order_import.FIRST_CHUNK, order_import.CHUNK_ROWS)
        # many batches; the streamed import (bulk) converts 5 rows at a time, first chunk 3 orders
        order_import.BATCH_SIZE, order_import.FIRST_CHUNK, order_import.CHUNK_ROWS = BATCH, 3, 5
        try:
            r = run_import([first], user_id=uid, bulk=bulk)
            assert r.ok and r.applied and (r.created, r.updated, r.unchanged) == (60, 0, 0), r.issues
            snaps.append(("first", snapshot(since)))

            r = run_import([first], user_id=uid, bulk=bulk)
            assert r.applied and (r.created, r.updated, r.unchanged) == (0, 0, 60)
            snaps.append(("reimport", snapshot(since)))
            assert snaps[-1][1] == snaps[-2][1]

            rows = sheet_rows(60, status_shift=1) + sheet_rows(15, prefix="BN")[1:]
            r = run_import([write_xlsx(d / "changed.xlsx", rows)], user_id=uid, bulk=bulk)
            assert r.ok and r.applied and r.created == 15 and r.updated > 0, r.issues
            snaps.append(("changed", snapshot(since)))

            app.config["OMS_MAX_TEXT"] = 20  # create_order refuses a longer buyer message
            try:
                long_message = {3: "留言" * 15}
                r = run_import([write_xlsx(d / "valid_only.xlsx", sheet_rows(20, prefix="BV", message_for=long_message))],
                               user_id=uid, bulk=bulk, valid_only=True)
                assert r.applied and r.created == 19 and r.failed == 1
                assert len(r.issues) == 1 and r.issues[0].message.endswith("：「买家留言」过长：30 个字符，最多 20 个")
                snaps.append(("valid_only", snapshot(since)))

                last = {27: "留言" * 15}  # order 27 of 28: the last batch (28 / 7 = 4 batches)
                r = run_import([write_xlsx(d / "all_or_nothing.xlsx", sheet_rows(28, prefix="BA", message_for=last))],
                               user_id=uid, bulk=bulk)
                assert not r.applied and r.created == 0 and r.failed == 28
                assert any("「买家留言」过长：30 个字符" in i.message for i in r.issues)
                snaps.append(("all_or_nothing", snapshot(since)))
                assert snaps[-1][1] == snaps[-2][1], "all or nothing must leave the database unchanged"
            finally:
                app.config.pop("OMS_MAX_TEXT")
        finally:
            order_import.BATCH_SIZE, order_import.FIRST_CHUNK, order_import.CHUNK_ROWS = old
            db.session.remove()
    return snaps


def assert_same(per_order: list, bulk: list) -> None:
    assert [s for s, _ in per_order] == [s for s, _ in bulk]
    for (step, a), (_, b) in zip(per_order, bulk):
        assert a["counts"] == b["counts"], step
        assert a["orders"].keys() == b["orders"].keys(), step
        for key in a["orders"]:
            assert a["orders"][key] == b["orders"][key], (step, key)
        assert a["customers"] == b["customers"], step
        assert a["counters"] == b["counters"], step


def test_sheet_exercises_what_it_should(ctx, tmp_path):
    """The scenario's sheet has what the comparison needs (guards the generator)."""
    rows = sheet_rows(60)[1:]
    statuses = {r[2] for r in rows}
    assert statuses == set(STATUSES)
    assert any(r[23].startswith("NOPE") and r[2] in ("待审核", "待发货") for r in rows)  # 未匹配商品 holds
    assert {world.PHONE_A1, world.PHONE_B1} <= {r[7] for r in rows}  # existing customers


def _sqlite_app(template_db, tmp_path, name):
    path = tmp_path / f"{name}.db"
    restore(template_db[0], path)
    return make_app(path)


def _dispose(app):
    from app.extensions import db

    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_bulk_equals_per_order_on_sqlite(template_db, tmp_path):
    since = dt.datetime.now(UTC) - dt.timedelta(seconds=1)  # times stamped from here on compare as "NOW"
    a = _sqlite_app(template_db, tmp_path, "per_order")
    b = _sqlite_app(template_db, tmp_path, "bulk")
    try:
        per_order = scenario(a, tmp_path, False, "a", since)
        bulk = scenario(b, tmp_path, True, "b", since)
    finally:
        _dispose(a)
        _dispose(b)
    assert_same(per_order, bulk)
    first = bulk[0][1]
    held = [k for k, o in first["orders"].items() if o["holds"]]
    assert held and all(first["orders"][k]["is_held"] for k in held)
    assert any(o["is_returning_customer"] for o in first["orders"].values())
    assert any(c["order_count"] > 1 and len(c["shops"]) > 1 for c in first["customers"].values())


@contextlib.contextmanager
def _pg_copy(source_url: str):
    """A second PostgreSQL database cloned from a migrated one (CREATE DATABASE … TEMPLATE)."""
    name = "oms_t_" + uuid.uuid4().hex[:10]
    src = source_url.rsplit("/", 1)[1]
    admin = sa.create_engine(TEST_PG_URL.replace("postgresql://", "postgresql+psycopg://"),
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:  # a template must have no sessions (its app's engine is disposed)
        conn.execute(sa.text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{src}'"))
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{src}"'))
    try:
        yield re.sub(r"/[^/]+$", f"/{name}", source_url)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def test_bulk_equals_per_order_on_postgresql(pg_url, tmp_path):
    from flask_migrate import upgrade

    from app.services import setup

    since = dt.datetime.now(UTC) - dt.timedelta(seconds=1)  # the world's own stamps too: "NOW" in both
    a = make_app(tmp_path / "unused_a.db", SQLALCHEMY_DATABASE_URI=pg_url)
    with a.app_context():
        upgrade()
        setup.initialise(admin_password=world.ADMIN_PASSWORD)
        world.build()
    _dispose(a)
    with _pg_copy(pg_url) as url_b:
        b = make_app(tmp_path / "unused_b.db", SQLALCHEMY_DATABASE_URI=url_b)
        try:
            per_order = scenario(a, tmp_path, False, "a", since)
            bulk = scenario(b, tmp_path, True, "b", since)
        finally:
            _dispose(a)
            _dispose(b)
    assert_same(per_order, bulk)
    assert [(step, snap["counters"]) for step, snap in bulk] == [(step, []) for step, _ in bulk]


def test_counters_follow_a_bulk_import_on_sqlite(ctx, tmp_path):
    """The status-tab counters (triggers of migration 0005) agree with the orders after a
    bulk import on SQLite too."""
    from app.extensions import db
    from app.services import order_counts

    triggers = db.session.execute(sa.text(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'oms_order'")).scalars().all()
    assert sorted(triggers) == ["trg_order_count_delete", "trg_order_count_insert", "trg_order_count_update"], (
        "the counter triggers of migration 0005 are missing on SQLite (a later migration rebuilt oms_order "
        "with batch_alter_table, which drops them)")
    r = run_import_admin([write_xlsx(tmp_path / "c.xlsx", sheet_rows(30))])
    assert r.ok and r.created == 30
    assert order_counts.check() == []


def test_bulk_links_a_customer_known_only_in_another_shop(ctx, ids, tmp_path):
    """A user limited to shop A imports an order whose buyer is so far a customer of shop B
    only: the order joins that customer (one customer across shops), whom the user still
    cannot list."""
    from app.extensions import appbuilder, db
    from app.models import Customer, Order
    from app.services import crypto
    from app.services.imports import run_import
    from app.services.scope import as_user

    rows = sheet_rows(1)
    rows[1][0], rows[1][7], rows[1][2] = "A店-淘宝", world.PHONE_B1, "待审核"
    rows[1][3], rows[1][4] = "2026-11-25 10:00:00", "2026-11-25 10:05:00"  # after the buyer's order in shop B
    user = appbuilder.sm.find_user(username="ops_a")
    r = run_import([write_xlsx(tmp_path / "a.xlsx", rows)], user_id=user.id)
    assert r.ok and r.created == 1, r.issues
    o = db.session.scalar(select(Order).where(Order.platform_order_id == "BK0000"))
    c = db.session.scalar(select(Customer).where(Customer.phone_hash == crypto.phone_index(world.PHONE_B1)))
    assert o.customer_id == c.id and o.is_returning_customer and c.order_count == 2
    assert sorted(s.name for s in c.shops) == ["A店-淘宝", "B店-拼多多"]
    with as_user(user.id):
        assert db.session.scalar(select(Order).where(Order.platform_order_id == "261120-000000000000001")) is None


def test_bulk_write_encrypts_pii_once_and_stores_no_plaintext(ctx, ids, tmp_path):
    from app.extensions import db
    from app.models import Customer, Order

    rows = sheet_rows(3)
    r = run_import_admin([write_xlsx(tmp_path / "p.xlsx", rows)])
    assert r.ok and r.created == 3
    row = next(r for r in rows if r[1] == "BK0001")
    raw = db.session.execute(sa.text(
        "SELECT receiver_name, receiver_phone, receiver_address FROM oms_order WHERE platform_order_id = 'BK0001'")).one()
    assert all(v.startswith("v1:") for v in raw)
    o = db.session.scalar(select(Order).where(Order.platform_order_id == "BK0001"))
    assert (o.receiver_name, o.receiver_phone, o.receiver_address) == (row[6], row[7], row[11])
    c = db.session.get(Customer, o.customer_id)
    assert c.phone == o.receiver_phone and c.name == o.receiver_name
    raw_c = db.session.execute(sa.text("SELECT phone FROM oms_customer WHERE id = :i"), {"i": c.id}).scalar()
    assert raw_c.startswith("v1:") and row[7] not in raw_c


def run_import_admin(files, **kw):
    from app.services.imports import run_import

    return run_import(files, user_id=admin_id(), **kw)



def test_orders_stored_with_the_old_checksum_stay_unchanged(ctx, tmp_path):
    """Orders imported before the checksum changed (JSON + SHA-256) are recognised as
    unchanged on re-import, not re-applied one by one."""
    from app.extensions import db
    from app.models import Order, OrderEvent
    from app.services.imports import load, order_import

    path = write_xlsx(tmp_path / "o.xlsx", sheet_rows(12))
    assert run_import_admin([path]).created == 12
    for d in order_import.build(load([path]), None):
        db.session.execute(sa.update(Order).where(Order.platform_order_id == d.pid).values(
            platform_hash=order_import.legacy_checksum(d)))
    db.session.commit()
    events = db.session.scalar(select(sa.func.count()).select_from(OrderEvent))
    r = run_import_admin([path])
    assert (r.created, r.updated, r.unchanged) == (0, 0, 12)
    assert db.session.scalar(select(sa.func.count()).select_from(OrderEvent)) == events
