"""退货入库 (issue #5): goods returned for a shipped order come back through the ledger
as ``return`` movements (order, source document, user, note) with an order event;
over-returns, unshipped orders, bad quantities and unknown or inactive warehouses are
refused in zh naming the line and field with nothing written; bundles come back as
their components; held 缺货 orders get the stock first paid first served; the page for
仓库 (not 客服), within the user's shops; and the lock that keeps two concurrent
returns of one order from both taking the last returnable unit (PostgreSQL)."""
from __future__ import annotations

import datetime as dt
import multiprocessing
import re
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text

from app.extensions import db
from app.models import (
    BundleComponent, OmsUser, Order, OrderEvent, Product, Shop, Sku, Stock, StockMovement, Warehouse,
)
from app.services import order_status, orders, stock, stock_returns as returns
from app.services.errors import IllegalTransition, NotFound, ValidationError
from app.services.scope import as_user
from app.services.stock_documents import DocumentInvalid
from tests import world
from tests.test_stock import _paid_order
from tests.world import OPENING_STOCK as N

UTC = dt.timezone.utc
A2 = "3000000000000000002"  # to_ship in tests/world.py: 2 × TS-BLK-L reserved in 杭州仓
B2 = "261120-000000000000002"  # the same in shop B


# --- helpers ---------------------------------------------------------------------------------
def _sku(code: str) -> Sku:
    return db.session.scalars(select(Sku).where(Sku.merchant_code == code)).one()


def _hz() -> Warehouse:
    return db.session.scalars(select(Warehouse).where(Warehouse.code == "HZ")).one()


def _stock(code: str) -> tuple[int, int]:
    db.session.expire_all()
    row = db.session.execute(select(Stock.on_hand, Stock.reserved)
                             .where(Stock.warehouse_id == _hz().id, Stock.sku_id == _sku(code).id)).one_or_none()
    return tuple(row) if row else (0, 0)


def _count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def _user_id(name: str) -> int:
    return db.session.scalars(select(OmsUser.id).where(OmsUser.username == name)).one()


def _returns(order_id: int) -> list[tuple[str, int, int]]:
    rows = db.session.execute(
        select(Sku.merchant_code, StockMovement.on_hand_delta, StockMovement.reserved_delta)
        .join(Sku, Sku.id == StockMovement.sku_id)
        .where(StockMovement.order_id == order_id, StockMovement.movement_type == "return")
        .order_by(StockMovement.id)).all()
    return [tuple(r) for r in rows]


def _ship(order_id: int, carrier_id: int, tracking: str) -> Order:
    order = db.session.get(Order, order_id)
    if order.status == "to_audit":
        orders.transition(order_id, "audit")
    order.carrier_id, order.tracking_number = carrier_id, tracking
    orders.transition(order_id, "ship")
    return db.session.get(Order, order_id)


def _bundle(code: str, parts: dict[str, int]) -> Sku:
    product = db.session.scalars(select(Product)).first()
    sku = Sku(product=product, merchant_code=code, name="套装", cost_price=Decimal("1"), sale_price=Decimal("9"),
              is_bundle=True)
    db.session.add(sku)
    db.session.flush()
    for comp, qty in parts.items():
        db.session.add(BundleComponent(bundle_sku_id=sku.id, component_sku_id=_sku(comp).id, quantity=qty))
    db.session.commit()
    return sku


def _line_id(order_id: int, row: int = 1) -> int:
    return db.session.get(Order, order_id).lines[row - 1].id


# --- the return ---------------------------------------------------------------------------------
def test_return_of_a_shipped_order_books_return_movements_and_raises_on_hand(ctx, ids):
    oid = ids["orders"][A2]
    _ship(oid, ids["carrier"], "SF-RET-1")
    assert _stock("TS-BLK-L") == (N - 2, 2)  # shipped 2, the B order still reserves 2
    user = _user_id("warehouse")
    result = returns.receive_return(A2, {_line_id(oid): "1"}, note="尺码不合适", user_id=user)
    assert re.fullmatch(r"TH-\d{14,17}", result.source_ref)
    assert result.warehouse_name == "杭州仓" and result.units == 1
    assert result.summary.startswith(f"退货入库单 {result.source_ref}：订单 {A2} 退回 1 行共 1 件，已入杭州仓")
    assert _stock("TS-BLK-L") == (N - 1, 2)
    mv = db.session.scalars(select(StockMovement).where(StockMovement.movement_type == "return")).one()
    assert (mv.order_id, mv.warehouse_id, mv.on_hand_delta, mv.reserved_delta, mv.source_ref, mv.user_id,
            mv.note) == (oid, _hz().id, 1, 0, result.source_ref, user, "尺码不合适")
    ev = db.session.scalars(select(OrderEvent).where(OrderEvent.order_id == oid, OrderEvent.action == "return")).one()
    assert ev.user_id == user and ev.source == "user"
    assert ev.note == f"退货入库 {result.source_ref}（杭州仓）：纯棉T恤（TS-BLK-L） ×1；原因：尺码不合适"
    # the rest, by default, with our own document number
    sheet = returns.return_sheet(oid)
    assert [(ln.shipped, ln.returned, ln.returnable) for ln in sheet.lines] == [(2, 1, 1)]
    again = returns.receive_return(oid, source_ref="SH-20261201-7")
    assert again.source_ref == "SH-20261201-7" and again.lines == [(_line_id(oid), 1)]
    assert _returns(oid) == [("TS-BLK-L", 1, 0), ("TS-BLK-L", 1, 0)]
    assert _stock("TS-BLK-L") == (N, 2)
    with pytest.raises(DocumentInvalid, match=f"订单 {A2} 已全部退货入库"):
        returns.receive_return(oid)
    assert stock.check_ledger() == []


def test_over_return_is_refused_in_zh_and_nothing_is_written(ctx, ids):
    oid = ids["orders"][A2]
    _ship(oid, ids["carrier"], "SF-RET-2")
    line = _line_id(oid)
    returns.receive_return(oid, {line: 1})
    before = (_count(StockMovement), _count(OrderEvent), _stock("TS-BLK-L"))
    with pytest.raises(DocumentInvalid) as err:
        returns.receive_return(oid, {line: 2})
    assert ("第 1 行「退货数量」：TS-BLK-L 退回 2 件，超过可退数量 1（已发货 2，已退货 1）" in err.value.message
            and "未写入任何库存" in err.value.message)
    with pytest.raises(DocumentInvalid, match=r"第 1 行（TS-BLK-L 纯棉T恤）「退货数量」3 超过该行发货数量 2"):
        returns.receive_return(oid, {line: 3})
    for raw in ("0", "-1", "1.5", "一"):
        with pytest.raises(DocumentInvalid,
                           match=re.escape(f"第 1 行（TS-BLK-L 纯棉T恤）「退货数量」必须是正整数：{raw}")):
            returns.receive_return(oid, {line: raw})
    with pytest.raises(DocumentInvalid, match="没有填写任何退货数量"):
        returns.receive_return(oid, {line: ""})
    other = ids["orders"][B2]
    with pytest.raises(DocumentInvalid, match=f"订单明细 {_line_id(other)} 不属于订单 {A2}"):
        returns.receive_return(oid, {_line_id(other): 1})
    assert (_count(StockMovement), _count(OrderEvent), _stock("TS-BLK-L")) == before
    assert stock.check_ledger() == []


def test_unshipped_unknown_orders_and_bad_warehouses_are_refused(ctx, ids):
    before = _count(StockMovement)
    with pytest.raises(IllegalTransition, match=f"订单 {A2} 当前为「待发货」，还没有发货，不能退货入库"):
        returns.receive_return(A2)
    with pytest.raises(NotFound, match="订单不存在：NOPE-1"):
        returns.receive_return("NOPE-1")
    with pytest.raises(NotFound, match="订单不存在：999999"):
        returns.receive_return(999999)
    # cancelled before shipping: closed, but nothing ever left
    orders.transition(ids["orders"][A2], "cancel", reason="买家取消")
    with pytest.raises(IllegalTransition, match="当前为「已关闭」，还没有发货"):
        returns.receive_return(A2)
    # closed after shipping (全额退款): the goods come back
    oid = ids["orders"][B2]
    _ship(oid, ids["carrier"], "SF-RET-3")
    orders.transition(oid, "refund_close", reason="退货退款")
    with pytest.raises(ValidationError, match="「仓库」不存在：上海仓"):
        returns.receive_return(oid, warehouse="上海仓")
    db.session.add(Warehouse(code="SH", name="上海仓", priority=2, active=False))
    db.session.commit()
    with pytest.raises(ValidationError, match="「仓库」上海仓 已停用，不能退货入库"):
        returns.receive_return(oid, warehouse="SH")
    assert _count(StockMovement) == before + 2  # A2's release (cancel) and B2's ship: no return
    result = returns.receive_return(oid, warehouse="HZ")
    assert _returns(oid) == [("TS-BLK-L", 2, 0)] and result.units == 2
    assert stock.check_ledger() == []


def test_a_bundle_comes_back_as_its_components(ctx, ids):
    _bundle("TS-SET", {"TS-BLK-L": 2, "TS-WHT-M": 1})
    order = _paid_order("T-RET-SET", [("TS-SET", 2), ("TS-WHT-M", 1)])
    _ship(order.id, ids["carrier"], "SF-RET-4")
    assert _stock("TS-BLK-L") == (N - 4, 4) and _stock("TS-WHT-M") == (N - 3, 0)
    returns.receive_return(order.id, {_line_id(order.id, 1): 1})
    assert sorted(_returns(order.id)) == [("TS-BLK-L", 2, 0), ("TS-WHT-M", 1, 0)]
    assert _stock("TS-BLK-L") == (N - 2, 4) and _stock("TS-WHT-M") == (N - 2, 0)
    sheet = returns.return_sheet(order.id)
    assert [(ln.merchant_code, ln.is_bundle, ln.shipped, ln.returned, ln.returnable) for ln in sheet.lines] == [
        ("TS-SET", True, 2, 1, 1), ("TS-WHT-M", False, 1, 0, 1)]
    with pytest.raises(DocumentInvalid, match="第 1 行「退货数量」：TS-BLK-L 退回 4 件，超过可退数量 2"):
        returns.receive_return(order.id, {_line_id(order.id, 1): 2})
    returns.receive_return(order.id)  # the rest: one set and the loose shirt
    assert _stock("TS-BLK-L") == (N, 4) and _stock("TS-WHT-M") == (N, 0)
    assert not db.session.scalars(select(Stock).where(Stock.sku_id == _sku("TS-SET").id)).all()
    assert stock.check_ledger() == []


def test_a_return_serves_held_orders_first_paid_first(ctx, ids):
    shipped = _paid_order("T-RET-WHT", [("TS-WHT-M", 3)])
    _ship(shipped.id, ids["carrier"], "SF-RET-5")
    stock.adjust(_hz().id, _sku("TS-WHT-M").id, -(N - 3), note="盘亏")
    db.session.commit()
    late = _paid_order("T-RET-LATE", [("TS-WHT-M", 2)], paid=dt.datetime(2026, 11, 23, tzinfo=UTC))
    early = _paid_order("T-RET-EARLY", [("TS-WHT-M", 2)], paid=dt.datetime(2026, 11, 22, tzinfo=UTC))
    for o in (late, early):
        with pytest.raises(stock.OutOfStock):
            orders.transition(o.id, "audit")
    assert _stock("TS-WHT-M") == (0, 0)
    result = returns.receive_return(shipped.id, user_id=_user_id("warehouse"))
    assert result.reallocated == [early.id]
    assert "1 个缺货订单已分配到库存并解除挂起" in result.summary
    early_o, late_o = db.session.get(Order, early.id), db.session.get(Order, late.id)
    assert early_o.status == "to_ship" and not early_o.is_held and early_o.active_hold_reasons == []
    assert late_o.status == "to_audit" and late_o.active_hold_reasons == ["out_of_stock"]
    assert _stock("TS-WHT-M") == (3, 2)
    assert stock.check_ledger() == []


def test_order_numbers_are_looked_up_within_the_users_shops(ctx, ids):
    oid = ids["orders"][B2]
    _ship(oid, ids["carrier"], "SF-RET-6")
    with as_user(_user_id("cs")):  # shop A only
        with pytest.raises(NotFound, match=f"订单不存在：{B2}"):
            returns.receive_return(B2)
        with pytest.raises(NotFound, match=f"订单不存在：{oid}"):
            returns.receive_return(oid)
        assert returns.find_orders(B2) == []
    assert _returns(oid) == []
    # one 订单号 in two shops must be chosen by id
    dup = _paid_order(B2, [("TS-WHT-M", 1)], shop="C店-京东")
    _ship(dup.id, ids["carrier"], "SF-RET-7")
    with pytest.raises(ValidationError, match=f"订单号 {B2} 在多个店铺中存在（B店-拼多多、C店-京东），请选择店铺"):
        returns.receive_return(B2)
    returns.receive_return(dup.id)
    assert _returns(dup.id) == [("TS-WHT-M", 1, 0)]


def test_an_order_shipped_from_two_warehouses_must_name_one(ctx, ids):
    oid = ids["orders"][A2]
    _ship(oid, ids["carrier"], "SF-RET-8")
    gz = Warehouse(code="GZ", name="广州仓", priority=3)
    db.session.add(gz)
    db.session.flush()
    # a second ship row from another warehouse, as a split order writes
    stock.inbound(gz.id, _sku("TS-WHT-M").id, 1, reallocate=False)
    stock.move(gz.id, _sku("TS-WHT-M").id, "ship", -1, order_id=oid)
    db.session.commit()
    with pytest.raises(ValidationError, match="从多个仓库发货（杭州仓、广州仓），请选择退货入库的「仓库」"):
        returns.receive_return(oid)
    assert returns.return_sheet(oid).warehouse_id is None
    returns.receive_return(oid, warehouse=str(gz.id))
    assert sorted(_returns(oid)) == [("TS-BLK-L", 2, 0)]
    assert db.session.scalar(select(StockMovement.warehouse_id).where(StockMovement.movement_type == "return")) \
        == gz.id


# --- the page ------------------------------------------------------------------------------------
def test_the_page_shows_the_shipped_lines_and_books_the_return_for_warehouse(app, ids, login):
    oid = ids["orders"][A2]
    with app.app_context():
        _ship(oid, ids["carrier"], "SF-RET-9")
        line, hz = _line_id(oid), _hz().id
    wh = login("warehouse")
    assert wh.get("/stock/return/").status_code == 200
    page = wh.get(f"/stock/return/?order={A2}").get_data(as_text=True)
    assert f"订单 {A2}" in page and "oms-return-lines" in page and f'name="qty_{line}"' in page
    assert re.search(r"<td>2</td><td>0</td><td>2</td>", page)  # shipped, returned, returnable
    assert f'<option value="{hz}" selected' in page  # the warehouse it shipped from
    resp = wh.post("/stock/return/", data={"order_id": str(oid), "warehouse": str(hz), f"qty_{line}": "5",
                                           "note": "", "source_ref": ""})
    assert resp.status_code == 422
    body = resp.get_data(as_text=True)
    assert "「退货数量」5 超过该行发货数量 2" in body and 'value="5"' in body
    resp = wh.post("/stock/return/", data={"order_id": str(oid), "warehouse": str(hz), f"qty_{line}": "2",
                                           "note": "七天无理由", "source_ref": "TH-P1"})
    assert resp.status_code == 302
    page = wh.get(resp.headers["Location"]).get_data(as_text=True)
    assert f"退货入库单 TH-P1：订单 {A2} 退回 1 行共 2 件，已入杭州仓" in page
    assert re.search(r"<td>2</td><td>2</td><td>0</td>", page)
    with app.app_context():
        mv = db.session.scalars(select(StockMovement).where(StockMovement.source_ref == "TH-P1")).one()
        assert (mv.movement_type, mv.on_hand_delta, mv.user.username, mv.note) == ("return", 2, "warehouse",
                                                                                     "七天无理由")
        assert stock.check_ledger() == []


def test_the_page_refuses_an_unshipped_order_and_says_so(app, ids, login):
    wh = login("warehouse")
    page = wh.get(f"/stock/return/?order={A2}").get_data(as_text=True)
    assert "还没有发货，不能退货入库" in page and "oms-return-lines" not in page
    resp = wh.get("/stock/return/?order=NOPE-9")
    assert resp.status_code == 404 and "订单不存在：NOPE-9" in resp.get_data(as_text=True)


@pytest.mark.parametrize("user", ["cs", "finance"])
def test_roles_without_stock_documents_cannot_use_the_page(app, ids, login, user):
    oid = ids["orders"][A2]
    with app.app_context():
        _ship(oid, ids["carrier"], "SF-RET-10")
        line = _line_id(oid)
    client = login(user)
    resp = client.get(f"/stock/return/?order={A2}")
    assert resp.status_code in (302, 403) and "/login" in resp.headers.get("Location", "/login")
    resp = client.post("/stock/return/", data={"order_id": str(oid), f"qty_{line}": "2"})
    assert resp.status_code in (302, 403)
    with app.app_context():
        assert _returns(oid) == []
    assert "oms-return-link" not in client.get(f"/orderview/show/{oid}").get_data(as_text=True)


def test_a_shop_limited_warehouse_user_cannot_see_another_shops_order(app, ids, login):
    oid = ids["orders"][B2]
    with app.app_context():
        from app.extensions import appbuilder
        from app.services.setup import ROLE_WAREHOUSE

        _ship(oid, ids["carrier"], "SF-RET-11")
        line = _line_id(oid)
        sm = appbuilder.sm
        user = sm.add_user("wh_a", "wh_a", "测试", "wh_a@example.com", sm.find_role(ROLE_WAREHOUSE), world.PASSWORD)
        user.all_shops = False
        user.shops = [db.session.get(Shop, ids["shops"]["A"])]
        db.session.commit()
    client = login("wh_a")
    resp = client.get(f"/stock/return/?order={B2}")
    assert resp.status_code == 404 and f"订单不存在：{B2}" in resp.get_data(as_text=True)
    resp = client.get(f"/stock/return/?order_id={oid}")
    assert resp.status_code == 404 and "oms-return-lines" not in resp.get_data(as_text=True)
    resp = client.post("/stock/return/", data={"order_id": str(oid), f"qty_{line}": "2"})
    assert resp.status_code == 422 and f"订单不存在：{oid}" in resp.get_data(as_text=True)
    with app.app_context():
        assert _returns(oid) == []


def test_the_order_page_links_to_the_return_of_a_shipped_order(app, ids, login):
    shipped, waiting = ids["orders"][A2], ids["orders"]["3000000000000000001"]
    with app.app_context():
        _ship(shipped, ids["carrier"], "SF-RET-12")
    for name in ("admin", "warehouse"):
        client = login(name)
        page = client.get(f"/orderview/show/{shipped}").get_data(as_text=True)
        assert f"/stock/return/?order_id={shipped}" in page
        assert "oms-return-link" not in client.get(f"/orderview/show/{waiting}").get_data(as_text=True)


# --- PostgreSQL: the order lock ------------------------------------------------------------------
WORKERS = 4


def _return_worker(pg_url, db_dir, order_id, barrier, results):
    from tests.conftest import make_app

    app = make_app(f"{db_dir}/w.db", SQLALCHEMY_DATABASE_URI=pg_url)
    with app.app_context():
        db.session.execute(text("SELECT 1"))
        db.session.commit()
        barrier.wait(timeout=60)
        try:
            line = db.session.get(Order, order_id).lines[0].id
            returns.receive_return(order_id, {line: 1})
            results.put("ok")
        except DocumentInvalid:
            results.put("refused")
        db.session.remove()
        db.engine.dispose()


def test_concurrent_returns_of_one_order_never_return_more_than_shipped_on_postgresql(pg_url, tmp_path):
    from flask_migrate import upgrade

    from app.services import setup
    from tests.conftest import make_app

    app = make_app(tmp_path / "x.db", SQLALCHEMY_DATABASE_URI=pg_url)
    with app.app_context():
        upgrade()
        setup.initialise(admin_password=world.ADMIN_PASSWORD)
        ids = world.build()
        oid = ids["orders"][A2]
        _ship(oid, ids["carrier"], "SF-RET-PG")
        db.session.remove()
        db.engine.dispose()
    mp = multiprocessing.get_context("fork")
    barrier, results = mp.Barrier(WORKERS), mp.Queue()
    procs = [mp.Process(target=_return_worker, args=(pg_url, str(tmp_path), oid, barrier, results))
             for _ in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    outcome = sorted(results.get(timeout=5) for _ in range(WORKERS))
    assert outcome == ["ok", "ok"] + ["refused"] * (WORKERS - 2)  # 2 shipped: 2 come back
    with app.app_context():
        assert _returns(oid) == [("TS-BLK-L", 1, 0), ("TS-BLK-L", 1, 0)]
        assert _stock("TS-BLK-L") == (N, 2)
        assert stock.check_ledger() == []
        db.session.remove()
        db.engine.dispose()
