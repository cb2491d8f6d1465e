"""扫描发货 (services/scan_ship.py, /scan-ship/): a scanned tracking number ships its order
through the state machine (stock deducted, 发货回传 queued), with zh errors for unknown,
duplicate, held and already shipped numbers, within the user's shops."""
from __future__ import annotations

from sqlalchemy import select

from app.extensions import db
from app.models import Order, OrderEvent
from app.services import order_status
from tests.logistics_helpers import make_order, on_hand, order


def scan(client, number):
    return client.post("/scan-ship/ship", json={"tracking_number": number})


def test_scanning_a_tracking_number_ships_its_order(app, login, ids):
    with app.app_context():
        oid = make_order("SCAN-1", carrier="ZTO", tracking="78200000000001")
        before = on_hand("TS-BLK-L")
    client = login("warehouse")
    page = client.get("/scan-ship/")
    assert page.status_code == 200 and "扫描发货" in page.get_data(as_text=True)
    resp = scan(client, " 78200000000001 ")  # a scanner's stray spaces
    assert resp.status_code == 200, resp.json
    assert resp.json["message"] == "订单 SCAN-1 已发货"
    assert resp.json["order"]["platform_order_id"] == "SCAN-1" and resp.json["order"]["carrier"] == "中通快递"
    with app.app_context():
        o = order(oid)
        assert o.status == "shipped" and o.shipped_at is not None
        assert o.writeback_status == "pending"  # 发货回传 queued (a Taobao shop)
        assert on_hand("TS-BLK-L") == before - 1
        ev = db.session.scalars(select(OrderEvent).where(OrderEvent.order_id == oid,
                                                         OrderEvent.action == "ship")).one()
        assert ev.note == "扫描发货"
    again = scan(client, "78200000000001")
    assert again.status_code == 409 and again.json["message"].startswith("订单 SCAN-1 已发货（")
    with app.app_context():
        assert on_hand("TS-BLK-L") == before - 1  # not deducted twice


def test_unknown_duplicate_held_and_unaudited_numbers_are_refused_in_chinese(app, login, ids):
    with app.app_context():
        make_order("SCAN-D1", carrier="ZTO", tracking="78200000000009")
        dup = make_order("SCAN-D2", carrier="ZTO")
        db.session.get(Order, dup).tracking_number = "78200000000009"  # as a sync could set it
        held = make_order("SCAN-H", carrier="ZTO", tracking="78200000000010")
        order_status.hold(db.session.get(Order, held), "manual", note="客户要求暂缓")
        make_order("SCAN-A", status="to_audit", carrier="ZTO", tracking="78200000000011")
        db.session.commit()
    client = login("warehouse")
    resp = scan(client, "78299999999999")
    assert resp.status_code == 404
    assert resp.json["message"] == "没有快递单号为 78299999999999 的订单（或不在你负责的店铺）"
    resp = scan(client, "78200000000009")
    assert resp.status_code == 422
    assert resp.json["message"].startswith("快递单号 78200000000009 同时用于 订单 SCAN-D1（待发货）、订单 SCAN-D2（待发货）")
    resp = scan(client, "78200000000010")
    assert resp.status_code == 409 and resp.json["message"] == "订单 SCAN-H 处于挂起状态（人工挂起），不能发货：请先处理异常"
    resp = scan(client, "78200000000011")
    assert resp.status_code == 409 and resp.json["message"] == "订单 SCAN-A 当前为「待审核」，只有待发货的订单可以发货"
    resp = scan(client, "")
    assert resp.status_code == 422 and resp.json["message"] == "请扫描或输入快递单号"
    with app.app_context():
        assert db.session.scalar(select(Order.status).where(Order.platform_order_id == "SCAN-D1")) == "to_ship"


def test_a_user_of_shop_a_cannot_ship_shop_bs_order_by_scanning(app, login, ids):
    with app.app_context():
        oid = make_order("SCAN-B", shop="B", carrier="ZTO", tracking="78200000000020")
    resp = scan(login("cs"), "78200000000020")
    assert resp.status_code == 404
    with app.app_context():
        assert order(oid).status == "to_ship"
    assert scan(login("cs_b"), "78200000000020").status_code == 200
    # finance may not ship at all
    assert login("finance").post("/scan-ship/ship", json={"tracking_number": "x"}).status_code in (302, 403)
