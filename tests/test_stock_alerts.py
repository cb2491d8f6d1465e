"""库存预警 (issue #5 item 5): an alert fires once when available stock falls to the
threshold, not again while it stays low, re-arms when it recovers; per-SKU threshold
vs the global default; the list's velocity, days of cover and reorder figures on
generated sales with known answers; the navbar notification area."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import BundleComponent, Product, Shop, Sku, StockAlert, Warehouse
from app.services import orders, stock, stock_alerts
from tests.world import OPENING_STOCK as N

UTC = dt.timezone.utc


@pytest.fixture(autouse=True)
def _no_alerts_yet(app):
    """The world's SKUs were created without stock (one alert each, closed by the opening
    stock): start every test from no alerts at all."""
    from sqlalchemy import delete

    with app.app_context():
        db.session.execute(delete(StockAlert))
        db.session.commit()


def _sku(code: str) -> Sku:
    return db.session.scalars(select(Sku).where(Sku.merchant_code == code)).one()


def _hz() -> Warehouse:
    return db.session.scalars(select(Warehouse).where(Warehouse.code == "HZ")).one()


def _alerts(code: str) -> list[StockAlert]:
    db.session.expire_all()
    return db.session.scalars(select(StockAlert).where(StockAlert.sku_id == _sku(code).id)
                              .order_by(StockAlert.id)).all()


def _open(code: str) -> list[StockAlert]:
    return [a for a in _alerts(code) if a.recovered_at is None]


def _adjust(code: str, delta: int) -> None:
    stock.adjust(_hz().id, _sku(code).id, delta, note="测试", reallocate=False)
    db.session.commit()


def _set_threshold(code: str, value) -> None:
    _sku(code).low_stock_threshold = value
    db.session.commit()


# --- fire once, not again while low, re-arm ---------------------------------------------------------
def test_alert_triggers_once_stays_quiet_while_low_and_rearms_after_recovery(ctx):
    # TS-BLK-L: on hand N, 4 reserved by the world's audited orders → available N - 4
    _set_threshold("TS-BLK-L", N - 10)
    assert _alerts("TS-BLK-L") == []  # N - 4 > N - 10
    _adjust("TS-BLK-L", -5)  # available N - 9: still above
    assert _alerts("TS-BLK-L") == []
    _adjust("TS-BLK-L", -1)  # available N - 10: at the threshold → alert
    [alert] = _alerts("TS-BLK-L")
    assert (alert.available, alert.threshold, alert.recovered_at) == (N - 10, N - 10, None)
    _adjust("TS-BLK-L", -3)  # still low: no second alert
    _adjust("TS-BLK-L", 2)  # N - 11: up but still low
    assert len(_alerts("TS-BLK-L")) == 1 and len(_open("TS-BLK-L")) == 1
    _adjust("TS-BLK-L", 2)  # N - 9: recovered above → closed, re-armed
    [alert] = _alerts("TS-BLK-L")
    assert alert.recovered_at is not None and alert.recovered_available == N - 9
    _adjust("TS-BLK-L", -1)  # falls again → a new alert
    alerts = _alerts("TS-BLK-L")
    assert len(alerts) == 2 and alerts[1].recovered_at is None and alerts[1].available == N - 10


def test_reservations_by_orders_trigger_the_alert_too(ctx, ids):
    _set_threshold("TS-WHT-M", N - 3)
    shop = db.session.get(Shop, ids["shops"]["A"])
    order = orders.create_order(shop, {
        "platform_order_id": "AL-RES-1", "status": "to_audit", "receiver_name": "测试",
        "receiver_phone": "13700009999", "receiver_province": "浙江省", "receiver_city": "杭州市",
        "receiver_address": "文三路1号", "paid_at": dt.datetime(2026, 11, 21, tzinfo=UTC),
        "lines": [{"platform_line_id": "1", "merchant_code": "TS-WHT-M", "title": "T", "quantity": 3,
                   "price": "5.00", "paid_amount": "15.00"}]}, source="import")
    db.session.commit()
    assert _alerts("TS-WHT-M") == []
    orders.transition(order.id, "audit")  # reserves 3 → available N - 3
    assert [a.available for a in _open("TS-WHT-M")] == [N - 3]
    orders.transition(order.id, "unaudit")  # released → recovered
    assert _open("TS-WHT-M") == [] and len(_alerts("TS-WHT-M")) == 1


def test_a_rolled_back_stock_change_raises_nothing(ctx):
    _set_threshold("TS-BLK-L", N - 10)
    stock.adjust(_hz().id, _sku("TS-BLK-L").id, -100, note="测试", reallocate=False)
    db.session.rollback()
    db.session.commit()
    assert _alerts("TS-BLK-L") == []


# --- thresholds ---------------------------------------------------------------------------------------
def test_global_default_applies_to_skus_without_their_own_threshold(ctx, monkeypatch):
    monkeypatch.setitem(ctx.config, "OMS_LOW_STOCK_DEFAULT", "20")
    _adjust("TS-WHT-M", -(N - 21))  # available 21
    assert _alerts("TS-WHT-M") == []
    _adjust("TS-WHT-M", -1)  # 20 ≤ default 20
    [alert] = _alerts("TS-WHT-M")
    assert alert.threshold == 20
    # its own threshold wins over the default: 5 < 20 → no longer low → closed on the edit
    _set_threshold("TS-WHT-M", 5)
    assert _open("TS-WHT-M") == []
    assert [r.merchant_code for r in stock_alerts.low_stock()] == []
    _set_threshold("TS-WHT-M", 50)  # raised above available: low again → alert on the edit
    assert [a.threshold for a in _open("TS-WHT-M")] == [50]
    [row] = stock_alerts.low_stock()
    assert (row.merchant_code, row.threshold, row.threshold_is_default) == ("TS-WHT-M", 50, False)


def test_without_a_default_only_skus_with_a_threshold_are_watched(ctx, monkeypatch):
    monkeypatch.setitem(ctx.config, "OMS_LOW_STOCK_DEFAULT", "")
    _adjust("TS-WHT-M", -N)  # available 0, no threshold, no default
    assert _alerts("TS-WHT-M") == [] and stock_alerts.low_stock() == []
    _set_threshold("TS-WHT-M", 0)  # 0 ≤ 0
    assert len(_open("TS-WHT-M")) == 1


def test_default_change_is_caught_by_the_sweep(ctx, monkeypatch):
    monkeypatch.setitem(ctx.config, "OMS_LOW_STOCK_DEFAULT", "10")
    assert stock_alerts.evaluate_all().triggered == []
    monkeypatch.setitem(ctx.config, "OMS_LOW_STOCK_DEFAULT", str(N))
    result = stock_alerts.evaluate_all()
    assert sorted(result.triggered) == sorted([_sku("TS-BLK-L").id, _sku("TS-WHT-M").id])
    assert stock_alerts.evaluate_all().triggered == []  # idempotent
    monkeypatch.setitem(ctx.config, "OMS_LOW_STOCK_DEFAULT", "")
    assert len(stock_alerts.evaluate_all().recovered) == 2  # no longer watched: closed


def test_bad_default_is_a_clear_error(ctx, monkeypatch):
    from app.services.errors import ValidationError

    monkeypatch.setitem(ctx.config, "OMS_LOW_STOCK_DEFAULT", "abc")
    with pytest.raises(ValidationError, match="OMS_LOW_STOCK_DEFAULT"):
        stock_alerts.default_threshold()


# --- the list: velocity, cover, reorder on known sales --------------------------------------------------
NOW = dt.datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


def _sale(shop_id: int, pid: str, code: str, qty: int, days_ago: float, status: str = "to_audit") -> None:
    paid = NOW - dt.timedelta(days=days_ago)
    order = orders.create_order(db.session.get(Shop, shop_id), {
        "platform_order_id": pid, "status": "to_audit", "receiver_name": "测试",
        "receiver_phone": "13700009999", "receiver_province": "浙江省", "receiver_city": "杭州市",
        "receiver_address": "文三路1号", "paid_at": paid, "platform_created_at": paid,
        "lines": [{"platform_line_id": "1", "merchant_code": code, "title": code, "quantity": qty,
                   "price": "5.00", "paid_amount": "5.00"}]}, source="import")
    db.session.flush()
    if status == "closed":
        from app.services import order_status

        order_status.apply(order, "cancel", reason="买家取消")


def test_low_stock_list_figures_on_generated_sales(ctx, ids, monkeypatch):
    monkeypatch.setitem(ctx.config, "OMS_REORDER_LEAD_DAYS", 30)
    monkeypatch.setitem(ctx.config, "OMS_REORDER_SAFETY_DAYS", 15)
    product = db.session.scalars(select(Product)).first()
    vel = Sku(product=product, merchant_code="VEL-1", name="测速", cost_price=1, sale_price=2,
              low_stock_threshold=25)
    bundle = Sku(product=product, merchant_code="VEL-SET", name="测速两件装", cost_price=2, sale_price=3,
                 is_bundle=True)
    db.session.add_all([vel, bundle])
    db.session.flush()
    db.session.add(BundleComponent(bundle_sku_id=bundle.id, component_sku_id=vel.id, quantity=2))
    stock.inbound(_hz().id, vel.id, 20, source_ref="RK-VEL")
    db.session.commit()
    a, b = ids["shops"]["A"], ids["shops"]["B"]
    _sale(a, "V-1", "VEL-1", 3, 1)
    _sale(b, "V-2", "VEL-1", 5, 10)  # another shop counts too: the stock is shared
    _sale(a, "V-3", "VEL-1", 4, 29.5)
    _sale(a, "V-4", "VEL-SET", 3, 2)  # a bundle: 3 × 2 = 6 units of VEL-1
    _sale(a, "V-OLD", "VEL-1", 100, 31)  # outside the window
    _sale(a, "V-CLOSED", "VEL-1", 50, 2, status="closed")  # cancelled: not a sale
    db.session.commit()
    assert stock_alerts.sales_30d([vel.id], now=NOW) == {vel.id: 18}
    rows = {r.merchant_code: r for r in stock_alerts.low_stock(now=NOW)}
    row = rows["VEL-1"]
    assert (row.on_hand, row.reserved, row.available, row.threshold) == (20, 0, 20, 25)
    assert row.sold_30d == 18
    assert row.velocity == Decimal("0.60")  # 18 / 30
    assert row.days_of_cover == Decimal("33.3")  # 20 / 0.6
    assert row.reorder == 7  # max(⌈0.6 × (30 + 15)⌉ = 27, 25 + 1) − 20
    assert "VEL-SET" not in rows  # bundles hold no stock
    # with a short lead time the threshold dominates: max(⌈0.6 × 2⌉ = 2, 26) − 20 = 6
    monkeypatch.setitem(ctx.config, "OMS_REORDER_LEAD_DAYS", 1)
    monkeypatch.setitem(ctx.config, "OMS_REORDER_SAFETY_DAYS", 1)
    assert {r.merchant_code: r for r in stock_alerts.low_stock(now=NOW)}["VEL-1"].reorder == 6


def test_sku_without_sales_has_no_days_of_cover(ctx):
    _set_threshold("TS-BLK-L", N)
    [row] = [r for r in stock_alerts.low_stock(now=NOW) if r.merchant_code == "TS-BLK-L"]
    assert row.sold_30d == 0 and row.days_of_cover is None and row.reorder == N + 1 - (N - 4)


# --- the notification area ----------------------------------------------------------------------------
def test_bell_shows_unread_alerts_to_stock_readers_and_mark_read_clears_them(app, login):
    with app.app_context():
        _set_threshold("TS-BLK-L", N - 4)  # available N - 4 → alert
        assert len(_open("TS-BLK-L")) == 1
    wh = login("warehouse")
    page = wh.get("/stock/alerts/").get_data(as_text=True)
    assert 'class="badge oms-notify-count">1<' in page and "TS-BLK-L" in page
    assert "oms-low-stock" in page and "建议补货" in page
    home = wh.get("/").get_data(as_text=True)
    assert 'oms-notify-count">1<' in home  # on every page
    resp = wh.post("/stock/alerts/read", data={"next": "/"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/")
    assert "oms-notify-count" not in wh.get("/").get_data(as_text=True)
    # read per user: finance still has it unread
    fin = login("finance")
    assert 'oms-notify-count">1<' in fin.get("/").get_data(as_text=True)
    # and an alert that fires again after recovery is unread again
    with app.app_context():
        _adjust("TS-BLK-L", 1)
        _adjust("TS-BLK-L", -1)
    assert 'oms-notify-count">1<' in wh.get("/").get_data(as_text=True)
    assert 'oms-notify-count">2<' in fin.get("/").get_data(as_text=True)


def test_mark_read_refuses_an_outside_redirect(app, login):
    wh = login("warehouse")
    resp = wh.post("/stock/alerts/read", data={"next": "//evil.example.com/"})
    assert resp.status_code == 302 and "evil" not in resp.headers["Location"]


def test_alerts_are_unique_per_open_sku_even_if_evaluated_twice(ctx):
    _set_threshold("TS-BLK-L", N)
    stock_alerts.evaluate([_sku("TS-BLK-L").id])
    stock_alerts.evaluate([_sku("TS-BLK-L").id])
    assert db.session.scalar(select(func.count()).select_from(StockAlert)
                             .where(StockAlert.recovered_at.is_(None))) == 1


def test_concurrent_reservations_raise_exactly_one_alert_on_postgresql(pg_url, tmp_path):
    """8 processes race to reserve a hot SKU; each commit evaluates the alert after it
    commits: one open alert, never two (the partial unique index + ON CONFLICT)."""
    from tests import test_stock as ts

    app = ts._setup_pg(pg_url, tmp_path)
    with app.app_context():
        hz, sku = ts._wh(), ts._new_sku("HOT-AL")
        sku.low_stock_threshold = 12
        stock.inbound(hz.id, sku.id, 20, source_ref="RK-HOT")
        db.session.commit()
        assert db.session.scalar(select(func.count()).select_from(StockAlert)
                                 .where(StockAlert.sku_id == sku.id)) == 0
    ts._race(app, tmp_path, pg_url, lambda i: [("HOT-AL", 1)])
    with app.app_context():
        sku_id = ts._sku("HOT-AL").id
        alerts = db.session.scalars(select(StockAlert).where(StockAlert.sku_id == sku_id)).all()
        assert ts._stock(ts._wh().id, sku_id) == (20, 20)
        assert len(alerts) == 1 and alerts[0].recovered_at is None and alerts[0].available <= 12
        db.session.remove()
        db.engine.dispose()
