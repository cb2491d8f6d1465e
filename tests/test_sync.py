"""The sync engine against a scripted in-memory platform (the end-to-end tests
against the sandbox are in test_sync_sandbox.py)."""
from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pytest
import redis
from sqlalchemy import func, select

from app.extensions import db
from app.models import Order, OrderEvent, Shop, SyncReject, SyncRun
from app.platforms.base import Page, PlatformClient, PlatformError, PlatformLine, PlatformOrder
from app.services import order_counts, sync
from tests.conftest import TEST_REDIS_URL

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def po(pid, status="to_audit", modified=None, **kw):
    data = dict(platform_order_id=pid, platform_status=status.upper(), status=status,
                modified_at=modified or NOW - dt.timedelta(hours=1), paid_at=NOW - dt.timedelta(hours=2),
                created_at=NOW - dt.timedelta(hours=3), paid_amount=Decimal("99.00"),
                receiver_name="周八", receiver_phone="13511112222", receiver_province="江苏省",
                receiver_city="南京市", receiver_district="玄武区", receiver_address="中山路1号",
                lines=[PlatformLine(platform_line_id="1", title="纯棉T恤", quantity=1, price=Decimal("99.00"),
                                    paid_amount=Decimal("99.00"), merchant_code="TS-BLK-L")])
    data.update(kw)
    return PlatformOrder(**data)


class ScriptedClient(PlatformClient):
    """Serves a dict of orders by modified time, in pages, with optional faults."""

    platform = "taobao"
    max_window = dt.timedelta(hours=6)
    overlap = dt.timedelta(minutes=2)

    def __init__(self, orders=(), page_size=2, faults=None):
        self.orders = {o.platform_order_id: o for o in orders}
        self.page_size = page_size
        self.faults = list(faults or [])
        self.calls = []
        self.call_policy = None

    def fetch_changed(self, start, end, page_size=100):
        self.calls.append((start, end))
        # Like a gateway call: faults go through the engine's retry policy.
        (self.call_policy or (lambda fn: fn()))(self._maybe_fail)
        rows = sorted((o for o in self.orders.values() if start <= o.modified_at < end),
                      key=lambda o: o.modified_at)
        for i in range(0, len(rows), self.page_size):
            yield Page(orders=rows[i:i + self.page_size], page_no=i // self.page_size + 1)

    def _maybe_fail(self):
        if self.faults:
            fault = self.faults.pop(0)
            if fault is not None:
                raise fault

    def fetch_order(self, platform_order_id):
        return self.orders[platform_order_id]

    def ship(self, *a):
        raise AssertionError("not used")

    def push_stock(self, *a, **k):
        raise AssertionError("not used")


@pytest.fixture
def shop_id(ctx, ids):
    redis.Redis.from_url(TEST_REDIS_URL).delete(*[f"oms:sync:shop:{i}" for i in range(1, 10)])
    shop = db.session.get(Shop, ids["shops"]["A"])
    shop.sync_checkpoint = None
    shop.backfill_days = 1
    shop.app_key = "scripted"  # shops without credentials are never scheduled
    db.session.commit()
    return shop.id


def _orders(shop_id):
    return {o.platform_order_id: o for o in db.session.scalars(select(Order).where(Order.shop_id == shop_id))}


def test_first_sync_backfills_and_advances_checkpoint(shop_id):
    client = ScriptedClient([po(f"T{i}", modified=NOW - dt.timedelta(hours=i)) for i in range(1, 8)])
    run = sync.sync_shop(shop_id, now=NOW, client=client, sleep=lambda s: None)
    assert run.status == "success" and (run.fetched, run.created) == (7, 7)
    assert db.session.get(Shop, shop_id).sync_checkpoint == NOW
    assert client.calls[0][0] == NOW - dt.timedelta(days=1)
    assert all(end - start <= client.max_window for start, end in client.calls)
    order = _orders(shop_id)["T3"]
    assert order.status == "to_audit" and order.paid_amount == Decimal("99.00")
    assert order.receiver_phone == "13511112222" and order.lines[0].sku is not None


def test_resync_with_no_change_skips_everything(shop_id):
    client = ScriptedClient([po(f"T{i}") for i in range(5)])
    sync.sync_shop(shop_id, now=NOW, client=client)
    events = db.session.query(OrderEvent).count()
    db.session.get(Shop, shop_id).sync_checkpoint = None
    db.session.commit()
    run = sync.sync_shop(shop_id, now=NOW, client=client)
    assert (run.fetched, run.created, run.updated, run.unchanged) == (5, 0, 0, 5)
    assert db.session.query(OrderEvent).count() == events


def test_interrupted_sync_resumes_to_exactly_the_platform_set(shop_id, monkeypatch):
    from flask import current_app

    monkeypatch.setitem(current_app.config, "OMS_SYNC_BATCH_ORDERS", 1)  # a batch per window: some commit
    client = ScriptedClient([po(f"T{i:02d}", modified=NOW - dt.timedelta(minutes=20 * i + 1)) for i in range(60)],
                            page_size=3)
    run = sync.sync_shop(shop_id, now=NOW, client=client, stop_after_pages=4)
    assert run.status == "failed" and run.error == "同步被中断"
    partial = db.session.get(Shop, shop_id).sync_checkpoint
    assert partial is None or partial < NOW
    # The platform keeps changing meanwhile.
    client.orders["T05"] = po("T05", status="shipped", modified=NOW - dt.timedelta(minutes=1))
    run = sync.sync_shop(shop_id, now=NOW, client=client)
    assert run.status == "success"
    got = _orders(shop_id)
    platform_ids = set(client.orders)
    assert platform_ids <= set(got)
    assert db.session.execute(select(func.count()).select_from(Order).where(
        Order.shop_id == shop_id, Order.platform_order_id.in_(platform_ids))).scalar() == len(platform_ids)
    assert got["T05"].status == "shipped"
    for pid, p in client.orders.items():
        assert got[pid].platform_hash == sync.payload_hash(p)


def test_a_batch_of_windows_keeps_what_was_fetched_before_a_failing_window(shop_id, monkeypatch):
    """Windows are applied a batch at a time. When a window's call finally fails, the windows
    fetched before it in the same batch are applied and committed with the checkpoint at
    the last of them; a re-run reads on from there."""
    from flask import current_app

    monkeypatch.setitem(current_app.config, "OMS_SYNC_BATCH_ORDERS", 100)  # all windows in one batch
    start = NOW - dt.timedelta(days=1)  # backfill_days = 1: four 6-hour windows
    client = ScriptedClient([po(f"W{w}{k}", modified=start + dt.timedelta(hours=6 * w + k + 1))
                             for w in range(4) for k in range(3)], page_size=2)
    client.faults = [None, None, PlatformError("27", "淘宝授权已失效，请重新授权", kind="auth")]
    run = sync.sync_shop(shop_id, now=NOW, client=client, sleep=lambda s: None)
    assert run.status == "failed" and run.error == "淘宝授权已失效，请重新授权"
    assert sorted(p for p in _orders(shop_id) if p.startswith("W")) == ["W00", "W01", "W02", "W10", "W11", "W12"]
    assert run.created == 6 and run.pages == 4
    shop = db.session.get(Shop, shop_id)
    assert shop.sync_checkpoint == start + dt.timedelta(hours=12)
    assert shop.last_sync_error == "淘宝授权已失效，请重新授权"
    run = sync.sync_shop(shop_id, now=NOW, client=client, sleep=lambda s: None)
    assert run.status == "success" and run.created == 6
    assert len([p for p in _orders(shop_id) if p.startswith("W")]) == 12
    assert db.session.get(Shop, shop_id).sync_checkpoint == NOW


def test_batches_are_fetched_up_to_two_ahead_of_the_one_applied(shop_id, monkeypatch):
    """While a batch is applied the fetch thread goes on, and stops FETCH_AHEAD batches
    ahead of it; every batch is still applied, in order, and the run ends normally."""
    from flask import current_app

    monkeypatch.setitem(current_app.config, "OMS_SYNC_BATCH_ORDERS", 1)  # a batch per window
    start = NOW - dt.timedelta(days=1)  # four 6-hour windows
    client = ScriptedClient([po(f"A{w}", modified=start + dt.timedelta(hours=6 * w + 1)) for w in range(4)])
    applied, seen = [], []
    real_apply = sync._apply_batch

    def slow_apply(shop, listed, ctx, bulk):
        if not applied:  # hold the first batch until the fetch thread has gone as far as it will
            deadline = time.monotonic() + 5
            while len(client.calls) < 1 + sync.FETCH_AHEAD and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.2)  # had it gone further, it would have by now
            seen.append(len(client.calls))
        applied.append([po.platform_order_id for po in listed])
        return real_apply(shop, listed, ctx, bulk)

    monkeypatch.setattr(sync, "_apply_batch", slow_apply)
    run = sync.sync_shop(shop_id, now=NOW, client=client, sleep=lambda s: None)
    assert run.status == "success" and run.created == 4
    assert seen == [1 + sync.FETCH_AHEAD]  # the batch being applied and two more, not the fourth
    assert applied == [["A0"], ["A1"], ["A2"], ["A3"]]
    assert db.session.get(Shop, shop_id).sync_checkpoint == NOW


def test_rate_limit_and_5xx_delay_but_lose_nothing(shop_id):
    faults = [PlatformError("7", "淘宝接口限流", kind="rate_limit", retry_after=3),
              PlatformError("500", "服务器错误", kind="server"), None,
              PlatformError("500", "服务器错误", kind="server")]
    client = ScriptedClient([po(f"T{i}", modified=NOW - dt.timedelta(hours=i)) for i in range(1, 6)],
                            faults=faults)
    slept = []
    run = sync.sync_shop(shop_id, now=NOW, client=client, sleep=slept.append)
    assert run.status == "success" and run.created == 5 and run.retries == 3
    assert 3 in slept  # the ban time was honoured


def test_long_ban_ends_the_run_and_defers_the_next(shop_id):
    client = ScriptedClient([po("T1")], faults=[PlatformError("7", "淘宝接口限流，请 600 秒后重试",
                                                               kind="rate_limit", retry_after=600)])
    run = sync.sync_shop(shop_id, now=NOW, client=client, sleep=lambda s: None)
    shop = db.session.get(Shop, shop_id)
    assert run.status == "failed" and "限流" in shop.last_sync_error
    assert shop.sync_not_before is not None and shop.id not in sync.due_shops()
    assert shop.id in sync.due_shops(now=shop.sync_not_before + dt.timedelta(seconds=61))


def test_auth_error_is_shown_on_the_shop_in_zh(shop_id):
    client = ScriptedClient([po("T1")], faults=[PlatformError("27", "淘宝会话无效（code 27）：请重新授权店铺",
                                                               kind="auth")])
    run = sync.sync_shop(shop_id, now=NOW, client=client, sleep=lambda s: None)
    assert run.status == "failed" and run.retries == 0
    assert db.session.get(Shop, shop_id).last_sync_error == "淘宝会话无效（code 27）：请重新授权店铺"


def test_resync_never_moves_a_shipped_order_back(shop_id):
    client = ScriptedClient([po("T1", status="to_audit")])
    sync.sync_shop(shop_id, now=NOW, client=client)
    order = _orders(shop_id)["T1"]
    from app.services import order_status

    order_status.apply(order, "audit", source="user")
    order.carrier_id, order.tracking_number = 1, "SF100"
    order_status.apply(order, "ship", source="user")
    db.session.commit()
    client.orders["T1"] = po("T1", status="to_audit", modified=NOW - dt.timedelta(minutes=5), buyer_message="改")
    sync.sync_shop(shop_id, now=NOW + dt.timedelta(minutes=1), client=client)
    db.session.expire_all()
    assert _orders(shop_id)["T1"].status == "shipped"


def test_platform_refund_holds_then_full_refund_closes(shop_id):
    client = ScriptedClient([po("T1", status="to_audit", hold_reason="refunding")])
    sync.sync_shop(shop_id, now=NOW, client=client)
    order = _orders(shop_id)["T1"]
    assert order.is_held and order.active_hold_reasons == ["refunding"]
    client.orders["T1"] = po("T1", status="closed", refund_closed=True, modified=NOW - dt.timedelta(minutes=1))
    sync.sync_shop(shop_id, now=NOW + dt.timedelta(minutes=1), client=client)
    db.session.expire_all()
    order = _orders(shop_id)["T1"]
    assert order.status == "closed" and not order.is_held


def test_a_platform_hold_is_released_when_the_platform_ships_the_order_without_it(shop_id):
    """The buyer withdrew the refund and the seller shipped in the platform's back-end: the
    order follows to 已发货 and its 退款中 hold goes (only the sync may release it)."""
    client = ScriptedClient([po("T1", status="to_audit", hold_reason="refunding")])
    sync.sync_shop(shop_id, now=NOW, client=client)
    assert _orders(shop_id)["T1"].active_hold_reasons == ["refunding"]
    client.orders["T1"] = po("T1", status="shipped", modified=NOW - dt.timedelta(minutes=1))
    sync.sync_shop(shop_id, now=NOW + dt.timedelta(minutes=1), client=client)
    db.session.expire_all()
    order = _orders(shop_id)["T1"]
    assert order.status == "shipped" and not order.is_held and order.active_hold_reasons == []
    assert any(e.action == "release" and e.note == "平台已解除" for e in order.events)
    assert order_counts.check() == []


def test_unmatched_code_is_stored_with_a_hold(shop_id):
    p = po("T1")
    p.lines[0].merchant_code = "UNKNOWN-1"
    sync.sync_shop(shop_id, now=NOW, client=ScriptedClient([p]))
    order = _orders(shop_id)["T1"]
    assert order.lines[0].merchant_code == "UNKNOWN-1" and order.active_hold_reasons == ["unmatched_sku"]


def test_two_syncs_of_one_shop_do_not_overlap(shop_id):
    lock = sync._lock(shop_id)
    assert lock.acquire()
    try:
        with pytest.raises(sync.SyncBusy):
            sync.sync_shop(shop_id, now=NOW, client=ScriptedClient([po("T1")]))
    finally:
        lock.release()
    assert db.session.query(SyncRun).filter_by(shop_id=shop_id).count() == 0


@pytest.mark.parametrize("taken", [True, False])
def test_a_run_that_lost_its_lock_to_another_run_stops_before_writing_the_next_batch(shop_id, monkeypatch, taken):
    """A run renews its lock before each batch and while it waits. If the lock expired
    anyway (a stall longer than its timeout), this run stops, whether another run holds
    the lock now or has come and gone: the batch in hand is not written, and what was
    committed before stays (checkpoint at the last committed batch)."""
    from flask import current_app

    monkeypatch.setitem(current_app.config, "OMS_SYNC_BATCH_ORDERS", 1)
    key = f"oms:sync:shop:{shop_id}"
    orders = [po(f"L{i}", modified=NOW - dt.timedelta(hours=20 - 6 * i)) for i in range(3)]

    real, calls = sync._keep_lock, []

    def keep(lock):  # 1: before batch 1 is applied, 2: before it is committed, 3: before batch 2
        calls.append(1)
        if len(calls) == 3:  # meanwhile the lock expired (and another run took it)
            if taken:
                redis.Redis.from_url(TEST_REDIS_URL).set(key, "another-run")
            else:
                redis.Redis.from_url(TEST_REDIS_URL).delete(key)
        real(lock)

    monkeypatch.setattr(sync, "_keep_lock", keep)
    run = sync.sync_shop(shop_id, now=NOW, client=ScriptedClient(orders), sleep=lambda s: None)
    assert run.status == "failed" and "同步锁已超时" in run.error and "本次同步已停止" in run.error
    assert {pid for pid in _orders(shop_id) if pid.startswith("L")} == {"L0"}
    assert db.session.get(Shop, shop_id).sync_checkpoint == NOW - dt.timedelta(hours=18)
    assert db.session.get(Shop, shop_id).last_sync_error is None
    assert redis.Redis.from_url(TEST_REDIS_URL).get(key) == (b"another-run" if taken else None)  # not the loser's
    redis.Redis.from_url(TEST_REDIS_URL).delete(key)


def test_the_lock_is_renewed_for_each_batch(shop_id, monkeypatch):
    from flask import current_app

    monkeypatch.setitem(current_app.config, "OMS_SYNC_BATCH_ORDERS", 1)
    key = f"oms:sync:shop:{shop_id}"
    r = redis.Redis.from_url(TEST_REDIS_URL)
    real, renewed = sync._keep_lock, []

    def keep(lock):
        assert r.pexpire(key, 5000)  # as if most of the timeout had passed; still this run's lock
        real(lock)
        renewed.append(r.pttl(key))

    monkeypatch.setattr(sync, "_keep_lock", keep)
    client = ScriptedClient([po(f"R{i}", modified=NOW - dt.timedelta(hours=20 - 6 * i)) for i in range(3)])
    run = sync.sync_shop(shop_id, now=NOW, client=client, sleep=lambda s: None)
    assert run.status == "success" and run.created == 3
    assert len(renewed) >= 3 and all(ttl > 100_000 for ttl in renewed)  # back to the full 120 s each time


def test_a_shop_without_backfill_starts_from_now(shop_id):
    shop = db.session.get(Shop, shop_id)
    shop.backfill_days = 0
    db.session.commit()
    client = ScriptedClient([po("OLD-1", modified=NOW - dt.timedelta(hours=1))])
    run = sync.sync_shop(shop_id, now=NOW, client=client, sleep=lambda s: None)
    assert run.status == "success" and run.fetched == 0
    assert db.session.get(Shop, shop_id).sync_checkpoint == NOW
    client.orders["NEW-1"] = po("NEW-1", modified=NOW + dt.timedelta(minutes=1))
    run = sync.sync_shop(shop_id, now=NOW + dt.timedelta(minutes=2), client=client, sleep=lambda s: None)
    assert run.status == "success" and (run.fetched, run.created) == (1, 1) and "OLD-1" not in _orders(shop_id)
    assert "NEW-1" in _orders(shop_id)


def test_masked_platform_phone_is_kept_not_refused(shop_id):
    sync.sync_shop(shop_id, now=NOW, client=ScriptedClient([po("T1", receiver_phone="151********")]))
    assert _orders(shop_id)["T1"].receiver_phone == "151********"


def test_resync_updates_lines_cost_holds_and_spend(shop_id):
    two = [PlatformLine(platform_line_id="1", title="T恤", quantity=1, price=Decimal("49.00"),
                        paid_amount=Decimal("49.00"), merchant_code="TS-BLK-L"),
           PlatformLine(platform_line_id="2", title="T恤白", quantity=1, price=Decimal("50.00"),
                        paid_amount=Decimal("50.00"), merchant_code="TS-WHT-M")]
    client = ScriptedClient([po("T1", lines=two)])
    sync.sync_shop(shop_id, now=NOW, client=client)
    order = _orders(shop_id)["T1"]
    spent = order.customer.total_spent
    assert order.cost_amount == Decimal("49.00")  # 25 + 24
    changed = [two[0], PlatformLine(platform_line_id="3", title="新品", quantity=2, price=Decimal("10.00"),
                                    paid_amount=Decimal("20.00"), merchant_code="UNKNOWN-9")]
    client.orders["T1"] = po("T1", lines=changed, paid_amount=Decimal("69.00"),
                             modified=NOW - dt.timedelta(minutes=1))
    sync.sync_shop(shop_id, now=NOW + dt.timedelta(minutes=1), client=client)
    db.session.expire_all()
    order = _orders(shop_id)["T1"]
    assert sorted(ln.platform_line_id for ln in order.lines) == ["1", "3"]
    assert order.cost_amount == Decimal("25.00")
    assert "unmatched_sku" in order.active_hold_reasons
    assert order.customer.total_spent == spent - Decimal("99.00") + Decimal("69.00")


def test_the_platform_changing_the_goods_of_an_audited_order_sends_it_back_to_audit(shop_id):
    """Same oid, another SKU (the buyer changed size before shipping): every line field
    follows, and the stock reserved for the old goods is released; the order goes back to
    待审核, and 审单 reserves the new goods. 发货 then deducts what it should."""
    from app.services import orders, stock

    client = ScriptedClient([po("G1")])
    sync.sync_shop(shop_id, now=NOW, client=client)
    order = _orders(shop_id)["G1"]
    orders.transition(order.id, "audit")
    order = _orders(shop_id)["G1"]
    assert order.status == "to_ship" and _reserved_codes(order.id) == {"TS-BLK-L": 1}
    changed = [PlatformLine(platform_line_id="1", title="纯棉T恤 白", quantity=2, price=Decimal("49.50"),
                            paid_amount=Decimal("99.00"), merchant_code="TS-WHT-M", spec="白色 M")]
    client.orders["G1"] = po("G1", lines=changed, modified=NOW - dt.timedelta(minutes=1))
    run = sync.sync_shop(shop_id, now=NOW + dt.timedelta(minutes=1), client=client)
    assert run.updated == 1
    db.session.expire_all()
    order = _orders(shop_id)["G1"]
    line = order.lines[0]
    assert (line.merchant_code, line.sku.merchant_code, line.title, line.spec, line.quantity) == (
        "TS-WHT-M", "TS-WHT-M", "纯棉T恤 白", "白色 M", 2)
    assert line.cost_price == line.sku.cost_price and order.cost_amount == line.sku.cost_price * 2
    assert order.status == "to_audit" and _reserved_codes(order.id) == {}
    assert any(e.action == "unaudit" and "平台修改了订单商品" in (e.note or "") for e in order.events)
    orders.transition(order.id, "audit")
    assert _reserved_codes(order.id) == {"TS-WHT-M": 2}
    assert stock.check_ledger() == [] and order_counts.check() == []


def test_a_shop_that_reserves_at_payment_reserves_the_new_goods_at_once(shop_id):
    from app.services import stock

    shop = db.session.get(Shop, shop_id)
    shop.reserve_at = "payment"
    db.session.commit()
    client = ScriptedClient([po("G3")])
    sync.sync_shop(shop_id, now=NOW, client=client)
    order = _orders(shop_id)["G3"]
    assert order.status == "to_audit" and _reserved_codes(order.id) == {"TS-BLK-L": 1}
    changed = [PlatformLine(platform_line_id="1", title="纯棉T恤 白", quantity=3, price=Decimal("33.00"),
                            paid_amount=Decimal("99.00"), merchant_code="TS-WHT-M")]
    client.orders["G3"] = po("G3", lines=changed, modified=NOW - dt.timedelta(minutes=1))
    sync.sync_shop(shop_id, now=NOW + dt.timedelta(minutes=1), client=client)
    db.session.expire_all()
    order = _orders(shop_id)["G3"]
    assert order.status == "to_audit" and _reserved_codes(order.id) == {"TS-WHT-M": 3}
    assert stock.check_ledger() == []


def test_unchanged_goods_keep_the_reservation(shop_id):
    from app.services import orders

    client = ScriptedClient([po("G2")])
    sync.sync_shop(shop_id, now=NOW, client=client)
    orders.transition(_orders(shop_id)["G2"].id, "audit")
    client.orders["G2"] = po("G2", receiver_address="中山路2号", modified=NOW - dt.timedelta(minutes=1))
    sync.sync_shop(shop_id, now=NOW + dt.timedelta(minutes=1), client=client)
    db.session.expire_all()
    order = _orders(shop_id)["G2"]
    assert order.receiver_address == "中山路2号" and order.status == "to_ship"
    assert _reserved_codes(order.id) == {"TS-BLK-L": 1}


def test_over_long_platform_texts_are_stored_cut_not_refused(shop_id):
    """An over-long address or spec from the platform must not stop the shop's sync."""
    lines = [PlatformLine(platform_line_id="1", title="T" * 300, quantity=1, price=Decimal("99.00"),
                          paid_amount=Decimal("99.00"), merchant_code="TS-BLK-L", spec="颜色:" + "黑" * 300)]
    client = ScriptedClient([po("X1", receiver_address="文" * 600, buyer_nick="n" * 150, lines=lines)])
    run = sync.sync_shop(shop_id, now=NOW, client=client)
    assert run.status == "success" and run.created == 1
    order = _orders(shop_id)["X1"]
    assert order.receiver_address == "文" * 500 and order.buyer_nick == "n" * 100
    assert order.lines[0].title == "T" * 255 and len(order.lines[0].spec) == 255


def _bad_line(quantity=0):
    return [PlatformLine(platform_line_id="1", title="纯棉T恤", quantity=quantity, price=Decimal("99.00"),
                         paid_amount=Decimal("99.00"), merchant_code="TS-BLK-L")]


def test_a_platform_order_that_cannot_be_saved_is_recorded_and_the_sync_goes_on(shop_id):
    """One impossible order (a negative amount, a quantity of 0) must not stop the shop's
    sync on every run: the others are saved, the checkpoint advances, and the order is
    recorded with a zh reason naming it, the line and the field."""
    client = ScriptedClient([po("OK-1", modified=NOW - dt.timedelta(hours=3)),
                             po("BAD-1", paid_amount=Decimal("-5.00"), modified=NOW - dt.timedelta(hours=2)),
                             po("BAD-2", lines=_bad_line(0), modified=NOW - dt.timedelta(hours=2)),
                             po("OK-2", modified=NOW - dt.timedelta(hours=1))])
    run = sync.sync_shop(shop_id, now=NOW, client=client)
    assert run.status == "success" and run.created == 2 and run.rejected == 2
    assert {"OK-1", "OK-2"} <= set(_orders(shop_id)) and not {"BAD-1", "BAD-2"} & set(_orders(shop_id))
    assert "2 单平台订单无法保存" in run.error and "平台订单 BAD-1" in run.error
    shop = db.session.get(Shop, shop_id)
    assert shop.sync_checkpoint == NOW and "有 2 单平台订单无法保存" in shop.last_sync_error
    rejects = {r.platform_order_id: r for r in db.session.scalars(select(SyncReject))}
    assert set(rejects) == {"BAD-1", "BAD-2"}
    assert "「实付金额」" in rejects["BAD-1"].error and "不能为负数" in rejects["BAD-1"].error
    assert "第 1 行商品「数量」" in rejects["BAD-2"].error

    # Asked for again at the next run (never tried yet) and listed again (the overlap):
    # still refused, one record each, counted once in the run.
    run = sync.sync_shop(shop_id, now=NOW + dt.timedelta(minutes=1), client=client)
    assert run.status == "success" and run.rejected == 2
    assert db.session.scalar(select(func.count()).select_from(SyncReject)) == 2

    # The platform corrects one: saved on its next listing, its record gone, the shop's error
    # now counts the one left.
    client.orders["BAD-1"] = po("BAD-1", paid_amount=Decimal("5.00"), modified=NOW + dt.timedelta(minutes=1))
    run = sync.sync_shop(shop_id, now=NOW + dt.timedelta(minutes=2), client=client)
    assert run.status == "success" and run.created == 1 and run.rejected == 0 and run.error is None
    assert _orders(shop_id)["BAD-1"].paid_amount == Decimal("5.00")
    assert [r.platform_order_id for r in db.session.scalars(select(SyncReject))] == ["BAD-2"]
    assert "有 1 单平台订单无法保存" in db.session.get(Shop, shop_id).last_sync_error


def test_a_recorded_order_is_asked_for_again_after_an_hour_and_on_retry_now(shop_id):
    """Fixed without its modified time moving (or our checks changed): the run asks the
    platform for the recorded order whole every RETRY_AFTER, and 立即重试 makes it due now."""
    client = ScriptedClient([po("BAD-3", lines=_bad_line(0), modified=NOW - dt.timedelta(hours=1))])
    sync.sync_shop(shop_id, now=NOW, client=client)
    row = db.session.scalars(select(SyncReject)).one()
    assert row.last_tried_at is None and row.times_seen == 1
    fetched = []
    real_fetch = client.fetch_order
    client.fetch_order = lambda pid: fetched.append(pid) or real_fetch(pid)

    def run_at(minutes):
        return sync.sync_shop(shop_id, now=NOW + dt.timedelta(minutes=minutes), client=client)

    run = run_at(1)
    assert fetched == ["BAD-3"] and run.rejected == 1  # never tried yet: tried at once, still bad
    row = db.session.scalars(select(SyncReject)).one()
    assert row.last_tried_at == NOW + dt.timedelta(minutes=1) and row.times_seen == 2
    run_at(2)
    run_at(60)
    assert fetched == ["BAD-3"]  # tried within the hour: not asked for again
    run_at(61)
    assert fetched == ["BAD-3", "BAD-3"]  # an hour after the last try
    run_at(62 + 7 * 24 * 60)
    assert len(fetched) == 2  # a week after it was first seen: only 立即重试 asks again

    client.orders["BAD-3"] = po("BAD-3", modified=NOW - dt.timedelta(hours=1))  # same modified time
    assert sync.retry_rejects([row.id]) == [shop_id]
    run = run_at(63 + 7 * 24 * 60)
    assert len(fetched) == 3 and run.created == 1 and run.rejected == 0
    assert "BAD-3" in _orders(shop_id) and db.session.scalar(select(func.count()).select_from(SyncReject)) == 0
    assert db.session.get(Shop, shop_id).last_sync_error is None


def test_a_recorded_order_the_platform_cannot_give_stays_recorded_and_the_sync_goes_on(shop_id):
    client = ScriptedClient([po("BAD-4", lines=_bad_line(0)), po("OK-4")])
    sync.sync_shop(shop_id, now=NOW, client=client)
    del client.orders["BAD-4"]  # fetch_order: KeyError, not a PlatformError
    client.orders["OK-5"] = po("OK-5", modified=NOW + dt.timedelta(minutes=1))
    run = sync.sync_shop(shop_id, now=NOW + dt.timedelta(minutes=2), client=client)
    assert run.status == "success" and run.created == 1 and "OK-5" in _orders(shop_id)
    row = db.session.scalars(select(SyncReject)).one()
    assert row.platform_order_id == "BAD-4" and row.last_tried_at == NOW + dt.timedelta(minutes=2)


def test_a_changed_order_that_cannot_be_saved_is_held_until_the_platform_copy_can_be(shop_id):
    """The platform changed a stored order (perhaps refunded it) and the new copy cannot be
    saved: the stored copy stays as it was and is held (平台数据异常) so nobody ships it;
    the hold goes once the platform's copy can be saved, people cannot release it."""
    from app.services import batch_actions

    client = ScriptedClient([po("CH-1")])
    sync.sync_shop(shop_id, now=NOW, client=client)
    client.orders["CH-1"] = po("CH-1", lines=_bad_line(0), receiver_address="新地址",
                               modified=NOW + dt.timedelta(minutes=1))
    run = sync.sync_shop(shop_id, now=NOW + dt.timedelta(minutes=2), client=client)
    assert run.status == "success" and run.updated == 0 and run.rejected == 1
    db.session.expire_all()
    order = _orders(shop_id)["CH-1"]
    assert order.receiver_address == "中山路1号" and order.lines[0].quantity == 1
    assert order.active_hold_reasons == ["platform_data"]
    assert "第 1 行商品「数量」" in order.holds[0].note
    result = batch_actions.run("release", [order.id], {}, user_id=None)
    assert not result["ok"] and "「平台数据异常」需平台解除后由同步自动解除" in str(result)
    db.session.expire_all()
    assert _orders(shop_id)["CH-1"].active_hold_reasons == ["platform_data"]

    client.orders["CH-1"] = po("CH-1", receiver_address="新地址", modified=NOW + dt.timedelta(minutes=3))
    run = sync.sync_shop(shop_id, now=NOW + dt.timedelta(minutes=4), client=client)
    assert run.updated == 1 and run.rejected == 0
    db.session.expire_all()
    order = _orders(shop_id)["CH-1"]
    assert order.receiver_address == "新地址" and not order.is_held
    assert db.session.scalar(select(func.count()).select_from(SyncReject)) == 0


def test_a_platform_that_reverts_to_the_stored_copy_releases_the_hold(shop_id):
    original = po("CH-2")
    client = ScriptedClient([original])
    sync.sync_shop(shop_id, now=NOW, client=client)
    client.orders["CH-2"] = po("CH-2", paid_amount=Decimal("-1.00"), modified=NOW + dt.timedelta(minutes=1))
    sync.sync_shop(shop_id, now=NOW + dt.timedelta(minutes=2), client=client)
    assert _orders(shop_id)["CH-2"].active_hold_reasons == ["platform_data"]
    client.orders["CH-2"] = original  # byte for byte the stored copy: unchanged, never re-applied
    sync.retry_rejects([db.session.scalars(select(SyncReject)).one().id])
    run = sync.sync_shop(shop_id, now=NOW + dt.timedelta(minutes=3), client=client)
    assert run.unchanged >= 1 and run.rejected == 0
    db.session.expire_all()
    assert not _orders(shop_id)["CH-2"].is_held
    assert db.session.scalar(select(func.count()).select_from(SyncReject)) == 0


@pytest.mark.parametrize("bulk", [True, False])
def test_an_order_listed_twice_is_decided_by_its_last_copy(shop_id, bulk):
    """Backwards paging lists an order twice: a refused copy followed by a good one is
    saved and leaves no record; a good one followed by a refused one is saved, held and
    recorded. Both the bulk path and the per-order path."""
    bad, good = po("TW-1", lines=_bad_line(0)), po("TW-1", modified=NOW - dt.timedelta(minutes=30))
    bad2, good2 = po("TW-2", lines=_bad_line(0), modified=NOW - dt.timedelta(minutes=30)), po("TW-2")

    class Twice(ScriptedClient):
        def fetch_changed(self, start, end, page_size=100):
            if start <= NOW - dt.timedelta(hours=1) < end:
                yield Page(orders=[bad, good2], page_no=2)
                yield Page(orders=[good, bad2], page_no=1)

    run = sync.sync_shop(shop_id, now=NOW, client=Twice(), bulk=bulk)
    assert run.status == "success" and run.rejected == 1 and "TW-2" in run.error and "TW-1" not in run.error
    orders = _orders(shop_id)
    assert orders["TW-1"].lines[0].quantity == 1 and not orders["TW-1"].is_held
    assert orders["TW-2"].active_hold_reasons == ["platform_data"]
    assert [r.platform_order_id for r in db.session.scalars(select(SyncReject))] == ["TW-2"]


def _reserved_codes(order_id):
    from app.models import Sku
    from app.services import stock

    out = {}
    for (_w, sku_id), r in stock.reserved_by_order(order_id).items():
        if r:
            code = db.session.get(Sku, sku_id).merchant_code
            out[code] = out.get(code, 0) + r
    return out


class ListingClient(ScriptedClient):
    """Like a gateway client: every listed order carries the digest of its payload (here
    the digest of its repr), and is listed unparsed (Deferred) when the engine asks."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.defer_parsing = False
        self.parsed = []
        self.deferred_pages = 0

    def fetch_changed(self, start, end, page_size=100):
        import hashlib

        from app.platforms.base import Deferred

        for page in super().fetch_changed(start, end, page_size):
            items = []
            for o in page.orders:
                raw = hashlib.blake2b(repr(o).encode(), digest_size=16).hexdigest()
                if self.defer_parsing:
                    items.append(Deferred(o.platform_order_id, raw, self._parse, o))
                else:
                    items.append(self._parse(o))
                    items[-1].raw_digest = raw
            self.deferred_pages += self.defer_parsing
            yield Page(orders=items, page_no=page.page_no)

    def _parse(self, o):
        self.parsed.append(o.platform_order_id)
        import dataclasses

        return dataclasses.replace(o)


def test_resync_recognises_unchanged_payloads_unparsed_and_applies_changed_ones(shop_id):
    client = ListingClient([po(f"R{i}", modified=NOW - dt.timedelta(minutes=10 + i)) for i in range(6)])
    first = sync.sync_shop(shop_id, now=NOW, client=client)
    assert first.created == 6 and sorted(client.parsed) == [f"R{i}" for i in range(6)]
    stored = _orders(shop_id)["R1"].platform_hash
    assert len(stored) == 64 and stored[32:] == sync.payload_hash(client.orders["R1"])[:32]
    events = db.session.query(OrderEvent).count()
    client.orders["R2"] = po("R2", modified=NOW - dt.timedelta(minutes=12), receiver_address="新地址 2 号")
    db.session.get(Shop, shop_id).sync_checkpoint = None
    db.session.commit()
    client.parsed.clear()
    client.deferred_pages = 0
    run = sync.sync_shop(shop_id, now=NOW, client=client)
    assert (run.created, run.updated, run.unchanged) == (0, 1, 5)
    assert client.deferred_pages == 3 and client.parsed == ["R2"]  # only the changed one was parsed
    r2 = _orders(shop_id)["R2"]
    assert r2.receiver_address == "新地址 2 号"
    new_events = db.session.scalars(select(OrderEvent).order_by(OrderEvent.id).offset(events)).all()
    assert {e.order_id for e in new_events} == {r2.id}
    assert "receiver_address" in {e.field for e in new_events}


def test_orders_stored_with_the_content_checksum_stay_unchanged_when_listed_with_raw_digests(shop_id):
    """Orders synced before payload digests (platform_hash = payload_hash) are recognised
    by content; nothing is rewritten."""
    plain = ScriptedClient([po(f"P{i}") for i in range(4)])
    sync.sync_shop(shop_id, now=NOW, client=plain)
    stored = _orders(shop_id)
    assert {stored[pid].platform_hash for pid in plain.orders} == {sync.payload_hash(o) for o in plain.orders.values()}
    db.session.get(Shop, shop_id).sync_checkpoint = None
    db.session.commit()
    listing = ListingClient(plain.orders.values())
    run = sync.sync_shop(shop_id, now=NOW, client=listing)
    assert (run.created, run.updated, run.unchanged) == (0, 0, 4)


def test_a_new_checksum_version_re_applies_byte_identical_payloads(shop_id, monkeypatch):
    client = ListingClient([po(f"V{i}") for i in range(3)])
    sync.sync_shop(shop_id, now=NOW, client=client)
    db.session.get(Shop, shop_id).sync_checkpoint = None
    db.session.commit()
    monkeypatch.setattr(sync, "_CHECKSUM_VERSION", "s-next")  # parsing changed
    client.parsed.clear()
    run = sync.sync_shop(shop_id, now=NOW, client=client)
    assert run.updated == 3 and sorted(client.parsed) == ["V0", "V1", "V2"]


def test_bundle_lines_cost_their_components_when_synced_new_and_when_added_later(shop_id):
    """A bundle without its own cost price costs its components on a synced order, both
    for a new order (bulk path) and for a line a re-sync adds to it (per-order update)."""
    from app.models import BundleComponent, Product, Sku

    product = db.session.scalars(select(Product)).first()
    comps = {s.merchant_code: s for s in db.session.scalars(
        select(Sku).where(Sku.merchant_code.in_(["TS-BLK-L", "TS-WHT-M"])))}
    for code in ("SET-S1", "SET-S2"):
        bundle = Sku(product=product, merchant_code=code, name=f"套装{code}", cost_price=Decimal("0"),
                     sale_price=Decimal("99"), is_bundle=True)
        db.session.add(bundle)
        db.session.flush()
        db.session.add_all([BundleComponent(bundle_sku_id=bundle.id, component_sku_id=comps["TS-BLK-L"].id,
                                            quantity=2),
                            BundleComponent(bundle_sku_id=bundle.id, component_sku_id=comps["TS-WHT-M"].id,
                                            quantity=1)])
    db.session.commit()
    first = [PlatformLine(platform_line_id="1", title="套装", quantity=1, price=Decimal("99.00"),
                          paid_amount=Decimal("99.00"), merchant_code="SET-S1")]
    client = ScriptedClient([po("B1", lines=first)])
    sync.sync_shop(shop_id, now=NOW, client=client)
    order = _orders(shop_id)["B1"]
    assert [ln.cost_price for ln in order.lines] == [Decimal("74.00")]  # 2 × 25 + 24
    assert order.cost_amount == Decimal("74.00") and not order.is_held
    more = first + [PlatformLine(platform_line_id="2", title="套装2", quantity=2, price=Decimal("99.00"),
                                 paid_amount=Decimal("198.00"), merchant_code="SET-S2")]
    client.orders["B1"] = po("B1", lines=more, paid_amount=Decimal("297.00"), modified=NOW - dt.timedelta(minutes=1))
    sync.sync_shop(shop_id, now=NOW + dt.timedelta(minutes=1), client=client)
    db.session.expire_all()
    order = _orders(shop_id)["B1"]
    assert sorted((ln.platform_line_id, ln.cost_price) for ln in order.lines) == [
        ("1", Decimal("74.00")), ("2", Decimal("74.00"))]
    assert order.cost_amount == Decimal("222.00")


def test_the_rejected_orders_page_lists_them_in_zh_and_retries_now(app, ids, login):
    from rq.job import Job

    from app.jobs.queue import redis_conn
    from app.jobs.sync import job_id_for

    shop_a = ids["shops"]["A"]
    redis.Redis.from_url(TEST_REDIS_URL).delete(f"oms:sync:shop:{shop_a}", f"rq:job:{job_id_for(shop_a)}")
    with app.app_context():
        row = SyncReject(shop_id=shop_a, platform_order_id="BAD-9", error="第 1 行商品「数量」不能小于 1",
                         first_seen_at=NOW, last_seen_at=NOW, last_tried_at=NOW, times_seen=3)
        db.session.add(row)
        db.session.commit()
        rid = row.id
    ops = login("ops")
    html = ops.get("/syncrejectview/list/").get_data(as_text=True)
    assert "无法保存的平台订单" in html and "BAD-9" in html and "第 1 行商品「数量」不能小于 1" in html
    assert "立即重试" in html and "发现次数" in html and "Rejected" not in html and "Times seen" not in html
    resp = ops.post("/syncrejectview/action_post", data={"action": "retry_now", "rowid": [str(rid)]})
    assert resp.status_code == 302
    with app.app_context():
        assert db.session.get(SyncReject, rid).last_tried_at is None  # due at the shop's next run
        job = Job.fetch(job_id_for(shop_a), connection=redis_conn())
        assert job.args[:2] == (shop_a, "manual")
    assert login("cs").get("/syncrejectview/list/").status_code in (302, 403)


class LateIndexClient(ScriptedClient):
    """Like Taobao: newest first, read from the last page backwards. After the first page of
    a window with several pages, an order modified 10 s ago becomes visible (the platform's
    index was late with it): it enters at the head and pushes one order per page boundary
    into a page already read."""

    def __init__(self, orders, late, safety_lag):
        super().__init__(orders, page_size=2)
        self.late, self.safety_lag = late, safety_lag

    def fetch_changed(self, start, end, page_size=100):
        def rows():
            return sorted((o for o in self.orders.values() if start <= o.modified_at < end),
                          key=lambda o: o.modified_at, reverse=True)

        last = -(-len(rows()) // self.page_size)
        for page_no in range(last, 0, -1):
            if page_no < last and self.late is not None:
                self.orders[self.late.platform_order_id], self.late = self.late, None
            yield Page(orders=rows()[(page_no - 1) * self.page_size:page_no * self.page_size], page_no=page_no)


@pytest.mark.parametrize("lag_s,lost", [(60, set()), (0, {"H4"})])
def test_an_order_the_index_shows_late_does_not_push_another_out_of_a_backwards_read(shop_id, lag_s, lost):
    """With the checkpoint windows ending a minute ago (Taobao, JD), the late order falls
    in the last minute's window of its own and nothing is missed; ending at now, one order
    of the window being paged is lost for good (the check that the test can fail)."""
    listed = [po(f"H{h}", modified=NOW - dt.timedelta(hours=h)) for h in range(1, 6)]
    client = LateIndexClient(listed, po("LATE", modified=NOW - dt.timedelta(seconds=10)),
                             dt.timedelta(seconds=lag_s))
    sync.sync_shop(shop_id, now=NOW, client=client)
    sync.sync_shop(shop_id, now=NOW + dt.timedelta(minutes=1), client=client)
    stored = set(_orders(shop_id)) & {o.platform_order_id for o in client.orders.values()}
    assert stored == {"H1", "H2", "H3", "H4", "H5", "LATE"} - lost
    assert db.session.get(Shop, shop_id).sync_checkpoint == NOW + dt.timedelta(minutes=1, seconds=-lag_s)


def test_taobao_and_jd_keep_their_checkpoint_a_minute_behind():
    from app.platforms.jd import JdClient
    from app.platforms.pdd import PddClient
    from app.platforms.taobao import TaobaoClient

    assert TaobaoClient.safety_lag == JdClient.safety_lag == dt.timedelta(minutes=1)
    assert PddClient.safety_lag == dt.timedelta(minutes=3)


@pytest.mark.parametrize("deferred", [False, True])
def test_an_unreadable_platform_order_is_recorded_and_the_page_goes_on(shop_id, deferred):
    """A PDD order without updated_at (its own payload unreadable) no longer fails the page
    on every run: the others are saved and the order is recorded with the client's reason,
    listed parsed or (a shop with orders already) unparsed."""
    from app.platforms.pdd import PddClient, order_sn_of, parse_order

    def payload(sn, updated="2026-11-25 19:00:00"):
        return {"order_sn": sn, "order_status": 1, "refund_status": 1, "updated_at": updated,
                "created_time": "2026-11-25 18:00:00", "pay_amount": "99.00", "receiver_name": "周八",
                "receiver_phone": "13511112222", "province": "江苏省", "city": "南京市", "town": "玄武区",
                "address": "中山路1号", "item_list": [{"sku_id": "1", "goods_name": "纯棉T恤", "goods_count": 1,
                                                       "goods_price": "99.00", "outer_id": "TS-BLK-L"}]}

    class Listing(ScriptedClient):
        platform = "pdd"

        def __init__(self, payloads):
            super().__init__([])
            self.payloads = payloads
            self.client = PddClient("http://127.0.0.1:1", "k", "s", "t")
            self.client.defer_parsing = deferred

        def fetch_changed(self, start, end, page_size=100):
            if start <= NOW - dt.timedelta(hours=5) < end:
                yield Page(orders=[self.client._listed(p, order_sn_of, parse_order) for p in self.payloads],
                           page_no=1)

    client = Listing([payload("P-OK"), payload("P-BAD", updated=None) | {"created_time": None}])
    run = sync.sync_shop(shop_id, now=NOW, client=client)
    assert run.status == "success" and run.created == 1 and run.rejected == 1
    assert "P-OK" in _orders(shop_id) and "P-BAD" not in _orders(shop_id)
    row = db.session.scalars(select(SyncReject)).one()
    assert row.platform_order_id == "P-BAD" and row.error == "拼多多订单 P-BAD 缺少 updated_at"


def test_a_failed_run_does_not_wait_out_the_backoff_of_a_window_fetched_ahead(shop_id, monkeypatch):
    """The fetch thread may be backing off (a 20 s ban) when the run ends with an error:
    the backoff is cut short, so the worker is free at once and no lock outlives the run."""
    from flask import current_app

    monkeypatch.setitem(current_app.config, "OMS_SYNC_BATCH_ORDERS", 1)
    ban = PlatformError("7", "淘宝接口限流（code 7），请 20 秒后重试", kind="rate_limit", retry_after=20)
    client = ScriptedClient([po(f"B{i}", modified=NOW - dt.timedelta(hours=20 - 6 * i)) for i in range(3)],
                            faults=[None, ban, ban, ban])

    def broken(*a, **k):
        time.sleep(0.3)  # the fetch thread meets the ban meanwhile
        raise RuntimeError("数据库连接中断")

    monkeypatch.setattr(sync, "apply_page", broken)
    started = time.monotonic()
    with pytest.raises(RuntimeError):
        sync.sync_shop(shop_id, now=NOW, client=client)
    assert time.monotonic() - started < 10
    assert client.faults == [ban, ban]  # one 20 s backoff begun, then cut short: no further attempt


@pytest.mark.parametrize("env,expected", [({"OMS_SYNC_LOCK_SECONDS": "45", "OMS_SYNC_BATCH_ORDERS": "500"}, "45 500"),
                                          ({"OMS_SYNC_LOCK_SECONDS": "0"}, "10 2000")])
def test_the_sync_settings_come_from_the_environment(env, expected):
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([sys.executable, "-c", "import config; c = config.Config; "
                          "print(c.OMS_SYNC_LOCK_SECONDS, c.OMS_SYNC_BATCH_ORDERS)"],
                         cwd=Path(__file__).resolve().parent.parent, env={**os.environ, **env},
                         capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[-2] == expected
