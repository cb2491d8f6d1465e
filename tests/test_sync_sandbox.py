"""Sync end to end: the real clients against the sandbox gateways (signatures,
paging, faults), reconciled order by order with the sandbox's own checksums."""
from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
import redis
import requests
from sqlalchemy import select

from app.extensions import db
from app.models import Order, Shop, SyncRun
from app.sandbox.server import serve_in_thread
from app.sandbox.state import DEMO_SHOPS, SandboxState, order_checksum
from app.services import order_status, sync
from tests.conftest import TEST_REDIS_URL

TWINS = {"taobao": DEMO_SHOPS[1], "pdd": DEMO_SHOPS[3], "jd": DEMO_SHOPS[2]}


@pytest.fixture
def sandbox():
    state = SandboxState(shops=list(TWINS.values()), seed=7, rate_per_minute=0)
    base, stop = serve_in_thread(state)
    yield base, state
    stop()


@pytest.fixture
def shops(ctx, sandbox):
    """One OMS shop per platform, pointing at its sandbox twin."""
    base, _state = sandbox
    redis.Redis.from_url(TEST_REDIS_URL).delete(*[f"oms:sync:shop:{i}" for i in range(1, 20)])
    out = {}
    for platform, twin in TWINS.items():
        shop = Shop(name=f"沙箱-{twin.name}", platform=twin.platform, app_key=twin.app_key,
                    app_secret=twin.app_secret, access_token=twin.access_token,
                    gateway_url=base + twin.gateway_path, backfill_days=2, sync_interval_seconds=60)
        db.session.add(shop)
        db.session.commit()
        out[platform] = shop.id
    return out


def _seed(base, twin, n):
    resp = requests.post(f"{base}/_sandbox/shops/{twin.app_key}/orders", json={"count": n})
    assert resp.status_code == 201
    return resp.json()["orders"]


def _sandbox_orders(base, twin):
    return {o["order_id"]: o for o in requests.get(f"{base}/_sandbox/shops/{twin.app_key}/orders").json()["orders"]
            if o.get("visible", True)}


def _ours(shop_id):
    return {o.platform_order_id: o for o in db.session.scalars(select(Order).where(Order.shop_id == shop_id))}


def _checksum(o: Order) -> str:
    return order_checksum(o.platform_order_id, o.platform_status, f"{o.paid_amount:.2f}", o.receiver_name,
                          o.receiver_phone, o.receiver_province, o.receiver_city, o.receiver_district,
                          o.receiver_address, [(ln.merchant_code, ln.quantity) for ln in o.lines])


def _reconcile(base, platform, shop_id):
    theirs = _sandbox_orders(base, TWINS[platform])
    db.session.expire_all()
    ours = _ours(shop_id)
    assert set(ours) == set(theirs), (platform, set(theirs) ^ set(ours))
    for pid, view in theirs.items():
        assert _checksum(ours[pid]) == view["checksum"], (platform, pid)
    return theirs


@pytest.mark.parametrize("platform", ["taobao", "pdd", "jd"])
def test_sync_matches_the_sandbox_exactly(sandbox, shops, platform):
    base, state = sandbox
    state.seed_orders(TWINS[platform], 230, dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=30),
                      dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5))
    run = sync.sync_shop(shops[platform], trigger="manual")
    assert run.status == "success", run.error
    theirs = _reconcile(base, platform, shops[platform])
    assert run.created == len(theirs) and run.pages >= 3
    # A second run with no change on the platform rewrites nothing.
    again = sync.sync_shop(shops[platform], trigger="manual")
    assert again.status == "success" and again.created == 0 and again.updated == 0


def test_taobao_buyer_messages_and_flagged_seller_memos_arrive(sandbox, shops):
    """Every buyer message and every memo of a flagged trade (插旗备注) reaches the order,
    including a memo on a trade whose buyer left no message."""
    base, state = sandbox
    twin = TWINS["taobao"]
    now = dt.datetime.now(dt.timezone.utc)
    keys = state.seed_orders(twin, 120, now - dt.timedelta(hours=30), now - dt.timedelta(minutes=5))
    book = state.book(twin)
    quiet = [book.orders[k] for k in keys if not book.orders[k].message][:3]
    for o, memo in zip(quiet, ("送小样", "改发顺丰", "老客户")):
        o.memo, o.flag = memo, 2
    run = sync.sync_shop(shops["taobao"], trigger="manual")
    assert run.status == "success", run.error
    theirs = _reconcile(base, "taobao", shops["taobao"])
    ours = _ours(shops["taobao"])
    flagged = {pid for pid, v in theirs.items() if v["flag"]}
    assert {o.key for o in quiet} <= flagged
    for pid, view in theirs.items():
        assert ours[pid].buyer_message == (view["buyer_message"] or None), pid
        if pid in flagged:
            assert ours[pid].seller_memo == (view["seller_memo"] or None), pid
    assert [ours[o.key].seller_memo for o in quiet] == ["送小样", "改发顺丰", "老客户"]
    assert any(v["buyer_message"] for v in theirs.values())


@pytest.mark.parametrize("platform", ["taobao", "pdd"])
def test_interrupted_sync_then_rerun_ends_with_exactly_the_sandbox_set(sandbox, shops, platform, monkeypatch):
    from flask import current_app

    monkeypatch.setitem(current_app.config, "OMS_SYNC_BATCH_ORDERS", 1)  # a batch per window: stops early
    base, state = sandbox
    now = dt.datetime.now(dt.timezone.utc)
    state.seed_orders(TWINS[platform], 300, now - dt.timedelta(hours=40), now - dt.timedelta(minutes=5))
    run = sync.sync_shop(shops[platform], stop_after_pages=2)
    assert run.status == "failed"
    # The platform moves on meanwhile (PDD serves nothing newer than 3 minutes ago).
    state.seed_orders(TWINS[platform], 5, now - dt.timedelta(minutes=10), now - dt.timedelta(minutes=4))
    run = sync.sync_shop(shops[platform])
    assert run.status == "success", run.error
    _reconcile(base, platform, shops[platform])


def test_rate_limit_storm_and_5xx_bursts_lose_nothing(sandbox, shops):
    base, state = sandbox
    twin = TWINS["taobao"]
    now = dt.datetime.now(dt.timezone.utc)
    state.seed_orders(twin, 250, now - dt.timedelta(hours=40), now - dt.timedelta(minutes=5))
    requests.put(f"{base}/_sandbox/shops/{twin.app_key}/faults",
                 json={"rate_limit_every": 3, "rate_limit_ban": 1, "burst_5xx": 2, "change_between_pages": 3})
    slept = []

    def fake_sleep(seconds):
        slept.append(seconds)
        import time

        time.sleep(min(seconds, 1.1))

    run = sync.sync_shop(shops["taobao"], sleep=fake_sleep)
    assert run.status == "success", run.error
    assert run.retries >= 3 and any(s >= 1 for s in slept)
    requests.put(f"{base}/_sandbox/shops/{twin.app_key}/faults", json={})
    sync.sync_shop(shops["taobao"])  # picks up the orders the fault changed at "now"
    _reconcile(base, "taobao", shops["taobao"])


@pytest.mark.parametrize("platform,fault,needle", [
    ("taobao", {"invalid_session": True}, "会话"),
    ("pdd", {"invalid_session": True}, "access_token"),
    ("jd", {"invalid_session": True}, "令牌"),
])
def test_wrong_session_is_a_clear_zh_error_on_the_shop(sandbox, shops, platform, fault, needle):
    base, _ = sandbox
    requests.put(f"{base}/_sandbox/shops/{TWINS[platform].app_key}/faults", json=fault)
    run = sync.sync_shop(shops[platform], sleep=lambda s: None)
    shop = db.session.get(Shop, shops[platform])
    assert run.status == "failed" and run.retries == 0
    assert shop.last_sync_error and any("\u4e00" <= ch <= "\u9fff" for ch in shop.last_sync_error)
    assert needle in shop.last_sync_error or "授权" in shop.last_sync_error, shop.last_sync_error


@pytest.mark.parametrize("platform", ["taobao", "pdd", "jd"])
def test_bad_signature_is_a_clear_zh_error_on_the_shop(sandbox, shops, platform):
    shop = db.session.get(Shop, shops[platform])
    shop.app_secret = "wrong-secret"
    db.session.commit()
    run = sync.sync_shop(shops[platform], sleep=lambda s: None)
    assert run.status == "failed"
    assert "签名" in db.session.get(Shop, shops[platform]).last_sync_error


def test_two_workers_on_one_shop_do_not_double_process(sandbox, shops, app):
    base, state = sandbox
    now = dt.datetime.now(dt.timezone.utc)
    state.seed_orders(TWINS["pdd"], 120, now - dt.timedelta(hours=10), now - dt.timedelta(minutes=5))
    requests.put(f"{base}/_sandbox/shops/{TWINS['pdd'].app_key}/faults", json={"slow_ms": 100})
    results = []

    def worker():
        with app.app_context():
            try:
                run = sync.sync_shop(shops["pdd"])
                results.append(("ran", run.created))
            except sync.SyncBusy:
                results.append(("busy", 0))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r[0] for r in results) == ["busy", "ran"]
    assert db.session.query(SyncRun).filter_by(shop_id=shops["pdd"]).count() == 1
    requests.put(f"{base}/_sandbox/shops/{TWINS['pdd'].app_key}/faults", json={})
    _reconcile(base, "pdd", shops["pdd"])


def test_shipped_order_never_moves_back_and_write_back_reaches_the_platform(sandbox, shops):
    base, state = sandbox
    twin = TWINS["taobao"]
    created = _seed(base, twin, 1)[0]
    time.sleep(1.1)
    sync.sync_shop(shops["taobao"])
    order = _ours(shops["taobao"])[created["order_id"]]
    assert order.status == "to_audit"
    if order.is_held:
        order_status.release(order)
    order_status.apply(order, "audit")
    order.carrier_id, order.tracking_number = 1, "SF1000000001"
    order_status.apply(order, "ship")
    db.session.commit()
    assert order.writeback_status == "pending"
    from app.services import writeback

    assert writeback.write_back(order.id) == "done"
    recorded = requests.get(f"{base}/_sandbox/writebacks").json()["writebacks"]
    assert [(w["order_id"], w["tracking_number"], w["carrier_code"]) for w in recorded] == [
        (created["order_id"], "SF1000000001", "SF")]
    # The platform now says shipped; a later change there never moves us back.
    requests.post(f"{base}/_sandbox/shops/{twin.app_key}/orders/{created['order_id']}/address",
                  json={"receiver": {"address": "新地址 8 号"}})
    time.sleep(1.1)
    sync.sync_shop(shops["taobao"])
    db.session.expire_all()
    assert _ours(shops["taobao"])[created["order_id"]].status == "shipped"


def test_write_back_failure_is_kept_with_a_zh_reason(sandbox, shops):
    base, _ = sandbox
    twin = TWINS["jd"]
    created = _seed(base, twin, 1)[0]
    time.sleep(1.1)
    sync.sync_shop(shops["jd"])
    order = _ours(shops["jd"])[created["order_id"]]
    order.is_held = False
    for h in order.holds:
        h.released_at = h.created_at
    order_status.apply(order, "audit")
    order.carrier_id, order.tracking_number = 1, "SF1000000002"
    order_status.apply(order, "ship")
    db.session.commit()
    resp = requests.post(f"{base}/_sandbox/shops/{twin.app_key}/orders/{created['order_id']}/refund")
    assert resp.status_code == 200, resp.text  # a refund in progress: the platform refuses to ship
    from app.services import writeback

    assert writeback.write_back(order.id) == "failed"
    db.session.expire_all()
    order = db.session.get(Order, order.id)
    assert order.writeback_status == "failed" and any("\u4e00" <= ch <= "\u9fff" for ch in order.writeback_error)


def test_shipping_seen_on_the_platform_is_not_written_back(ctx, ids):
    from app.models import Order as O

    order = db.session.get(O, ids["orders"]["3000000000000000002"])  # to_ship
    order_status.apply(order, "ship_on_platform", source="sync")
    assert order.writeback_status is None
    other = db.session.get(O, ids["orders"]["261120-000000000000002"])
    other.carrier_id, other.tracking_number = 1, "SF9"
    order_status.apply(other, "ship", source="sync")  # history replayed by import/sync
    assert other.writeback_status is None
    db.session.rollback()


def test_new_sandbox_order_arrives_through_the_scheduled_path(sandbox, shops, app, login):
    """Dispatcher (what the scheduler runs every 15 s) → RQ worker → order in the list:
    a shop whose interval has passed is queued and synced without anyone acting."""
    from app.jobs.sync import dispatch_due_syncs, sync_state
    from app.jobs.worker import AppWorker

    base, _ = sandbox
    conn = redis.Redis.from_url(TEST_REDIS_URL)
    conn.flushdb()
    shop = db.session.get(Shop, shops["taobao"])
    shop.sync_checkpoint = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
    db.session.commit()
    created = _seed(base, TWINS["taobao"], 1)[0]
    time.sleep(1.1)
    queued = dispatch_due_syncs()["queued"]
    assert shops["taobao"] in queued
    assert sync_state(shops["taobao"]) == "排队中"
    assert dispatch_due_syncs()["queued"] == []  # already queued: not twice
    AppWorker.flask_app = app
    AppWorker(["sync"], connection=conn).work(burst=True)
    db.session.expire_all()
    assert created["order_id"] in _ours(shops["taobao"])
    assert shops["taobao"] not in dispatch_due_syncs()["queued"]  # it just ran: next in 60 s
    html = login("ops").get("/orderview/list/").get_data(as_text=True)
    assert created["order_id"] in html
    conn.flushdb()


def test_resync_skips_unchanged_orders_without_fullinfo_calls_and_applies_changed_ones(sandbox, shops):
    """A re-read of windows already synced: orders whose payload is the one stored are
    recognised without parsing them (so without Taobao's fullinfo call for a buyer
    message); orders changed on the platform meanwhile are parsed and applied."""
    from app.platforms import client_for

    base, state = sandbox
    twin = TWINS["taobao"]
    now = dt.datetime.now(dt.timezone.utc)
    keys = state.seed_orders(twin, 150, now - dt.timedelta(hours=30), now - dt.timedelta(minutes=5),
                             statuses={"paid": 1})
    with_message = {k for k in keys if state.order(twin.app_key, k).message}
    assert with_message
    sync.sync_shop(shops["taobao"])
    moved, refunded = sorted(keys)[:2], sorted(keys)[2]
    for key in moved:
        state.apply_event(twin.app_key, key, "address", receiver={"address": f"新地址 {key[-3:]} 号"})
    state.apply_event(twin.app_key, refunded, "refund")
    time.sleep(1.1)  # the gateways speak whole seconds
    shop = db.session.get(Shop, shops["taobao"])
    shop.sync_checkpoint = None
    db.session.commit()

    methods = []
    client = client_for(shop)
    post = client.http.post

    def counting_post(url, body, headers, timeout):
        methods.append("fullinfo" if b"fullinfo" in body else "list")
        return post(url, body, headers, timeout)

    client.http.post = counting_post
    run = sync.sync_shop(shops["taobao"], client=client)
    assert run.status == "success", run.error
    assert (run.created, run.updated) == (0, 3) and run.unchanged == run.fetched - 3
    assert methods.count("fullinfo") <= len(with_message & {*moved, refunded})
    theirs = _reconcile(base, "taobao", shops["taobao"])
    ours = _ours(shops["taobao"])
    assert ours[refunded].is_held and ours[moved[0]].receiver_address == theirs[moved[0]]["receiver_address"]


def test_a_new_pdd_order_shows_in_one_sync_while_the_checkpoint_keeps_the_3_minute_lag(sandbox, shops):
    """PDD's hint (keep the window end 3 minutes before its clock) bounds the checkpoint, not
    what is read: an order paid a moment ago arrives in the next run, and the last minutes
    are read again by the run after it (nothing the platform's index was late with is lost)."""
    base, _state = sandbox
    from app.services import sync

    shop_id = shops["pdd"]
    sync.sync_shop(shop_id)
    fresh = [o for o in _seed(base, TWINS["pdd"], 3) if o.get("visible", True)]
    assert fresh, "the sandbox made no paid PDD order"
    time.sleep(1.1)  # PDD's times are whole seconds
    t0 = dt.datetime.now(dt.timezone.utc)
    run = sync.sync_shop(shop_id)
    assert run.status == "success", run.error
    ours = _ours(shop_id)
    assert {o["order_id"] for o in fresh} <= set(ours)
    shop = db.session.get(Shop, shop_id)
    assert shop.sync_checkpoint <= t0 - dt.timedelta(minutes=3) + dt.timedelta(seconds=5)
    run2 = sync.sync_shop(shop_id)
    assert run2.status == "success" and run2.created == 0
    assert run2.unchanged >= len(fresh)  # the last minutes were read again, nothing doubled
    assert len(_ours(shop_id)) == len(ours)


KILLABLE_SYNC = """
import sys
from tests.conftest import make_app

app = make_app(sys.argv[1], OMS_SYNC_LOCK_SECONDS=3, OMS_SYNC_BATCH_ORDERS=1)
with app.app_context():
    from app.services import sync
    sync.sync_shop(int(sys.argv[2]))
"""


def test_a_worker_killed_mid_sync_then_rerun_ends_with_exactly_the_sandbox_set(sandbox, shops, tmp_path):
    """A worker process killed (SIGKILL) after some batches are committed: its lock lapses
    within OMS_SYNC_LOCK_SECONDS, the next run marks the dead run failed and ends with
    exactly the sandbox's order set: same count, same per-order checksum, no duplicates."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    base, state = sandbox
    shop_id = shops["pdd"]
    now = dt.datetime.now(dt.timezone.utc)
    state.seed_orders(TWINS["pdd"], 300, now - dt.timedelta(hours=40), now - dt.timedelta(minutes=5))
    requests.put(f"{base}/_sandbox/shops/{TWINS['pdd'].app_key}/faults", json={"slow_ms": 30})
    root = Path(__file__).resolve().parent.parent
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", KILLABLE_SYNC, db.engine.url.database, str(shop_id)],
                                cwd=root, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        committed = 0
        while time.monotonic() < deadline and proc.poll() is None:
            db.session.expire_all()
            committed = len(_ours(shop_id))
            if committed >= 20:
                break
            time.sleep(0.2)
        assert proc.poll() is None and committed >= 20, "the worker should be mid-sync: " + log.read_text()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    requests.put(f"{base}/_sandbox/shops/{TWINS['pdd'].app_key}/faults", json={})
    db.session.expire_all()
    assert 0 < len(_ours(shop_id)) < 300
    dead = db.session.scalars(select(SyncRun).where(SyncRun.shop_id == shop_id)).one()
    assert dead.status == "running"  # nobody could say otherwise yet
    with pytest.raises(sync.SyncBusy):  # the killed worker's lock, until it lapses
        sync.sync_shop(shop_id)
    time.sleep(3.5)
    run = sync.sync_shop(shop_id)
    assert run.status == "success", run.error
    db.session.expire_all()
    dead = db.session.get(SyncRun, dead.id)
    assert dead.status == "failed" and "同步进程意外退出" in dead.error and dead.finished_at is None
    assert len(_reconcile(base, "pdd", shop_id)) > 250  # PDD lists paid orders only
