"""Permission answers are reused per process for OMS_PERMISSION_CACHE_SECONDS, and
a role change takes effect once that time has passed."""
from __future__ import annotations

from types import SimpleNamespace

from tests.conftest import make_app
from tests import world


def test_permission_and_column_grant_are_cached_then_refreshed(db_path, monkeypatch):
    app = make_app(db_path, OMS_PERMISSION_CACHE_SECONDS=30)
    import app.security as security_module
    from app.extensions import appbuilder, db
    from app.services import columns as columns_module
    from app.services.columns import COLUMN_SCOPE_VIEW, PERM_FINANCE

    # The caches' clock, moved by the test (a slow machine must not age the cache by itself).
    now = [1000.0]
    clock = SimpleNamespace(monotonic=lambda: now[0])
    monkeypatch.setattr(security_module, "time", clock)
    monkeypatch.setattr(columns_module, "time", clock)

    client = app.test_client()
    assert client.post("/login/", data={"username": "cs", "password": world.PASSWORD}).status_code == 302
    keys = {c["key"] for c in client.get("/api/v1/order/grid/meta").json["columns"]}
    assert "cost_amount" not in keys
    assert client.get("/api/v1/shop/grid/meta").status_code == 403

    with app.app_context():
        sm = appbuilder.sm
        role = sm.find_role("客服")
        sm.add_permission_role(role, sm.find_permission_view_menu(PERM_FINANCE, COLUMN_SCOPE_VIEW))
        sm.add_permission_role(role, sm.find_permission_view_menu("can_read", "Shop"))
        db.session.commit()

    # within the cache time the old answers stand ...
    keys = {c["key"] for c in client.get("/api/v1/order/grid/meta").json["columns"]}
    assert "cost_amount" not in keys
    # ... and after it the new ones apply
    now[0] += 31
    keys = {c["key"] for c in client.get("/api/v1/order/grid/meta").json["columns"]}
    assert "cost_amount" in keys
    assert client.get("/api/v1/shop/grid/meta").status_code == 200


def test_a_grid_page_runs_three_statements_once_permissions_are_cached(db_path):
    """With the cache warm, a grid page request reads its user (with roles and groups'
    roles in one statement), the user's shops and its rows: no permission or lazy-load
    queries. The rows are still scoped to the user's shops and the roles still apply."""
    from sqlalchemy import event

    app = make_app(db_path, OMS_PERMISSION_CACHE_SECONDS=30)
    from app.extensions import db

    client = app.test_client()
    assert client.post("/login/", data={"username": "cs_b", "password": world.PASSWORD}).status_code == 302
    url = "/api/v1/order/grid/rows?size=50"
    assert client.get(url).status_code == 200  # warms the caches
    statements = []
    with app.app_context():
        engine = db.engine
    listen = lambda conn, cursor, statement, *a: statements.append(statement)  # noqa: E731
    event.listen(engine, "before_cursor_execute", listen)
    try:
        resp = client.get(url)
    finally:
        event.remove(engine, "before_cursor_execute", listen)
    assert resp.status_code == 200
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 3, selects
    assert "ab_user_role" in selects[0] and "ab_user_group" in selects[0]
    assert "oms_user_shop" in selects[1] and "FROM oms_order" in selects[2]
    with app.app_context():
        from app.models import OmsUser, Order

        user = db.session.execute(db.select(OmsUser).filter_by(username="cs_b")).scalar_one()
        allowed = {s.id for s in user.shops}
        shops = {db.session.get(Order, row["id"]).shop_id for row in resp.json["rows"]}
    assert resp.json["rows"] and shops <= allowed and len(allowed) < 3
