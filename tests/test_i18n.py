"""The zh UI shows no English UI text, and what users type is shown escaped.

Self-contained: builds its own app on a fresh SQLite database (and its own
embedded Redis under tmp_path, so the jobs page does not show other runs' jobs).
Run after `make translations` (the .mo files are built, never committed).
"""
from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

import config
from app import create_app

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "app" / "translations" / "zh" / "LC_MESSAGES" / "messages.po"
ADMIN_PASSWORD = "Admin-pass-123"

PAGES = [
    "/",
    "/orderview/list/",
    "/ordereventview/list/",
    "/customerview/list/",
    "/productview/list/",
    "/skuview/list/",
    "/bundlecomponentview/list/",
    "/stockview/list/",
    "/stockmovementview/list/",
    "/warehouseview/list/",
    "/carrierview/list/",
    "/shopview/list/",
    "/shopview/add",
    "/shoplistingview/list/",
    "/shoplistingview/add",
    "/warehouseview/add",
    "/warehousecoverageview/list/",
    "/warehousecoverageview/add",
    "/grid/warehouse_coverage/",
    "/jobs/",
    "/grid/order/",
    "/grid/sku/",
    "/imports/",
    "/stock/alerts/",
    "/stock/inbound/",
    "/stock/adjust/",
    "/stock/stocktake/",
    "/stock/return/",
    "/piiaccesslogview/list/",
    "/parcelview/list/",
    "/logisticsexceptionview/list/",
    "/track/",
    "/scan-ship/",
    "/carrierruleview/list/",
    "/carrierruleview/add",
    "/carrierruleview/import/",
    "/ewaybillaccountview/list/",
    "/ewaybillaccountview/add",
    "/waybillview/list/",
    "/printrecordview/list/",
    "/print-templates/",
    "/carrier-scorecard/",
    "/carrierrateview/list/",
    "/carrierrateview/add",
    "/carrierbilllineview/list/",
    "/carrierbilllineview/import/",
    "/users/list/",
    "/roles/list/",
    "/users/userinfo/",
]
LOGIN_PAGE = "/login/"

# Runs of 3+ ASCII letters that may appear on a zh page. Each one is a name or a
# code, never an English UI word: those get translated in our catalogue instead.
ALLOWED_WORDS = {
    # GLOSSARY.md: SKU is written "SKU" in the zh UI (规格 / SKU).
    "SKU",
    # The admin's username (data), shown in the user list and on 用户信息.
    "admin",
    # File formats and encodings by their names (the import page says what it reads).
    "xlsx", "xls", "csv", "GBK", "UTF",
    # The language menu names each language in its own language (config.LANGUAGES),
    # so that a reader of that language can find it: "English" is an endonym.
    "English",
}
# Data, not UI text: email addresses (the admin's is admin@example.com) are
# removed before scanning.
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
ENGLISH = re.compile(r"[A-Za-z]{3,}")


# Attributes whose values the user reads (tooltips, placeholders, screen readers).
TEXT_ATTRS = {"title", "placeholder", "alt", "aria-label"}


def _carrier_codes() -> set[str]:
    """Carrier codes are data seeded by setup (Kuaidi100 and platform codes such
    as "shunfeng", "YTO", "HTKY"); the carrier list shows them as they are."""
    from app.services.setup import CARRIERS

    return {code for row in CARRIERS for code in row if ENGLISH.search(code)}


class _VisibleText(HTMLParser):
    """Visible text of a page, plus the attribute values a user can read."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0  # depth inside <script>/<style>

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
            return
        attrs = dict(attrs)
        for name in TEXT_ATTRS:
            if attrs.get(name):
                self.parts.append(attrs[name])
        if tag == "button" and attrs.get("value"):
            self.parts.append(attrs["value"])
        if tag == "input" and attrs.get("value") and (attrs.get("type") or "text").lower() not in (
                "hidden", "password", "radio", "checkbox"):  # a radio's value is not shown
            self.parts.append(attrs["value"])

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def visible_text(page: str) -> list[str]:
    parser = _VisibleText()
    parser.feed(page)
    parser.close()
    return [html.unescape(p) for p in parser.parts if p.strip()]


def english_leaks(page: str, allowed: set[str], skip: re.Pattern | None = None) -> list[str]:
    leaks = []
    for part in visible_text(page):
        if skip is not None and skip.match(part.strip()):
            continue
        text = EMAIL.sub(" ", part)
        for word in ENGLISH.findall(text):
            if word not in allowed:
                leaks.append(f"{word!r} in {part.strip()[:80]!r}")
    return sorted(set(leaks))


@pytest.fixture
def zh_app(tmp_path):
    assert CATALOGUE.with_suffix(".mo").exists(), "zh catalogue not compiled: run `make translations`"
    app = create_app(
        config.TestConfig,
        SQLALCHEMY_DATABASE_URI="sqlite:///" + str(tmp_path / "t.db"),
        WTF_CSRF_ENABLED=False,
        RATELIMIT_ENABLED=False,
        # A private embedded Redis (its socket under tmp_path): the jobs page
        # then lists no jobs left behind by other runs.
        OMS_INSTANCE_DIR=str(tmp_path),
    )
    with app.app_context():
        from flask_migrate import upgrade

        from app.services import setup

        upgrade()
        setup.initialise(admin_password=ADMIN_PASSWORD)
    yield app
    with app.app_context():
        from app.extensions import db

        db.session.remove()
        db.engine.dispose()
    _stop_private_redis(app, tmp_path)


def _stop_private_redis(app, tmp_path: Path) -> None:
    url = app.config.get("OMS_REDIS_URL_RESOLVED", "")
    if not url.startswith("unix://") or not url.startswith(f"unix://{tmp_path}"):
        return  # not ours (REDIS_URL was set): leave it alone
    from redis import Redis

    try:
        Redis.from_url(url).shutdown(nosave=True)
    except Exception:  # noqa: BLE001 - shutdown closes the connection under us
        pass


def _login(client):
    resp = client.post("/login/", data={"username": "admin", "password": ADMIN_PASSWORD})
    assert resp.status_code == 302, "admin login failed"


def test_zh_pages_have_no_english(zh_app):
    allowed = ALLOWED_WORDS | _carrier_codes()
    problems = {}

    client = zh_app.test_client()
    resp = client.get(LOGIN_PAGE)
    assert resp.status_code == 200
    leaks = english_leaks(resp.get_data(as_text=True), allowed)
    if leaks:
        problems[LOGIN_PAGE + " (logged out)"] = leaks

    _login(client)
    for url in PAGES:
        resp = client.get(url)
        assert resp.status_code == 200, f"{url}: HTTP {resp.status_code}"
        leaks = english_leaks(resp.get_data(as_text=True), allowed)
        if leaks:
            problems[url] = leaks

    report = "\n".join(f"{url}:\n    " + "\n    ".join(leaks) for url, leaks in problems.items())
    assert not problems, "English UI text on zh pages:\n" + report


def test_warehouse_name_is_escaped(zh_app):
    client = zh_app.test_client()
    _login(client)
    name = "杭州仓<script>alert(1)</script>"
    resp = client.post("/warehouseview/add", data={
        "code": "XSS", "name": name, "priority": "5", "active": "y",
    })
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]

    page = client.get("/warehouseview/list/").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)</script>" not in page


def test_catalogue_translates_every_msgid():
    """Every msgid in our code and templates (babel/babel.cfg) has a zh translation.
    New strings: `bash babel/update.sh`, translate, `make translations`."""
    from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
    from babel.messages.frontend import parse_mapping_cfg
    from babel.messages.pofile import read_po

    with open(ROOT / "babel" / "babel.cfg") as fh:
        method_map, options_map = parse_mapping_cfg(fh)
    keywords = dict(DEFAULT_KEYWORDS, _l=None, lazy_gettext=None)
    wanted = {msg if isinstance(msg, str) else msg[0]
              for _f, _l, msg, _c, _ctx in extract_from_dir(str(ROOT), method_map, options_map,
                                                            keywords=keywords)}
    with open(CATALOGUE, "rb") as fh:
        catalogue = read_po(fh, locale="zh")
    assert catalogue.plural_forms == "nplurals=1; plural=0;"
    missing = sorted(m for m in wanted if not (catalogue.get(m) and catalogue.get(m).string))
    assert not missing, "msgids without a zh translation (run babel/update.sh):\n" + "\n".join(missing)


def test_zh_pages_with_data_have_no_english(app, ids, login):
    """The same check on pages full of data: order detail with lines, holds and
    events, the audit trail, the PII log after a reveal, users, roles and groups."""
    oid = ids["orders"]["3000000000000000001"]
    cs = login("cs")
    assert cs.post(f"/api/v1/order/{oid}/reveal").status_code == 200
    cs.post("/orderview/action_post", data={"action": "hold_orders", "rowid": [str(oid)]})
    admin = login("admin")
    admin.put(f"/api/v1/order/{oid}", json={"seller_memo": "加急", "flag": 1})
    with app.app_context():  # 无法保存的平台订单 and a run that left one out
        from app.extensions import db
        from app.models import SyncReject, SyncRun
        from app.models.types import utcnow

        db.session.add_all([
            SyncReject(shop_id=ids["shops"]["A"], platform_order_id="3000000000000009999", error="第 1 行商品「数量」不能小于 1",
                       first_seen_at=utcnow(), last_seen_at=utcnow(), last_tried_at=utcnow(), times_seen=2),
            SyncRun(shop_id=ids["shops"]["A"], trigger="schedule", status="success", started_at=utcnow(),
                    finished_at=utcnow(), rejected=1, error="1 单平台订单无法保存，已跳过（见「无法保存的平台订单」）")])
        db.session.commit()
    pages = ["/syncrejectview/list/", "/syncrunview/list/", f"/orderview/show/{oid}", f"/orderview/edit/{oid}", "/orderview/list/",
             "/ordereventview/list/", "/piiaccesslogview/list/", "/customerview/list/",
             "/customerview/show/1", "/users/list/", "/users/show/2", "/users/edit/2", "/users/add",
             "/roles/list/", "/roles/show/2", "/roles/edit/2", "/groups/list/", "/skuview/show/1",
             "/shopview/show/1", "/shopview/edit/1", f"/orderview/split/{oid}"]
    # Data from tests/world.py, not UI text: usernames, merchant codes (TS-BLK-L),
    # buyer nicks and the buyer message that tries to inject a <script>.
    allowed = ALLOWED_WORDS | _carrier_codes() | {"ops", "finance", "warehouse", "BLK", "WHT", "buyer",
                                                  "alert", "script"}
    problems = {}
    for url in pages:
        resp = admin.get(url)
        assert resp.status_code == 200, f"{url}: HTTP {resp.status_code}"
        leaks = english_leaks(resp.get_data(as_text=True), allowed)
        if leaks:
            problems[url] = leaks
    report = "\n".join(f"{url}:\n    " + "\n    ".join(leaks) for url, leaks in problems.items())
    assert not problems, "English UI text on zh pages:\n" + report
