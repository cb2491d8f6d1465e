"""The role × view/API matrix: what each seeded role may and may not do.

The expectations are written out by hand from the jobs in the foundation issue,
not derived from the seeding code, so a wrong grant fails here."""
from __future__ import annotations

import pytest

from app.extensions import db
from app.models import Order, Sku

ROLES = ["admin", "ops", "cs", "warehouse", "finance"]
ORDER_A1 = "3000000000000000001"

# page / API -> roles that may read it
READ = {
    ("/orderview/list/", "/api/v1/order/"): {"admin", "ops", "cs", "warehouse", "finance"},
    ("/ordereventview/list/", "/api/v1/order_event/"): {"admin", "ops", "cs", "warehouse", "finance"},
    ("/customerview/list/", "/api/v1/customer/"): {"admin", "ops", "cs", "finance"},
    ("/productview/list/", "/api/v1/product/"): {"admin", "ops", "cs", "warehouse", "finance"},
    ("/skuview/list/", "/api/v1/sku/"): {"admin", "ops", "cs", "warehouse", "finance"},
    ("/stockview/list/", "/api/v1/stock/"): {"admin", "ops", "cs", "warehouse", "finance"},
    ("/stockmovementview/list/", "/api/v1/stock_movement/"): {"admin", "ops", "cs", "warehouse", "finance"},
    ("/warehouseview/list/", "/api/v1/warehouse/"): {"admin", "ops", "warehouse", "finance"},
    ("/carrierview/list/", "/api/v1/carrier/"): {"admin", "ops", "cs", "warehouse"},
    ("/shopview/list/", "/api/v1/shop/"): {"admin", "ops", "finance"},
    ("/piiaccesslogview/list/", "/api/v1/pii_access_log/"): {"admin"},
    ("/syncrunview/list/", "/api/v1/sync_run/"): {"admin", "ops"},
    ("/syncrejectview/list/", None): {"admin", "ops"},
    ("/shoplistingview/list/", "/api/v1/shop_listing/"): {"admin", "ops", "warehouse"},
    ("/jobs/", None): {"admin", "ops", "cs", "warehouse", "finance"},  # 我的任务: own jobs
    ("/users/list/", None): {"admin"},
    ("/roles/list/", None): {"admin"},
}


@pytest.mark.parametrize("role", ROLES)
def test_read_matrix(app, login, role):
    client = login(role)
    for (page, api), allowed in READ.items():
        page_code = client.get(page).status_code
        if role in allowed:
            assert page_code == 200, (role, page, page_code)
        else:
            assert page_code in (302, 403), (role, page, page_code)
        if api:
            api_code = client.get(api).status_code
            assert api_code == (200 if role in allowed else 403), (role, api, api_code)


@pytest.mark.parametrize("role,allowed", [("admin", True), ("ops", True), ("cs", True), ("warehouse", True),
                                          ("finance", False)])
def test_edit_memo(app, ids, login, role, allowed):
    resp = login(role).put(f"/api/v1/order/{ids['orders'][ORDER_A1]}", json={"seller_memo": f"{role} 备注"})
    assert resp.status_code == (200 if allowed else 403)
    with app.app_context():
        memo = db.session.get(Order, ids["orders"][ORDER_A1]).seller_memo
    assert (memo == f"{role} 备注") is allowed


@pytest.mark.parametrize("role,allowed", [("admin", True), ("ops", True), ("cs", False), ("warehouse", False),
                                          ("finance", False)])
def test_audit(app, ids, login, role, allowed):
    oid = ids["orders"][ORDER_A1]
    resp = login(role).post(f"/api/v1/order/{oid}/transition", json={"action": "audit"})
    assert resp.status_code == (200 if allowed else 403), resp.get_json()
    with app.app_context():
        assert (db.session.get(Order, oid).status == "to_ship") is allowed


@pytest.mark.parametrize("role,allowed", [("admin", True), ("ops", True), ("cs", False), ("warehouse", False),
                                          ("finance", False)])
def test_manage_skus(app, login, role, allowed):
    client = login(role)
    with app.app_context():
        product_id = db.session.query(Sku).first().product_id
    resp = client.post("/api/v1/sku/", json={"product": product_id, "merchant_code": f"NEW-{role}",
                                             "name": "新品", "cost_price": 1, "sale_price": 2, "weight_kg": 0.1})
    assert resp.status_code == (201 if allowed else 403), resp.get_json()
    with app.app_context():
        assert (db.session.query(Sku).filter_by(merchant_code=f"NEW-{role}").count() == 1) is allowed


@pytest.mark.parametrize("role,allowed", [("admin", True), ("ops", False), ("cs", True), ("warehouse", False),
                                          ("finance", False)])
def test_reveal(app, ids, login, role, allowed):
    resp = login(role).post(f"/api/v1/order/{ids['orders'][ORDER_A1]}/reveal")
    assert resp.status_code == (200 if allowed else 403)


def test_orders_are_never_deleted(app, ids, login):
    admin = login("admin")
    oid = ids["orders"][ORDER_A1]
    assert admin.delete(f"/api/v1/order/{oid}").status_code in (403, 404, 405)
    assert admin.post(f"/orderview/delete/{oid}").status_code in (302, 403, 404, 405)
    with app.app_context():
        assert db.session.get(Order, oid) is not None


@pytest.mark.parametrize("role,present,absent", [
    ("cs", ["/orderview/list/", "/customerview/list/", "/jobs/"], ["/shopview/list/", "/users/list/"]),
    ("warehouse", ["/orderview/list/", "/warehouseview/list/"], ["/customerview/list/", "/shopview/list/"]),
    ("finance", ["/orderview/list/", "/shopview/list/", "/jobs/"], ["/carrierview/list/"]),
    ("ops", ["/shopview/list/", "/skuview/list/", "/jobs/"], ["/users/list/"]),
    ("admin", ["/jobs/", "/users/list/", "/shopview/list/"], []),
])
def test_each_role_sees_its_own_menus(app, login, role, present, absent):
    html = login(role).get("/").get_data(as_text=True)
    for href in present:
        assert f'href="{href}"' in html, (role, href)
    for href in absent:
        assert f'href="{href}"' not in html, (role, href)


def test_init_is_idempotent_and_keeps_admin_changes(ctx):
    from app.extensions import appbuilder
    from app.services import setup

    sm = appbuilder.sm
    role = sm.find_role(setup.ROLE_CS)
    extra = sm.add_permission_view_menu("can_read", "Shop")
    sm.add_permission_role(role, extra)
    before = {r.name: len(r.permissions) for r in sm.get_all_roles()}
    setup.initialise()
    after = {r.name: len(r.permissions) for r in sm.get_all_roles()}
    assert before == after
    assert extra in sm.find_role(setup.ROLE_CS).permissions
    assert sorted(before) == sorted(["管理员", "运营", "客服", "仓库", "财务"])


def test_admin_sets_a_users_shops_in_the_ui_and_scope_follows(app, ids, login):
    from app.models import OmsUser

    with app.app_context():
        user = db.session.query(OmsUser).filter_by(username="cs").one()
        uid, role_ids = user.id, [str(r.id) for r in user.roles]
    admin = login("admin")
    form = admin.get(f"/users/edit/{uid}").get_data(as_text=True)
    assert 'name="shops"' in form and 'name="all_shops"' in form and " required" not in form.split('id="all_shops"')[1][:40]
    resp = admin.post(f"/users/edit/{uid}", data={
        "first_name": "cs", "last_name": "测试", "username": "cs", "email": "cs@example.com", "active": "y",
        "roles": role_ids, "shops": [str(ids["shops"]["B"])]})
    assert resp.status_code == 302
    rows = login("cs").get("/api/v1/order/?q=(page_size:100)").json["result"]
    assert {r["shop"]["id"] for r in rows} == {ids["shops"]["B"]}


@pytest.mark.parametrize("role", ["ops", "cs", "warehouse", "finance"])
def test_every_role_reaches_its_own_profile(app, login, role):
    assert login(role).get("/users/userinfo/").status_code == 200
