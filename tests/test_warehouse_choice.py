"""选仓 (issue #5 item 4): coverage, whole order before priority, priority, split policy,
a person's override, reservation at payment, and the race through the choice path on
PostgreSQL (services/warehouse_choice.py)."""
from __future__ import annotations

import datetime as dt
import multiprocessing

import pytest
from sqlalchemy import func, select, text

from app.extensions import db
from app.models import Order, OrderEvent, OrderLine, Shop, Stock, StockMovement, Warehouse, WarehouseCoverage
from app.services import order_status, orders, stock, warehouse_choice
from app.services.errors import IllegalTransition, ValidationError
from tests.test_stock import _ledger, _new_sku, _setup_pg, _sku, _stock, _wh
from tests.world import OPENING_STOCK as N

UTC = dt.timezone.utc


# --- helpers ----------------------------------------------------------------------------
def _warehouse(code: str, name: str, priority: int, provinces=None, stock_of=None) -> Warehouse:
    wh = Warehouse(code=code, name=name, priority=priority, active=True)
    db.session.add(wh)
    db.session.flush()
    if provinces is not None:
        warehouse_choice.set_coverage(wh.id, provinces)
    for code_, qty in (stock_of or {}).items():
        stock.inbound(wh.id, _sku(code_).id, qty, source_ref="RK-TEST")
    db.session.commit()
    return wh


def _shop(key="A店-淘宝", **settings) -> Shop:
    shop = db.session.scalars(select(Shop).where(Shop.name == key)).one()
    for k, v in settings.items():
        setattr(shop, k, v)
    db.session.commit()
    return shop


def _order(pid: str, lines, *, province="浙江省", shop="A店-淘宝", pay=True,
           paid: dt.datetime | None = None) -> Order:
    shop_obj = db.session.scalars(select(Shop).where(Shop.name == shop)).one()
    paid = paid or dt.datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
    order = orders.create_order(shop_obj, {
        "platform_order_id": pid, "status": "pending_payment",
        "receiver_name": "测试", "receiver_phone": "13700009999", "receiver_province": province,
        "receiver_city": "某市", "receiver_district": "某区", "receiver_address": "某路1号",
        "paid_at": paid, "platform_created_at": paid, "paid_amount": "10.00", "post_fee": "0",
        "lines": [{"platform_line_id": str(i), "merchant_code": code, "title": code, "quantity": qty,
                   "price": "5.00", "paid_amount": "5.00"} for i, (code, qty) in enumerate(lines, 1)],
    }, source="import")
    db.session.flush()
    if pay:
        order_status.apply(order, "pay", source="sync")
    db.session.commit()
    return order


def _two_warehouses(hz_provinces=("浙江", "江苏", "上海"), gz_provinces=("广东", "广西"), gz_stock=None):
    """杭州仓 (world, priority 1, N of each shirt) + 广州仓 (priority 2)."""
    hz = _wh()
    warehouse_choice.set_coverage(hz.id, hz_provinces)
    db.session.commit()
    gz = _warehouse("GZ", "广州仓", 2, gz_provinces,
                    gz_stock if gz_stock is not None else {"TS-BLK-L": N, "TS-WHT-M": N})
    return hz, gz


def _reserved_in(order_id: int) -> set[int]:
    return {w for (w, _s), r in stock.reserved_by_order(order_id).items() if r > 0}


# --- coverage ------------------------------------------------------------------------------
def test_province_names_are_normalised_and_bad_ones_refused(ctx, ids):
    assert warehouse_choice.province_short("浙江省") == "浙江"
    assert warehouse_choice.province_short("广西壮族自治区") == "广西"
    assert warehouse_choice.province_short("内蒙古自治区") == "内蒙古"
    assert warehouse_choice.province_short("上海市") == "上海"
    assert warehouse_choice.province_short("火星") is None
    hz = _wh()
    assert warehouse_choice.set_coverage(hz.id, ["浙江省", "浙江", "全国"]) == ["浙江", "全国"]
    with pytest.raises(ValidationError, match="覆盖省份.*火星"):
        warehouse_choice.set_coverage(hz.id, ["火星"])


def test_warehouse_without_coverage_serves_everywhere(ctx, ids):
    order = _order("WC-ALL-1", [("TS-BLK-L", 1)], province="新疆维吾尔自治区")
    orders.transition(order.id, "audit")
    order = db.session.get(Order, order.id)
    assert order.status == "to_ship" and order.warehouse_id == _wh().id
    assert order.warehouse_reason == "杭州仓：覆盖全国、库存齐全、优先级1"


def test_coverage_excludes_a_warehouse_that_does_not_serve_the_province(ctx, ids):
    hz, gz = _two_warehouses()
    order = _order("WC-COV-1", [("TS-BLK-L", 2)], province="广东省")
    orders.transition(order.id, "audit")
    order = db.session.get(Order, order.id)
    # 杭州仓 has priority 1 and the stock, but does not cover 广东
    assert order.warehouse_id == gz.id and _reserved_in(order.id) == {gz.id}
    assert order.warehouse_reason == "广州仓：覆盖广东、库存齐全、优先级2"
    assert [ln.warehouse_id for ln in order.lines] == [gz.id]
    assert _stock(gz.id, _sku("TS-BLK-L").id) == (N, 2)
    # the rule's choice writes no trail event of its own (审单 writes exactly one)
    assert not db.session.scalars(select(OrderEvent).where(OrderEvent.order_id == order.id,
                                                           OrderEvent.field == "warehouse_id")).all()
    assert stock.check_ledger() == []


def test_whole_order_beats_priority(ctx, ids):
    _new_sku("HAT-1")
    db.session.commit()
    hz, gz = _two_warehouses(hz_provinces=("全国",), gz_provinces=("全国",),
                             gz_stock={"TS-BLK-L": 5, "HAT-1": 5})
    order = _order("WC-WHOLE-1", [("TS-BLK-L", 1), ("HAT-1", 1)])  # 杭州仓 has no hats
    orders.transition(order.id, "audit")
    order = db.session.get(Order, order.id)
    assert order.warehouse_id == gz.id and _reserved_in(order.id) == {gz.id}
    assert order.warehouse_reason == "广州仓：覆盖全国、库存齐全、优先级2（杭州仓库存不足）"
    assert _ledger(order.id) == {"TS-BLK-L": (0, 1), "HAT-1": (0, 1)}


def test_priority_breaks_the_tie_between_whole_warehouses(ctx, ids):
    hz, gz = _two_warehouses(hz_provinces=("浙江",), gz_provinces=("浙江",))
    order = _order("WC-PRIO-1", [("TS-BLK-L", 1)])
    orders.transition(order.id, "audit")
    assert db.session.get(Order, order.id).warehouse_reason == "杭州仓：覆盖浙江、库存齐全、优先级1"
    # swap priorities: 广州仓 now goes first
    hz.priority, gz.priority = 5, 1
    db.session.commit()
    order2 = _order("WC-PRIO-2", [("TS-BLK-L", 1)])
    orders.transition(order2.id, "audit")
    order2 = db.session.get(Order, order2.id)
    assert order2.warehouse_id == gz.id and order2.warehouse_reason == "广州仓：覆盖浙江、库存齐全、优先级1"


def test_nothing_covers_the_province_gives_a_out_of_stock_hold_with_the_reason(ctx, ids):
    _two_warehouses()
    order = _order("WC-NONE-1", [("TS-BLK-L", 2)], province="新疆维吾尔自治区")
    with pytest.raises(stock.OutOfStock, match="没有仓库覆盖新疆"):
        orders.transition(order.id, "audit")
    order = db.session.get(Order, order.id)
    assert order.status == "to_audit" and order.active_hold_reasons == ["out_of_stock"]
    assert order.holds[0].note == "缺货：没有仓库覆盖新疆（TS-BLK-L×2）"
    assert _ledger(order.id) == {} and order.warehouse_id is None


def test_nothing_has_the_stock_names_the_province_and_the_skus(ctx, ids):
    _two_warehouses(gz_provinces=("浙江",), gz_stock={"TS-BLK-L": 3})
    order = _order("WC-SHORT-1", [("TS-BLK-L", N + 1)])
    with pytest.raises(stock.OutOfStock):
        orders.transition(order.id, "audit")
    order = db.session.get(Order, order.id)
    assert order.active_hold_reasons == ["out_of_stock"]
    assert order.holds[0].note == (f"浙江缺货（覆盖仓库：杭州仓、广州仓）：TS-BLK-L 需要 {N + 1}，"
                                   f"可用 {N - 4 + 3}（杭州仓 {N - 4}、广州仓 3）")
    assert _ledger(order.id) == {}


# --- override ---------------------------------------------------------------------------------
def test_a_persons_warehouse_is_respected_when_it_can_ship_the_whole_order(ctx, ids):
    hz, gz = _two_warehouses(gz_provinces=("广东",))
    order = _order("WC-MAN-1", [("TS-BLK-L", 2)])
    orders.edit_order(order.id, {"warehouse_id": gz.id})  # 广州仓 does not even cover 浙江
    orders.transition(order.id, "audit")
    order = db.session.get(Order, order.id)
    assert order.warehouse_id == gz.id and _reserved_in(order.id) == {gz.id}
    assert order.warehouse_reason == "人工指定：广州仓，不覆盖浙江、库存齐全、优先级2"
    # after audit the warehouse cannot change (services/orders.py)
    with pytest.raises(ValidationError, match="已审核"):
        orders.edit_order(order.id, {"warehouse_id": hz.id})


def test_a_persons_warehouse_that_cannot_ship_is_refused_with_the_reason_and_no_hold(ctx, ids):
    hz, gz = _two_warehouses(gz_stock={"TS-BLK-L": 1})
    order = _order("WC-MAN-2", [("TS-BLK-L", 2)])
    orders.edit_order(order.id, {"warehouse_id": gz.id})
    with pytest.raises(warehouse_choice.WarehouseRefused,
                       match="人工指定的广州仓库存不足，无法整单发货：TS-BLK-L 需要 2，可用 1"):
        orders.transition(order.id, "audit")
    order = db.session.get(Order, order.id)
    assert order.status == "to_audit" and not order.is_held and _ledger(order.id) == {}
    # clearing the warehouse hands the choice back to the rules
    orders.edit_order(order.id, {"warehouse_id": None})
    orders.transition(order.id, "audit")
    order = db.session.get(Order, order.id)
    assert order.warehouse_id == hz.id and order.warehouse_reason.startswith("杭州仓：覆盖浙江")


def test_rechoosing_after_unaudit_is_the_rules_unless_a_person_chose(ctx, ids):
    hz, gz = _two_warehouses(hz_provinces=("全国",), gz_provinces=("全国",))
    order = _order("WC-RE-1", [("TS-BLK-L", 1)])
    orders.transition(order.id, "audit")
    orders.transition(order.id, "unaudit")
    hz.priority = 9
    db.session.commit()
    orders.transition(order.id, "audit")  # the rule chose last time: it chooses again
    assert db.session.get(Order, order.id).warehouse_id == gz.id
    assert _stock(hz.id, _sku("TS-BLK-L").id) == (N, 4)


# --- split --------------------------------------------------------------------------------------
def _split_world():
    _new_sku("HAT-1")
    db.session.commit()
    return _two_warehouses(hz_provinces=("浙江",), gz_provinces=("浙江",), gz_stock={"HAT-1": 5})


def test_no_split_when_the_shop_does_not_allow_it(ctx, ids):
    _split_world()
    order = _order("WC-NOSPLIT-1", [("TS-BLK-L", 2), ("HAT-1", 1)])
    with pytest.raises(stock.OutOfStock):
        orders.transition(order.id, "audit")
    order = db.session.get(Order, order.id)
    assert order.active_hold_reasons == ["out_of_stock"] and _ledger(order.id) == {}
    assert "本店不允许拆单发货" in order.holds[0].note


def test_split_across_warehouses_ships_and_releases_exactly_what_was_reserved(ctx, ids):
    hz, gz = _split_world()
    _shop(allow_split=True)
    hat, blk = _sku("HAT-1"), _sku("TS-BLK-L")
    order = _order("WC-SPLIT-1", [("TS-BLK-L", 2), ("HAT-1", 1)])
    orders.transition(order.id, "audit")
    order = db.session.get(Order, order.id)
    assert order.status == "to_ship"
    assert order.warehouse_reason == "拆分发货：杭州仓（TS-BLK-L×2）、广州仓（HAT-1×1）"
    assert {ln.merchant_code: ln.warehouse_id for ln in order.lines} == {"TS-BLK-L": hz.id, "HAT-1": gz.id}
    assert stock.reserved_by_order(order.id) == {(hz.id, blk.id): 2, (gz.id, hat.id): 1}
    order.carrier_id, order.tracking_number = ids["carrier"], "SF-SPLIT-1"
    orders.transition(order.id, "ship")
    assert _stock(hz.id, blk.id) == (N - 2, 4) and _stock(gz.id, hat.id) == (4, 0)
    # a second split order, cancelled: both warehouses get their units back
    other = _order("WC-SPLIT-2", [("TS-BLK-L", 1), ("HAT-1", 2)])
    orders.transition(other.id, "audit")
    assert _stock(gz.id, hat.id) == (4, 2)
    orders.transition(other.id, "cancel", reason="买家取消")
    assert _stock(hz.id, blk.id) == (N - 2, 4) and _stock(gz.id, hat.id) == (4, 0)
    assert _ledger(other.id) == {"TS-BLK-L": (0, 0), "HAT-1": (0, 0)}
    assert stock.check_ledger() == []
    runner = ctx.test_cli_runner()
    assert runner.invoke(args=["oms", "stock-check"]).exit_code == 0


def test_split_is_all_or_nothing(ctx, ids):
    _split_world()
    _shop(allow_split=True)
    order = _order("WC-SPLIT-3", [("TS-BLK-L", 2), ("HAT-1", 6)])  # only 5 hats anywhere
    with pytest.raises(stock.OutOfStock):
        orders.transition(order.id, "audit")
    order = db.session.get(Order, order.id)
    assert _ledger(order.id) == {} and "HAT-1 需要 6，可用 5" in order.holds[0].note


def test_a_single_line_prefers_a_whole_warehouse_even_when_split_is_allowed(ctx, ids):
    hz, gz = _split_world()
    _shop(allow_split=True)
    stock.inbound(gz.id, _sku("TS-BLK-L").id, 3)
    db.session.commit()
    order = _order("WC-SPLIT-4", [("TS-BLK-L", 1), ("HAT-1", 1)])
    orders.transition(order.id, "audit")
    assert db.session.get(Order, order.id).warehouse_reason == \
        "广州仓：覆盖浙江、库存齐全、优先级2（杭州仓库存不足）"


# --- reserve at payment --------------------------------------------------------------------------
def test_reserve_at_payment_reserves_on_pay_keeps_it_on_audit_and_releases_on_cancel(ctx, ids):
    hz, blk = _wh(), _sku("TS-BLK-L")
    _shop(reserve_at="payment")
    order = _order("WC-PAY-1", [("TS-BLK-L", 3)])
    order = db.session.get(Order, order.id)
    assert order.status == "to_audit" and not order.is_held
    assert _ledger(order.id) == {"TS-BLK-L": (0, 3)} and _stock(hz.id, blk.id) == (N, 7)
    assert order.warehouse_reason == "杭州仓：覆盖全国、库存齐全、优先级1"
    orders.transition(order.id, "audit")  # keeps the reservation: no second reserve row
    n_moves = db.session.scalar(select(func.count()).select_from(StockMovement)
                                .where(StockMovement.order_id == order.id))
    assert n_moves == 1 and _stock(hz.id, blk.id) == (N, 7)
    orders.transition(order.id, "unaudit")  # still paid: still reserved
    assert _stock(hz.id, blk.id) == (N, 7)
    orders.transition(order.id, "cancel", reason="买家取消")
    assert _stock(hz.id, blk.id) == (N, 4) and _ledger(order.id) == {"TS-BLK-L": (0, 0)}
    # refund close releases as well
    order2 = _order("WC-PAY-2", [("TS-BLK-L", 1)])
    assert _stock(hz.id, blk.id) == (N, 5)
    orders.transition(order2.id, "refund_close", reason="全额退款")
    assert _stock(hz.id, blk.id) == (N, 4)
    assert stock.check_ledger() == []


def test_reserve_at_audit_is_the_default_and_pay_reserves_nothing(ctx, ids):
    order = _order("WC-PAY-3", [("TS-BLK-L", 3)])
    assert db.session.get(Shop, ids["shops"]["A"]).reserve_at == "audit"
    assert _ledger(order.id) == {} and db.session.get(Order, order.id).warehouse_id is None


def test_reserve_at_payment_short_gets_a_out_of_stock_hold_and_stays_to_audit(ctx, ids):
    hz, wht = _wh(), _sku("TS-WHT-M")
    _shop(reserve_at="payment")
    order = _order("WC-PAY-4", [("TS-WHT-M", N + 1)])
    order = db.session.get(Order, order.id)
    assert order.status == "to_audit" and order.active_hold_reasons == ["out_of_stock"]
    assert f"TS-WHT-M 需要 {N + 1}，可用 {N}" in order.holds[0].note
    assert _ledger(order.id) == {}
    # stock arrives: reserved first-paid first-served, hold released, and it stays 待审核
    got = stock.inbound(hz.id, wht.id, 1, source_ref="RK-PAY")
    db.session.commit()
    order = db.session.get(Order, order.id)
    assert got == [order.id] and order.status == "to_audit" and not order.is_held
    assert _ledger(order.id) == {"TS-WHT-M": (0, N + 1)}
    assert stock.check_ledger() == []


def test_a_person_can_move_a_payment_reservation_before_audit(ctx, ids):
    hz, gz = _two_warehouses(hz_provinces=("全国",), gz_provinces=("全国",))
    _shop(reserve_at="payment")
    order = _order("WC-PAY-5", [("TS-BLK-L", 2)])
    assert _reserved_in(order.id) == {hz.id}
    orders.edit_order(order.id, {"warehouse_id": gz.id})
    orders.transition(order.id, "audit")
    order = db.session.get(Order, order.id)
    assert _reserved_in(order.id) == {gz.id} and order.warehouse_reason.startswith("人工指定：广州仓")
    assert _stock(hz.id, _sku("TS-BLK-L").id) == (N, 4) and _stock(gz.id, _sku("TS-BLK-L").id) == (N, 2)
    assert stock.check_ledger() == []


# --- pages ---------------------------------------------------------------------------------------
def test_coverage_page_adds_normalised_provinces_and_refuses_bad_ones(app, login, ids):
    client = login("warehouse")
    with app.app_context():
        hz_id = _wh().id
    resp = client.post("/warehousecoverageview/add", data={"warehouse": hz_id, "province": "浙江省"},
                       follow_redirects=True)
    assert resp.status_code == 200
    resp = client.post("/warehousecoverageview/add", data={"warehouse": hz_id, "province": "火星"},
                       follow_redirects=True)
    assert "覆盖省份" in resp.get_data(as_text=True)
    resp = client.post("/warehousecoverageview/add", data={"warehouse": hz_id, "province": "浙江"},
                       follow_redirects=True)
    assert "已覆盖" in resp.get_data(as_text=True)
    with app.app_context():
        rows = db.session.execute(select(WarehouseCoverage.province)
                                  .where(WarehouseCoverage.warehouse_id == hz_id)).scalars().all()
        assert rows == ["浙江"]
    page = client.get("/warehouseview/list/").get_data(as_text=True)
    assert "浙江" in page
    # the grid comes from the API: readable, and editable by the warehouse role
    meta = client.get("/api/v1/warehouse_coverage/grid/meta")
    assert meta.status_code == 200
    rows = client.get("/api/v1/warehouse_coverage/grid/rows").get_json()["rows"]
    assert [r["province"] for r in rows] == ["浙江"]
    resp = client.post("/api/v1/warehouse_coverage/grid/edit",
                       json={"changes": [{"id": rows[0]["id"], "key": "province", "value": "江苏省"}]})
    assert resp.status_code == 200 and resp.get_json()["results"][0]["ok"] is True
    with app.app_context():
        assert db.session.scalar(select(WarehouseCoverage.province)) == "江苏"


def test_only_warehouse_writers_edit_coverage(app, login, ids):
    with app.app_context():
        hz_id = _wh().id
    ops = login("ops")  # reads warehouses, may not change them
    assert ops.get("/warehousecoverageview/list/").status_code == 200
    ops.post("/warehousecoverageview/add", data={"warehouse": hz_id, "province": "浙江"})
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(WarehouseCoverage)) == 0
    assert login("cs").get("/warehousecoverageview/list/").status_code in (302, 403)


def test_order_page_and_grid_show_the_reason(app, login, ids):
    with app.app_context():
        order = _order("WC-PAGE-1", [("TS-BLK-L", 1)])
        orders.transition(order.id, "audit")
        oid = order.id
    client = login("ops")
    page = client.get(f"/orderview/show/{oid}").get_data(as_text=True)
    assert "杭州仓：覆盖全国、库存齐全、优先级1" in page
    rows = client.get('/api/v1/order/grid/rows?filters={"keyword":"WC-PAGE-1"}').get_json()["rows"]
    assert rows[0]["warehouse_reason"] == "杭州仓：覆盖全国、库存齐全、优先级1"


def test_shop_form_sets_split_and_reservation_timing(app, login, ids):
    client = login("admin")
    sid = ids["shops"]["C"]
    page = client.get(f"/shopview/edit/{sid}").get_data(as_text=True)
    assert "付款时" in page and "拆单" in page
    with app.app_context():
        shop = db.session.get(Shop, sid)
        # (stock_push_enabled ticked: FAB refuses an unticked NOT NULL boolean it renders itself)
        data = {"name": shop.name, "platform": shop.platform, "active": "y", "sync_enabled": "y",
                "stock_push_enabled": "y", "sync_interval_seconds": 60, "backfill_days": 3,
                "stock_ratio": "1.00", "stock_floor": 0, "reserve_at": "payment", "allow_split": "y"}
    client.post(f"/shopview/edit/{sid}", data=data)
    with app.app_context():
        shop = db.session.get(Shop, sid)
        assert shop.reserve_at == "payment" and shop.allow_split is True
    data.pop("allow_split")  # unticked: allowed (not "required")
    data["reserve_at"] = "later"
    client.post(f"/shopview/edit/{sid}", data=data)
    with app.app_context():
        assert db.session.get(Shop, sid).reserve_at == "payment"  # an unknown choice is refused
    data["reserve_at"] = "audit"
    client.post(f"/shopview/edit/{sid}", data=data)
    with app.app_context():
        shop = db.session.get(Shop, sid)
        assert shop.reserve_at == "audit" and shop.allow_split is False


# --- the race on PostgreSQL, through the choice path ------------------------------------------
WORKERS = 8
PER_WORKER = 4


def _race_worker(pg_url, db_dir, order_ids, barrier, action):
    from tests.conftest import make_app

    app = make_app(f"{db_dir}/w.db", SQLALCHEMY_DATABASE_URI=pg_url)
    with app.app_context():
        from app.services import orders as order_service, stock as stock_service

        db.session.execute(text("SELECT 1"))
        barrier.wait(timeout=60)
        for oid in order_ids:
            try:
                if action == "audit":
                    order_service.transition(oid, "audit")
                else:  # pay, in a shop that reserves at payment
                    order = order_service.get_order(oid)
                    order_status.apply(order, "pay", source="sync")
                    db.session.commit()
            except stock_service.OutOfStock:
                pass
        db.session.remove()
        db.engine.dispose()


def _race(app, tmp_path, pg_url, specs, action="audit"):
    """``specs``: [(lines, province)] — orders raced by WORKERS processes."""
    with app.app_context():
        order_ids = [_order(f"WRACE-{i}", lines, province=prov, pay=(action == "audit")).id
                     for i, (lines, prov) in enumerate(specs)]
        db.session.remove()
        db.engine.dispose()
    mp = multiprocessing.get_context("fork")
    barrier = mp.Barrier(WORKERS)
    procs = [mp.Process(target=_race_worker,
                        args=(pg_url, str(tmp_path), order_ids[w::WORKERS], barrier, action))
             for w in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert all(p.exitcode == 0 for p in procs)
    return order_ids


def _outcomes(order_ids, reserved_status):
    assert db.session.scalar(select(func.count()).where(Stock.reserved > Stock.on_hand)) == 0
    out = {}
    for oid in order_ids:
        o = db.session.get(Order, oid)
        held = o.active_hold_reasons
        if held:
            assert o.status == "to_audit" and held == ["out_of_stock"]
            assert stock.reserved_by_order(oid) == {}
            out[oid] = "held"
        else:
            assert o.status == reserved_status and o.warehouse_reason
            assert stock.reserved_by_order(oid)
            # the lines say where their stock is reserved
            assert {ln.warehouse_id for ln in o.lines} <= {w for (w, _s) in stock.reserved_by_order(oid)}
            out[oid] = "reserved"
    assert stock.check_ledger() == []
    return out


def test_race_through_the_choice_path_with_bundles_and_split_never_oversells(pg_url, tmp_path):
    app = _setup_pg(pg_url, tmp_path)
    with app.app_context():
        part, other = _new_sku("PART-9"), _new_sku("OTHER-9")
        _new_sku("SET-9", bundle_of={"PART-9": 2, "OTHER-9": 1})
        hz = _wh()
        warehouse_choice.set_coverage(hz.id, ["浙江", "江苏"])
        stock.inbound(hz.id, part.id, 20, source_ref="RK-P")
        stock.inbound(hz.id, other.id, 5, source_ref="RK-O")
        db.session.commit()
        gz = _warehouse("GZ", "广州仓", 2, ["浙江", "广东"], {"PART-9": 12, "OTHER-9": 3})
        _warehouse("SH", "上海仓", 3, ["江苏"], {"PART-9": 6})
        _shop(allow_split=True)
        gz_id = gz.id
    provinces = ["浙江省", "广东省", "江苏省", "新疆维吾尔自治区"]
    specs = []
    for i in range(WORKERS * PER_WORKER):
        lines = [("SET-9", 1), ("PART-9", 1)] if i % 2 else [("PART-9", 2), ("OTHER-9", 1)]
        specs.append((lines, provinces[i % 4]))
    order_ids = _race(app, tmp_path, pg_url, specs)
    with app.app_context():
        out = _outcomes(order_ids, "to_ship")
        assert "held" in out.values() and "reserved" in out.values()
        for oid, spec in zip(order_ids, specs):
            o = db.session.get(Order, oid)
            if spec[1].startswith("新疆"):  # nobody covers 新疆
                assert out[oid] == "held" and "没有仓库覆盖新疆" in o.holds[0].note
            if spec[1].startswith("广东") and out[oid] == "reserved":  # only 广州仓 covers 广东
                assert {w for (w, _s) in stock.reserved_by_order(oid)} == {gz_id}
        # reserved per stock row equals what the reserved orders' ledger rows say
        for (w, s, oh, r) in db.session.execute(select(Stock.warehouse_id, Stock.sku_id, Stock.on_hand,
                                                       Stock.reserved)):
            by_orders = db.session.scalar(select(func.coalesce(func.sum(StockMovement.reserved_delta), 0))
                                          .where(StockMovement.warehouse_id == w, StockMovement.sku_id == s))
            assert r == by_orders and r <= oh
        db.session.remove()
        db.engine.dispose()


def test_race_reserving_at_payment_never_oversells(pg_url, tmp_path):
    app = _setup_pg(pg_url, tmp_path)
    with app.app_context():
        hot = _new_sku("HOT-9")
        stock.inbound(_wh().id, hot.id, 13, source_ref="RK-HOT")
        db.session.commit()
        _shop(reserve_at="payment")
    order_ids = _race(app, tmp_path, pg_url, [([("HOT-9", 1)], "浙江省")] * (WORKERS * PER_WORKER),
                      action="pay")
    with app.app_context():
        out = _outcomes(order_ids, "to_audit")
        assert list(out.values()).count("reserved") == 13
        assert _stock(_wh().id, _sku("HOT-9").id) == (13, 13)
        db.session.remove()
        db.engine.dispose()
