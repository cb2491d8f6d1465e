"""The streamed order import (services/imports/order_import.stream + StreamApply): one order
sheet is converted and written a chunk at a time, and gives what the whole-sheet path gives.

Chunks are made tiny here (a few rows, a few orders), so every sheet spans many chunks:
an order whose rows are far apart, all or nothing with the bad rows after orders already
written (nothing stays, every bad row is reported), valid rows only, idempotent re-import
and the update of changed orders; the report's issues in the same order as the
per-order path (``bulk=False``, which converts the whole sheet first)."""
from __future__ import annotations

from pathlib import Path

import openpyxl
import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import Customer, Order, OrderEvent, OrderHold, OrderLine, Shop
from app.services import order_counts
from app.services.imports import order_import, run_import
from tests import world
from tests.conftest import buyer_committed_after_first_lookup, make_app

HEADER = ["店铺", "订单号", "状态", "付款时间", "收货人", "收货人手机", "省", "市", "区", "详细地址",
          "实付金额", "买家留言", "商家编码", "数量", "单价"]


def row(pid, *, shop="A店-淘宝", status="待审核", paid="2026-11-05 10:03:04", phone="13900000001", code="TS-BLK-L",
        qty=1, message=None):
    return [shop, pid, status, paid, "张三", phone, "浙江省", "杭州市", "西湖区", "文三路1号", "79.00", message, code,
            qty, "79.00"]


def sheet(n: int, prefix: str = "S", over: dict | None = None) -> list:
    """``n`` orders, one row each, a few phones shared (customers across chunks)."""
    rows = [HEADER]
    for k in range(n):
        values = {"phone": f"1390000000{k % 4}", "code": ["TS-BLK-L", "TS-WHT-M"][k % 2],
                  "status": ["待审核", "已发货", "待发货"][k % 3], **(over or {}).get(k, {})}
        rows.append(row(f"{prefix}{k:03d}", **values))
    return rows


def write_xlsx(path: Path, rows: list) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    for r in rows:
        ws.append(r)
    wb.save(path)
    return path


@pytest.fixture
def tiny_chunks(monkeypatch):
    monkeypatch.setattr(order_import, "BATCH_SIZE", 3)
    monkeypatch.setattr(order_import, "FIRST_CHUNK", 2)
    monkeypatch.setattr(order_import, "CHUNK_ROWS", 4)


def state() -> tuple:
    db.session.expire_all()
    return tuple(db.session.scalar(select(func.count()).select_from(m))
                 for m in (Order, OrderLine, OrderEvent, OrderHold, Customer, Shop))


def lines_of(pid: str) -> list:
    order = db.session.scalar(select(Order).where(Order.platform_order_id == pid))
    return [(ln.merchant_code, ln.quantity) for ln in order.lines]


def test_an_order_whose_rows_are_far_apart_is_one_order(ctx, tiny_chunks, tmp_path):
    rows = sheet(12)
    rows.append(row("S000", code="TS-WHT-M", qty=2))  # a second line of the first order, 12 rows later
    rows.append(row("S005", code="TS-WHT-M", qty=3))
    r = run_import([write_xlsx(tmp_path / "apart.xlsx", rows)])
    assert r.ok and r.applied and (r.records, r.created, r.rows) == (12, 12, 14), r.issues
    assert lines_of("S000") == [("TS-BLK-L", 1), ("TS-WHT-M", 2)]
    assert lines_of("S005") == [("TS-WHT-M", 1), ("TS-WHT-M", 3)]
    # sheet order is kept: ids follow the orders' first rows
    pids = db.session.scalars(select(Order.platform_order_id).where(Order.platform_order_id.like("S%"))
                              .order_by(Order.id)).all()
    assert pids == [f"S{k:03d}" for k in range(12)]
    assert order_counts.check() == []


def test_all_or_nothing_rolls_back_orders_already_written_and_names_every_bad_row(ctx, tiny_chunks, tmp_path):
    ctx.config["OMS_MAX_TEXT"] = 20  # create_order refuses a longer buyer message (a write-time check)
    try:
        before = state()
        rows = sheet(14, over={4: {"message": "留言" * 15}, 9: {"message": "留言" * 12}})
        rows[12][3] = "2026-13-45"  # order S011: a bad cell, long after the first orders were written
        rows[14][13] = -1  # order S013: a negative quantity in the last row
        r = run_import([write_xlsx(tmp_path / "late.xlsx", rows)])
        assert not r.applied and (r.created, r.failed) == (0, 14)
        assert state() == before
        messages = [i.message for i in r.issues]
        assert "第 13 行「付款时间」：无法识别的日期 2026-13-45" in messages
        assert any(m.startswith("第 15 行「数量」") and "负数" in m for m in messages)
        # the write-time checks of every order are reported too, not only the first
        assert sum("「买家留言」过长" in m for m in messages) == 2
        assert r.report_path and Path(r.report_path).exists()
    finally:
        ctx.config.pop("OMS_MAX_TEXT")


def test_issues_come_in_the_order_of_the_whole_sheet_path(ctx, tiny_chunks, tmp_path):
    rows = sheet(10, over={0: {"shop": "不存在的店"}, 6: {"shop": "B店-拼多多"}})
    rows[9][3] = "昨天"  # a bad cell in a later chunk than the shop issues
    rows.append(row(None))  # no order number
    path = write_xlsx(tmp_path / "issues.xlsx", rows)
    streamed = run_import([path])
    whole = run_import([path], bulk=False)
    assert not streamed.applied and not whole.applied
    assert [i.message for i in streamed.issues] == [i.message for i in whole.issues]
    assert streamed.issues[0].message.startswith("第 10 行「付款时间」")
    assert (streamed.failed_rows, streamed.records, streamed.rows) == (whole.failed_rows, whole.records, whole.rows)


def test_valid_only_writes_the_good_orders_of_every_chunk(ctx, tiny_chunks, tmp_path):
    ctx.config["OMS_MAX_TEXT"] = 20
    try:
        rows = sheet(11, over={2: {"message": "留言" * 15}, 7: {"shop": "不存在的店"}})
        rows[10][3] = "2026-13-45"  # S009
        rows.append(row("S004", code="TS-WHT-M"))  # a second line of a good order, in a later chunk
        r = run_import([write_xlsx(tmp_path / "valid.xlsx", rows)], valid_only=True)
        assert r.applied and (r.created, r.failed) == (8, 3)
        stored = set(db.session.scalars(select(Order.platform_order_id).where(Order.platform_order_id.like("S%"))))
        assert stored == {f"S{k:03d}" for k in range(11)} - {"S002", "S007", "S009"}
        assert lines_of("S004") == [("TS-BLK-L", 1), ("TS-WHT-M", 1)]
        assert order_counts.check() == []
    finally:
        ctx.config.pop("OMS_MAX_TEXT")


def test_reimport_skips_unchanged_and_updates_changed_orders_across_chunks(ctx, tiny_chunks, tmp_path):
    path = write_xlsx(tmp_path / "first.xlsx", sheet(9))
    assert run_import([path]).created == 9
    before = state()
    again = run_import([path])
    assert (again.created, again.updated, again.unchanged) == (0, 0, 9) and state() == before
    rows = sheet(9, over={5: {"status": "已发货"}}) + sheet(4, prefix="N")[1:]  # S005 待发货 → 已发货; 4 new
    changed = run_import([write_xlsx(tmp_path / "changed.xlsx", rows)])
    assert changed.ok and (changed.created, changed.updated, changed.unchanged) == (4, 1, 8), changed.issues
    s005 = db.session.scalar(select(Order).where(Order.platform_order_id == "S005"))
    assert s005.status == "shipped"
    assert order_counts.check() == []


def test_streamed_import_on_postgresql(pg_url, tmp_path, monkeypatch):
    """PostgreSQL: the writer thread writes while the next chunk is converted; each chunk's
    existing orders and customers are read on a second connection. First import, re-import,
    a changed order, and all or nothing failing after chunks were written."""
    from flask_migrate import upgrade

    from app.services import setup

    monkeypatch.setattr(order_import, "BATCH_SIZE", 3)
    monkeypatch.setattr(order_import, "FIRST_CHUNK", 2)
    monkeypatch.setattr(order_import, "CHUNK_ROWS", 4)
    app = make_app(tmp_path / "unused.db", SQLALCHEMY_DATABASE_URI=pg_url)
    try:
        with app.app_context():
            upgrade()
            setup.initialise(admin_password=world.ADMIN_PASSWORD)
            world.build()
            first = write_xlsx(tmp_path / "first.xlsx", sheet(10, over={3: {"phone": world.PHONE_A1}}))
            r = run_import([first])
            assert r.ok and r.applied and r.created == 10, r.issues
            known = db.session.scalar(select(Customer).where(Customer.phone_hash.is_not(None))
                                      .join(Order, Order.customer_id == Customer.id)
                                      .where(Order.platform_order_id == "S003"))
            assert known.order_count >= 2  # world's customer, found and updated
            assert (run_import([first]).unchanged, order_counts.check()) == (10, [])
            rows = sheet(10, over={4: {"status": "已发货"}}) + sheet(5, prefix="N")[1:]
            r = run_import([write_xlsx(tmp_path / "changed.xlsx", rows)])
            assert (r.created, r.updated, r.unchanged) == (5, 1, 9), r.issues
            before = state()
            bad = sheet(9, prefix="X")
            bad[9][3] = "2026-13-45"
            r = run_import([write_xlsx(tmp_path / "bad.xlsx", bad)])
            assert not r.applied and state() == before
            assert [i.message for i in r.issues] == ["第 10 行「付款时间」：无法识别的日期 2026-13-45"]
            assert run_import([write_xlsx(tmp_path / "after.xlsx", sheet(3, prefix="Y"))]).created == 3
            assert order_counts.check() == []
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def test_a_buyer_committed_by_another_writer_meanwhile_is_found_on_a_retry(pg_url, tmp_path, monkeypatch):
    """PostgreSQL, streamed: right after the import looked the sheet's buyer up (not there),
    another transaction (a sync, another import) commits that buyer. The import's insert
    then meets oms_customer's unique phone hash for real; it is rolled back whole and run
    again from the file, which finds the buyer: no error for the user, nothing twice."""
    from flask_migrate import upgrade

    from app.services import orders, setup
    from app.services.imports import bulk as import_bulk
    from tests.test_imports_bulk import _dispose

    app = make_app(tmp_path / "unused.db", SQLALCHEMY_DATABASE_URI=pg_url)
    phone = "13911112222"
    path = write_xlsx(tmp_path / "orders.xlsx", sheet(5, "R", {k: {"phone": phone} for k in range(5)}))
    lookups = buyer_committed_after_first_lookup(monkeypatch, import_bulk.Creator, pg_url, phone)
    try:
        with app.app_context():
            upgrade()
            setup.initialise(admin_password=world.ADMIN_PASSWORD)
            world.build()
            res = run_import([path])
            assert (res.created, res.failed_rows) == (5, 0)
            assert len(lookups) >= 2  # the import ran again
            [customer] = db.session.scalars(select(Customer).where(Customer.phone_hash == orders.phone_hash(phone)))
            assert customer.order_count == 5
            assert db.session.scalar(select(func.count()).select_from(Order).where(
                Order.platform_order_id.like("R%"), Order.customer_id == customer.id)) == 5
    finally:
        _dispose(app)
