"""The sync engine's set-wise page apply (new orders written in bulk through
services/bulk_orders.py) leaves exactly the database the per-order path
(``sync_shop(..., bulk=False)``: ``create_order`` + the state machine per order) leaves,
for the same platform pages, on SQLite and on PostgreSQL: orders, lines, events, holds,
customers (counts, spend, first/last order, returning flags, shop links), the stock
ledger and the status-tab counters; then a re-sync with changes and a no-change re-sync."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import redis
import sqlalchemy as sa
from sqlalchemy import select

from tests import world
from tests.conftest import TEST_REDIS_URL, buyer_committed_after_first_lookup, make_app
from tests.test_imports_bulk import _dispose, _pg_copy, _sqlite_app, snapshot
from tests.test_sync import NOW, ScriptedClient, po
from app.platforms.base import Page, PlatformLine

UTC = dt.timezone.utc


def line(lid, code, qty=1, price="49.00", **kw):
    price = Decimal(price)
    return PlatformLine(platform_line_id=lid, title=f"商品{code}", quantity=qty, price=price,
                        paid_amount=price * qty, merchant_code=code, **kw)


def first_orders(prefix: str, phones: list) -> list:
    """Every case the engine maps: statuses, platform holds, refunds, unmatched and
    unstocked codes, stocked SKUs shipped on the platform, masked phones, repeat buyers."""
    cases = [
        dict(status="to_audit"),
        dict(status="pending_payment", paid_at=None),
        dict(status="to_ship"),
        dict(status="shipped", shipped_at=NOW - dt.timedelta(minutes=90), tracking_number="SF1"),
        dict(status="completed", shipped_at=NOW - dt.timedelta(minutes=80)),
        dict(status="closed"),
        dict(status="closed", refund_closed=True),
        dict(status="to_audit", refund_closed=True),
        dict(status="to_audit", hold_reason="refunding"),
        dict(status="to_ship", hold_reason="platform_locked"),
        dict(status="shipped", hold_reason="refunding"),
        dict(status="to_audit", lines=[line("1", "NOPE-1"), line("2", "TS-RED-S", 2)]),
        dict(status="shipped", lines=[line("1", "NOPE-2")]),  # unmatched, shipped: hold stays
        dict(status="shipped", lines=[line("1", "TS-RED-S")]),  # a SKU without stock
        dict(status="completed", lines=[line("1", "TS-WHT-M", 2)]),  # stocked: deducted
        dict(status="closed", lines=[line("1", "NOPE-3")], hold_reason="refunding"),
        dict(status="to_audit", receiver_phone="151****1234"),
        dict(status="to_audit", receiver_phone="151****1234", receiver_name="另一人"),
        dict(status="to_audit", receiver_phone="", buyer_message="没有电话"),
        dict(status="to_audit", seller_memo="备注", flag=3, receiver_zip="210000"),
    ]
    out = []
    for i, kw in enumerate(cases):
        kw.setdefault("receiver_phone", phones[i % len(phones)])
        kw.setdefault("paid_amount", Decimal(f"{50 + i}.00"))
        out.append(po(f"{prefix}{i:02d}", modified=NOW - dt.timedelta(minutes=200 - i * 7),
                      paid_at=kw.pop("paid_at", NOW - dt.timedelta(hours=5, minutes=i)), **kw))
    return out


def changes(orders: dict, prefix: str) -> None:
    """A second round: moves forward, refunds, released holds, new lines, new orders."""
    later = NOW + dt.timedelta(minutes=30)

    def change(n, **kw):
        old = orders[f"{prefix}{n:02d}"]
        data = {k: getattr(old, k) for k in old.__dataclass_fields__}
        data.update(kw, modified_at=later - dt.timedelta(minutes=n))
        orders[old.platform_order_id] = type(old)(**data)

    change(0, status="shipped", shipped_at=later - dt.timedelta(hours=1))
    change(1, status="to_audit", paid_at=later - dt.timedelta(hours=2))
    change(2, status="closed", refund_closed=True)
    change(3, status="to_audit")  # never back
    change(8, hold_reason=None, platform_status="WAIT_SELLER_SEND_GOODS")
    change(9, status="completed")
    change(11, lines=[line("1", "NOPE-1"), line("3", "TS-BLK-L")], paid_amount=Decimal("30.00"))
    change(19, buyer_message="改地址", receiver_address="新地址9号", receiver_phone=world.PHONE_B1)
    for i in range(3):
        new = po(f"{prefix}N{i}", modified=later - dt.timedelta(minutes=20 + i), receiver_phone=world.PHONE_A1,
                 status=("shipped", "to_audit", "closed")[i])
        orders[new.platform_order_id] = new


class DupClient(ScriptedClient):
    """Pages as the platform gives them when an order changes while we page backwards:
    the last order of each page listed again (unchanged) and the first one again changed."""

    changing = True  # the first sync only: afterwards the platform has settled

    def fetch_changed(self, start, end, page_size=100):
        for page in super().fetch_changed(start, end, page_size):
            if not self.changing:
                yield page
                continue
            extra = [page.orders[-1]]
            first = page.orders[0]
            data = {k: getattr(first, k) for k in first.__dataclass_fields__}
            data["buyer_message"] = (first.buyer_message or "") + "（翻页时又改了）"
            extra.append(type(first)(**data))
            yield Page(orders=page.orders + extra, page_no=page.page_no)


def scenario(app, bulk: bool) -> list:
    from app.extensions import db
    from app.models import Product, Shop, Sku, StockMovement
    from app.services import sync

    since = dt.datetime.now(UTC)  # times written from now on read as NOW; the world's own stay apart
    snaps = []
    r = redis.Redis.from_url(TEST_REDIS_URL)
    with app.app_context():
        product = db.session.scalar(select(Product))
        db.session.add(Sku(product=product, merchant_code="TS-RED-S", name="纯棉T恤 红 S", cost_price=Decimal("10.00"),
                           sale_price=Decimal("59.00")))
        shops = {s.name: s.id for s in db.session.scalars(select(Shop))}
        for sid in shops.values():
            shop = db.session.get(Shop, sid)
            shop.app_key, shop.sync_checkpoint, shop.backfill_days = "scripted", None, 1
        db.session.commit()
        phones = [world.PHONE_A1, "13600000001", world.PHONE_B1, "13600000002", "13600000001"]
        clients = {}
        for name, prefix in (("A店-淘宝", "TA"), ("B店-拼多多", "TB")):
            orders = first_orders(prefix, phones)
            clients[name] = (DupClient(orders, page_size=4), prefix)

        def run_all(now):
            for name, (client, _p) in clients.items():
                r.delete(f"oms:sync:shop:{shops[name]}")
                run = sync.sync_shop(shops[name], now=now, client=client, sleep=lambda s: None, bulk=bulk)
                assert run.status == "success", run.error
                db.session.remove()

        def ledger():
            rows = db.session.execute(select(StockMovement.sku_id, StockMovement.movement_type,
                                             StockMovement.on_hand_delta, StockMovement.reserved_delta,
                                             StockMovement.source_ref, StockMovement.note)).all()
            return sorted(tuple(x) for x in rows)

        run_all(NOW)
        snaps.append(("first", {**snapshot(since), "ledger": ledger()}))
        for name, (client, prefix) in clients.items():
            client.changing = False
            for p in client.orders.values():  # the copy changed while paging is the platform's state now
                if p.platform_order_id.endswith(("00", "04", "08", "12", "16")):
                    p.buyer_message = (p.buyer_message or "") + "（翻页时又改了）"
                    p.modified_at = NOW + dt.timedelta(minutes=5)
            changes(client.orders, prefix)
        run_all(NOW + dt.timedelta(hours=1))
        snaps.append(("changed", {**snapshot(since), "ledger": ledger()}))
        for sid in shops.values():
            db.session.get(Shop, sid).sync_checkpoint = None
        db.session.commit()
        run_all(NOW + dt.timedelta(hours=1))
        snaps.append(("again", {**snapshot(since), "ledger": ledger()}))
        db.session.remove()
    return snaps


def assert_same(a_snaps: list, b_snaps: list) -> None:
    assert [s for s, _ in a_snaps] == [s for s, _ in b_snaps]
    for (step, a), (_, b) in zip(a_snaps, b_snaps):
        assert a["counts"] == b["counts"], step
        assert a["orders"].keys() == b["orders"].keys(), step
        for key in a["orders"]:
            assert a["orders"][key] == b["orders"][key], (step, key)
        assert a["customers"] == b["customers"], step
        assert a["ledger"] == b["ledger"], step
        assert a["counters"] == b["counters"] == [], step


def check_cases(snaps: list) -> None:
    """The scenario exercises what it should (guards the data, not the paths)."""
    first = dict(snaps)["first"]["orders"]
    ta = {pid: o for (shop, pid), o in first.items() if shop == "A店-淘宝"}
    assert {o["status"] for o in ta.values()} >= {"pending_payment", "to_audit", "shipped", "completed", "closed"}
    assert ta["TA12"]["is_held"] and ta["TA12"]["status"] == "shipped"
    assert not ta["TA15"]["is_held"] and ta["TA15"]["holds"] and not any(h[3] for h in ta["TA15"]["holds"])
    assert ta["TA16"]["customer"] is None and ta["TA17"]["customer"] is None  # masks merge nobody
    assert any(o["is_returning_customer"] for o in ta.values())
    assert dict(snaps)["first"]["ledger"] != []
    assert any(m[1] == "ship" for m in dict(snaps)["first"]["ledger"])
    changed = dict(snaps)["changed"]["orders"]
    assert changed[("A店-淘宝", "TA03")]["status"] == "shipped"
    assert changed[("A店-淘宝", "TA02")]["status"] == "closed"
    assert dict(snaps)["again"] == dict(snaps)["changed"]


def test_bulk_sync_equals_per_order_on_sqlite(template_db, tmp_path):
    a = _sqlite_app(template_db, tmp_path, "per_order")
    b = _sqlite_app(template_db, tmp_path, "bulk")
    try:
        per_order = scenario(a, False)
        bulk = scenario(b, True)
    finally:
        _dispose(a)
        _dispose(b)
    check_cases(bulk)
    assert_same(per_order, bulk)


def test_bulk_sync_equals_per_order_on_postgresql(pg_url, tmp_path):
    from flask_migrate import upgrade

    from app.services import setup

    a = make_app(tmp_path / "unused_a.db", SQLALCHEMY_DATABASE_URI=pg_url)
    with a.app_context():
        upgrade()
        setup.initialise(admin_password=world.ADMIN_PASSWORD)
        world.build()
    _dispose(a)
    with _pg_copy(pg_url) as url_b:
        b = make_app(tmp_path / "unused_b.db", SQLALCHEMY_DATABASE_URI=url_b)
        try:
            per_order = scenario(a, False)
            bulk = scenario(b, True)
        finally:
            _dispose(a)
            _dispose(b)
    check_cases(bulk)
    assert_same(per_order, bulk)


def test_no_change_page_costs_one_query(ctx, ids):
    """A page of unchanged orders: one SELECT of the stored checksums, nothing else."""
    from app.extensions import db
    from app.models import Shop
    from app.services import sync

    redis.Redis.from_url(TEST_REDIS_URL).delete(f"oms:sync:shop:{ids['shops']['A']}")
    shop = db.session.get(Shop, ids["shops"]["A"])
    shop.app_key, shop.sync_checkpoint, shop.backfill_days = "scripted", None, 1
    db.session.commit()
    client = ScriptedClient([po(f"Q{i}") for i in range(30)], page_size=30)
    sync.sync_shop(shop.id, now=NOW, client=client)
    shop = db.session.get(Shop, ids["shops"]["A"])
    ctx_ = sync.RunContext()
    client.call_policy = None  # the finished run's policy refuses further calls
    page = list(client.fetch_changed(NOW - dt.timedelta(days=1), NOW))[0].orders
    seen = []

    def count(conn, cursor, statement, *rest):
        seen.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        counts = sync.apply_page(shop, page, ctx_)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)
    assert {k: counts[k] for k in ("created", "updated", "unchanged", "rejected", "rejects")} == {
        "created": 0, "updated": 0, "unchanged": 30, "rejected": 0, "rejects": {}}
    assert sorted(counts["current"]) == sorted(o.platform_order_id for o in page)
    assert len([q for q in seen if "oms_order" in q]) == 1 and len(seen) == 1, seen


def test_orders_stored_with_the_old_checksum_stay_unchanged(ctx, ids):
    """Orders synced before the checksum changed (JSON + SHA-256) are not re-applied."""
    from app.extensions import db
    from app.models import Order, OrderEvent, Shop
    from app.services import sync

    redis.Redis.from_url(TEST_REDIS_URL).delete(f"oms:sync:shop:{ids['shops']['A']}")
    shop = db.session.get(Shop, ids["shops"]["A"])
    shop.app_key, shop.sync_checkpoint, shop.backfill_days = "scripted", None, 1
    db.session.commit()
    client = ScriptedClient([po(f"L{i}") for i in range(3)])
    sync.sync_shop(shop.id, now=NOW, client=client)
    for o in db.session.scalars(select(Order).where(Order.platform_order_id.like("L%"))):
        o.platform_hash = sync.legacy_payload_hash(client.orders[o.platform_order_id])
    db.session.get(Shop, ids["shops"]["A"]).sync_checkpoint = None
    db.session.commit()
    events = db.session.query(OrderEvent).count()
    run = sync.sync_shop(ids["shops"]["A"], now=NOW, client=client)
    assert (run.created, run.updated, run.unchanged) == (0, 0, 3)
    assert db.session.query(OrderEvent).count() == events


def test_a_shop_is_due_before_its_interval_so_runs_stay_within_it(ctx, ids):
    """With the dispatcher every 5 s, a 60 s shop is due from 50 s after its last run, so
    two runs start at most 55 s apart (an order is in the next run within the interval)."""
    from app.extensions import db
    from app.models import Shop, SyncRun
    from app.models.types import utcnow
    from app.services import sync

    shop = db.session.get(Shop, ids["shops"]["A"])
    shop.app_key, shop.sync_interval_seconds, shop.sync_not_before = "scripted", 60, None
    started = utcnow()
    db.session.add(SyncRun(shop_id=shop.id, trigger="schedule", status="success", started_at=started))
    db.session.commit()
    assert shop.id not in sync.due_shops(now=started + dt.timedelta(seconds=45))
    assert shop.id in sync.due_shops(now=started + dt.timedelta(seconds=50))


def test_two_shops_synced_at_once_with_the_same_new_buyer_both_succeed(pg_url, tmp_path, monkeypatch):
    """One sync job per shop on two workers: both pages bring the same new buyer. The second
    waits for the first page's commit (an advisory lock per customer key) and then finds the
    customer, instead of inserting it again and failing on its unique phone hash."""
    import threading
    import time

    from flask_migrate import upgrade

    from app.extensions import db
    from app.models import Customer, Shop
    from app.services import orders, setup, sync

    app = make_app(tmp_path / "unused.db", SQLALCHEMY_DATABASE_URI=pg_url)
    phone = "13712345678"
    with app.app_context():
        upgrade()
        setup.initialise(admin_password=world.ADMIN_PASSWORD)
        world.build()
        shop_ids = {}
        for name, key in (("A店-淘宝", "A"), ("B店-拼多多", "B")):
            shop = db.session.scalar(select(Shop).where(Shop.name == name))
            shop.app_key, shop.sync_checkpoint, shop.backfill_days = "scripted", None, 1
            shop_ids[key] = shop.id
        db.session.commit()
    r = redis.Redis.from_url(TEST_REDIS_URL)
    r.delete(*[f"oms:sync:shop:{i}" for i in shop_ids.values()])
    written, release = threading.Event(), threading.Event()
    write_new = sync._write_new

    def held_write(plans, keys):  # shop A's page stays uncommitted, its new customer inserted
        write_new(plans, keys)
        if threading.current_thread().name == "sync-A":
            written.set()
            release.wait(10)

    monkeypatch.setattr(sync, "_write_new", held_write)
    results = {}

    def run(key):
        with app.app_context():
            try:
                done = sync.sync_shop(shop_ids[key], now=NOW, client=ScriptedClient(
                    [po(f"C{key}1", receiver_phone=phone)]))
                results[key] = (done.status, done.error, done.created)
            except Exception as exc:  # what a failed job would show
                results[key] = ("raised", repr(exc), 0)

    threads = {k: threading.Thread(target=run, args=(k,), name=f"sync-{k}") for k in "AB"}
    threads["A"].start()
    assert written.wait(10)
    threads["B"].start()
    time.sleep(0.5)  # B is waiting for A's page now
    release.set()
    for t in threads.values():
        t.join(20)
    try:
        assert results == {"A": ("success", None, 1), "B": ("success", None, 1)}
        with app.app_context():
            [customer] = db.session.scalars(select(Customer).where(Customer.phone_hash == orders.phone_hash(phone)))
            assert customer.order_count == 2
    finally:
        _dispose(app)


def test_a_buyer_an_import_commits_meanwhile_is_found_when_the_batch_is_applied_again(pg_url, tmp_path,
                                                                                     monkeypatch):
    """PostgreSQL: right after the sync looked a new buyer up (not there), another writer
    that does not take the sync's customer locks (an import) commits that buyer. The batch
    meets oms_customer's unique phone hash for real, is rolled back to its savepoint and
    applied again, and finds the buyer: the run succeeds and nothing is written twice."""
    from flask_migrate import upgrade

    from app.extensions import db
    from app.models import Customer, Order, Shop
    from app.services import bulk_orders, orders, setup, sync

    app = make_app(tmp_path / "unused.db", SQLALCHEMY_DATABASE_URI=pg_url)
    phone = "13755556666"
    lookups = buyer_committed_after_first_lookup(monkeypatch, bulk_orders.BulkWriter, pg_url, phone)
    try:
        with app.app_context():
            upgrade()
            setup.initialise(admin_password=world.ADMIN_PASSWORD)
            world.build()
            shop = db.session.scalar(select(Shop).where(Shop.name == "A店-淘宝"))
            shop.app_key, shop.sync_checkpoint, shop.backfill_days = "scripted", None, 1
            db.session.commit()
            redis.Redis.from_url(TEST_REDIS_URL).delete(f"oms:sync:shop:{shop.id}")
            run = sync.sync_shop(shop.id, now=NOW, client=ScriptedClient(
                [po(f"CI{k}", receiver_phone=phone) for k in range(3)]))
            assert (run.status, run.error, run.created) == ("success", None, 3)
            assert len(lookups) >= 2  # the batch was applied again
            [customer] = db.session.scalars(select(Customer).where(Customer.phone_hash == orders.phone_hash(phone)))
            assert customer.order_count == 3
            assert db.session.scalar(select(sa.func.count()).select_from(Order).where(
                Order.shop_id == shop.id, Order.platform_order_id.like("CI%"))) == 3
    finally:
        _dispose(app)
