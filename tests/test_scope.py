"""Row scope: a user touches only the orders, customers and shops of their shops,
on every registered view and API (enumerated, not hand-picked)."""
from __future__ import annotations

import re

import pytest
from flask_appbuilder import ModelRestApi, ModelView

from app.extensions import db
from app.models import (
    Customer, Order, OrderEvent, OrderHold, OrderLine, Shop, ShopListing, SyncReject, SyncRun,
)
from app.services import order_status
from app.services.scope import as_scope
from app.views.base import OmsModelRestApi, OmsModelView

SCOPED = (Order, OrderLine, OrderHold, OrderEvent, Customer, Shop, SyncRun, ShopListing, SyncReject)
FOREIGN_ORDER = "261120-000000000000001"  # shop B; user cs sees shop A only


def _oms_views(app):
    """Every page and API the OMS registers (FAB's own security views are admin-only)."""
    return [v for v in app.appbuilder.baseviews
            if type(v).__module__.startswith("app.") and type(v).__module__ != "app.security"]


def test_every_oms_view_and_api_uses_the_scoped_bases(ctx):
    app = ctx
    views = _oms_views(app)
    assert len(views) >= 25
    for v in views:
        if isinstance(v, ModelView):
            assert isinstance(v, OmsModelView), type(v).__name__
        elif isinstance(v, ModelRestApi):
            assert isinstance(v, OmsModelRestApi), type(v).__name__
        else:
            # no model rows of their own: the grid pages (made by grid_page) and the import
            # page read and write through the scoped APIs and services
            if getattr(type(v), "oms_grid_resource", None):
                continue
            assert type(v).__name__ in ("JobsView", "JobApi", "OmsIndexView", "ImportView", "StockAlertView",
                                        "InboundView", "AdjustView", "StocktakeView",
                                        # 退货入库 finds the order through the row-scoped query
                                        # (tests/test_stock_returns.py: another shop's → not found)
                                        "ReturnView",
                                        # 扫描发货 ships through the scoped order query; the template
                                        # editor holds no shop data; a print file is its owner's only
                                        "ScanShipView", "PrintTemplateView", "PrintDownloadView",
                                        # 快递考核 aggregates scoped ORM queries (services/carrier_scorecard.py)
                                        "CarrierScorecardView"), type(v).__name__


def _foreign_ids(app, ids):
    """For each scoped model, the id of one row of shop B only."""
    with app.app_context():
        order = db.session.get(Order, ids["orders"][FOREIGN_ORDER])
        order_status.hold(order, "manual", note="测试")
        run = SyncRun(shop_id=ids["shops"]["B"], status="failed", error="测试")
        listing = ShopListing(shop_id=ids["shops"]["B"], merchant_code="TS-BLK-L", platform_item_id="900",
                              platform_sku_id="1", title="纯棉T恤")
        reject = SyncReject(shop_id=ids["shops"]["B"], platform_order_id="B-BAD-1", error="第 1 行商品「数量」不能小于 1")
        db.session.add_all([run, listing, reject])
        db.session.commit()
        return {
            Order: order.id,
            OrderLine: order.lines[0].id,
            OrderHold: order.holds[0].id,
            OrderEvent: order.events[0].id,
            Customer: order.customer_id,
            Shop: ids["shops"]["B"],
            SyncRun: run.id,
            ShopListing: listing.id,
            SyncReject: reject.id,
        }


@pytest.mark.parametrize("username", ["cs", "ops_a"])
def test_no_cross_shop_leak_on_any_registered_view_or_api(app, ids, login, username):
    foreign = _foreign_ids(app, ids)
    cs = login(username)
    checked = []
    for view in _oms_views(app):
        model = getattr(getattr(view, "datamodel", None), "obj", None)
        if model not in SCOPED:
            continue
        pk = foreign[model]
        if isinstance(view, ModelRestApi):
            base = f"/api/v1/{view.resource_name}"
            resp = cs.get(f"{base}/{pk}")
            assert resp.status_code in (404, 403), (base, resp.status_code)
            if resp.status_code == 404:
                checked.append(base)
            lst = cs.get(f"{base}/?q=(page_size:500)")
            if lst.status_code == 200:
                assert pk not in lst.json["ids"], base
            put = cs.put(f"{base}/{pk}", json={"seller_memo": "x"})
            assert put.status_code in (404, 403, 405), (base, put.status_code)
        else:
            name = type(view).__name__.lower()
            for route in ("show", "edit"):
                resp = cs.get(f"/{name}/{route}/{pk}")
                if resp.status_code in (302, 403):  # no permission for this route at all
                    continue
                assert resp.status_code == 404, (name, route, resp.status_code)
                checked.append(f"{name}/{route}")
    # Enough of the surface was really exercised, not just refused.
    expected = {"/api/v1/order", "/api/v1/order_line", "/api/v1/order_event", "/api/v1/order_hold",
                "/api/v1/customer", "orderview/show", "orderview/edit", "customerview/show"}
    if username == "ops_a":
        expected |= {"/api/v1/shop", "/api/v1/sync_run", "shopview/show", "shopview/edit", "syncrunview/show",
                     "/api/v1/shop_listing", "shoplistingview/show", "shoplistingview/edit",
                     "syncrejectview/show"}
    assert expected <= set(checked), expected - set(checked)


def test_order_list_and_api_show_only_own_shops(app, ids, login):
    cs = login("cs")
    data = cs.get("/api/v1/order/?q=(page_size:100)").json
    shop_ids = {row["shop"]["id"] for row in data["result"]}
    assert shop_ids == {ids["shops"]["A"]}
    assert data["count"] == 3
    html = cs.get("/orderview/list/").get_data(as_text=True)
    assert "3000000000000000001" in html and FOREIGN_ORDER not in html
    ops = login("ops")
    assert ops.get("/api/v1/order/?q=(page_size:100)").json["count"] == 6


def test_list_counts_stop_at_the_cap_and_say_so(app, ids, login, monkeypatch):
    """FAB counts every matching row on each list page and REST list call; OmsInterface
    counts the first OMS_LIST_COUNT_CAP + 1 only (a COUNT over a LIMITed subquery)."""
    from sqlalchemy import event

    from app.extensions import db

    ops = login("ops")  # 6 orders in scope
    statements = []
    with app.app_context():
        engine = db.engine

    def capture(conn, cursor, statement, *rest):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", capture)
    try:
        monkeypatch.setitem(app.config, "OMS_LIST_COUNT_CAP", 4)
        data = ops.get("/api/v1/order/?q=(page_size:100)").json
        assert (data["count"], data["count_capped"], len(data["result"])) == (5, True, 6)
        counts = [st for st in statements if "count(" in st.lower()]
        assert counts and all("LIMIT" in st.upper() for st in counts), counts
        html = ops.get("/orderview/list/").get_data(as_text=True)
        assert re.search(r"</strong>\s*4\+", html), "the list page shows 4+"

        monkeypatch.setitem(app.config, "OMS_LIST_COUNT_CAP", 100)
        data = ops.get("/api/v1/order/?q=(page_size:100)").json
        assert (data["count"], data["count_capped"]) == (6, False)
        html = ops.get("/orderview/list/").get_data(as_text=True)
        assert re.search(r"</strong>\s*6\s", html) and not re.search(r"</strong>\s*6\+", html)

        monkeypatch.setitem(app.config, "OMS_LIST_COUNT_CAP", 0)  # exact, as FAB counts
        statements.clear()
        data = ops.get("/api/v1/order/?q=(page_size:2)").json
        assert (data["count"], data["count_capped"], len(data["result"])) == (6, False, 2)
    finally:
        event.remove(engine, "before_cursor_execute", capture)


def test_customer_matched_across_shops_is_visible_to_each_shop_without_the_other_orders(app, ids, login):
    cs = login("cs")
    customers = cs.get("/api/v1/customer/?q=(page_size:100)").json
    assert customers["count"] == 3  # the three receivers of shop A; 张三丰 also bought in shop C
    # Aggregates over every shop would tell a shop-limited user about shop C's sales.
    for row in customers["result"]:
        for key in ("order_count", "total_spent", "first_order_at", "last_order_at", "tier"):
            assert key not in row
    with app.app_context():
        from app.services import crypto

        zhang = db.session.query(Customer).filter_by(phone_hash=crypto.phone_index("13812341234")).one()
        assert zhang.order_count == 2
    html = cs.get(f"/customerview/show/{zhang.id}").get_data(as_text=True)
    assert "3000000000000000001" in html and "300000000001" not in html.replace("3000000000000000001", "")
    assert cs.get("/customerview/list/?_oc_CustomerView=total_spent&_od_CustomerView=desc").status_code == 403
    ops = login("ops")  # sees every shop: sees the aggregates
    row = next(r for r in ops.get("/api/v1/customer/?q=(page_size:100)").json["result"] if r["id"] == zhang.id)
    assert row["order_count"] == 2


def test_action_on_a_foreign_order_changes_nothing(app, ids, login):
    cs = login("cs")
    foreign = ids["orders"][FOREIGN_ORDER]
    resp = cs.post("/orderview/action_post", data={"action": "hold_orders", "rowid": [str(foreign)]},
                   follow_redirects=True)
    assert "不存在或无权访问" in resp.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Order, foreign).is_held is False


def test_transition_and_reveal_api_on_foreign_order_is_404(app, ids, login):
    cs = login("cs")
    foreign = ids["orders"][FOREIGN_ORDER]
    assert cs.post(f"/api/v1/order/{foreign}/transition", json={"action": "cancel", "reason": "x"}).status_code == 404
    assert cs.post(f"/api/v1/order/{foreign}/reveal").status_code == 404


def test_shop_dropdowns_and_lists_are_scoped(app, ids, login):
    cs_b = login("cs_b")
    html = cs_b.get("/orderview/list/").get_data(as_text=True)
    assert "B店-拼多多" in html and "A店-淘宝" not in html


def test_anonymous_request_sees_nothing(app, ids):
    client = app.test_client()
    assert client.get("/api/v1/order/").status_code == 401
    with app.test_request_context("/"):
        assert db.session.query(Order).count() == 0
    with app.app_context(), as_scope(None):
        assert db.session.query(Order).count() == 6


def test_system_context_sees_everything(ctx, ids):
    assert db.session.query(Order).count() == 6


def test_order_of_a_buyer_known_only_in_another_shop_links_to_that_customer(ctx, ids):
    """A shop-limited user's new order finds the customer of its buyer even when that
    customer has so far bought only in shops the user does not see (no duplicate)."""
    from sqlalchemy import func, select as sa_select

    from app.models import Customer, OmsUser, Shop
    from app.services import orders
    from app.services.scope import as_user
    from tests import world

    ops_a = db.session.scalars(sa_select(OmsUser).where(OmsUser.username == "ops_a")).one()
    shop_a = db.session.get(Shop, ids["shops"]["A"])
    before = db.session.scalar(sa_select(func.count()).select_from(Customer))
    with as_user(ops_a.id):
        order = orders.create_order(shop_a, {
            "platform_order_id": "LINK-ACROSS-1", "receiver_phone": world.PHONE_B1, "receiver_name": "赵六",
            "lines": [{"platform_line_id": "1", "merchant_code": "TS-BLK-L", "title": "T恤", "quantity": 1,
                       "price": "79.00", "paid_amount": "79.00"}]}, source="import")
        db.session.commit()
    assert db.session.scalar(sa_select(func.count()).select_from(Customer)) == before
    from app.models import Order

    b_order = db.session.get(Order, ids["orders"]["261120-000000000000001"])
    assert order.customer_id == b_order.customer_id
