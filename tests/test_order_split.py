"""拆分订单 (services/order_split.py): money, stock, status, events, counters, bad input,
scope, permissions, write-back of a part under the original's number, and re-sync."""
from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import Order, OrderEvent, OrderLine, Shop, Sku, Stock, StockMovement, Warehouse
from app.services import order_counts, order_split, order_status, orders, stock
from app.services.errors import IllegalTransition, NotFound, ValidationError
from app.services.scope import as_user

UTC = dt.timezone.utc
D = Decimal


def _sku(code: str) -> Sku:
    return db.session.execute(select(Sku).where(Sku.merchant_code == code)).scalar_one()


def _make(shop_id: int, pid: str, *, status: str = "to_ship", lines=None, post_fee="10.00",
          goods="395.00", discount="20.00", paid="385.00") -> Order:
    """A paid two-line order (TS-BLK-L×2 实付 150, TS-WHT-M×3 实付 225, 运费 10), audited
    when ``status`` is to_ship."""
    shop = db.session.get(Shop, shop_id)
    when = dt.datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
    order = orders.create_order(shop, {
        "platform_order_id": pid, "status": "pending_payment", "receiver_name": "孙八",
        "receiver_phone": "13511112222", "receiver_province": "浙江省", "receiver_city": "杭州市",
        "receiver_district": "西湖区", "receiver_address": "文二路1号", "buyer_nick": "buyer_split",
        "buyer_message": "分开发也行", "paid_at": when, "platform_created_at": when,
        "goods_amount": goods, "discount_amount": discount, "post_fee": post_fee, "paid_amount": paid,
        "lines": lines or [
            {"platform_line_id": "L1", "merchant_code": "TS-BLK-L", "title": "纯棉T恤", "spec": "黑色 L",
             "quantity": 2, "price": "79.00", "paid_amount": "150.00"},
            {"platform_line_id": "L2", "merchant_code": "TS-WHT-M", "title": "纯棉T恤", "spec": "白色 M",
             "quantity": 3, "price": "79.00", "paid_amount": "225.00"},
        ],
    }, source="import")
    db.session.flush()
    order_status.apply(order, "pay", source="sync")
    if status == "to_ship":
        order_status.apply(order, "audit", source="user")
    db.session.commit()
    return order


def _line(order: Order, code: str) -> OrderLine:
    return next(ln for ln in order.lines if ln.merchant_code == code)


def _reserved(order_id: int) -> dict[str, int]:
    """{merchant code: units this order reserves} per the ledger."""
    out: dict[str, int] = {}
    for (_w, sku_id), r in stock.reserved_by_order(order_id).items():
        if r:
            out[db.session.get(Sku, sku_id).merchant_code] = out.get(db.session.get(Sku, sku_id).merchant_code, 0) + r
    return out


def _clean():
    assert stock.check_ledger() == []
    assert order_counts.check() == []


def _uid(name: str) -> int:
    from app.extensions import appbuilder

    return appbuilder.sm.find_user(username=name).id


MONEY = ("goods_amount", "discount_amount", "post_fee", "paid_amount", "cost_amount")


def _money(o: Order) -> dict:
    return {k: getattr(o, k) for k in MONEY}


# --- the happy path ------------------------------------------------------------------------------
def test_split_to_ship_order_moves_lines_and_money_and_both_parts_stay_reserved(ctx, ids):
    order = _make(ids["shops"]["A"], "3100000000000000001")
    before = _money(order)
    spent = order.customer.total_spent
    count = order.customer.order_count
    assert _reserved(order.id) == {"TS-BLK-L": 2, "TS-WHT-M": 3}
    ops = _uid("ops")

    result = order_split.split_order(order.id, {_line(order, "TS-BLK-L").id: 2, _line(order, "TS-WHT-M").id: 1},
                                     user_id=ops)

    db.session.expire_all()
    parent, child = db.session.get(Order, order.id), db.session.get(Order, result.new_order_id)
    assert child.platform_order_id == "3100000000000000001-拆1"
    assert child.split_from_id == parent.id and child.shop_id == parent.shop_id
    assert (child.buyer_nick, child.receiver_name, child.receiver_phone, child.customer_id, child.paid_at,
            child.platform) == (parent.buyer_nick, parent.receiver_name, parent.receiver_phone,
                                parent.customer_id, parent.paid_at, parent.platform)
    # Lines: TS-BLK-L moved whole (same row), TS-WHT-M cut 2 + 1 (实付 by quantity).
    assert [(ln.merchant_code, ln.quantity, ln.paid_amount) for ln in parent.lines] == [("TS-WHT-M", 2, D("150.00"))]
    assert sorted((ln.merchant_code, ln.platform_line_id, ln.quantity, ln.paid_amount) for ln in child.lines) == [
        ("TS-BLK-L", "L1", 2, D("150.00")), ("TS-WHT-M", "L2", 1, D("75.00"))]
    # Money: 运费 stays; the rest by the moved 实付 share (225 of 375 = 60%).
    assert child.post_fee == D("0.00") and parent.post_fee == D("10.00")
    assert child.paid_amount == D("225.00") and parent.paid_amount == D("160.00")
    assert child.goods_amount == D("237.00") and child.discount_amount == D("12.00")
    assert child.cost_amount == D("25.00") * 2 + D("24.00") and parent.cost_amount == D("48.00")
    for k in MONEY:
        assert getattr(parent, k) + getattr(child, k) == before[k], k
    # The customer: same spend, still one order.
    assert parent.customer.total_spent == spent and parent.customer.order_count == count
    # Stock: released and reserved again per part; both still 待发货.
    assert (parent.status, child.status) == ("to_ship", "to_ship")
    assert _reserved(parent.id) == {"TS-WHT-M": 2}
    assert _reserved(child.id) == {"TS-BLK-L": 2, "TS-WHT-M": 1}
    assert child.warehouse_id is not None and child.warehouse_reason
    assert db.session.scalar(select(func.count()).select_from(StockMovement).where(
        StockMovement.order_id == parent.id, StockMovement.movement_type == "release")) == 2
    # Events with the user on both orders.
    pev = [e for e in parent.events if e.action == "split"]
    cev = [e for e in child.events if e.action == "split"]
    assert len(pev) == 1 and len(cev) == 1
    assert pev[0].user_id == ops and cev[0].user_id == ops
    assert "拆分订单" in pev[0].note and child.platform_order_id in pev[0].note
    assert "TS-BLK-L×2" in cev[0].note and parent.platform_order_id in cev[0].note
    assert "已拆分订单" in result.summary
    _clean()


def test_split_to_audit_order_keeps_both_parts_waiting_for_audit(ctx, ids):
    order = _make(ids["shops"]["A"], "3100000000000000002", status="to_audit")
    result = order_split.split_order(order.id, {str(_line(order, "TS-WHT-M").id): "3"}, user_id=_uid("ops"))
    db.session.expire_all()
    parent, child = db.session.get(Order, order.id), db.session.get(Order, result.new_order_id)
    assert (parent.status, child.status) == ("to_audit", "to_audit")
    assert _reserved(parent.id) == {} and _reserved(child.id) == {}
    assert not parent.is_held and not child.is_held
    # Each part can now be audited on its own.
    order_status.apply(child, "audit", user_id=_uid("ops"))
    db.session.commit()
    assert _reserved(child.id) == {"TS-WHT-M": 3}
    _clean()


def test_split_off_the_short_line_ships_the_rest_now_and_the_rest_waits_for_stock(ctx, ids):
    """The common case: one line is out of stock; split it off, the rest is audited at once
    and the short part keeps its 缺货 hold until stock arrives."""
    hz = db.session.execute(select(Warehouse).where(Warehouse.code == "HZ")).scalar_one()
    wht = _sku("TS-WHT-M")
    available = db.session.execute(select(Stock.on_hand - Stock.reserved).where(
        Stock.sku_id == wht.id, Stock.warehouse_id == hz.id)).scalar_one()
    stock.adjust(hz.id, wht.id, -(available - 1), note="测试：只剩 1 件可用")
    db.session.commit()
    order = _make(ids["shops"]["A"], "3100000000000000003", status="to_audit")
    with pytest.raises(stock.OutOfStock):
        orders.transition(order.id, "audit", user_id=_uid("ops"))
    db.session.expire_all()
    order = db.session.get(Order, order.id)
    assert order.active_hold_reasons == ["out_of_stock"]

    result = order_split.split_order(order.id, {_line(order, "TS-WHT-M").id: 3}, user_id=_uid("ops"))
    db.session.expire_all()
    parent, child = db.session.get(Order, order.id), db.session.get(Order, result.new_order_id)
    assert parent.status == "to_ship" and not parent.is_held
    assert _reserved(parent.id) == {"TS-BLK-L": 2}
    assert child.status == "to_audit" and child.active_hold_reasons == ["out_of_stock"]
    assert "TS-WHT-M" in child.holds[0].note
    assert _reserved(child.id) == {}
    assert any(e.action == "audit" and e.note == "拆分订单后自动审单" for e in parent.events)
    _clean()

    # Stock arrives: the short part is reserved and audited, first paid first served.
    done = stock.inbound(hz.id, wht.id, 5, note="到货")
    db.session.commit()
    assert child.id in done
    db.session.expire_all()
    child = db.session.get(Order, result.new_order_id)
    assert child.status == "to_ship" and not child.is_held
    assert _reserved(child.id) == {"TS-WHT-M": 3}
    _clean()


def test_to_ship_part_that_cannot_reserve_goes_back_to_audit_with_a_short_hold(ctx, ids):
    gz = Warehouse(code="GZ", name="广州仓", province="广东省", city="广州市", priority=2)
    db.session.add(gz)
    db.session.commit()
    order = _make(ids["shops"]["A"], "3100000000000000004")
    result = order_split.split_order(order.id, {_line(order, "TS-BLK-L").id: 1}, user_id=_uid("ops"),
                                     warehouse_id=gz.id)  # 广州仓 has no stock
    db.session.expire_all()
    parent, child = db.session.get(Order, order.id), db.session.get(Order, result.new_order_id)
    assert parent.status == "to_ship" and _reserved(parent.id) == {"TS-BLK-L": 1, "TS-WHT-M": 3}
    assert child.status == "to_audit" and child.active_hold_reasons == ["out_of_stock"]
    assert child.warehouse_id == gz.id and "广州仓" in child.holds[0].note
    assert _reserved(child.id) == {}
    assert any(e.action == "unaudit" for e in child.events)
    _clean()


def test_manual_and_address_holds_are_copied_and_unmatched_follows_its_line(ctx, ids):
    order = _make(ids["shops"]["A"], "3100000000000000005", status="to_audit", lines=[
        {"platform_line_id": "L1", "merchant_code": "TS-BLK-L", "title": "纯棉T恤", "quantity": 1,
         "price": "79.00", "paid_amount": "79.00"},
        {"platform_line_id": "L2", "merchant_code": "NOPE-1", "title": "未知商品", "quantity": 1,
         "price": "10.00", "paid_amount": "10.00"},
    ], goods="89.00", discount="0", post_fee="0", paid="89.00")
    order_status.hold(order, "unmatched_sku", note="商家编码未匹配：NOPE-1", source="sync")
    order_status.hold(order, "manual", note="客户要求暂缓", user_id=_uid("ops"))
    db.session.commit()
    assert set(order.active_hold_reasons) == {"unmatched_sku", "manual"}
    result = order_split.split_order(order.id, {_line(order, "NOPE-1").id: 1}, user_id=_uid("ops"))
    db.session.expire_all()
    parent, child = db.session.get(Order, order.id), db.session.get(Order, result.new_order_id)
    assert parent.active_hold_reasons == ["manual"]
    assert set(child.active_hold_reasons) == {"manual", "unmatched_sku"}
    assert child.is_held and parent.is_held
    assert any("客户要求暂缓" in (h.note or "") for h in child.holds)
    _clean()


def test_splitting_a_part_again_numbers_from_the_original(ctx, ids):
    order = _make(ids["shops"]["A"], "3100000000000000006")
    first = order_split.split_order(order.id, {_line(order, "TS-WHT-M").id: 2}, user_id=_uid("ops"))
    child = db.session.get(Order, first.new_order_id)
    second = order_split.split_order(child.id, {_line(child, "TS-WHT-M").id: 1}, user_id=_uid("ops"))
    third = order_split.split_order(order.id, {_line(order, "TS-WHT-M").id: 1}, user_id=_uid("ops"))
    db.session.expire_all()
    grand = db.session.get(Order, second.new_order_id)
    assert grand.platform_order_id == "3100000000000000006-拆2" and grand.split_from_id == order.id
    assert db.session.get(Order, third.new_order_id).platform_order_id == "3100000000000000006-拆3"
    fam = order_split.family(db.session.get(Order, second.new_order_id))
    assert [o.platform_order_id for o in fam][0] == "3100000000000000006"
    assert len(fam) == 4
    assert sum(sum(ln.quantity for ln in o.lines) for o in fam) == 5
    assert sum((o.paid_amount for o in fam), D("0")) == D("385.00")
    assert order_split.is_split(fam[0]) and all(order_split.is_split(o) for o in fam)
    assert order_split.split_order_ids([o.id for o in fam] + [ids["orders"]["3000000000000000001"]]) == {order.id}
    assert not order_split.is_split(db.session.get(Order, ids["orders"]["3000000000000000001"]))
    _clean()


def test_money_sums_hold_with_odd_cents(ctx, ids):
    order = _make(ids["shops"]["A"], "3100000000000000007", lines=[
        {"platform_line_id": "L1", "merchant_code": "TS-BLK-L", "title": "纯棉T恤", "quantity": 3,
         "price": "33.33", "paid_amount": "99.99"},
        {"platform_line_id": "L2", "merchant_code": "TS-WHT-M", "title": "纯棉T恤", "quantity": 7,
         "price": "10.01", "paid_amount": "70.01"},
    ], goods="170.06", discount="0.07", post_fee="6.00", paid="175.99")
    before = _money(order)
    lines_before = {ln.platform_line_id: ln.paid_amount for ln in order.lines}
    result = order_split.split_order(order.id, {_line(order, "TS-BLK-L").id: 1, _line(order, "TS-WHT-M").id: 3},
                                     user_id=_uid("ops"))
    db.session.expire_all()
    parent, child = db.session.get(Order, order.id), db.session.get(Order, result.new_order_id)
    for k in MONEY:
        assert getattr(parent, k) + getattr(child, k) == before[k], k
        assert getattr(parent, k) >= 0 and getattr(child, k) >= 0
    for lid, paid in lines_before.items():
        assert sum(ln.paid_amount for o in (parent, child) for ln in o.lines if ln.platform_line_id == lid) == paid
    _clean()


# --- bad input: a zh error naming the line, nothing changed -----------------------------------------
def _snapshot(order_id: int):
    db.session.expire_all()
    o = db.session.get(Order, order_id)
    return (o.status, o.is_held, _money(o), sorted((ln.id, ln.quantity, ln.paid_amount) for ln in o.lines),
            db.session.scalar(select(func.count()).select_from(Order)),
            db.session.scalar(select(func.count()).select_from(OrderEvent)),
            db.session.scalar(select(func.count()).select_from(StockMovement)))


@pytest.mark.parametrize("parts, error, needle", [
    ({999999: 1}, ValidationError, "没有明细 999999"),
    ({"abc": 1}, ValidationError, "没有明细 abc"),
    ({"BLK": 0}, ValidationError, "第 1 行（TS-BLK-L 纯棉T恤）拆出数量必须大于 0"),
    ({"BLK": -1}, ValidationError, "第 1 行（TS-BLK-L 纯棉T恤）拆出数量必须大于 0"),
    ({"BLK": "1.5"}, ValidationError, "第 1 行（TS-BLK-L 纯棉T恤）拆出数量必须是整数"),
    ({"BLK": 1.5}, ValidationError, "拆出数量必须是整数"),
    ({"BLK": "两件"}, ValidationError, "第 1 行（TS-BLK-L 纯棉T恤）拆出数量必须是正整数"),
    ({"WHT": 4}, ValidationError, "第 2 行（TS-WHT-M 纯棉T恤）拆出数量 4 超过该行数量 3"),
    ({"BLK": 2, "WHT": 3}, ValidationError, "不能拆出订单 3100000000000000010 的全部商品"),
    ({}, ValidationError, "请填写要拆出的商品数量"),
])
def test_bad_parts_get_a_zh_error_and_change_nothing(ctx, ids, parts, error, needle):
    order = _make(ids["shops"]["A"], "3100000000000000010")
    keys = {"BLK": _line(order, "TS-BLK-L").id, "WHT": _line(order, "TS-WHT-M").id}
    parts = {keys.get(k, k): v for k, v in parts.items()}
    before = _snapshot(order.id)
    with pytest.raises(error) as exc:
        order_split.split_order(order.id, parts, user_id=_uid("ops"))
    assert needle in exc.value.message
    assert _snapshot(order.id) == before
    _clean()


def test_unknown_warehouse_is_refused(ctx, ids):
    order = _make(ids["shops"]["A"], "3100000000000000011")
    before = _snapshot(order.id)
    with pytest.raises(ValidationError, match="「发货仓库」不存在：777"):
        order_split.split_order(order.id, {_line(order, "TS-BLK-L").id: 1}, user_id=_uid("ops"), warehouse_id=777)
    assert _snapshot(order.id) == before


@pytest.mark.parametrize("pid, needle", [
    ("3000000000000000003", "当前为「待付款」，不能拆分（允许的状态：待审核、待发货）"),
])
def test_wrong_status_is_refused(ctx, ids, pid, needle):
    oid = ids["orders"][pid]
    before = _snapshot(oid)
    line = db.session.get(Order, oid).lines[0]
    with pytest.raises(IllegalTransition) as exc:
        order_split.split_order(oid, {line.id: 1}, user_id=_uid("ops"))
    assert needle in exc.value.message
    assert _snapshot(oid) == before


def test_shipped_order_and_refunding_order_are_refused(ctx, ids):
    order = _make(ids["shops"]["A"], "3100000000000000012")
    order.carrier_id, order.tracking_number = ids["carrier"], "SF3100000012"
    order_status.apply(order, "ship")
    db.session.commit()
    with pytest.raises(IllegalTransition, match="当前为「已发货」，不能拆分"):
        order_split.split_order(order.id, {_line(order, "TS-BLK-L").id: 1}, user_id=_uid("ops"))
    other = _make(ids["shops"]["A"], "3100000000000000013", status="to_audit")
    order_status.hold(other, "refunding", source="sync", note="平台退款中")
    db.session.commit()
    before = _snapshot(other.id)
    with pytest.raises(IllegalTransition, match=r"处于挂起状态（退款中），不能拆分"):
        order_split.split_order(other.id, {_line(other, "TS-BLK-L").id: 1}, user_id=_uid("ops"))
    assert _snapshot(other.id) == before


def test_another_shops_order_is_not_found_for_a_shop_limited_user(ctx, ids):
    oid = ids["orders"]["3000000000000000002"]  # shop A
    line = db.session.get(Order, oid).lines[0]
    before = _snapshot(oid)
    with as_user(_uid("cs_b")):  # shop B only
        with pytest.raises(NotFound, match=f"订单不存在：{oid}"):
            order_split.split_order(oid, {line.id: 1}, user_id=_uid("cs_b"))
    assert _snapshot(oid) == before


# --- write-back and re-sync against the Taobao sandbox --------------------------------------------
def _platform_trade(twin_index: int):
    """A shop pointing at its sandbox twin, with one paid two-line trade synced in."""
    import redis

    from app.sandbox.server import serve_in_thread
    from app.sandbox.state import DEMO_SHOPS, SandboxState
    from app.services import sync
    from tests.conftest import TEST_REDIS_URL

    twin = DEMO_SHOPS[twin_index]
    state = SandboxState(shops=[twin], seed=11, rate_per_minute=0)
    base, stop = serve_in_thread(state)
    redis.Redis.from_url(TEST_REDIS_URL).delete(*[f"oms:sync:shop:{i}" for i in range(1, 20)])
    shop = Shop(name=f"沙箱-{twin.name}", platform=twin.platform, app_key=twin.app_key, app_secret=twin.app_secret,
                access_token=twin.access_token, gateway_url=base + twin.gateway_path, backfill_days=2,
                sync_interval_seconds=60)
    db.session.add(shop)
    db.session.commit()
    trade = state.create_order(twin.app_key, {
        "lines": [{"merchant_code": "TS-BLK-L", "num": 2}, {"merchant_code": "TS-WHT-M", "num": 1}],
        "receiver": {"name": "周九", "phone": "13733334444", "province": "浙江省", "city": "杭州市",
                     "district": "西湖区", "address": "文一路9号"}})
    time.sleep(1.1)
    sync.sync_shop(shop.id)
    order = db.session.execute(select(Order).where(Order.shop_id == shop.id,
                                                   Order.platform_order_id == str(trade.key))).scalar_one()
    if order.active_hold_reasons:
        order_status.release(order)
    db.session.commit()
    return {"base": base, "state": state, "twin": twin, "shop_id": shop.id, "order": order, "sync": sync}, stop


@pytest.fixture
def taobao(ctx):
    world, stop = _platform_trade(1)
    yield world
    stop()


@pytest.fixture
def pdd(ctx):
    world, stop = _platform_trade(3)
    yield world
    stop()


def _split_ship_part_then_original(order: Order, code: str, part_number: str, original_number: str,
                                   carrier_id: int) -> int:
    """Split one unit of ``code`` off, ship and write back the part, then the original;
    returns the part's id."""
    from app.services import writeback

    order_id = order.id
    result = order_split.split_order(order_id, {_line(order, code).id: 1}, user_id=_uid("ops"))
    _ship(db.session.get(Order, result.new_order_id), part_number, carrier_id)
    assert writeback.write_back(result.new_order_id) == "done"
    _ship(db.session.get(Order, order_id), original_number, carrier_id)
    assert writeback.write_back(order_id) == "done"
    return result.new_order_id


def _ship(order: Order, number: str, carrier_id: int) -> None:
    if order.status == "to_audit":
        order_status.apply(order, "audit")
    order.carrier_id, order.tracking_number = carrier_id, number
    order_status.apply(order, "ship")
    db.session.commit()


def _top_trade(taobao, tid: str) -> dict:
    """The trade as the sandbox gateway serves it (taobao.trade.fullinfo.get)."""
    from app.platforms import client_for

    shop = db.session.get(Shop, taobao["shop_id"])
    client = client_for(shop)
    try:
        return client._fullinfo(tid)
    finally:
        client.close()


def _sub_orders(trade: dict) -> dict:
    """oid → (status, invoice_no) of a TOP trade's sub-orders."""
    return {str(o["oid"]): (o["status"], o.get("invoice_no")) for o in trade["orders"]["order"]}


def test_each_part_of_a_split_taobao_trade_writes_back_its_own_sub_orders(taobao, ids):
    """拆单发货: each parcel tells Taobao which sub-orders it carries (is_split + sub_tid), so
    the buyer sees both tracking numbers, each on its own items."""
    from app.services import writeback

    order, state = taobao["order"], taobao["state"]
    pid = order.platform_order_id
    blk, wht = _line(order, "TS-BLK-L").platform_line_id, _line(order, "TS-WHT-M").platform_line_id
    result = order_split.split_order(order.id, {_line(order, "TS-WHT-M").id: 1}, user_id=_uid("ops"))
    child = db.session.get(Order, result.new_order_id)
    _ship(child, "SF2000000001", ids["carrier"])
    assert child.writeback_status == "pending"

    assert writeback.write_back(child.id) == "done"
    assert [(w["order_id"], w["tracking_number"], w["carrier_code"], w.get("line_ids")) for w in state.writebacks] == [
        (pid, "SF2000000001", "SF", [wht])]
    trade = _top_trade(taobao, pid)
    assert trade["status"] == "SELLER_CONSIGNED_PART"
    assert _sub_orders(trade) == {blk: ("WAIT_SELLER_SEND_GOODS", None),
                                  wht: ("WAIT_BUYER_CONFIRM_GOODS", "SF2000000001")}
    db.session.expire_all()
    child = db.session.get(Order, result.new_order_id)
    assert child.writeback_status == "done"
    assert any(e.action == "writeback" and f"拆单发货：平台订单 {pid} 的子订单 {wht}" in (e.note or "")
               for e in child.events)

    # The second parcel ships the rest of the trade under its own number.
    parent = db.session.get(Order, order.id)
    _ship(parent, "SF2000000002", ids["carrier"])
    assert writeback.write_back(parent.id) == "done"
    assert [(w["tracking_number"], w.get("line_ids")) for w in state.writebacks] == [
        ("SF2000000001", [wht]), ("SF2000000002", [blk])]
    trade = _top_trade(taobao, pid)
    assert trade["status"] == "WAIT_BUYER_CONFIRM_GOODS"
    assert _sub_orders(trade) == {blk: ("WAIT_BUYER_CONFIRM_GOODS", "SF2000000002"),
                                  wht: ("WAIT_BUYER_CONFIRM_GOODS", "SF2000000001")}
    db.session.expire_all()
    assert db.session.get(Order, order.id).writeback_status == "done"
    _clean()


def test_a_line_cut_in_two_ships_its_sub_order_with_the_first_parcel(taobao, ids):
    """One unit of the two-unit line moves: both parts hold that sub-order. The first parcel
    ships it; the second ships only the sub-order still open."""
    order, state = taobao["order"], taobao["state"]
    pid = order.platform_order_id
    blk, wht = _line(order, "TS-BLK-L").platform_line_id, _line(order, "TS-WHT-M").platform_line_id
    part_id = _split_ship_part_then_original(order, "TS-BLK-L", "SF2000000011", "SF2000000012", ids["carrier"])
    assert [ln.platform_line_id for ln in db.session.get(Order, part_id).lines] == [blk]
    assert [(w["tracking_number"], w.get("line_ids")) for w in state.writebacks] == [
        ("SF2000000011", [blk]), ("SF2000000012", [wht])]
    assert _top_trade(taobao, pid)["status"] == "WAIT_BUYER_CONFIRM_GOODS"
    _clean()


def test_a_parcel_holding_every_sub_order_ships_the_trade_and_the_other_part_is_not_sent(taobao, ids):
    """The original keeps one unit of each sub-order: shipped first, it ships the trade whole
    (Taobao wants sub_tid to be a proper subset); the split-off part then has nothing left to
    tell the platform, and its event says why."""
    from app.services import writeback

    order, state = taobao["order"], taobao["state"]
    pid = order.platform_order_id
    result = order_split.split_order(order.id, {_line(order, "TS-BLK-L").id: 1}, user_id=_uid("ops"))
    parent = db.session.get(Order, order.id)
    _ship(parent, "SF2000000021", ids["carrier"])
    assert writeback.write_back(parent.id) == "done"
    assert [(w["order_id"], w["tracking_number"], w.get("line_ids")) for w in state.writebacks] == [
        (pid, "SF2000000021", None)]
    child = db.session.get(Order, result.new_order_id)
    _ship(child, "SF2000000022", ids["carrier"])
    assert writeback.write_back(child.id) == "done"
    assert len(state.writebacks) == 1
    db.session.expire_all()
    child = db.session.get(Order, result.new_order_id)
    assert child.writeback_status == "done"
    assert any(e.action == "writeback" and "未单独回传" in (e.note or "") and pid in e.note
               and "SF2000000021" in e.note for e in child.events)
    _clean()


def test_a_part_of_a_trade_the_platform_already_shows_shipped_is_not_sent_again(taobao, ids):
    """The trade was shipped whole before (by an older version of this write-back, or in the
    platform's back-end): the part's write-back asks the platform first and sends nothing."""
    from app.platforms import client_for
    from app.services import writeback

    order, state = taobao["order"], taobao["state"]
    pid = order.platform_order_id
    client = client_for(db.session.get(Shop, taobao["shop_id"]))
    try:
        client.ship(pid, "SF", "SF2000000041")
    finally:
        client.close()
    result = order_split.split_order(order.id, {_line(order, "TS-WHT-M").id: 1}, user_id=_uid("ops"))
    child = db.session.get(Order, result.new_order_id)
    _ship(child, "SF2000000042", ids["carrier"])
    assert writeback.write_back(child.id) == "done"
    assert [w["tracking_number"] for w in state.writebacks] == ["SF2000000041"]
    db.session.expire_all()
    child = db.session.get(Order, result.new_order_id)
    assert child.writeback_status == "done" and child.writeback_error is None
    assert any(e.action == "writeback" and "已随运单 SF2000000041 发货" in (e.note or "")
               and "SF2000000042 未单独回传" in e.note for e in child.events)
    _clean()


def test_a_trade_without_platform_sub_order_ids_ships_whole_with_its_first_parcel(taobao, ids):
    """Lines imported from a sheet without 子订单编号 are numbered 1, 2: Taobao cannot be told
    which parcel holds which sub-order, so the first parcel ships the trade."""
    order, state = taobao["order"], taobao["state"]
    pid = order.platform_order_id
    for i, ln in enumerate(sorted(order.lines, key=lambda x: x.id), start=1):
        ln.platform_line_id = str(i)
    db.session.commit()
    _split_ship_part_then_original(order, "TS-WHT-M", "SF2000000051", "SF2000000052", ids["carrier"])
    assert [(w["order_id"], w["tracking_number"], w.get("line_ids")) for w in state.writebacks] == [
        (pid, "SF2000000051", None)]
    db.session.expire_all()
    assert any(e.action == "writeback" and "缺少平台子订单编号" in (e.note or "") and "SF2000000051" in e.note
               for e in db.session.get(Order, order.id).events)
    _clean()


def test_a_refund_on_a_waiting_sub_order_holds_the_part_still_to_ship(taobao, ids):
    """While the trade shows SELLER_CONSIGNED_PART (one parcel gone), the buyer asks for a
    refund: the part still waiting gets 退款中 on the next sync, so it is not packed."""
    import requests

    from app.services import writeback

    order, sync = taobao["order"], taobao["sync"]
    result = order_split.split_order(order.id, {_line(order, "TS-WHT-M").id: 1}, user_id=_uid("ops"))
    child = db.session.get(Order, result.new_order_id)
    _ship(child, "SF2000000061", ids["carrier"])
    assert writeback.write_back(child.id) == "done"
    resp = requests.post(f"{taobao['base']}/_sandbox/shops/{taobao['twin'].app_key}/orders/"
                         f"{order.platform_order_id}/refund", json={})
    assert resp.status_code == 200, resp.text
    time.sleep(1.1)
    sync.sync_shop(taobao["shop_id"])
    db.session.expire_all()
    parent = db.session.get(Order, order.id)
    assert parent.status in ("to_audit", "to_ship") and "refunding" in parent.active_hold_reasons
    assert db.session.get(Order, result.new_order_id).status == "shipped"
    _clean()


def test_a_split_pdd_trade_ships_whole_with_its_first_parcel(pdd, ids):
    """PDD ships whole orders only: the first parcel writes the trade back; the second is not
    sent (the platform would refuse it) and its event says why."""
    order, state = pdd["order"], pdd["state"]
    pid = order.platform_order_id
    part_id = _split_ship_part_then_original(order, "TS-WHT-M", "SF2000000071", "SF2000000072", ids["carrier"])
    assert [(w["order_id"], w["tracking_number"], w.get("line_ids")) for w in state.writebacks] == [
        (pid, "SF2000000071", None)]
    db.session.expire_all()
    assert any(e.action == "writeback" and f"按平台订单 {pid} 回传" in (e.note or "")
               for e in db.session.get(Order, part_id).events)
    assert any(e.action == "writeback" and "未单独回传（平台接口按整单发货）" in (e.note or "")
               and "SF2000000071" in e.note for e in db.session.get(Order, order.id).events)
    _clean()


def test_the_sandbox_refuses_sub_orders_of_another_trade_or_already_shipped(taobao):
    from app.platforms import PlatformError, client_for

    order, state = taobao["order"], taobao["state"]
    pid = order.platform_order_id
    blk, wht = _line(order, "TS-BLK-L").platform_line_id, _line(order, "TS-WHT-M").platform_line_id
    client = client_for(db.session.get(Shop, taobao["shop_id"]))
    try:
        for line_ids, message in (([blk, "1234567890123"], "子订单 1234567890123 不属于订单"),
                                  ([blk, wht], "不能包含订单的全部子订单")):
            with pytest.raises(PlatformError) as info:
                client.ship(pid, "SF", "SF2000000031", line_ids=line_ids)
            assert message in info.value.message
        assert state.writebacks == []
        client.ship(pid, "SF", "SF2000000031", line_ids=[wht])
        client.ship(pid, "SF", "SF2000000031", line_ids=[wht])  # a repeat of the same parcel
        with pytest.raises(PlatformError) as info:
            client.ship(pid, "SF", "SF2000000032", line_ids=[wht])
        assert f"子订单 {wht} 已经发货" in info.value.message
    finally:
        client.close()
    assert [(w["tracking_number"], w["repeat"]) for w in state.writebacks] == [
        ("SF2000000031", False), ("SF2000000031", True)]
    assert _top_trade(taobao, pid)["status"] == "SELLER_CONSIGNED_PART"


def test_a_resync_of_the_trade_leaves_the_split_off_part_alone(taobao):
    import requests

    order, sync = taobao["order"], taobao["sync"]
    result = order_split.split_order(order.id, {_line(order, "TS-WHT-M").id: 1}, user_id=_uid("ops"))
    child_before = _snapshot(result.new_order_id)[:4]
    requests.post(f"{taobao['base']}/_sandbox/shops/{taobao['twin'].app_key}/orders/{order.platform_order_id}"
                  "/address", json={"receiver": {"address": "文一路10号"}})
    time.sleep(1.1)
    sync.sync_shop(taobao["shop_id"])
    db.session.expire_all()
    assert _snapshot(result.new_order_id)[:4] == child_before
    assert db.session.scalar(select(func.count()).select_from(Order).where(
        Order.shop_id == taobao["shop_id"])) == 2
    assert db.session.get(Order, order.id).receiver_address == "文一路10号"  # the re-sync did run
    _clean()


def test_a_resync_of_the_trade_does_not_put_the_split_lines_back_on_the_original(taobao):
    import requests

    order, sync = taobao["order"], taobao["sync"]
    result = order_split.split_order(order.id, {_line(order, "TS-WHT-M").id: 1}, user_id=_uid("ops"))
    db.session.expire_all()
    parent = db.session.get(Order, order.id)
    before = (_money(parent), sorted((ln.merchant_code, ln.quantity, ln.paid_amount) for ln in parent.lines))
    requests.post(f"{taobao['base']}/_sandbox/shops/{taobao['twin'].app_key}/orders/{order.platform_order_id}"
                  "/address", json={"receiver": {"address": "文一路11号"}})
    time.sleep(1.1)
    sync.sync_shop(taobao["shop_id"])
    db.session.expire_all()
    parent = db.session.get(Order, order.id)
    assert parent.receiver_address == "文一路11号"
    assert (_money(parent), sorted((ln.merchant_code, ln.quantity, ln.paid_amount) for ln in parent.lines)) == before
    child = db.session.get(Order, result.new_order_id)
    assert sum(ln.quantity for o in (parent, child) for ln in o.lines) == 3
    _clean()


def test_the_platform_showing_the_trade_shipped_does_not_ship_the_unshipped_part(taobao, ids):
    from app.services import writeback

    order, sync = taobao["order"], taobao["sync"]
    result = order_split.split_order(order.id, {_line(order, "TS-WHT-M").id: 1}, user_id=_uid("ops"))
    child = db.session.get(Order, result.new_order_id)
    _ship(child, "SF2000000003", ids["carrier"])
    assert writeback.write_back(child.id) == "done"  # the platform now says the trade shipped
    time.sleep(1.1)
    sync.sync_shop(taobao["shop_id"])
    db.session.expire_all()
    parent = db.session.get(Order, order.id)
    assert parent.status == "to_audit"  # its parcel has not left: it must not be shipped by sync
    assert _reserved(parent.id) == {} and not any(
        m.movement_type == "ship" for m in db.session.scalars(select(StockMovement).where(
            StockMovement.order_id == parent.id)))
    _clean()


def test_the_platform_refunding_the_whole_trade_closes_every_open_part(taobao):
    import requests

    order, sync = taobao["order"], taobao["sync"]
    result = order_split.split_order(order.id, {_line(order, "TS-WHT-M").id: 1}, user_id=_uid("ops"))
    child = db.session.get(Order, result.new_order_id)
    order_status.apply(child, "audit")  # the part reserved its stock
    db.session.commit()
    assert _reserved(child.id)
    key, pid = taobao["twin"].app_key, order.platform_order_id
    for event in ("refund", "refund_done"):
        r = requests.post(f"{taobao['base']}/_sandbox/shops/{key}/orders/{pid}/{event}", json={})
        assert r.status_code == 200, r.text
    time.sleep(1.1)
    sync.sync_shop(taobao["shop_id"])
    db.session.expire_all()
    for oid in (order.id, child.id):
        o = db.session.get(Order, oid)
        assert o.status == "closed", (o.platform_order_id, o.status)
        assert _reserved(oid) == {}
    assert stock.check_ledger() == []
    _clean()


# --- page and API ------------------------------------------------------------------------------------
def _web_order(app, ids, pid: str, status: str = "to_ship") -> tuple[int, dict]:
    with app.app_context():
        order = _make(ids["shops"]["A"], pid, status=status)
        return order.id, {ln.merchant_code: ln.id for ln in order.lines}


def test_ops_splits_an_order_from_its_page(app, ids, login):
    oid, lines = _web_order(app, ids, "3100000000000000020")
    ops = login("ops")
    page = ops.get(f"/orderview/show/{oid}").get_data(as_text=True)
    assert f"/orderview/split/{oid}" in page and "拆分订单" in page
    form = ops.get(f"/orderview/split/{oid}")
    assert form.status_code == 200
    text = form.get_data(as_text=True)
    assert f'name="qty_{lines["TS-WHT-M"]}"' in text and "拆出数量" in text and "新订单发货仓库" in text
    resp = ops.post(f"/orderview/split/{oid}", data={f"qty_{lines['TS-WHT-M']}": "2",
                                                     f"qty_{lines['TS-BLK-L']}": ""})
    assert resp.status_code == 302
    with app.app_context():
        child = db.session.execute(select(Order).where(
            Order.platform_order_id == "3100000000000000020-拆1")).scalar_one()
        assert resp.headers["Location"].endswith(f"/orderview/show/{child.id}")
        assert [(ln.merchant_code, ln.quantity) for ln in child.lines] == [("TS-WHT-M", 2)]
        assert child.status == "to_ship"
        _clean()
    shown = ops.get(f"/orderview/show/{child.id}").get_data(as_text=True)
    assert "已拆分订单 3100000000000000020" in shown  # the flash
    assert "同一平台订单已拆分为" in shown and f"/orderview/show/{oid}" in shown
    assert "拆分自" in shown


def test_a_bad_quantity_on_the_page_shows_the_zh_error_and_keeps_the_input(app, ids, login):
    oid, lines = _web_order(app, ids, "3100000000000000021")
    ops = login("ops")
    resp = ops.post(f"/orderview/split/{oid}", data={f"qty_{lines['TS-WHT-M']}": "9"})
    assert resp.status_code == 422
    text = resp.get_data(as_text=True)
    assert "第 2 行（TS-WHT-M 纯棉T恤）拆出数量 9 超过该行数量 3" in text
    assert 'value="9"' in text
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Order).where(
            Order.split_from_id == oid)) == 0


@pytest.mark.parametrize("user", ["cs", "warehouse", "finance"])
def test_roles_without_audit_cannot_split(app, ids, login, user):
    oid, lines = _web_order(app, ids, "3100000000000000022")
    client = login(user)
    page = client.get(f"/orderview/show/{oid}").get_data(as_text=True)
    assert f"/orderview/split/{oid}" not in page
    assert client.get(f"/orderview/split/{oid}").status_code != 200
    client.post(f"/orderview/split/{oid}", data={f"qty_{lines['TS-WHT-M']}": "1"})
    resp = client.post(f"/api/v1/order/{oid}/split", json={"lines": {str(lines["TS-WHT-M"]): 1}})
    assert resp.status_code == 403
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Order).where(
            Order.split_from_id == oid)) == 0


def test_split_api(app, ids, login):
    oid, lines = _web_order(app, ids, "3100000000000000023", status="to_audit")
    ops_a = login("ops_a")  # 运营 of shop A only
    resp = ops_a.post(f"/api/v1/order/{oid}/split", json={"lines": {str(lines["TS-BLK-L"]): 1}})
    assert resp.status_code == 201, resp.get_json()
    result = resp.get_json()["result"]
    assert result["new_order"]["platform_order_id"] == "3100000000000000023-拆1"
    assert result["new_order"]["status"] == "to_audit" and result["moved"] == "TS-BLK-L×1"
    bad = ops_a.post(f"/api/v1/order/{oid}/split", json={"lines": {str(lines["TS-BLK-L"]): "1.5"}})
    assert bad.status_code == 422 and "拆出数量必须是整数" in bad.get_json()["message"]
    assert ops_a.post(f"/api/v1/order/{oid}/split", json=[1]).status_code == 422
    other = ids["orders"]["261120-000000000000002"]  # shop B: not in ops_a's shops
    with app.app_context():
        line_id = db.session.get(Order, other).lines[0].id
    missing = ops_a.post(f"/api/v1/order/{other}/split", json={"lines": {str(line_id): 1}})
    assert missing.status_code == 404 and missing.get_json()["message"] == f"订单不存在：{other}"
    pending = ids["orders"]["3000000000000000003"]
    with app.app_context():
        line_id = db.session.get(Order, pending).lines[0].id
    refused = ops_a.post(f"/api/v1/order/{pending}/split", json={"lines": {str(line_id): 1}})
    assert refused.status_code == 409 and "不能拆分" in refused.get_json()["message"]
    with app.app_context():
        _clean()


def test_split_on_postgresql(pg_url, tmp_path):
    """The same rules on PostgreSQL (row locks, the reservation's single-statement path)."""
    from flask_migrate import upgrade

    from app.services import setup
    from tests import world
    from tests.conftest import make_app

    app = make_app(tmp_path / "x.db", SQLALCHEMY_DATABASE_URI=pg_url)
    with app.app_context():
        upgrade()
        setup.initialise(admin_password=world.ADMIN_PASSWORD)
        pg_ids = world.build()
        try:
            test_split_to_ship_order_moves_lines_and_money_and_both_parts_stay_reserved(None, pg_ids)
            test_split_off_the_short_line_ships_the_rest_now_and_the_rest_waits_for_stock(None, pg_ids)
            test_splitting_a_part_again_numbers_from_the_original(None, pg_ids)
        finally:
            db.session.remove()
            db.engine.dispose()
