"""Security defaults: CSRF, login rate limit, secrets, cookies, escaping, redirects."""
from __future__ import annotations

import re

import redis

from app.extensions import db
from app.models import Order
from tests import world
from tests.conftest import TEST_REDIS_URL, make_app

ORDER_A1 = "3000000000000000001"


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)


def test_tokenless_action_post_is_rejected(db_path, ids):
    app = make_app(db_path, WTF_CSRF_ENABLED=True)
    client = app.test_client()
    token = _csrf(client.get("/login/").get_data(as_text=True))
    assert client.post("/login/", data={"username": "ops", "password": world.PASSWORD,
                                        "csrf_token": token}).status_code == 302
    oid = ids["orders"][ORDER_A1]
    resp = client.post("/orderview/action_post", data={"action": "hold_orders", "rowid": [str(oid)]})
    assert resp.status_code == 400
    assert "CSRF" in resp.get_data(as_text=True)
    resp = client.post(f"/orderview/delete/{oid}")
    assert resp.status_code == 400
    with app.app_context():
        assert db.session.get(Order, oid).is_held is False
    # With the token the same action goes through.
    page = client.get("/orderview/list/").get_data(as_text=True)
    resp = client.post("/orderview/action_post", data={"action": "hold_orders", "rowid": [str(oid)],
                                                       "csrf_token": _csrf(page)})
    assert resp.status_code == 302
    with app.app_context():
        assert db.session.get(Order, oid).is_held is True


def test_sixth_bad_login_in_a_burst_gets_429(db_path):
    redis.Redis.from_url(TEST_REDIS_URL).flushdb()
    app = make_app(db_path, RATELIMIT_ENABLED=True, AUTH_RATE_LIMIT="5 per minute",
                   RATELIMIT_STORAGE_URI=TEST_REDIS_URL)
    client = app.test_client()
    codes = [client.post("/login/", data={"username": "ops", "password": "wrong"}).status_code for _ in range(6)]
    assert codes[:5] == [302] * 5  # FAB answers a bad login with a redirect to the form
    assert codes[5] == 429
    assert "尝试次数过多" in client.post("/login/", data={"username": "ops", "password": "x"}).get_data(as_text=True)
    # The limit lives in Redis, so every web process shares it.
    assert any(b"LIMITER" in k or b"limiter" in k.lower() for k in redis.Redis.from_url(TEST_REDIS_URL).keys())


def test_passwords_are_hashed(ctx):
    from app.models import OmsUser

    user = db.session.query(OmsUser).filter_by(username="cs").one()
    assert world.PASSWORD not in user.password and user.password.startswith("scrypt:")


def test_secret_key_is_long_and_cookies_are_safe(app):
    assert len(app.config["SECRET_KEY"].encode()) >= 32
    assert app.config["SESSION_COOKIE_HTTPONLY"] and app.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert "127.0.0.1" in app.config["FAB_SAFE_REDIRECT_HOSTS"]
    resp = app.test_client().get("/login/")
    assert resp.headers["X-Frame-Options"] == "SAMEORIGIN"


def test_secret_key_is_generated_into_instance(tmp_path, monkeypatch):
    import config

    monkeypatch.setattr(config, "INSTANCE_DIR", tmp_path)
    first = config.instance_secret("secret_key")
    assert len(first) >= 43 and (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    assert config.instance_secret("secret_key") == first


def test_buyer_text_is_escaped(app, ids, login):
    ops = login("ops")
    html = ops.get(f"/orderview/show/{ids['orders'][ORDER_A1]}").get_data(as_text=True)
    assert "<script>alert('x')</script>" not in html
    assert "&lt;script&gt;" in html


def test_open_redirect_after_login_is_refused(app):
    client = app.test_client()
    resp = client.post("/login/?next=https://evil.example.com/", data={"username": "ops", "password": world.PASSWORD})
    assert resp.status_code == 302 and "evil.example.com" not in resp.headers["Location"]


def test_cookie_authenticated_api_writes_need_the_csrf_token(db_path, ids):
    app = make_app(db_path, WTF_CSRF_ENABLED=True)
    client = app.test_client()
    token = _csrf(client.get("/login/").get_data(as_text=True))
    client.post("/login/", data={"username": "ops", "password": world.PASSWORD, "csrf_token": token})
    oid = ids["orders"][ORDER_A1]
    assert client.put(f"/api/v1/order/{oid}", json={"seller_memo": "跨站"}).status_code == 400
    assert client.post(f"/api/v1/order/{oid}/transition", json={"action": "audit"}).status_code == 400
    assert client.get(f"/api/v1/order/{oid}").status_code == 200  # reads need no token
    page = client.get("/orderview/list/").get_data(as_text=True)
    resp = client.put(f"/api/v1/order/{oid}", json={"seller_memo": "本站"}, headers={"X-CSRFToken": _csrf(page)})
    assert resp.status_code == 200
    with app.app_context():
        order = db.session.get(Order, oid)
        assert order.seller_memo == "本站" and order.status == "to_audit"


def test_a_shop_gateway_cannot_point_at_an_arbitrary_host(app, ids, login):
    ops = login("ops")
    resp = ops.put(f"/api/v1/shop/{ids['shops']['A']}", json={"gateway_url": "http://10.0.0.5:9999/steal"})
    assert resp.status_code == 422 and "允许列表" in resp.json["message"]
    resp = ops.put(f"/api/v1/shop/{ids['shops']['A']}",
                   json={"gateway_url": "https://eco.taobao.com/router/rest"})
    assert resp.status_code == 200
    with app.app_context():
        from app.models import Shop

        assert db.session.get(Shop, ids["shops"]["A"]).gateway_url == "https://eco.taobao.com/router/rest"
