"""``flask oms demo``: the demo shop group is realistic, consistent and deterministic."""
from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict

import pytest
from sqlalchemy import func, select, text

ORDER_COUNT = 300


def _fresh_app(db_path):
    import config
    from app import create_app

    app = create_app(config.TestConfig, SQLALCHEMY_DATABASE_URI="sqlite:///" + str(db_path))
    with app.app_context():
        from flask_migrate import upgrade

        from app.services import setup

        upgrade()
        setup.initialise(admin_password="x" * 12)
    return app


@pytest.fixture(scope="module")
def demo_app(tmp_path_factory):
    app = _fresh_app(tmp_path_factory.mktemp("demo") / "t.db")
    with app.app_context():
        from app.services import demo

        app.demo_report = demo.create_demo(order_count=ORDER_COUNT, seed=1)
    return app


@pytest.fixture
def demo_ctx(demo_app):
    with demo_app.app_context():
        yield demo_app


def _all(model):
    from app.extensions import db

    return db.session.scalars(select(model)).all()


def test_report_is_zh_and_has_counts_and_time(demo_ctx):
    report = "\n".join(demo_ctx.demo_report)
    assert "店铺：10 家" in report
    assert "组合装" in report and "仓库：3 个" in report
    assert f"新增 {ORDER_COUNT} 笔" in report
    assert "客户：" in report and "回头客" in report
    assert re.search(r"用时 \d+\.\d 秒", report)


def test_about_ten_active_shops_across_the_four_platforms(demo_ctx):
    from app.models import Shop

    shops = _all(Shop)
    assert 8 <= len(shops) <= 12
    assert {s.platform for s in shops} == {"taobao", "tmall", "jd", "pdd"}
    assert len({s.name for s in shops}) == len(shops)
    assert all(s.active and s.sync_interval_seconds == 60 for s in shops)
    # Each demo shop syncs from its twin on the local sandbox, with the twin's credentials.
    from app.sandbox.state import DEMO_SHOPS

    twins = {t.name: t for t in DEMO_SHOPS}
    for s in shops:
        twin = twins[s.name]
        assert s.sync_enabled and s.gateway_url.endswith(twin.gateway_path)
        assert (s.app_key, s.app_secret, s.access_token) == (twin.app_key, twin.app_secret, twin.access_token)


def test_catalogue_has_about_200_skus_with_sane_prices(demo_ctx):
    from app.models import Product, Sku

    skus = _all(Sku)
    assert 170 <= len(skus) <= 230
    assert 50 <= len(_all(Product)) <= 70
    assert len({s.merchant_code for s in skus}) == len(skus)
    assert all(s.cost_price < s.sale_price for s in skus)
    assert all(s.weight_kg > 0 for s in skus)
    assert all(re.fullmatch(r"69\d{11}", s.barcode) for s in skus)
    assert any(s.low_stock_threshold for s in skus)
    assert any("颜色:" in (s.spec or "") and "尺码:" in (s.spec or "") for s in skus)


def test_bundles_are_made_of_two_or_three_plain_skus_and_cost_less_than_the_parts(demo_ctx):
    from app.models import Sku

    bundles = [s for s in _all(Sku) if s.is_bundle]
    assert 12 <= len(bundles) <= 18
    for b in bundles:
        assert 2 <= len(b.components) <= 3
        assert all(not c.component.is_bundle for c in b.components)
        parts = sum(c.component.sale_price * c.quantity for c in b.components)
        assert b.sale_price < parts
        assert b.cost_price == sum(c.component.cost_price * c.quantity for c in b.components)


def test_three_warehouses_in_priority_order(demo_ctx):
    from app.models import Warehouse

    whs = sorted(_all(Warehouse), key=lambda w: w.priority)
    assert [(w.name, w.priority) for w in whs] == [("杭州仓", 1), ("广州仓", 2), ("成都仓", 3)]
    assert all(w.code and w.province and w.city and w.address and w.contact for w in whs)


def test_stock_ledger_sums_equal_stock_rows(demo_ctx):
    from app.extensions import db
    from app.models import Sku, Stock, StockMovement, Warehouse

    ledger = dict(
        ((wh, sku), (on_hand, reserved))
        for wh, sku, on_hand, reserved in db.session.execute(
            select(StockMovement.warehouse_id, StockMovement.sku_id,
                   func.sum(StockMovement.on_hand_delta), func.sum(StockMovement.reserved_delta))
            .group_by(StockMovement.warehouse_id, StockMovement.sku_id))
    )
    stocks = _all(Stock)
    plain = [s for s in _all(Sku) if not s.is_bundle]
    assert len(stocks) == len(plain) * len(_all(Warehouse))
    assert not any(s.sku.is_bundle for s in stocks)
    for st in stocks:
        assert st.reserved == 0
        assert ledger.get((st.warehouse_id, st.sku_id), (0, 0)) == (st.on_hand, st.reserved)
    # no movement without a stock row
    assert set(ledger) <= {(s.warehouse_id, s.sku_id) for s in stocks}
    assert any(st.on_hand == 0 for st in stocks) and any(st.on_hand > 100 for st in stocks)
    moves = _all(StockMovement)
    assert {(m.movement_type, m.source_ref) for m in moves} == {("inbound", "DEMO-INIT")}


def test_order_status_spread(demo_ctx):
    from app.extensions import db
    from app.models import Order

    counts = dict(db.session.execute(select(Order.status, func.count(Order.id)).group_by(Order.status)).all())
    assert sum(counts.values()) == ORDER_COUNT
    assert counts == {"pending_payment": 15, "to_audit": 45, "to_ship": 45, "shipped": 75,
                      "completed": 105, "closed": 15}


def test_every_order_has_lines_events_and_consistent_amounts(demo_ctx):
    from app.models import Order

    now = dt.datetime.now(dt.timezone.utc)
    for o in _all(Order):
        assert o.lines, o.platform_order_id
        assert o.events and o.events[0].action == "create"
        assert o.paid_amount == o.goods_amount - o.discount_amount + o.post_fee
        assert sum(ln.paid_amount for ln in o.lines) == o.goods_amount - o.discount_amount
        assert o.cost_amount == sum(ln.cost_price * ln.quantity for ln in o.lines)
        assert now - dt.timedelta(days=91) < o.platform_created_at < now
        times = [e.created_at for e in o.events]
        assert times == sorted(times) and times[-1] < now
        assert o.customer is not None


def test_life_cycle_events_match_the_status(demo_ctx):
    from app.models import Order

    expected = {
        "pending_payment": [],
        "to_audit": [],
        "to_ship": ["audit"],
        "shipped": ["audit", "ship"],
        "completed": ["audit", "ship", "complete"],
        "closed": ["cancel"],
    }
    for o in _all(Order):
        actions = [e.action for e in o.events if e.action not in ("create", "hold")]
        assert actions == expected[o.status], (o.status, actions)
        assert all(e.source == "sync" for e in o.events if e.action in ("audit", "ship", "complete", "cancel"))
        if o.status == "closed":
            assert o.close_reason and o.closed_at and o.paid_at is None
        if o.status == "pending_payment":
            assert o.paid_at is None and o.platform.startswith(("taobao", "tmall"))


def test_shipped_orders_have_carrier_tracking_and_historical_times(demo_ctx):
    from app.models import Order

    shipped = [o for o in _all(Order) if o.status in ("shipped", "completed")]
    assert shipped
    numbers = [o.tracking_number for o in shipped]
    assert all(numbers) and len(set(numbers)) == len(numbers)
    now = dt.datetime.now(dt.timezone.utc)
    for o in shipped:
        assert o.carrier_id and o.warehouse_id
        assert o.platform_created_at <= o.paid_at < o.audited_at < o.shipped_at < now
        if o.status == "completed":
            # historical, not stamped "now" by the state machine
            assert o.shipped_at < o.completed_at < now - dt.timedelta(minutes=4)
    completed = [o for o in shipped if o.status == "completed"]
    assert sum(o.completed_at < now - dt.timedelta(days=7) for o in completed) > len(completed) / 2
    to_ship = [o for o in _all(Order) if o.status == "to_ship"]
    assert all(o.warehouse_id and o.audited_at for o in to_ship)


def test_platform_order_ids_follow_each_platform_format(demo_ctx):
    from app.models import Order

    patterns = {"taobao": r"\d{18,19}", "tmall": r"\d{18,19}", "jd": r"\d{12}", "pdd": r"\d{6}-\d{15}"}
    seen = set()
    for o in _all(Order):
        assert re.fullmatch(patterns[o.platform], o.platform_order_id), o.platform_order_id
        seen.add(o.platform)
    assert seen == set(patterns)


def test_holds_and_unmatched_skus(demo_ctx):
    from app.models import Order

    orders = _all(Order)
    held = [o for o in orders if o.is_held]
    assert held and all(o.status in ("to_audit", "to_ship") for o in held)
    unmatched = [o for o in held if "unmatched_sku" in o.active_hold_reasons]
    assert unmatched
    for o in unmatched:
        assert o.status == "to_audit"
        assert any(ln.sku_id is None and ln.merchant_code for ln in o.lines)
    others = {r for o in held for r in o.active_hold_reasons} - {"unmatched_sku"}
    assert others and others <= {"out_of_stock", "address_incomplete", "manual"}
    # every line of a non-held order is matched to a SKU
    assert all(ln.sku_id for o in orders if not o.is_held for ln in o.lines)


def test_flags_and_memos_on_some_orders(demo_ctx):
    from app.models import Order

    orders = _all(Order)
    flagged = [o for o in orders if o.flag]
    assert 0.03 * ORDER_COUNT <= len(flagged) <= 0.2 * ORDER_COUNT
    assert any(o.seller_memo for o in orders) and any(o.buyer_message for o in orders)


def test_some_customers_return_across_shops(demo_ctx):
    from app.models import Customer, Order

    customers = _all(Customer)
    returning = [c for c in customers if c.order_count >= 2]
    assert 0.12 <= len(returning) / len(customers) <= 0.4
    assert any(len(c.shops) >= 2 for c in returning)
    assert sum(c.order_count for c in customers) == ORDER_COUNT
    assert any(o.is_returning_customer for o in _all(Order))
    assert {c.tier for c in customers} >= {"new", "returning"}


def test_receiver_pii_is_encrypted_at_rest(demo_ctx):
    from app.extensions import db

    phone, name = db.session.execute(text("select receiver_phone, receiver_name from oms_order limit 1")).one()
    assert phone.startswith("v1:") and name.startswith("v1:")
    from app.models import Order

    order = _all(Order)[0]
    assert re.fullmatch(r"1[3-9]\d{9}", order.receiver_phone)
    assert re.fullmatch(r"[\u4e00-\u9fff]{2,4}", order.receiver_name)
    assert order.receiver_province and order.receiver_city and order.receiver_district
    assert re.search(r"[路街道].*\d+号", order.receiver_address)


def test_demo_users_one_per_role_and_cs_sees_only_some_shops(demo_ctx):
    from app.extensions import appbuilder
    from app.models import Shop
    from app.services import setup

    sm = appbuilder.sm
    expected = {"ops": setup.ROLE_OPS, "cs": setup.ROLE_CS, "warehouse": setup.ROLE_WAREHOUSE,
                "finance": setup.ROLE_FINANCE}
    n_shops = len(_all(Shop))
    for username, role in expected.items():
        user = sm.find_user(username=username)
        assert user is not None, username
        assert [r.name for r in user.roles] == [role]
        line = next(ln for ln in demo_ctx.demo_report if ln.startswith(f"演示用户 {username}（{role}）密码："))
        password = re.search(r"密码：([^；]+)", line).group(1)
        assert sm.auth_user_db(username, password) is not None
        if username == "cs":
            assert user.all_shops is False and 0 < len(user.shops) < n_shops
        else:
            assert user.all_shops is True


def test_second_run_raises_demo_exists(demo_ctx):
    from app.extensions import db
    from app.models import Order
    from app.services import demo

    with pytest.raises(demo.DemoExists, match="已有订单"):
        demo.create_demo(order_count=10, seed=2)
    assert db.session.scalar(select(func.count(Order.id))) == ORDER_COUNT


def test_same_seed_gives_same_data_on_any_day_and_force_adds_orders(tmp_path):
    from app.extensions import db
    from app.models import Order, Shop, Sku, Stock, StockMovement
    from app.services import demo

    def snapshot():
        rows = []
        for o in db.session.scalars(select(Order)):
            # a PDD order number starts with its date, which moves with "now"
            pid = o.platform_order_id[7:] if o.platform == "pdd" else o.platform_order_id
            rows.append((o.platform, pid, o.status, str(o.paid_amount), o.receiver_phone, o.is_held,
                         o.tracking_number, tuple((ln.merchant_code, ln.quantity) for ln in o.lines)))
        skus = [(s.merchant_code, s.sale_price, s.cost_price, s.barcode)
                for s in db.session.scalars(select(Sku).order_by(Sku.merchant_code))]
        return sorted(rows), skus

    monday = dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.timezone.utc)
    first = _fresh_app(tmp_path / "a.db")
    with first.app_context():
        demo.create_demo(order_count=40, seed=7, now=monday)
        snap_a = snapshot()
        assert max(o.platform_created_at for o in db.session.scalars(select(Order))) < monday
    second = _fresh_app(tmp_path / "b.db")
    with second.app_context():
        demo.create_demo(order_count=40, seed=7, now=monday + dt.timedelta(days=3, hours=13.5))
        snap_b = snapshot()
    assert snap_a == snap_b

    with first.app_context():
        report = demo.create_demo(order_count=40, force=True, seed=7)
        assert db.session.scalar(select(func.count(Order.id))) == 80
        assert db.session.scalar(select(func.count(Shop.id))) == 10
        on_hand = defaultdict(int)
        for m in db.session.scalars(select(StockMovement)):
            on_hand[(m.warehouse_id, m.sku_id)] += m.on_hand_delta
        assert all(on_hand[(s.warehouse_id, s.sku_id)] == s.on_hand for s in db.session.scalars(select(Stock)))
        assert any("已存在，跳过" in line for line in report)


def test_demo_shops_have_their_sandbox_listings_with_stock_push_on(demo_ctx):
    from app.models import Shop, ShopListing

    shops = _all(Shop)
    assert all(s.stock_push_enabled for s in shops)
    listings = _all(ShopListing)
    assert len(listings) >= len(shops) * 10
    assert sum(1 for x in listings if x.sku_id is not None) >= 0.9 * len(listings)
