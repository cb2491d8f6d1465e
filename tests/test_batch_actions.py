"""Batch actions on orders (订单工作台 → 批量操作) and the job status API.

The test world (tests/world.py) plus orders generated per test: per-order results
with zh reasons, savepoints and chunked commits (a failure never undoes a
success), the audit trail, stock and write-back on ship, select-all-matching
within the user's shops, permissions, the job path with progress, and 我的任务.
"""
from __future__ import annotations

import datetime as dt

import pytest
import redis
from rq import Queue
from rq.job import Job
from sqlalchemy import func, select

from app.extensions import appbuilder, db
from app.models import Carrier, Order, OrderEvent, OrderHold, Shop, Sku, Stock, Warehouse
from app.services import batch_actions, order_status, orders
from tests.conftest import TEST_REDIS_URL

UTC = dt.timezone.utc
A1 = "3000000000000000001"  # world: shop A, 待审核
B1 = "261120-000000000000001"  # world: shop B, 待审核


# --- helpers ------------------------------------------------------------------------------
def make_orders(n: int, *, shop: str = "A店-淘宝", status: str = "to_audit", prefix: str = "BT",
                sku: str = "TS-BLK-L", qty: int = 1, carrier: bool = False, tracking: bool = False) -> list[int]:
    """``n`` orders created as sync would (create_order, then pay / audit through the
    state machine); to_ship orders have their stock reserved."""
    shop_obj = db.session.execute(select(Shop).where(Shop.name == shop)).scalar_one()
    sf = db.session.execute(select(Carrier).where(Carrier.code == "SF")).scalar_one()
    paid = dt.datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
    out = []
    for i in range(n):
        order = orders.create_order(shop_obj, {
            "platform_order_id": f"{prefix}{i:05d}", "status": "pending_payment",
            "receiver_name": "测试", "receiver_phone": "13700009999", "receiver_province": "浙江省",
            "receiver_city": "杭州市", "receiver_district": "西湖区", "receiver_address": "文三路1号",
            "buyer_nick": f"nick{i}", "paid_at": paid, "platform_created_at": paid,
            "paid_amount": "79.00", "post_fee": "0",
            "lines": [{"platform_line_id": "1", "merchant_code": sku, "title": "纯棉T恤", "quantity": qty,
                       "price": "79.00", "paid_amount": "79.00"}],
        }, source="import")
        db.session.flush()
        if status != "pending_payment":
            order_status.apply(order, "pay", source="sync")
        if status in ("to_ship", "shipped"):
            order_status.apply(order, "audit", source="user")
        if carrier:
            order.carrier_id = sf.id
        if tracking:
            order.tracking_number = f"SF{prefix}{i:08d}"
        if status == "shipped":
            order_status.apply(order, "ship", source="import")
        out.append(order.id)
    db.session.commit()
    return out


def user_id(username: str) -> int:
    return appbuilder.sm.find_user(username=username).id


def statuses(ids) -> dict[int, str]:
    return dict(db.session.execute(select(Order.id, Order.status).where(Order.id.in_(list(ids)))).all())


def events(oid: int, action: str | None = None) -> list[OrderEvent]:
    stmt = select(OrderEvent).where(OrderEvent.order_id == oid).order_by(OrderEvent.id)
    if action:
        stmt = stmt.where(OrderEvent.action == action)
    return list(db.session.scalars(stmt))


def run_worker(app, queue: str = "default") -> None:
    from app.jobs.worker import AppWorker

    conn = redis.Redis.from_url(TEST_REDIS_URL)
    AppWorker.flask_app = app
    AppWorker([queue], connection=conn).work(burst=True)


def post_batch(client, action, **body):
    return client.post("/api/v1/order/batch", json=dict(body, action=action))


def on_hand(sku_code: str) -> int:
    sku = db.session.execute(select(Sku).where(Sku.merchant_code == sku_code)).scalar_one()
    return db.session.execute(select(func.sum(Stock.on_hand)).where(Stock.sku_id == sku.id)).scalar_one()


# --- the job path ----------------------------------------------------------------------------
def test_batch_audit_above_threshold_runs_as_job_with_progress_and_per_order_reasons(app, login, monkeypatch):
    monkeypatch.setitem(app.config, "OMS_BATCH_CHUNK", 20)  # 3 chunks: progress is reported per chunk
    with app.app_context():
        good = make_orders(55, prefix="AUD")
        short = make_orders(2, prefix="OOS", sku="TS-WHT-M", qty=5000)  # more than is in stock
        held = make_orders(1, prefix="HLD")
        order_status.hold(db.session.get(Order, held[0]), "manual", note="客户要求暂缓")
        shipped = make_orders(1, prefix="SHP", status="shipped", carrier=True, tracking=True)
        db.session.commit()
    selection = good + short + held + shipped + [987654]  # the last one does not exist

    admin = login("admin")
    resp = post_batch(admin, "audit", ids=selection)
    assert resp.status_code == 202, resp.json
    job_id, total = resp.json["job_id"], resp.json["total"]
    assert total == 60
    queued = admin.get(f"/api/v1/job/{job_id}").json
    assert queued["state"] == "queued" and queued["state_zh"] == "排队中" and queued["result"] is None

    run_worker(app)

    body = admin.get(f"/api/v1/job/{job_id}").json
    assert body["state"] == "finished" and body["state_zh"] == "已完成"
    assert body["progress"] == 100 and body["done"] == body["total"] == 60
    assert "成功 55 个" in body["message"]
    result = body["result"]
    assert result["action"] == "audit" and result["total"] == 60
    assert sorted(result["ok"]) == sorted(good)
    reasons = {f["id"]: f["message"] for f in result["failed"]}
    assert set(reasons) == set(short + held + shipped + [987654])
    assert "缺货" in reasons[short[0]]
    assert "挂起" in reasons[held[0]] and "人工挂起" in reasons[held[0]]
    assert "当前为「已发货」，不能审单" in reasons[shipped[0]]
    assert reasons[987654] == "订单 #987654 不存在或无权访问"
    assert {f["platform_order_id"] for f in result["failed"] if f["id"] == short[0]} == {"OOS00000"}

    with app.app_context():
        # each order in its own state: failures did not roll back the successes
        st = statuses(selection)
        assert all(st[i] == "to_ship" for i in good)
        assert all(st[i] == "to_audit" for i in short + held)
        assert st[shipped[0]] == "shipped"
        # the 缺货 hold survives its rolled-back savepoint
        assert db.session.get(Order, short[0]).active_hold_reasons == ["out_of_stock"]
        # the audit trail names the batch, the job and the user
        ev = events(good[0], "audit")[-1]
        assert (ev.note, ev.source, ev.user_id, ev.new_value) == ("批量操作", "job", user_id("admin"), "to_ship")

    # safe to run twice: a second run changes nothing and says why
    resp = post_batch(admin, "audit", ids=selection)
    assert resp.status_code == 202
    run_worker(app)
    again = admin.get(f"/api/v1/job/{resp.json['job_id']}").json["result"]
    assert again["ok"] == []
    assert {s["id"] for s in again["skipped"]} == set(good)
    assert "已审核" in again["skipped"][0]["message"]
    with app.app_context():
        assert len(events(good[0], "audit")) == 1  # audited once, by the first run


def test_committed_chunks_survive_a_crash_in_a_later_chunk(ctx, monkeypatch):
    ids = make_orders(50, prefix="CRS")
    real = batch_actions.ACTIONS["audit"]

    def explode_on_41st(order, params, context):
        if order.id == ids[40]:
            raise RuntimeError("磁盘满了")
        return real.apply(order, params, context)

    monkeypatch.setitem(batch_actions.ACTIONS, "audit", batch_actions.BatchAction(
        "audit", "审单", real.clean, explode_on_41st))
    seen = []
    with pytest.raises(RuntimeError):
        batch_actions.run("audit", ids, {}, user_id=None, chunk_size=20,
                          progress=lambda done, total, msg: seen.append((done, total)))
    db.session.remove()
    st = statuses(ids)
    assert [st[i] for i in ids[:40]] == ["to_ship"] * 40    # chunks 1 and 2 were committed
    assert [st[i] for i in ids[40:]] == ["to_audit"] * 10   # chunk 3 was rolled back whole
    assert seen == [(0, 50), (20, 50), (40, 50)]


# --- hold / release ------------------------------------------------------------------------
def test_hold_needs_a_reason_and_release_keeps_platform_holds(app, login, ids):
    with app.app_context():
        plain = make_orders(3, prefix="HR")
        refund = make_orders(1, prefix="RF")[0]
        order_status.hold(db.session.get(Order, refund), "refunding", source="sync", note="买家申请退款")
        db.session.commit()
    ops = login("ops")
    resp = post_batch(ops, "hold", ids=plain, params={"reason": "  "})
    assert resp.status_code == 422
    assert resp.json == {"message": "挂起原因不能为空", "field": "reason"}

    resp = post_batch(ops, "hold", ids=plain + [refund], params={"reason": "等客户确认地址"})
    assert resp.status_code == 200
    result = resp.json["result"]
    assert sorted(result["ok"]) == sorted(plain + [refund]) and result["failed"] == []
    with app.app_context():
        hold = db.session.execute(select(OrderHold).where(OrderHold.order_id == plain[0])).scalar_one()
        assert (hold.reason, hold.note, hold.created_by_id) == ("manual", "等客户确认地址", user_id("ops"))
        ev = events(plain[0], "hold")[-1]
        assert ev.note == "批量操作：等客户确认地址" and ev.new_value == "人工挂起" and ev.source == "user"

    # holding again: already held, nothing written
    again = post_batch(ops, "hold", ids=plain, params={"reason": "再挂一次"}).json["result"]
    assert again["ok"] == [] and len(again["skipped"]) == 3 and "已人工挂起" in again["skipped"][0]["message"]

    result = post_batch(ops, "release", ids=plain + [refund]).json["result"]
    assert sorted(result["ok"]) == sorted(plain + [refund])
    with app.app_context():
        assert not db.session.get(Order, plain[0]).is_held
        # the manual hold went; the refund hold mirrors the platform and stays
        left = db.session.get(Order, refund)
        assert left.is_held and left.active_hold_reasons == ["refunding"]
        assert events(plain[0], "release")[-1].note == "批量操作"

    result = post_batch(ops, "release", ids=plain + [refund]).json["result"]
    assert {s["id"] for s in result["skipped"]} == set(plain)
    assert [f["id"] for f in result["failed"]] == [refund]
    assert "退款中" in result["failed"][0]["message"] and "同步" in result["failed"][0]["message"]


# --- fields -----------------------------------------------------------------------------------
def test_flag_memo_carrier_and_warehouse_are_validated_and_written_to_the_trail(app, login):
    with app.app_context():
        todo = make_orders(3, prefix="FM")
        audited = make_orders(1, prefix="FS", status="to_ship")
        other_wh = Warehouse(code="SH", name="上海仓", province="上海市", city="上海市", priority=2)
        off = Carrier(code="OFF", name="停用快递", active=False)
        db.session.add_all([other_wh, off])
        db.session.commit()
        wh_id, off_id = other_wh.id, off.id
        yto = db.session.execute(select(Carrier).where(Carrier.code == "YTO")).scalar_one().id
    client = login("warehouse")

    for params, field, text in [({"flag": 7}, "flag", "0–5"), ({"flag": "红"}, "flag", "0–5"), ({}, "flag", "旗帜")]:
        resp = post_batch(client, "flag", ids=todo, params=params)
        assert resp.status_code == 422 and resp.json["field"] == field and text in resp.json["message"]
    resp = post_batch(client, "carrier", ids=todo, params={"carrier_id": 99999})
    assert resp.status_code == 422 and resp.json["message"] == "「快递公司」不存在：99999"
    resp = post_batch(client, "carrier", ids=todo, params={"carrier_id": off_id})
    assert resp.status_code == 422 and "已停用" in resp.json["message"]
    resp = post_batch(client, "warehouse", ids=todo, params={})
    assert resp.status_code == 422 and resp.json == {"message": "请选择仓库", "field": "warehouse_id"}

    assert post_batch(client, "flag", ids=todo, params={"flag": "3"}).json["result"]["ok"] == todo
    assert post_batch(client, "memo", ids=todo, params={"memo": "加急，送小样"}).json["result"]["ok"] == todo
    assert post_batch(client, "carrier", ids=todo + audited, params={"carrier_id": yto}).json["result"]["ok"] \
        == todo + audited
    result = post_batch(client, "warehouse", ids=todo + audited, params={"warehouse_id": wh_id}).json["result"]
    assert result["ok"] == todo
    assert [f["id"] for f in result["failed"]] == audited
    assert "请先反审核再改仓库" in result["failed"][0]["message"]

    with app.app_context():
        o = db.session.get(Order, todo[0])
        assert (o.flag, o.seller_memo, o.carrier_id, o.warehouse_id) == (3, "加急，送小样", yto, wh_id)
        assert db.session.get(Order, audited[0]).warehouse_id != wh_id
        trail = {(e.field, e.old_value, e.new_value, e.note, e.user_id) for e in events(todo[0], "edit")}
        uid = user_id("warehouse")
        assert ("flag", "0", "3", "批量操作", uid) in trail
        assert ("seller_memo", None, "加急，送小样", "批量操作", uid) in trail
        assert ("carrier_id", None, str(yto), "批量操作", uid) in trail
        assert ("warehouse_id", None, str(wh_id), "批量操作", uid) in trail

    # the same flag again: nothing to do, no new event
    again = post_batch(client, "flag", ids=todo, params={"flag": 3}).json["result"]
    assert again["ok"] == [] and len(again["skipped"]) == 3
    with app.app_context():
        assert len([e for e in events(todo[0], "edit") if e.field == "flag"]) == 1


# --- ship ---------------------------------------------------------------------------------------
def test_ship_needs_carrier_and_tracking_deducts_stock_and_queues_the_writeback(app, login):
    with app.app_context():
        ready = make_orders(4, prefix="SR", status="to_ship", carrier=True, tracking=True)
        no_tracking = make_orders(1, prefix="SN", status="to_ship", carrier=True)
        no_carrier = make_orders(1, prefix="SC", status="to_ship", tracking=True)
        before = on_hand("TS-BLK-L")
    conn = redis.Redis.from_url(TEST_REDIS_URL)
    sync_q = Queue("sync", connection=conn)
    try:
        result = post_batch(login("warehouse"), "ship",
                            ids=no_tracking + ready[:2] + no_carrier + ready[2:]).json["result"]
        assert result["ok"] == ready
        reasons = {f["id"]: f["message"] for f in result["failed"]}
        assert reasons == {no_tracking[0]: "订单 SN00000 没有快递单号，不能发货",
                           no_carrier[0]: "订单 SC00000 未指定快递公司，不能发货"}
        with app.app_context():
            st = statuses(ready + no_tracking + no_carrier)
            assert [st[i] for i in ready] == ["shipped"] * 4
            assert st[no_tracking[0]] == st[no_carrier[0]] == "to_ship"
            assert on_hand("TS-BLK-L") == before - 4  # one unit per shipped order, nothing for the others
            assert {db.session.get(Order, i).writeback_status for i in ready} == {"pending"}
            assert events(ready[0], "ship")[-1].note == "批量操作"
        # 发货回传 queued after the commit, one job per shipped order, none for the refused
        for oid in ready:
            assert f"writeback-{oid}" in sync_q.job_ids
        assert f"writeback-{no_tracking[0]}" not in sync_q.job_ids
        again = post_batch(login("warehouse"), "ship", ids=ready).json["result"]
        assert again["ok"] == [] and {s["id"] for s in again["skipped"]} == set(ready)
        with app.app_context():
            assert on_hand("TS-BLK-L") == before - 4  # shipping twice deducts once
    finally:
        for oid in ready + no_tracking + no_carrier:
            job = Job.fetch(f"writeback-{oid}", connection=conn) if Job.exists(f"writeback-{oid}", conn) else None
            if job is not None:
                job.delete()


# --- selection and scope -------------------------------------------------------------------
def test_select_all_matching_acts_on_exactly_the_filtered_orders_in_the_users_shops(app, login, ids):
    with app.app_context():
        a_new = make_orders(3, prefix="SA")
        b_new = make_orders(2, prefix="SB", shop="B店-拼多多")
        held = make_orders(1, prefix="SH")
        order_status.hold(db.session.get(Order, held[0]), "address_incomplete")
        db.session.commit()
    shop_a, shop_b = ids["shops"]["A"], ids["shops"]["B"]
    a1, b1 = ids["orders"][A1], ids["orders"][B1]

    # admin: 待审核 + shop A → the world's A1 and the three new ones, not the held one, not B
    result = post_batch(login("admin"), "audit", filters={"tab": "to_audit", "shop_id": [shop_a]}).json["result"]
    assert sorted(result["ok"]) == sorted([a1] + a_new)
    with app.app_context():
        st = statuses([a1, b1, held[0]] + a_new + b_new)
        assert st[b1] == "to_audit" and st[held[0]] == "to_audit"
        assert all(st[i] == "to_audit" for i in b_new)

    # cs sees shop A only: "everything on 待审核" means shop A's 待审核
    cs = login("cs")
    result = post_batch(cs, "hold", filters={"tab": "to_audit"}, params={"reason": "核对库存"}).json
    assert result == {"message": "没有符合筛选条件的订单", "field": "filters"}  # shop A's were just audited
    result = post_batch(cs, "flag", filters={"tab": "to_ship"}, params={"flag": 2}).json["result"]
    with app.app_context():
        flagged = set(db.session.scalars(select(Order.id).where(Order.flag == 2)))
        a_to_ship = set(db.session.scalars(select(Order.id).where(Order.shop_id == shop_a,
                                                                  Order.status == "to_ship")))
    assert set(result["ok"]) == flagged == a_to_ship and len(flagged) == 5  # world's A2 + A1 + 3 new
    # another shop by filter: nothing; by id: not found, untouched
    assert post_batch(cs, "flag", filters={"shop_id": [shop_b]}, params={"flag": 1}).status_code == 422
    result = post_batch(cs, "flag", ids=[b1], params={"flag": 1}).json["result"]
    assert result["failed"] == [{"id": b1, "platform_order_id": None, "message": f"订单 #{b1} 不存在或无权访问"}]
    with app.app_context():
        assert db.session.get(Order, b1).flag == 0


def test_more_than_the_batch_limit_is_refused_with_a_clear_message(app, login, monkeypatch):
    monkeypatch.setitem(app.config, "OMS_BATCH_MAX", 10)
    with app.app_context():
        many = make_orders(11, prefix="LIM")
    admin = login("admin")
    resp = post_batch(admin, "flag", ids=many, params={"flag": 1})
    assert resp.status_code == 422
    assert resp.json["message"] == "一次最多批量处理 10 个订单，已选 11 个，请分批操作或缩小筛选范围"
    resp = post_batch(admin, "flag", filters={"tab": "to_audit"}, params={"flag": 1})
    assert resp.status_code == 422
    assert "超过 10 个" in resp.json["message"] and resp.json["field"] == "filters"
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(Order.flag == 1)) == 0
    assert post_batch(admin, "flag", ids=many, filters={"tab": "to_audit"}, params={"flag": 1}).status_code == 422
    assert post_batch(admin, "flag", params={"flag": 1}).json == {"message": "请先选择订单", "field": "ids"}
    assert post_batch(admin, "teleport", ids=many[:1]).json["message"] == "未知的批量操作：teleport"


# --- permissions ---------------------------------------------------------------------------------
def test_cs_cannot_batch_audit(app, login, ids):
    a1 = ids["orders"][A1]
    resp = post_batch(login("cs"), "audit", ids=[a1])
    assert resp.status_code == 403
    assert resp.json["message"] == "没有「审单」的权限"
    resp = post_batch(login("finance"), "memo", ids=[a1], params={"memo": "x"})
    assert resp.status_code == 403
    with app.app_context():
        assert db.session.get(Order, a1).status == "to_audit"
    assert login("cs").client.post("/api/v1/order/batch", json={"action": "hold", "ids": [a1],
                                                              "params": {"reason": "客服挂起"}}).status_code == 200


def test_order_list_actions_run_through_the_batch_service(app, login, ids):
    a1 = ids["orders"][A1]
    ops = login("ops")
    resp = ops.post("/orderview/action_post", data={"action": "hold_orders", "rowid": [str(a1)]})
    assert resp.status_code == 302
    with app.app_context():
        hold = db.session.execute(select(OrderHold).where(OrderHold.order_id == a1)).scalar_one()
        assert hold.reason == "manual" and hold.note == "订单列表批量挂起"
    ops.post("/orderview/action_post", data={"action": "release_orders", "rowid": [str(a1)]})
    ops.post("/orderview/action_post", data={"action": "audit_orders", "rowid": [str(a1)]})
    with app.app_context():
        assert db.session.get(Order, a1).status == "to_ship"
        assert events(a1, "audit")[-1].note == "批量操作"


# --- the job status API and 我的任务 ----------------------------------------------------------------
def export_like_job():
    return {"download_url": "/exports/download/orders-1.xlsx", "filename": "订单导出.xlsx", "rows": 3}


def unsafe_link_job():
    return {"download_url": "javascript:alert(1)", "filename": "x.xlsx"}


def failing_job():
    from app.services.errors import ValidationError

    raise ValidationError("模板缺少「订单号」列", "file")


def test_job_status_api_is_for_the_jobs_owner_only(app, login):
    from app.jobs.queue import enqueue

    with app.app_context():
        cs_id = user_id("cs")
        mine = enqueue(export_like_job, user_id=cs_id, description="导出订单")
        bad = enqueue(failing_job, user_id=cs_id, description="导入订单")
    run_worker(app)

    cs = login("cs")
    body = cs.get(f"/api/v1/job/{mine.id}").json
    assert body["state"] == "finished" and body["progress"] == 100
    assert body["result"]["filename"] == "订单导出.xlsx"
    failed = cs.get(f"/api/v1/job/{bad.id}").json
    assert failed["state"] == "failed" and failed["state_zh"] == "失败"
    assert failed["error"] == "任务失败：模板缺少「订单号」列"

    # another user: 404, as if it did not exist; the admin may read it; anonymous: 401
    other = login("cs_b").get(f"/api/v1/job/{mine.id}")
    assert other.status_code == 404 and other.json["message"].startswith("任务不存在")
    assert login("ops").get(f"/api/v1/job/{mine.id}").status_code == 404
    assert login("admin").get(f"/api/v1/job/{mine.id}").status_code == 200
    assert app.test_client().get(f"/api/v1/job/{mine.id}").status_code == 401
    assert cs.get("/api/v1/job/no-such-job").status_code == 404


def test_my_jobs_page_lists_only_ones_own_jobs_with_download_links(app, login):
    from app.jobs.queue import enqueue

    with app.app_context():
        cs_id = user_id("cs")
        mine = enqueue(export_like_job, user_id=cs_id, description="导出订单（客服）")
        evil = enqueue(unsafe_link_job, user_id=cs_id, description="可疑链接")
        admins = enqueue(failing_job, user_id=user_id("admin"), description="管理员的导入")
    run_worker(app)

    html = login("cs").get("/jobs/").get_data(as_text=True)
    assert "我的任务" in html and "导出订单（客服）" in html and "管理员的导入" not in html
    assert 'href="/exports/download/orders-1.xlsx"' in html and "订单导出.xlsx" in html
    assert "javascript:" not in html
    assert "导出订单（客服）" not in login("ops").get("/jobs/").get_data(as_text=True)
    # retrying someone else's failed job is not possible; the admin sees and retries everyone's
    conn = redis.Redis.from_url(TEST_REDIS_URL)
    login("cs").post(f"/jobs/retry/{admins.id}")
    assert admins.id not in Queue("default", connection=conn).job_ids
    admin_html = login("admin").get("/jobs/").get_data(as_text=True)
    assert "后台任务" in admin_html and "导出订单（客服）" in admin_html and "管理员的导入" in admin_html
    assert login("admin").post(f"/jobs/retry/{admins.id}").status_code == 302
    assert admins.id in Queue("default", connection=conn).job_ids
    for job in (mine, evil, admins):
        job.delete()
