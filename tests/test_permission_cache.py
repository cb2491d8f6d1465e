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
