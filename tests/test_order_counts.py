"""Maintained status-tab counters (issue #4 item 7): exact after creates, transitions,
holds, deletes, bulk statements, rollbacks and compaction, on SQLite and on PostgreSQL;
scoped to the user's shops; exact under concurrent writers and compactions on PostgreSQL."""
from __future__ import annotations

import datetime as dt
import multiprocessing
import random
import re
from collections import Counter
from decimal import Decimal

import pytest
from sqlalchemy import delete, func, select, text, update

from app.extensions import db
from app.models import Order, OrderCountDelta, Product, Shop, Sku, Warehouse
from app.services import order_counts, order_status, order_views, orders, stock
from app.services.errors import DomainError
from app.services.order_status import HOLDABLE, STATUS_ZH
from app.services.scope import as_scope, as_user

UTC = dt.timezone.utc
TABS = list(STATUS_ZH) + ["held"]


# --- the truth: an exact count over oms_order ------------------------------------------------
def _expected(shop_ids=None, platforms=None, held_apart=True) -> dict[str, int]:
    """What the tabs must show, counted from the orders themselves (unscoped, in Python)."""
    with as_scope(None):
        rows = db.session.execute(select(Order.shop_id, Order.platform, Order.status, Order.is_held)).all()
    out = dict.fromkeys(TABS, 0)
    for shop_id, platform, status, held in rows:
        if shop_ids is not None and shop_id not in shop_ids:
            continue
        if platforms is not None and platform not in platforms:
            continue
        if not (held and held_apart and status in HOLDABLE):
            out[status] += 1
        if held and status != "closed":
            out["held"] += 1
    return out


def _tabs(**kw) -> dict[str, int]:
    rows = order_counts.tab_counts(**kw)
    assert [r["code"] for r in rows] == TABS
    assert [r["label"] for r in rows] == list(STATUS_ZH.values()) + ["异常"]
    return {r["code"]: r["count"] for r in rows}


def _assert_exact(ids=None) -> dict[str, int]:
    """Counters == exact counts: per group (check) and through tab_counts with filters."""
    assert order_counts.check() == []
    assert _tabs() == _expected()
    assert _tabs(held_apart=False) == _expected(held_apart=False)
    if ids:
        a, b = ids["shops"]["A"], ids["shops"]["B"]
        assert _tabs(shop_ids=[a]) == _expected(shop_ids={a})
        assert _tabs(shop_ids=[a, b], platforms=["pdd"]) == _expected(shop_ids={a, b}, platforms={"pdd"})
        assert _tabs(platforms=["taobao", "jd"]) == _expected(platforms={"taobao", "jd"})
    return _tabs()


def _diff(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in TABS if after[k] != before[k]}


def _delta_rows() -> int:
    return db.session.scalar(select(func.count()).select_from(OrderCountDelta))


# --- building orders ----------------------------------------------------------------------
def _stocked_sku(code: str, qty: int) -> Sku:
    sku = db.session.scalars(select(Sku).where(Sku.merchant_code == code)).one_or_none()
    if sku is None:
        product = db.session.scalars(select(Product)).first()
        sku = Sku(product=product, merchant_code=code, name=code, cost_price=Decimal("1"), sale_price=Decimal("9"))
        db.session.add(sku)
        db.session.flush()
        wh = db.session.scalars(select(Warehouse).where(Warehouse.code == "HZ")).one()
        stock.inbound(wh.id, sku.id, qty, source_ref=f"RK-{code}")
        db.session.commit()
    return sku


def _new_order(pid: str, shop_id: int, *, paid: bool = True, code: str = "CNT-1") -> Order:
    shop = db.session.get(Shop, shop_id)
    when = dt.datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
    order = orders.create_order(shop, {
        "platform_order_id": pid, "status": "pending_payment",
        "receiver_name": "测试", "receiver_phone": "13700009999", "receiver_province": "浙江省",
        "receiver_city": "杭州市", "receiver_district": "西湖区", "receiver_address": "文三路1号",
        "paid_at": when, "platform_created_at": when, "paid_amount": "10.00",
        "lines": [{"platform_line_id": "1", "merchant_code": code, "title": code, "quantity": 1,
                   "price": "10.00", "paid_amount": "10.00"}],
    }, source="import")
    db.session.flush()
    if paid:
        order_status.apply(order, "pay", source="sync")
    db.session.commit()
    return order


# --- the scenario, on either database ---------------------------------------------------------
def _scenario(ids):
    """Every kind of change, each followed by an exact comparison and its expected effect."""
    a, carrier = ids["shops"]["A"], ids["carrier"]
    _stocked_sku("CNT-1", 1000)
    t0 = _assert_exact(ids)

    order = _new_order("CNT-S-1", a, paid=False)
    t1 = _assert_exact(ids)
    assert _diff(t0, t1) == {"pending_payment": 1}
    oid = order.id

    order_status.apply(order, "pay", source="sync")
    db.session.commit()
    t2 = _assert_exact(ids)
    assert _diff(t1, t2) == {"pending_payment": -1, "to_audit": 1}

    orders.transition(oid, "audit")
    t3 = _assert_exact(ids)
    assert _diff(t2, t3) == {"to_audit": -1, "to_ship": 1}

    orders.transition(oid, "unaudit")
    t4 = _assert_exact(ids)
    assert _diff(t3, t4) == {"to_ship": -1, "to_audit": 1}

    order = orders.get_order(oid)
    order_status.hold(order, "manual", note="核对地址")
    db.session.commit()
    t5 = _assert_exact(ids)
    assert _diff(t4, t5) == {"to_audit": -1, "held": 1}  # the workbench shows it under 异常 only
    classic = _tabs(held_apart=False)
    assert classic["to_audit"] == t4["to_audit"] and classic["held"] == t5["held"]
    order_status.hold(order, "blacklist")  # a second reason: still one held order
    db.session.commit()
    assert _assert_exact(ids) == t5

    order_status.release(order)  # releases both reasons
    db.session.commit()
    t6 = _assert_exact(ids)
    assert t6 == t4

    orders.transition(oid, "audit")
    orders.edit_order(oid, {"carrier_id": carrier, "tracking_number": "SF0000000001", "seller_memo": "加急"})
    t7 = _assert_exact(ids)
    assert _diff(t6, t7) == {"to_audit": -1, "to_ship": 1}  # the edit moves nothing
    orders.transition(oid, "ship")
    t8 = _assert_exact(ids)
    assert _diff(t7, t8) == {"to_ship": -1, "shipped": 1}

    # a held order closed by 取消: off 异常 and onto 已关闭
    other = _new_order("CNT-S-2", a)
    order_status.hold(other, "refunding")
    db.session.commit()
    t9 = _assert_exact(ids)
    assert _diff(t8, t9) == {"held": 1}
    orders.transition(other.id, "cancel", reason="买家取消")
    t10 = _assert_exact(ids)
    assert _diff(t9, t10) == {"held": -1, "closed": 1}

    # a rolled-back transition leaves no delta behind
    rows_before = _delta_rows()
    order = orders.get_order(oid)
    order.status = "completed"
    db.session.flush()
    db.session.rollback()
    assert _delta_rows() == rows_before
    assert _assert_exact(ids) == t10

    # bulk statements (one UPDATE over many rows, a memo-only UPDATE, a DELETE)
    db.session.execute(update(Order).where(Order.shop_id == ids["shops"]["B"]).values(flag=3))
    db.session.commit()
    assert _delta_rows() == rows_before  # no status change, no delta
    db.session.execute(update(Order).where(Order.status == "pending_payment").values(status="closed",
                                                                                       close_reason="超时"))
    db.session.commit()
    _assert_exact(ids)
    t11 = _tabs()
    doomed = db.session.scalars(select(Order).where(Order.platform_order_id == "CNT-S-2")).one()
    db.session.delete(doomed)
    db.session.commit()
    t12 = _assert_exact(ids)
    assert _diff(t11, t12) == {"closed": -1}

    # compaction: one row per non-empty group, counts unchanged, idempotent
    groups = db.session.execute(text(
        "SELECT count(*) FROM (SELECT shop_id, platform, status, is_held FROM oms_order_count_delta"
        " GROUP BY shop_id, platform, status, is_held HAVING sum(n) <> 0) g")).scalar()
    assert _delta_rows() > groups
    db.session.commit()
    result = order_counts.compact()
    assert result["rows_after"] == groups and result["rows_before"] > groups
    assert _delta_rows() == groups
    assert _assert_exact(ids) == t12
    again = order_counts.compact()
    assert again["skipped"] or again["rows_before"] == again["rows_after"] == groups
    assert _delta_rows() == groups
    assert _assert_exact(ids) == t12

    # changes after a compaction add to the folded rows
    orders.transition(_new_order("CNT-S-3", a).id, "audit")
    t13 = _assert_exact(ids)
    assert _diff(t12, t13) == {"to_ship": 1}
    return t13


# --- SQLite -------------------------------------------------------------------------------------
def test_counters_are_exact_through_every_change_on_sqlite(ctx, ids):
    _scenario(ids)


def test_the_world_is_counted_and_the_old_list_counts_are_unchanged(ctx, ids):
    tabs = _assert_exact(ids)
    assert tabs == {"pending_payment": 1, "to_audit": 3, "to_ship": 2, "shipped": 0, "completed": 0,
                    "closed": 0, "held": 0}
    # order_views.status_tab_counts keeps its shape: a status tab counts held orders too
    orders.transition(ids["orders"]["3000000000000000001"], "audit")
    order_status.hold(orders.get_order(ids["orders"]["3000000000000000001"]), "manual")
    db.session.commit()
    old = {t["code"]: t["count"] for t in order_views.status_tab_counts()}
    assert old == {"pending_payment": 1, "to_audit": 2, "to_ship": 3, "shipped": 0, "completed": 0,
                   "closed": 0, "held": 1}
    assert [t["label"] for t in order_views.status_tab_counts()] == list(STATUS_ZH.values()) + ["异常"]
    assert _tabs()["to_ship"] == 2 and _tabs()["held"] == 1


def test_migration_backfills_existing_orders_on_sqlite(ctx, ids):
    from flask_migrate import downgrade, upgrade

    db.session.remove()
    downgrade(revision="0004")
    with db.engine.connect() as conn:
        assert "oms_order_count_delta" not in {r[0] for r in conn.execute(text(
            "SELECT name FROM sqlite_master WHERE type = 'table'"))}
        assert conn.execute(text("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'")).scalar() == 0
    # written while there are no triggers, in SQL: the ORM models are ahead of schema 0004
    with db.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO oms_order (shop_id, platform, platform_order_id, status, is_held, goods_amount,"
            " discount_amount, post_fee, paid_amount, cost_amount, flag, created_at, updated_at,"
            " is_returning_customer) VALUES (:shop, 'jd', 'CNT-BEFORE-0005', 'pending_payment', 0,"
            " 0, 0, 0, 0, 0, 0, '2026-11-30 00:00:00', '2026-11-30 00:00:00', 0)"), {"shop": ids["shops"]["C"]})
    db.session.remove()
    upgrade()
    tabs = _assert_exact(ids)
    assert tabs["pending_payment"] == 2 and tabs["to_audit"] == 3
    orders.transition(ids["orders"]["300000000001"], "audit")  # the triggers are back
    assert _diff(tabs, _assert_exact(ids)) == {"to_audit": -1, "to_ship": 1}


def test_a_user_limited_to_shop_a_sees_only_shop_a(ctx, ids):
    from app.models import OmsUser

    a, b = ids["shops"]["A"], ids["shops"]["B"]
    _stocked_sku("CNT-1", 100)
    _new_order("CNT-B-1", b)
    cs = db.session.scalars(select(OmsUser).where(OmsUser.username == "cs")).one()
    cs_id = cs.id
    only_a = _expected(shop_ids={a})
    assert only_a != _expected()
    with as_user(cs_id):
        assert _tabs() == only_a
        assert _tabs(shop_ids=[a, b]) == only_a  # another shop asked for is not added
        assert _tabs(shop_ids=[b]) == dict.fromkeys(TABS, 0)
        # the counter rows themselves are row-scoped like orders
        assert {r.shop_id for r in db.session.scalars(select(OrderCountDelta))} == {a}
    with as_scope([]):
        assert _tabs() == dict.fromkeys(TABS, 0)


def test_the_order_list_page_shows_the_scoped_counts(app, ids, login):
    with app.app_context():
        _stocked_sku("CNT-1", 100)
        _new_order("CNT-B-2", ids["shops"]["B"])
        a_to_audit = _expected(shop_ids={ids["shops"]["A"]})["to_audit"]
        all_to_audit = _expected()["to_audit"]
    assert a_to_audit != all_to_audit

    def badge(client, label):
        html = client.get("/orderview/list/").get_data(as_text=True)
        return int(re.search(label + r'<span class="badge">(\d+)</span>', html).group(1))

    assert badge(login("cs"), "待审核") == a_to_audit
    assert badge(login("admin"), "待审核") == all_to_audit


def test_filters_by_platform_and_empty_filters(ctx, ids):
    assert _tabs(platforms=["pdd"]) == _expected(shop_ids={ids["shops"]["B"]})
    assert _tabs(platforms=[]) == dict.fromkeys(TABS, 0)
    assert _tabs(shop_ids=[]) == dict.fromkeys(TABS, 0)
    assert _tabs(shop_ids=[999999]) == dict.fromkeys(TABS, 0)


def test_rebuild_repairs_counters_and_the_job_is_scheduled_every_minute(ctx, ids):
    from app.jobs.counters import compact_order_counts_job
    from app.jobs.schedule import build_scheduler

    db.session.execute(delete(OrderCountDelta).where(OrderCountDelta.status == "to_audit"))
    db.session.commit()
    broken = order_counts.check()
    assert broken and {r["status"] for r in broken} == {"to_audit"}
    assert all(r["counter"] == 0 and r["exact"] > 0 for r in broken)
    order_counts.rebuild()
    _assert_exact(ids)
    assert compact_order_counts_job()["rows_after"] == _delta_rows()
    jobs = [j for j in build_scheduler().get_jobs() if j.func is compact_order_counts_job]
    assert len(jobs) == 1 and jobs[0].interval == 60


# --- PostgreSQL ---------------------------------------------------------------------------------
def _setup_pg(pg_url, tmp_path):
    from flask_migrate import upgrade

    from app.services import setup
    from tests import world
    from tests.conftest import make_app

    app = make_app(tmp_path / "x.db", SQLALCHEMY_DATABASE_URI=pg_url)
    with app.app_context():
        upgrade()
        setup.initialise(admin_password=world.ADMIN_PASSWORD)
        ids = world.build()
    return app, ids


def _dispose():
    db.session.remove()
    db.engine.dispose()


def test_counters_are_exact_through_every_change_on_postgresql(pg_url, tmp_path):
    from flask_migrate import downgrade, upgrade

    app, ids = _setup_pg(pg_url, tmp_path)
    with app.app_context():
        tabs = _scenario(ids)
        # a multi-row INSERT … SELECT adds one delta row per group, not one per order
        before = _delta_rows()
        db.session.execute(text(
            "INSERT INTO oms_order (shop_id, platform, platform_order_id, status, is_held, goods_amount,"
            " discount_amount, post_fee, paid_amount, cost_amount, flag, created_at, updated_at,"
            " is_returning_customer)"
            " SELECT s.id, s.platform, 'BULK-' || s.id || '-' || g, 'to_audit', g % 10 = 0, 0, 0, 0, 0, 0, 0,"
            " now(), now(), false FROM oms_shop s CROSS JOIN generate_series(1, 500) g"))
        db.session.commit()
        assert _delta_rows() - before == 2 * 3  # (held, unheld) × 3 shops
        tabs = _assert_exact(ids)
        # the migration's backfill and triggers, again on PostgreSQL
        _dispose()
        downgrade(revision="0004")
        upgrade()
        assert _assert_exact(ids) == tabs
        # TRUNCATE empties the counters with the table
        db.session.execute(text("TRUNCATE oms_order CASCADE"))
        db.session.commit()
        assert _assert_exact(ids) == dict.fromkeys(TABS, 0)
        _dispose()


WRITERS = 4
ORDERS_PER_WRITER = 12
ROUNDS = 12


def _writer(pg_url, db_dir, order_ids, seed, barrier):
    """Move its orders at random through audit, unaudit, hold, release (sometimes several
    orders in one transaction, sometimes rolled back), then cancel or ship some."""
    from tests.conftest import make_app

    app = make_app(f"{db_dir}/w.db", SQLALCHEMY_DATABASE_URI=pg_url)
    rnd = random.Random(seed)
    with app.app_context():
        db.session.execute(text("SELECT 1"))
        barrier.wait(timeout=60)
        for _ in range(ROUNDS):
            batch = rnd.sample(order_ids, rnd.choice([1, 1, 1, 3]))
            for oid in batch:
                order = db.session.get(Order, oid)
                try:
                    if order.is_held:
                        order_status.release(order)
                    elif order.status == "to_audit":
                        if rnd.random() < 0.3:
                            order_status.hold(order, "manual")
                        else:
                            order_status.apply(order, "audit")
                    elif order.status == "to_ship":
                        if rnd.random() < 0.3:
                            order_status.hold(order, "address_incomplete")
                        else:
                            order_status.apply(order, "unaudit")
                    db.session.flush()
                except DomainError:
                    db.session.rollback()
                    break
            if rnd.random() < 0.15:
                db.session.rollback()
            else:
                db.session.commit()
        for i, oid in enumerate(order_ids[:4]):
            order = db.session.get(Order, oid)
            if order.status in ("pending_payment", "to_audit", "to_ship"):
                order_status.apply(order, "cancel", reason="并发测试")
                db.session.commit()
        for oid in order_ids[4:6]:
            order = db.session.get(Order, oid)
            if order.is_held:
                order_status.release(order)
            if order.status == "to_audit":
                order_status.apply(order, "audit")
            order.carrier_id = db.session.execute(text("SELECT min(id) FROM oms_carrier")).scalar()
            order.tracking_number = f"SF{oid:010d}"
            order_status.apply(order, "ship")
            db.session.commit()
        _dispose()


def _compactor(pg_url, db_dir, stop, runs):
    from tests.conftest import make_app

    app = make_app(f"{db_dir}/c.db", SQLALCHEMY_DATABASE_URI=pg_url)
    with app.app_context():
        while not stop.is_set():
            result = order_counts.compact()
            if not result["skipped"] and result["rows_before"]:
                with runs.get_lock():
                    runs.value += 1
        _dispose()


def _reader(pg_url, db_dir, stop, total, reads, bad):
    """While everything moves, every read of the tabs must add up to all the orders."""
    from tests.conftest import make_app

    app = make_app(f"{db_dir}/r.db", SQLALCHEMY_DATABASE_URI=pg_url)
    with app.app_context():
        while not stop.is_set():
            tabs = order_counts.tab_counts(held_apart=False)
            db.session.rollback()
            with reads.get_lock():
                reads.value += 1
            if sum(t["count"] for t in tabs if t["code"] != "held") != total:
                with bad.get_lock():
                    bad.value += 1
        _dispose()


def test_concurrent_writers_and_compactions_keep_counters_exact_on_postgresql(pg_url, tmp_path):
    app, ids = _setup_pg(pg_url, tmp_path)
    with app.app_context():
        _stocked_sku("CNT-1", 100000)
        shops = [ids["shops"]["A"], ids["shops"]["B"]]  # every writer hits the same counter groups
        order_ids = [_new_order(f"RACE-{i}", shops[i % 2]).id for i in range(WRITERS * ORDERS_PER_WRITER)]
        total = db.session.scalar(select(func.count()).select_from(Order))
        _dispose()
    mp = multiprocessing.get_context("fork")
    barrier, stop = mp.Barrier(WRITERS), mp.Event()
    runs, reads, bad = mp.Value("i", 0), mp.Value("i", 0), mp.Value("i", 0)
    writers = [mp.Process(target=_writer, args=(pg_url, str(tmp_path), order_ids[w::WRITERS], w, barrier))
               for w in range(WRITERS)]
    helpers = [mp.Process(target=_compactor, args=(pg_url, str(tmp_path), stop, runs)) for _ in range(2)]
    helpers.append(mp.Process(target=_reader, args=(pg_url, str(tmp_path), stop, total, reads, bad)))
    for p in helpers + writers:
        p.start()
    for p in writers:
        p.join(180)
    stop.set()
    for p in helpers:
        p.join(60)
    assert [p.exitcode for p in writers + helpers] == [0] * len(writers + helpers)
    assert runs.value > 0 and reads.value > 0
    assert bad.value == 0
    with app.app_context():
        statuses = Counter(db.session.scalars(select(Order.status)))
        assert statuses["closed"] >= 1 and statuses["shipped"] >= 1
        assert statuses["to_ship"] + statuses["to_audit"] > 0
        _assert_exact(ids)
        order_counts.compact()
        _assert_exact(ids)
        groups = db.session.execute(text(
            "SELECT count(DISTINCT (shop_id, platform, status, is_held)) FROM oms_order")).scalar()
        assert _delta_rows() == groups
        _dispose()


def test_counts_check_cli_reports_and_rebuilds(ctx):
    from sqlalchemy import text

    from app.extensions import db

    runner = ctx.test_cli_runner()
    ok = runner.invoke(args=["oms", "counts-check"])
    assert ok.exit_code == 0 and "对账通过" in ok.output
    db.session.execute(text("DELETE FROM oms_order_count_delta"))
    db.session.commit()
    bad = runner.invoke(args=["oms", "counts-check"])
    assert bad.exit_code == 1 and "对账失败" in bad.output
    fixed = runner.invoke(args=["oms", "counts-check", "--rebuild"])
    assert fixed.exit_code == 0 and "已重新计算" in fixed.output
    assert runner.invoke(args=["oms", "counts-check"]).exit_code == 0
