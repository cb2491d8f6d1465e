"""The grid API behind 订单工作台 and every entity grid: keyset pages, filters, tabs,
column and row scope, and bulk cell edits (typed or pasted)."""
from __future__ import annotations

import json

from sqlalchemy import select

from app.extensions import db
from app.models import Order, OrderEvent
from tests import world


def _rows(client, resource="order", **params):
    if "filters" in params and not isinstance(params["filters"], str):
        params["filters"] = json.dumps(params["filters"])
    resp = client.get(f"/api/v1/{resource}/grid/rows", query_string=params)
    return resp


def test_meta_hides_cost_from_cs_and_never_offers_pii_for_editing(login):
    meta = login("cs").get("/api/v1/order/grid/meta").json
    keys = {c["key"]: c for c in meta["columns"]}
    assert "cost_amount" not in keys
    assert keys["receiver_phone"]["editable"] is False
    assert keys["seller_memo"]["editable"] and keys["tracking_number"]["editable"]
    assert keys["carrier.name"]["editable"] and keys["carrier.name"]["edit_options"]
    assert [t["label"] for t in meta["tabs"]] == ["待付款", "待审核", "待发货", "已发货", "已完成", "已关闭", "异常"]
    # cs may not audit: the batch action is not offered
    assert "audit" not in {a["code"] for a in meta["actions"]}
    admin_meta = login("admin").get("/api/v1/order/grid/meta").json
    assert "cost_amount" in {c["key"] for c in admin_meta["columns"]}
    assert "audit" in {a["code"] for a in admin_meta["actions"]}


def test_finance_sees_cost_but_not_buyers(login):
    keys = {c["key"] for c in login("finance").get("/api/v1/order/grid/meta").json["columns"]}
    assert "cost_amount" in keys and "receiver_phone" not in keys and "receiver_name" not in keys


def test_rows_are_scoped_to_the_users_shops_and_phones_masked(login, ids):
    body = _rows(login("cs")).json
    shops = {r["shop.name"] for r in body["rows"]}
    assert shops == {"A店-淘宝"}
    assert len(body["rows"]) == 3
    for r in body["rows"]:
        assert "cost_amount" not in r
        assert "****" in r["receiver_phone"]
    # another shop's order id in the filter finds nothing
    other = ids["orders"]["261120-000000000000001"]
    assert _rows(login("cs"), filters={"id": [other]}).json["rows"] == []


def test_tab_and_shop_filter(login, ids):
    client = login("admin")
    body = _rows(client, filters={"tab": "to_audit", "shop_id": [ids["shops"]["A"]]}, count=1).json
    assert [r["platform_order_id"] for r in body["rows"]] == ["3000000000000000001"]
    assert body["count"] == 1 and body["count_capped"] is False
    counts = client.get("/api/v1/order/grid/count", query_string={
        "filters": json.dumps({"shop_id": [ids["shops"]["A"]]})}).json
    tabs = {t["code"]: t["count"] for t in counts["tabs"]}
    assert tabs["to_audit"] == 1 and tabs["to_ship"] == 1 and tabs["pending_payment"] == 1
    assert counts["count"] == 3


def test_keyset_paging_walks_every_row_once_in_order(ctx, login):
    client = login("admin")
    seen, after = [], None
    while True:
        params = {"size": 2, "sort": "paid_at:desc"}
        if after:
            params["after"] = after
        body = _rows(client, **params).json
        seen += [r["id"] for r in body["rows"]]
        after = body["next_cursor"]
        if not after:
            break
    expected = [o.id for o in db.session.scalars(
        select(Order).order_by(Order.paid_at.desc().nulls_first(), Order.id.desc()))]
    assert seen == expected and len(seen) == 6


def test_filters_and_sorts_on_hidden_columns_are_refused(login):
    client = login("cs")
    resp = _rows(client, filters={"cost_amount": {"from": 0}})
    assert resp.status_code == 422 and "成本" in resp.json["message"] or "cost" in resp.json["message"]
    resp = _rows(client, sort="cost_amount:desc")
    assert resp.status_code == 422


def test_keyword_finds_order_by_full_mobile_number(login):
    body = _rows(login("admin"), filters={"keyword": world.PHONE_B1}).json
    assert [r["platform_order_id"] for r in body["rows"]] == ["261120-000000000000001"]


def test_pasting_tracking_numbers_into_rows_saves_each_row_with_an_event(ctx, login, ids):
    client = login("ops")
    a1, a2 = ids["orders"]["3000000000000000001"], ids["orders"]["3000000000000000002"]
    resp = client.post("/api/v1/order/grid/edit", json={"changes": [
        {"id": a1, "key": "tracking_number", "value": " SF1000000000001 "},
        {"id": a2, "key": "tracking_number", "value": "SF1000000000002"},
        {"id": a2, "key": "flag", "value": 9},  # invalid: this row fails, the other is kept
    ]})
    assert resp.status_code == 200
    results = {r["id"]: r for r in resp.json["results"]}
    assert results[a1]["ok"] and results[a1]["row"]["tracking_number"] == "SF1000000000001"
    assert not results[a2]["ok"] and "旗帜" in results[a2]["message"]
    db.session.expire_all()
    assert db.session.get(Order, a1).tracking_number == "SF1000000000001"
    assert db.session.get(Order, a2).tracking_number is None  # its row failed as a whole
    events = db.session.scalars(select(OrderEvent).where(
        OrderEvent.order_id == a1, OrderEvent.field == "tracking_number")).all()
    assert len(events) == 1 and events[0].new_value == "SF1000000000001"


def test_grid_edit_refuses_pii_and_other_shops(ctx, login, ids):
    client = login("cs")
    a1 = ids["orders"]["3000000000000000001"]
    resp = client.post("/api/v1/order/grid/edit", json={"changes": [
        {"id": a1, "key": "receiver_phone", "value": "13900000000"}]})
    assert resp.status_code == 422
    b1 = ids["orders"]["261120-000000000000001"]
    resp = client.post("/api/v1/order/grid/edit", json={"changes": [
        {"id": b1, "key": "seller_memo", "value": "x"}]})
    assert resp.status_code == 200 and resp.json["results"][0]["ok"] is False
    db.session.expire_all()
    assert db.session.get(Order, b1).seller_memo is None


def test_finance_cannot_edit(login, ids):
    resp = login("finance").post("/api/v1/order/grid/edit", json={"changes": [
        {"id": ids["orders"]["3000000000000000001"], "key": "seller_memo", "value": "x"}]})
    assert resp.status_code in (401, 403)


def test_every_entity_api_has_a_grid(login):
    client = login("admin")
    for resource in ("sku", "stock", "customer", "shop", "carrier", "warehouse"):
        meta = client.get(f"/api/v1/{resource}/grid/meta")
        assert meta.status_code == 200, resource
        rows = client.get(f"/api/v1/{resource}/grid/rows")
        assert rows.status_code == 200, (resource, rows.json)
        assert rows.json["rows"], resource
    for resource in ("parcel", "logistics_exception", "warehouse_coverage"):  # empty in the test world
        assert client.get(f"/api/v1/{resource}/grid/meta").status_code == 200, resource
        assert client.get(f"/api/v1/{resource}/grid/rows").status_code == 200, resource


def test_generic_grid_edit_validates_through_the_schema(ctx, login):
    from app.models import Sku

    sku = db.session.scalars(select(Sku).order_by(Sku.id)).first()
    client = login("admin")
    resp = client.post("/api/v1/sku/grid/edit", json={"changes": [
        {"id": sku.id, "key": "name", "value": "新名字"}]})
    assert resp.status_code == 200 and resp.json["results"][0]["ok"], resp.json
    db.session.expire_all()
    assert db.session.get(Sku, sku.id).name == "新名字"


def test_workbench_page_renders_for_order_readers_only(login):
    page = login("cs").get("/grid/order/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'data-resource="order"' in html and "vendor/tabulator/tabulator.min.js" in html
    assert "订单工作台" in html
    # 财务 has no Customer write, but may read customers; 客服 may not open the shop grid
    assert login("cs").get("/grid/shop/").status_code in (302, 403)


def test_saved_views_are_per_user_and_one_default(login):
    ops = login("ops")
    state = {"tab": "to_audit", "filters": {"platform": ["taobao"]}, "columns": [{"key": "flag", "visible": False}]}
    assert ops.post("/api/v1/order/grid/views", json={"name": "待审淘宝", "state": state,
                                                       "is_default": True}).status_code == 200
    assert ops.post("/api/v1/order/grid/views", json={"name": "全部", "state": {}, "is_default": True}).status_code == 200
    views = {v["name"]: v for v in ops.get("/api/v1/order/grid/views").json["views"]}
    assert views["待审淘宝"]["state"] == state
    assert [n for n, v in views.items() if v["is_default"]] == ["全部"]
    # replacing by name keeps one row
    ops.post("/api/v1/order/grid/views", json={"name": "全部", "state": {"tab": "held"}})
    assert len(ops.get("/api/v1/order/grid/views").json["views"]) == 2
    # another user sees none and cannot delete them
    cs = login("cs")
    assert cs.get("/api/v1/order/grid/views").json["views"] == []
    assert cs.delete(f"/api/v1/order/grid/views/{views['全部']['id']}").status_code == 404
    bad = ops.post("/api/v1/order/grid/views", json={"name": "", "state": {}})
    assert bad.status_code == 422 and "视图名称" in bad.json["message"]


def _texts(meta):
    for c in meta["columns"]:
        yield c["label"]
        yield from (c.get("choices") or {}).values()
        yield from (o["label"] for o in c.get("edit_options") or [])
    for q in meta["quick_filters"]:
        yield q["label"]
        yield from (o["label"] for o in q.get("options") or [])
    for a in meta["actions"]:
        yield a["label"]
        for p in a.get("params") or []:
            yield p["label"]
            yield from (o["label"] for o in p.get("options") or [])
    yield from (t["label"] for t in meta["tabs"] or [])
    yield meta["title"]


def test_every_grid_definition_speaks_chinese(login):
    import re

    client = login("admin")
    cjk = re.compile(r"[\u4e00-\u9fff]")
    allowed_latin = {"SKU", "ID", "App key", "Kuaidi100"}
    for resource in ("order", "sku", "stock", "customer", "shop", "parcel", "logistics_exception"):
        meta = client.get(f"/api/v1/{resource}/grid/meta").json
        english = [t for t in _texts(meta) if t and not cjk.search(t) and t not in allowed_latin
                   and not re.fullmatch(r"[\d\W]+", t) and not re.fullmatch(r"[A-Z]{1,4}\d*[-\w]*", t)]
        assert not english, (resource, english)


def test_warehouse_cannot_change_after_audit_from_the_grid(ctx, login, ids):
    from app.models import Warehouse

    wh = Warehouse(code="SH", name="上海仓", province="上海市", city="上海市", priority=2, active=True)
    db.session.add(wh)
    db.session.commit()
    to_ship = ids["orders"]["3000000000000000002"]
    to_audit = ids["orders"]["3000000000000000001"]
    resp = login("ops").post("/api/v1/order/grid/edit", json={"changes": [
        {"id": to_ship, "key": "warehouse.name", "value": wh.id},
        {"id": to_audit, "key": "warehouse.name", "value": wh.id}]})
    results = {r["id"]: r for r in resp.json["results"]}
    assert not results[to_ship]["ok"] and "请先反审核" in results[to_ship]["message"]
    assert results[to_audit]["ok"] and results[to_audit]["row"]["warehouse.name"] == wh.name


def test_yes_no_columns_can_be_saved_unticked_in_any_form(ctx, login):
    from app.models import Warehouse

    wh = db.session.scalars(select(Warehouse).order_by(Warehouse.id)).first()
    assert wh.active
    resp = login("admin").post(f"/warehouseview/edit/{wh.id}", data={
        "code": wh.code, "name": wh.name, "province": wh.province or "", "city": wh.city or "",
        "priority": wh.priority}, follow_redirects=False)
    assert resp.status_code == 302, resp.get_data(as_text=True)[:2000]
    db.session.expire_all()
    assert db.session.get(Warehouse, wh.id).active is False
