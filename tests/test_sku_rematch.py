"""商品匹配 (issue #5 item 1): orders held 未匹配商品 are re-matched when the mapping
changes — a SKU created or its code edited, a listing mapped, a bundle's components
defined — through every path that edits the mapping (service, FAB form, REST API,
the SKU import template)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import openpyxl
from sqlalchemy import select

from app.extensions import db
from app.models import BundleComponent, Order, OrderEvent, Product, Shop, ShopListing, Sku
from app.services import order_status, orders, sku_mapping

UTC = dt.timezone.utc


def _order(pid: str, codes: list[tuple[str, int]], shop: str = "A店-淘宝") -> int:
    shop_obj = db.session.scalars(select(Shop).where(Shop.name == shop)).one()
    paid = dt.datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
    order = orders.create_order(shop_obj, {
        "platform_order_id": pid, "status": "to_audit",
        "receiver_name": "测试", "receiver_phone": "13700009999", "receiver_province": "浙江省",
        "receiver_city": "杭州市", "receiver_district": "西湖区", "receiver_address": "文三路1号",
        "paid_at": paid, "platform_created_at": paid, "paid_amount": "10.00", "post_fee": "0",
        "lines": [{"platform_line_id": str(i), "merchant_code": code, "title": code, "quantity": qty,
                   "price": "5.00", "paid_amount": "5.00"} for i, (code, qty) in enumerate(codes, 1)],
    }, source="import")
    db.session.commit()
    return order.id


def _new_sku(code: str, cost: str = "3.00", *, bundle: bool = False) -> Sku:
    product = db.session.scalars(select(Product)).first()
    sku = Sku(product=product, merchant_code=code, name=f"商品{code}", cost_price=Decimal(cost),
              sale_price=Decimal("9"), is_bundle=bundle)
    db.session.add(sku)
    return sku


def _get(order_id: int) -> Order:
    db.session.expire_all()
    return db.session.get(Order, order_id)


def test_creating_the_sku_rematches_links_lines_recomputes_cost_and_releases_the_hold(ctx):
    oid = _order("RM-1", [("NEW-1", 2), ("TS-BLK-L", 1)])
    order = _get(oid)
    assert order.active_hold_reasons == ["unmatched_sku"]
    assert order.cost_amount == Decimal("25.00")
    _new_sku("NEW-1", "3.50")
    db.session.commit()
    order = _get(oid)
    assert order.active_hold_reasons == [] and not order.is_held
    line = next(ln for ln in order.lines if ln.merchant_code == "NEW-1")
    assert line.sku.merchant_code == "NEW-1" and line.cost_price == Decimal("3.50")
    assert order.cost_amount == Decimal("32.00")  # 25 + 2 × 3.50
    actions = [(e.action, e.source) for e in order.events]
    assert ("release", "rule") in actions
    note = next(e.note for e in order.events if e.action == "edit" and e.note and "重新匹配" in e.note)
    assert "NEW-1" in note
    # the hold's release is in the trail with its reason
    release = next(e for e in order.events if e.action == "release")
    assert release.old_value == "未匹配商品" and "自动解除" in release.note


def test_partly_matched_order_stays_held_with_the_remaining_codes_in_its_note(ctx):
    oid = _order("RM-2", [("NEW-A", 1), ("NEW-B", 1)])
    _new_sku("NEW-A")
    db.session.commit()
    order = _get(oid)
    assert order.active_hold_reasons == ["unmatched_sku"]
    assert order.holds[0].note == "商家编码未匹配：NEW-B"
    assert next(ln for ln in order.lines if ln.merchant_code == "NEW-A").sku_id is not None
    _new_sku("NEW-B")
    db.session.commit()
    assert _get(oid).active_hold_reasons == []


def test_editing_a_sku_code_rematches(ctx):
    oid = _order("RM-3", [("WRONG-CODE", 1)])
    sku = _new_sku("TYPO-CODE")
    db.session.commit()
    assert _get(oid).is_held
    sku = db.session.scalars(select(Sku).where(Sku.merchant_code == "TYPO-CODE")).one()
    sku.merchant_code = "WRONG-CODE"
    db.session.commit()
    assert not _get(oid).is_held


def test_other_holds_stay_and_closed_orders_are_left_alone(ctx):
    oid = _order("RM-4", [("NEW-4", 1)])
    order_status.hold(_get(oid), "manual", note="等买家确认")
    db.session.commit()
    closed = _order("RM-4C", [("NEW-4", 1)])
    orders.transition(closed, "cancel", reason="买家取消")
    _new_sku("NEW-4")
    db.session.commit()
    assert _get(oid).active_hold_reasons == ["manual"]
    assert _get(closed).status == "closed" and _get(closed).lines[0].sku_id is None


def test_a_listing_mapped_to_a_sku_rematches_that_shops_orders_only(ctx, ids):
    a = _order("RM-5A", [("ALIAS-5", 1)], shop="A店-淘宝")
    b = _order("RM-5B", [("ALIAS-5", 1)], shop="B店-拼多多")
    blk = db.session.scalars(select(Sku).where(Sku.merchant_code == "TS-BLK-L")).one()
    db.session.add(ShopListing(shop_id=ids["shops"]["A"], merchant_code="ALIAS-5", platform_item_id="55",
                               platform_sku_id="1", sku_id=blk.id))
    db.session.commit()
    order_a, order_b = _get(a), _get(b)
    assert not order_a.is_held and order_a.lines[0].sku_id == blk.id
    assert order_a.cost_amount == Decimal("25.00")
    assert order_b.active_hold_reasons == ["unmatched_sku"]


def test_a_listing_code_edited_later_rematches(ctx, ids):
    a = _order("RM-6", [("ALIAS-6", 1)])
    blk = db.session.scalars(select(Sku).where(Sku.merchant_code == "TS-BLK-L")).one()
    listing = ShopListing(shop_id=ids["shops"]["A"], merchant_code="ALIAS-X", platform_item_id="66",
                          platform_sku_id="1", sku_id=blk.id)
    db.session.add(listing)
    db.session.commit()
    assert _get(a).is_held
    listing = db.session.get(ShopListing, listing.id)
    listing.merchant_code = "ALIAS-6"
    db.session.commit()
    assert not _get(a).is_held


def test_bundle_without_components_keeps_the_hold_until_they_are_defined(ctx):
    oid = _order("RM-7", [("SET-7", 2)])
    bundle = _new_sku("SET-7", "0", bundle=True)
    db.session.commit()
    order = _get(oid)
    assert order.active_hold_reasons == ["unmatched_sku"]
    assert "组合装 SET-7 未设置组成商品" in order.holds[0].note
    blk = db.session.scalars(select(Sku).where(Sku.merchant_code == "TS-BLK-L")).one()
    wht = db.session.scalars(select(Sku).where(Sku.merchant_code == "TS-WHT-M")).one()
    db.session.add_all([BundleComponent(bundle_sku_id=bundle.id, component_sku_id=blk.id, quantity=2),
                        BundleComponent(bundle_sku_id=bundle.id, component_sku_id=wht.id, quantity=1)])
    db.session.commit()
    order = _get(oid)
    assert not order.is_held
    assert order.lines[0].cost_price == Decimal("74.00")  # 2 × 25 + 24: a bundle without its own cost
    assert order.cost_amount == Decimal("148.00")
    # and the order can now be audited: its stock is the components'
    orders.transition(oid, "audit")
    assert _get(oid).status == "to_ship"


def test_a_rolled_back_sku_rematches_nothing(ctx):
    oid = _order("RM-8", [("NEW-8", 1)])
    _new_sku("NEW-8")
    db.session.flush()
    db.session.rollback()
    db.session.commit()
    assert _get(oid).is_held


def test_rematch_service_with_no_arguments_rematches_every_held_order(ctx):
    oid = _order("RM-9", [("NEW-9", 1)])
    sku = _new_sku("NEW-9")
    db.session.flush()
    db.session.info.pop("oms_mapping_changed", None)  # as if the hook had not run
    released = sku_mapping.rematch_orders()
    db.session.commit()
    assert released == [oid] and _get(oid).lines[0].sku_id == sku.id


# --- through the pages, the API and the importer -------------------------------------------------
def test_sku_added_through_the_form_by_a_shop_limited_user_releases_every_shops_orders(app, login):
    with app.app_context():
        a = _order("RM-F-A", [("FORM-1", 1)], shop="A店-淘宝")
        b = _order("RM-F-B", [("FORM-1", 1)], shop="B店-拼多多")
        product_id = db.session.scalars(select(Product.id)).first()
    client = login("ops_a")  # sees shop A only; the mapping is for every shop
    resp = client.post("/skuview/add", data={"product": str(product_id), "merchant_code": "FORM-1",
                                             "name": "表单新建", "sale_price": "9", "cost_price": "2",
                                             "weight_kg": "0.1", "active": "y"})
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
    with app.app_context():
        for oid in (a, b):
            order = _get(oid)
            assert not order.is_held and order.lines[0].sku.merchant_code == "FORM-1"
        release = next(e for e in _get(a).events if e.action == "release")
        assert release.user_id is not None  # the user whose edit released it


def test_bundle_component_added_through_the_form_releases(app, login):
    with app.app_context():
        oid = _order("RM-F-SET", [("SET-F", 1)])
        bundle = _new_sku("SET-F", "0", bundle=True)
        db.session.commit()
        bundle_id = bundle.id
        blk = db.session.scalars(select(Sku.id).where(Sku.merchant_code == "TS-BLK-L")).one()
        assert _get(oid).is_held
    client = login("admin")
    resp = client.post("/bundlecomponentview/add", data={"bundle": str(bundle_id), "component": str(blk),
                                                          "quantity": "3"})
    assert resp.status_code == 302
    with app.app_context():
        assert not _get(oid).is_held and _get(oid).lines[0].cost_price == Decimal("75.00")


def test_sku_created_through_the_rest_api_releases(app, login):
    with app.app_context():
        oid = _order("RM-API", [("API-1", 1)])
        product_id = db.session.scalars(select(Product.id)).first()
    client = login("admin")
    resp = client.post("/api/v1/sku/", json={"product": product_id, "merchant_code": "API-1", "name": "接口新建",
                                             "sale_price": "9", "cost_price": "1.5", "weight_kg": "0.1"})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    with app.app_context():
        order = _get(oid)
        assert not order.is_held and order.cost_amount == Decimal("1.50")


def test_sku_import_template_releases(ctx, tmp_path):
    from app.services.imports import run_import

    oid = _order("RM-IMP", [("IMP-1", 1), ("IMP-2", 2)])
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["商家编码", "名称", "成本价", "售价"])
    ws.append(["IMP-1", "导入一", "1.00", "9"])
    ws.append(["IMP-2", "导入二", "2.00", "9"])
    path = tmp_path / "skus.xlsx"
    wb.save(path)
    result = run_import([path])
    assert result.applied, result.summary
    order = _get(oid)
    assert not order.is_held and order.cost_amount == Decimal("5.00")


def test_listing_upsert_service_maps_and_releases(ctx, ids):
    from app.services import stock_push

    oid = _order("RM-UPS", [("UPS-1", 1)])
    _new_sku("UPS-1")  # created in the same transaction as the listing
    stock_push.upsert_listings(ids["shops"]["A"], [{"merchant_code": "UPS-1", "item_id": "77", "sku_id": "1"}])
    assert not _get(oid).is_held
    assert db.session.scalars(select(OrderEvent).where(OrderEvent.order_id == oid,
                                                       OrderEvent.action == "release")).first() is not None


def test_a_bundle_without_its_own_cost_costs_its_components_when_the_order_is_created(ctx):
    """The same rule at creation as at re-matching (``sku_mapping.line_cost``): through
    ``create_order`` (ORM) and through the bulk paths' catalogue (plain values, and ORM
    values), a bundle with cost 0 costs 2 × 25 + 24; a bundle with its own cost keeps it."""
    from types import SimpleNamespace

    from app.services import bulk_orders

    bundle = _new_sku("SET-8", "0", bundle=True)
    priced = _new_sku("SET-9", "30.00", bundle=True)
    blk = db.session.scalars(select(Sku).where(Sku.merchant_code == "TS-BLK-L")).one()
    wht = db.session.scalars(select(Sku).where(Sku.merchant_code == "TS-WHT-M")).one()
    db.session.flush()
    for b in (bundle, priced):
        db.session.add_all([BundleComponent(bundle_sku_id=b.id, component_sku_id=blk.id, quantity=2),
                            BundleComponent(bundle_sku_id=b.id, component_sku_id=wht.id, quantity=1)])
    db.session.commit()

    order = _get(_order("BC-1", [("SET-8", 2), ("SET-9", 1)]))
    assert [ln.cost_price for ln in order.lines] == [Decimal("74.00"), Decimal("30.00")]
    assert order.cost_amount == Decimal("178.00") and not order.is_held

    shop = db.session.scalars(select(Shop).where(Shop.name == "A店-淘宝")).one()
    draft = SimpleNamespace(data={"platform_order_id": "BC-2", "status": "to_audit", "lines": [
        {"platform_line_id": "1", "merchant_code": "SET-8", "title": "套装", "quantity": 2, "price": "5.00",
         "paid_amount": "10.00"},
        {"platform_line_id": "2", "merchant_code": "SET-9", "title": "套装", "quantity": 1, "price": "5.00",
         "paid_amount": "5.00"}]}, digest="x", hold=None, refund=None)
    for orm in (False, True):
        skus = sku_mapping.SkuCatalogue.load({"SET-8", "SET-9"}, shop_ids=[shop.id], orm=orm).for_shop(shop.id)
        p = bulk_orders.prepare(draft, shop, skus, None, 2000)
        assert [ln["cost_price"] for ln in p.lines] == [Decimal("74.00"), Decimal("30.00")], orm
        assert p.order["cost_amount"] == Decimal("178.00")
    assert sku_mapping.SkuCatalogue.load({"SET-8"}, orm=False).by_code["SET-8"].cost_price == Decimal("74.00")
    assert Decimal(db.session.get(Sku, bundle.id).cost_price) == 0  # the SKU itself is not changed
