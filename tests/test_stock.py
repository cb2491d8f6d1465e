"""Stock as a ledger (issue #5): reserve, release, ship, bundles, 缺货 holds, the ledger
check, and the race on PostgreSQL."""
from __future__ import annotations

import datetime as dt
import multiprocessing
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text

from app.extensions import db
from app.models import BundleComponent, Order, Product, Shop, Sku, Stock, StockMovement, Warehouse
from app.services import order_status, orders, stock
from app.services.errors import IllegalTransition, ValidationError

UTC = dt.timezone.utc
from tests.world import OPENING_STOCK as N

A2 = "3000000000000000002"  # to_ship in tests/world.py: reserved 2 × TS-BLK-L


# --- helpers ----------------------------------------------------------------------------
def _sku(code: str) -> Sku:
    return db.session.scalars(select(Sku).where(Sku.merchant_code == code)).one()


def _wh(code: str = "HZ") -> Warehouse:
    return db.session.scalars(select(Warehouse).where(Warehouse.code == code)).one()


def _stock(wh_id: int, sku_id: int) -> tuple[int, int]:
    row = db.session.execute(select(Stock.on_hand, Stock.reserved)
                             .where(Stock.warehouse_id == wh_id, Stock.sku_id == sku_id)).one_or_none()
    return tuple(row) if row else (0, 0)


def _new_sku(code: str, *, bundle_of: dict | None = None) -> Sku:
    product = db.session.scalars(select(Product)).first()
    sku = Sku(product=product, merchant_code=code, name=code, cost_price=Decimal("1"),
              sale_price=Decimal("9"), is_bundle=bool(bundle_of))
    db.session.add(sku)
    db.session.flush()
    for comp, qty in (bundle_of or {}).items():
        db.session.add(BundleComponent(bundle_sku_id=sku.id, component_sku_id=_sku(comp).id, quantity=qty))
    db.session.flush()
    return sku


def _paid_order(pid: str, lines: list[tuple[str, int]], *, shop: str = "A店-淘宝",
                paid: dt.datetime | None = None) -> Order:
    shop_obj = db.session.scalars(select(Shop).where(Shop.name == shop)).one()
    paid = paid or dt.datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
    order = orders.create_order(shop_obj, {
        "platform_order_id": pid, "status": "pending_payment",
        "receiver_name": "测试", "receiver_phone": "13700009999", "receiver_province": "浙江省",
        "receiver_city": "杭州市", "receiver_district": "西湖区", "receiver_address": "文三路1号",
        "paid_at": paid, "platform_created_at": paid, "paid_amount": "10.00", "post_fee": "0",
        "lines": [{"platform_line_id": str(i), "merchant_code": code, "title": code, "quantity": qty,
                   "price": "5.00", "paid_amount": "5.00"} for i, (code, qty) in enumerate(lines, 1)],
    }, source="import")
    db.session.flush()
    order_status.apply(order, "pay", source="sync")
    db.session.commit()
    return order


def _ledger(order_id: int) -> dict[str, tuple[int, int]]:
    rows = db.session.execute(
        select(Sku.merchant_code, func.sum(StockMovement.on_hand_delta), func.sum(StockMovement.reserved_delta))
        .join(Sku, Sku.id == StockMovement.sku_id).where(StockMovement.order_id == order_id)
        .group_by(Sku.merchant_code)).all()
    return {c: (int(oh), int(r)) for c, oh, r in rows}


# --- the ledger ---------------------------------------------------------------------------
def test_world_stock_is_backed_by_the_ledger_and_the_audited_orders_reserved(ctx, ids):
    hz, blk = _wh(), _sku("TS-BLK-L")
    # two audited orders in the world (A and B, 2 each) reserve 4
    assert _stock(hz.id, blk.id) == (N, 4)
    assert _ledger(ids["orders"][A2]) == {"TS-BLK-L": (0, 2)}
    assert stock.check_ledger() == []


def test_reserve_release_and_ship_keep_the_ledger_sums(ctx, ids):
    hz, blk = _wh(), _sku("TS-BLK-L")
    order = _paid_order("T-RRS-1", [("TS-BLK-L", 3), ("TS-WHT-M", 1)])
    orders.transition(order.id, "audit")
    assert order.status == "to_ship" and order.warehouse_id == hz.id
    assert _stock(hz.id, blk.id) == (N, 7)
    orders.transition(order.id, "unaudit")
    assert _stock(hz.id, blk.id) == (N, 4)
    assert _ledger(order.id) == {"TS-BLK-L": (0, 0), "TS-WHT-M": (0, 0)}
    # releasing again is a no-op: the ledger says nothing is reserved
    assert stock.release_order(order) == 0
    orders.transition(order.id, "audit")
    order.carrier_id, order.tracking_number = ids["carrier"], "SF1234567890"
    orders.transition(order.id, "ship")
    assert _stock(hz.id, blk.id) == (N - 3, 4)
    assert _stock(hz.id, _sku("TS-WHT-M").id) == (N - 1, 0)
    assert _ledger(order.id) == {"TS-BLK-L": (-3, 0), "TS-WHT-M": (-1, 0)}
    assert stock.ship_order(order) is True  # twice deducts once
    assert _stock(hz.id, blk.id) == (N - 3, 4)
    assert stock.check_ledger() == []


def test_cancel_and_refund_close_release_the_reservation(ctx, ids):
    hz, blk = _wh(), _sku("TS-BLK-L")
    orders.transition(ids["orders"][A2], "cancel", reason="买家取消")
    assert _stock(hz.id, blk.id) == (N, 2)
    orders.transition(ids["orders"]["261120-000000000000002"], "refund_close", reason="全额退款")
    assert _stock(hz.id, blk.id) == (N, 0)
    assert stock.check_ledger() == []


def test_bundle_reserves_its_components_times_quantity(ctx, ids):
    hz = _wh()
    _new_sku("TS-SET", bundle_of={"TS-BLK-L": 2, "TS-WHT-M": 1})
    db.session.commit()
    order = _paid_order("T-BUNDLE-1", [("TS-SET", 3), ("TS-WHT-M", 1)])
    orders.transition(order.id, "audit")
    assert _ledger(order.id) == {"TS-BLK-L": (0, 6), "TS-WHT-M": (0, 4)}
    assert _stock(hz.id, _sku("TS-BLK-L").id) == (N, 10)
    assert not db.session.scalars(select(Stock).where(Stock.sku_id == _sku("TS-SET").id)).all()
    with pytest.raises(ValidationError, match="组合装"):
        stock.move(hz.id, _sku("TS-SET").id, "inbound", 1)
    stock.inbound(hz.id, _sku("TS-SET").id, 5)  # inbound of a bundle books its components
    db.session.commit()
    assert _stock(hz.id, _sku("TS-WHT-M").id) == (N + 5, 4)
    assert stock.check_ledger() == []


def test_short_order_reserves_nothing_gets_a_out_of_stock_hold_and_audit_is_refused(ctx, ids):
    hz, blk, wht = _wh(), _sku("TS-BLK-L"), _sku("TS-WHT-M")
    order = _paid_order("T-SHORT-1", [("TS-WHT-M", 5), ("TS-BLK-L", N - 3)])  # BLK: N - 4 available
    with pytest.raises(IllegalTransition, match="缺货"):
        orders.transition(order.id, "audit")
    order = db.session.get(Order, order.id)
    assert order.status == "to_audit"
    assert order.active_hold_reasons == ["out_of_stock"]
    assert f"TS-BLK-L 需要 {N - 3}，可用 {N - 4}" in order.holds[0].note
    assert _ledger(order.id) == {}  # all or nothing: not even the white shirts
    assert _stock(hz.id, wht.id) == (N, 0) and _stock(hz.id, blk.id) == (N, 4)
    assert stock.check_ledger() == []


def test_batch_audit_keeps_the_out_of_stock_hold(ctx, ids):
    order = _paid_order("T-SHORT-2", [("TS-BLK-L", N + 1)])
    ok = _paid_order("T-OK-2", [("TS-BLK-L", 1)])
    result = orders.batch([order.id, ok.id], lambda o: order_status.apply(o, "audit"))
    assert result.ok == [ok.id] and "缺货" in result.failed[order.id]
    assert db.session.get(Order, order.id).active_hold_reasons == ["out_of_stock"]


def test_inbound_reallocates_held_orders_first_paid_first_served(ctx, ids):
    hz, wht = _wh(), _sku("TS-WHT-M")
    stock.adjust(hz.id, wht.id, -N, note="盘亏")
    db.session.commit()
    late = _paid_order("T-FIFO-LATE", [("TS-WHT-M", 3)], paid=dt.datetime(2026, 11, 22, tzinfo=UTC))
    early = _paid_order("T-FIFO-EARLY", [("TS-WHT-M", 3)], paid=dt.datetime(2026, 11, 21, tzinfo=UTC))
    for o in (late, early):
        with pytest.raises(IllegalTransition):
            orders.transition(o.id, "audit")
    got = stock.inbound(hz.id, wht.id, 4, source_ref="RK-001")
    db.session.commit()
    assert got == [early.id]
    early, late = db.session.get(Order, early.id), db.session.get(Order, late.id)
    assert early.status == "to_ship" and not early.is_held
    assert late.status == "to_audit" and late.active_hold_reasons == ["out_of_stock"]
    assert _stock(hz.id, wht.id) == (4, 3)
    assert stock.check_ledger() == []


def test_ship_on_platform_from_to_audit_deducts_on_hand_when_there(ctx, ids):
    hz, blk = _wh(), _sku("TS-BLK-L")
    order = db.session.get(Order, ids["orders"]["3000000000000000001"])  # to_audit, 2 × BLK
    order_status.apply(order, "ship_on_platform", source="sync")
    db.session.commit()
    assert _stock(hz.id, blk.id) == (N - 2, 4)
    big = _paid_order("T-PLAT-BIG", [("TS-BLK-L", N + 1)])
    order_status.apply(big, "ship_on_platform", source="sync")  # not refused; nothing to deduct
    db.session.commit()
    assert big.status == "shipped" and _ledger(big.id) == {}
    assert stock.check_ledger() == []


def test_move_refuses_overselling_and_bad_quantities(ctx, ids):
    hz, blk = _wh(), _sku("TS-BLK-L")
    with pytest.raises(stock.InsufficientStock, match="杭州仓 的 TS-BLK-L"):
        stock.move(hz.id, blk.id, "reserve", 0, N - 3)
    with pytest.raises(stock.InsufficientStock):
        stock.move(hz.id, blk.id, "adjust", -(N - 3))  # 4 are reserved
    for bad in (0, -1, 1.5, "3"):
        with pytest.raises(ValidationError):
            stock.inbound(hz.id, blk.id, bad)
    with pytest.raises(stock.NotFound):
        stock.inbound(9999, blk.id, 1)
    assert _stock(hz.id, blk.id) == (N, 4)


def test_check_ledger_finds_a_tampered_row_and_the_cli_fails(ctx, ids):
    hz, blk = _wh(), _sku("TS-BLK-L")
    runner = ctx.test_cli_runner()
    result = runner.invoke(args=["oms", "stock-check"])
    assert result.exit_code == 0 and "库存对账通过" in result.output
    db.session.execute(text("UPDATE oms_stock SET on_hand = 55 WHERE warehouse_id = :w AND sku_id = :s"),
                       {"w": hz.id, "s": blk.id})
    db.session.commit()
    bad = stock.check_ledger()
    assert [(m.warehouse_id, m.sku_id, m.on_hand, m.ledger_on_hand) for m in bad] == [(hz.id, blk.id, 55, N)]
    result = runner.invoke(args=["oms", "stock-check"])
    assert result.exit_code == 1 and "TS-BLK-L" in result.output


def test_status_set_by_hand_is_tolerated(ctx, ids):
    hz, blk = _wh(), _sku("TS-BLK-L")
    order = db.session.get(Order, ids["orders"]["3000000000000000001"])
    order.status = "to_ship"  # never reserved
    order_status.apply(order, "unaudit")  # releases nothing
    order.status = "to_ship"
    order.carrier_id, order.tracking_number = ids["carrier"], "SF000111"
    order_status.apply(order, "ship")  # deducts on hand only
    db.session.commit()
    assert _stock(hz.id, blk.id) == (N - 2, 4)
    assert stock.check_ledger() == []


# --- the race on PostgreSQL -------------------------------------------------------------------
WORKERS = 8
PER_WORKER = 3


def _race_worker(pg_url, db_dir, order_ids, barrier, batch=False):
    from tests.conftest import make_app

    app = make_app(f"{db_dir}/w.db", SQLALCHEMY_DATABASE_URI=pg_url)
    with app.app_context():
        from app.services import batch_actions, orders as order_service, stock as stock_service

        db.session.execute(text("SELECT 1"))
        barrier.wait(timeout=60)
        if batch:  # 批量审单: the chunk's reservations decided together (warehouse_choice.reserve_many)
            batch_actions.run("audit", order_ids, user_id=None, source="rule", chunk_size=2)
            order_ids = []
        for oid in order_ids:
            try:
                order_service.transition(oid, "audit")
            except stock_service.OutOfStock:
                pass
        db.session.remove()
        db.engine.dispose()


def _setup_pg(pg_url, tmp_path):
    from flask_migrate import upgrade

    from app.services import setup
    from tests import world
    from tests.conftest import make_app

    app = make_app(tmp_path / "x.db", SQLALCHEMY_DATABASE_URI=pg_url)
    with app.app_context():
        upgrade()
        setup.initialise(admin_password=world.ADMIN_PASSWORD)
        world.build()
    return app


def _race(app, tmp_path, pg_url, lines_for, mode="one"):
    """Create WORKERS × PER_WORKER paid orders; race WORKERS processes to audit them: one
    order per transaction (``one``), or half of the workers by 批量审单 (``mixed``)."""
    with app.app_context():
        order_ids = [_paid_order(f"RACE-{i}", lines_for(i)).id for i in range(WORKERS * PER_WORKER)]
        db.session.remove()
        db.engine.dispose()
    mp = multiprocessing.get_context("fork")
    barrier = mp.Barrier(WORKERS)
    procs = [mp.Process(target=_race_worker,
                        args=(pg_url, str(tmp_path), order_ids[w::WORKERS], barrier, mode == "mixed" and w % 2 == 0))
             for w in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    return order_ids


def _assert_no_oversell(order_ids):
    assert db.session.scalar(select(func.count()).where(Stock.reserved > Stock.on_hand)) == 0
    outcome = {}
    for oid in order_ids:
        o = db.session.get(Order, oid)
        if o.status == "to_ship":
            assert not o.is_held and any(r for r in stock.reserved_by_order(oid).values())
            outcome[oid] = "reserved"
        else:
            assert o.status == "to_audit" and o.active_hold_reasons == ["out_of_stock"]
            assert stock.reserved_by_order(oid) == {}
            outcome[oid] = "held"
    assert stock.check_ledger() == []
    return outcome


@pytest.mark.parametrize("mode", ["one", "mixed"])
def test_concurrent_reservations_never_oversell_on_postgresql(pg_url, tmp_path, mode):
    app = _setup_pg(pg_url, tmp_path)
    with app.app_context():
        hz, sku = _wh(), _new_sku("HOT-1")
        stock.inbound(hz.id, sku.id, 10, source_ref="RK-HOT")
        db.session.commit()
    order_ids = _race(app, tmp_path, pg_url, lambda i: [("HOT-1", 1)], mode)
    with app.app_context():
        outcome = _assert_no_oversell(order_ids)
        assert list(outcome.values()).count("reserved") == 10
        assert _stock(_wh().id, _sku("HOT-1").id) == (10, 10)
        db.session.remove()
        db.engine.dispose()


@pytest.mark.parametrize("mode", ["one", "mixed"])
def test_concurrent_bundles_sharing_a_component_never_oversell_on_postgresql(pg_url, tmp_path, mode):
    app = _setup_pg(pg_url, tmp_path)
    with app.app_context():
        hz = _wh()
        part, other = _new_sku("PART-1"), _new_sku("OTHER-1")
        _new_sku("SET-1", bundle_of={"PART-1": 2, "OTHER-1": 1})
        stock.inbound(hz.id, part.id, 15, source_ref="RK-P")
        stock.inbound(hz.id, other.id, 4, source_ref="RK-O")
        db.session.commit()
    # odd orders: a bundle (2 PART + 1 OTHER) and a plain PART; even orders: a plain PART
    order_ids = _race(app, tmp_path, pg_url,
                      lambda i: [("SET-1", 1), ("PART-1", 1)] if i % 2 else [("PART-1", 1)], mode)
    with app.app_context():
        outcome = _assert_no_oversell(order_ids)
        assert "held" in outcome.values() and "reserved" in outcome.values()
        on_hand, reserved = _stock(_wh().id, _sku("PART-1").id)
        assert on_hand == 15 and reserved <= 15
        assert reserved == sum(3 if i % 2 else 1 for i, oid in enumerate(order_ids)
                               if outcome[oid] == "reserved")
        db.session.remove()
        db.engine.dispose()


def test_reserving_marks_the_sku_and_bundle_listings_for_stock_push(ctx, ids):
    from app.models import ShopListing
    from app.services import stock_push

    _new_sku("TS-SET2", bundle_of={"TS-BLK-L": 2})
    plain, _ = stock_push.upsert_listing(ids["shops"]["A"], "TS-BLK-L", platform_item_id="1", platform_sku_id="1")
    bundle, _ = stock_push.upsert_listing(ids["shops"]["B"], "TS-SET2", platform_item_id="2", platform_sku_id="2")
    db.session.flush()
    db.session.execute(ShopListing.__table__.update().values(push_pending_since=None, stock_change_seq=0))
    db.session.commit()
    order = _paid_order("T-PUSH-1", [("TS-BLK-L", 1)])
    orders.transition(order.id, "audit")
    for lid in (plain.id, bundle.id):
        listing = db.session.get(ShopListing, lid)
        db.session.refresh(listing)
        assert listing.push_pending_since is not None and listing.stock_change_seq >= 1
