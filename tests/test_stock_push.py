"""库存同步: the quantity each shop listing publishes (ratio, max, floor; bundles as the
minimum over their components), the debounce, failures with their lag, and the real
clients pushing to the sandbox gateways."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from types import SimpleNamespace

import pytest
import redis
import requests
from sqlalchemy import select

from app.extensions import db
from app.models import BundleComponent, Product, Shop, ShopListing, Sku, Stock, Warehouse
from app.models.types import utcnow
from app.platforms import PlatformError
from app.sandbox.server import serve_in_thread
from app.sandbox.state import DEMO_SHOPS, SandboxState
from app.services import stock_push
from app.services.errors import ValidationError
from app.services.shops import validate_shop
from tests.conftest import TEST_REDIS_URL


@pytest.fixture(autouse=True)
def _no_stale_lock():
    redis.Redis.from_url(TEST_REDIS_URL).delete("oms:stock_push")


# --- derivation ---------------------------------------------------------------------
def _rules(ratio="1.00", cap=None, floor=0):
    return SimpleNamespace(stock_ratio=Decimal(ratio), stock_max=cap, stock_floor=floor)


@pytest.mark.parametrize("available,ratio,cap,floor,quantity,text", [
    (120, "0.80", 50, 5, 50, "可用 120 × 比例 0.8 = 96，上限 50 → 50，保底 5 → 50"),
    (120, "1.00", None, 0, 120, "可用 120 × 比例 1 = 120"),
    (10, "0.33", None, 0, 3, "可用 10 × 比例 0.33 = 3"),  # floor(3.3): never round up
    (19, "0.50", None, 0, 9, "可用 19 × 比例 0.5 = 9"),
    (7, "0.50", None, 5, 5, "可用 7 × 比例 0.5 = 3，保底 5 → 5"),
    (3, "0.50", None, 5, 3, "可用 3 × 比例 0.5 = 1，保底 5（不超过可用 3）→ 3"),
    (15, "0.50", 100, 10, 10, "可用 15 × 比例 0.5 = 7，上限 100 → 7，保底 10 → 10"),
    (1000, "0.95", 200, 20, 200, "可用 1000 × 比例 0.95 = 950，上限 200 → 200，保底 20 → 200"),
    (100, "0.00", None, 0, 0, "可用 100 × 比例 0 = 0"),
    (40, "1.00", 0, 0, 0, "可用 40 × 比例 1 = 40，上限 0 → 0"),
    (0, "0.80", 50, 5, 0, "可用 0 → 0"),
    (-2, "1.00", None, 5, 0, "可用 -2 → 0"),
])
def test_derive_applies_ratio_then_max_then_floor_never_above_available(available, ratio, cap, floor,
                                                                        quantity, text):
    assert stock_push.derive(_rules(ratio, cap, floor), available) == (quantity, text)


@pytest.mark.parametrize("field,value,needle", [
    ("stock_ratio", Decimal("1.20"), "库存比例"),
    ("stock_ratio", Decimal("-0.10"), "库存比例"),
    ("stock_max", -1, "库存上限"),
    ("stock_floor", -3, "库存保底"),
    ("stock_floor", 60, "不能大于「库存上限」"),
])
def test_shop_form_refuses_bad_stock_rules_in_zh(ctx, ids, field, value, needle):
    shop = db.session.get(Shop, ids["shops"]["A"])
    shop.stock_max = 50
    setattr(shop, field, value)
    with pytest.raises(ValidationError) as err:
        validate_shop(shop)
    assert needle in err.value.message
    db.session.rollback()


def test_manual_shop_cannot_enable_stock_push(ctx):
    shop = Shop(name="手工店", platform="manual", stock_push_enabled=True, stock_ratio=Decimal("1"),
                stock_floor=0)
    with pytest.raises(ValidationError) as err:
        validate_shop(shop)
    assert "不支持库存同步" in err.value.message


# --- a small catalogue ------------------------------------------------------------------
def _sku(code, *, bundle_of=None):
    sku = db.session.execute(select(Sku).where(Sku.merchant_code == code)).scalar_one_or_none()
    if sku is not None:
        return sku
    product = db.session.execute(select(Product).where(Product.code == "P-STOCK")).scalar_one_or_none()
    if product is None:
        product = Product(code="P-STOCK", name="库存同步测试商品")
        db.session.add(product)
    sku = Sku(product=product, merchant_code=code, name=f"商品 {code}", is_bundle=bool(bundle_of),
              cost_price=Decimal("1.00"), sale_price=Decimal("2.00"), weight_kg=Decimal("0.1"))
    db.session.add(sku)
    for component, qty in (bundle_of or []):
        db.session.add(BundleComponent(bundle=sku, component=component, quantity=qty))
    db.session.flush()
    return sku


def _warehouse(code="HZ", active=True):
    wh = db.session.execute(select(Warehouse).where(Warehouse.code == code)).scalar_one_or_none()
    if wh is None:
        wh = Warehouse(code=code, name=f"{code}仓", priority=5, active=active)
        db.session.add(wh)
        db.session.flush()
    return wh


def _set_stock(sku, on_hand, reserved=0, warehouse=None):
    """What a future stock service does: change one stock row (the flush listener marks)."""
    wh = warehouse or _warehouse()
    row = db.session.execute(select(Stock).where(Stock.sku_id == sku.id, Stock.warehouse_id == wh.id)
                             ).scalar_one_or_none()
    if row is None:
        row = Stock(sku=sku, warehouse=wh, on_hand=0, reserved=0)
        db.session.add(row)
    row.on_hand, row.reserved = on_hand, reserved
    db.session.commit()
    return row


def _listing(shop_id, code, item="", psku=""):
    listing, _created = stock_push.upsert_listing(shop_id, code, platform_item_id=item, platform_sku_id=psku,
                                                  title=f"标题 {code}")
    db.session.commit()
    return listing


def _enable(shop_id, ratio="1.00", cap=None, floor=0):
    shop = db.session.get(Shop, shop_id)
    shop.stock_push_enabled, shop.stock_ratio, shop.stock_max, shop.stock_floor = True, Decimal(ratio), cap, floor
    validate_shop(shop)
    db.session.commit()
    return shop


def test_bundle_is_the_minimum_over_shared_components_in_active_warehouses(ctx):
    a, b = _sku("CMP-A"), _sku("CMP-B")
    x = _sku("BDL-X", bundle_of=[(a, 2), (b, 1)])
    y = _sku("BDL-Y", bundle_of=[(a, 3)])
    empty = _sku("BDL-EMPTY", bundle_of=[])
    empty.is_bundle = True
    _set_stock(a, 25, 4)
    _set_stock(a, 100, 0, warehouse=_warehouse("OLD", active=False))  # a closed warehouse counts for nothing
    _set_stock(b, 5)
    assert stock_push.available_for_sku(a.id) == 21
    assert stock_push.available_for_sku(x.id) == 5   # min(21 // 2, 5 // 1): B is scarcer
    assert stock_push.available_for_sku(y.id) == 7   # 21 // 3
    assert stock_push.availability(x.id).note == "组合装 min(CMP-A 21÷2=10，CMP-B 5÷1=5) = 5"
    _set_stock(a, 25, 20)  # A is now the scarce one, for both bundles
    assert (stock_push.available_for_sku(x.id), stock_push.available_for_sku(y.id)) == (2, 1)
    assert stock_push.available_for_sku(empty.id) == 0


def test_a_bundle_counts_what_each_warehouse_can_make_up(ctx):
    """An order's bundle line ships from one warehouse: components in two warehouses do not
    make a bundle together."""
    a, c = _sku("WH-A"), _sku("WH-C")
    x = _sku("WH-X", bundle_of=[(a, 1), (c, 1)])
    hz, gz = _warehouse("HZ"), _warehouse("GZ")
    gz.name = "广州仓"
    _set_stock(a, 5, warehouse=hz)
    _set_stock(c, 5, warehouse=gz)
    assert stock_push.available_for_sku(x.id) == 0  # was 5: min(5, 5) over the summed stock
    _set_stock(a, 4, warehouse=hz)
    _set_stock(c, 10, warehouse=hz)
    _set_stock(a, 6, warehouse=gz)
    _set_stock(c, 3, warehouse=gz)
    got = stock_push.availability(x.id)
    assert got.quantity == 4 + 3
    assert got.note == ("组合装按仓库：杭州仓 min(WH-A 4÷1=4，WH-C 10÷1=10)=4 + 广州仓 min(WH-A 6÷1=6，WH-C 3÷1=3)=3"
                        " = 7")


def test_a_component_or_a_sku_with_stock_cannot_be_ticked_as_a_bundle(ctx):
    """Bundles do not nest (stock, push and reservation expand one level), and a bundle has no
    stock of its own: ticking 组合装 is refused with the reason, and nothing is saved."""
    from app.services.catalog import validate_sku

    a, b = _sku("NEST-A"), _sku("NEST-B")
    x = _sku("NEST-X", bundle_of=[(a, 2)])
    db.session.commit()
    a.is_bundle = True
    with pytest.raises(ValidationError, match="「NEST-A」是组合装「NEST-X」的组成商品，不能设为组合装"):
        validate_sku(a)
    db.session.rollback()
    _set_stock(b, 3)
    b.is_bundle = True
    with pytest.raises(ValidationError, match="「NEST-B」还有库存（实物 3，占用 0），不能设为组合装"):
        validate_sku(b)
    db.session.rollback()
    validate_sku(x)  # an existing bundle saved again is fine
    assert not db.session.get(Sku, a.id).is_bundle and not db.session.get(Sku, b.id).is_bundle


# --- marking and the debounce -------------------------------------------------------------
class FakeClient:
    def __init__(self, calls, fail=None, during_push=None):
        self.calls, self.fail, self.during_push = calls, fail, during_push

    def push_stock(self, merchant_code, quantity, *, item_id=None, sku_id=None):
        if self.fail is not None:
            raise self.fail
        if self.during_push:
            self.during_push()
        self.calls.append((merchant_code, quantity, item_id, sku_id))


def _push(calls, seconds_later=0.0, debounce=10, **kw):
    now = utcnow() + dt.timedelta(seconds=seconds_later)
    return stock_push.push_due(debounce, now=now, client_factory=lambda shop: FakeClient(calls, **kw))


def _pending(listing_id):
    db.session.expire_all()
    return db.session.get(ShopListing, listing_id).push_pending_since


def test_stock_change_marks_the_skus_listings_and_its_bundles_only(ctx, ids):
    a, b = _sku("CMP-A"), _sku("CMP-B")
    _sku("OTHER-1")
    x = _sku("BDL-X", bundle_of=[(a, 2), (b, 1)])
    la = _listing(ids["shops"]["A"], "CMP-A", "1001", "1")
    lx = _listing(ids["shops"]["B"], "BDL-X", "2001", "2")
    lo = _listing(ids["shops"]["A"], "OTHER-1", "1002", "1")
    unmatched = _listing(ids["shops"]["A"], "NO-SUCH-CODE", "1003", "1")
    assert la.sku_id == a.id and lx.sku_id == x.id and unmatched.sku_id is None
    for listing in (la, lx, lo):  # a listing is due for its first push as soon as it is matched
        listing.push_pending_since = None
    db.session.commit()
    _set_stock(a, 10)
    assert _pending(la.id) is not None and _pending(lx.id) is not None
    assert _pending(lo.id) is None and _pending(unmatched.id) is None


def test_push_waits_for_the_debounce_and_many_changes_make_one_push(ctx, ids):
    shop_id = ids["shops"]["A"]
    _enable(shop_id)
    a = _sku("CMP-A")
    listing = _listing(shop_id, "CMP-A", "1001", "77")
    calls: list = []
    _push(calls, seconds_later=30)  # the first push of the new listing (0 available)
    assert calls == [("CMP-A", 0, "1001", "77")]
    calls.clear()
    for on_hand in (10, 12, 9):  # three changes in a row
        _set_stock(a, on_hand)
    first = _pending(listing.id)
    assert _push(calls, seconds_later=5) == {"pushed": 0, "failed": 0, "shops": 0, "left": 0}
    assert calls == []
    assert _pending(listing.id) == first  # the marker stays at the first change
    assert _push(calls, seconds_later=11)["pushed"] == 1
    assert calls == [("CMP-A", 9, "1001", "77")]
    assert _pending(listing.id) is None
    _push(calls, seconds_later=60)
    assert len(calls) == 1  # nothing changed since: nothing pushed
    db.session.expire_all()
    row = db.session.get(ShopListing, listing.id)
    assert row.last_pushed_quantity == 9 and row.last_pushed_at is not None and row.last_push_error is None


def test_a_change_during_the_platform_call_is_pushed_by_the_next_run(ctx, ids):
    shop_id = ids["shops"]["A"]
    _enable(shop_id)
    a = _sku("CMP-A")
    _set_stock(a, 10)
    listing = _listing(shop_id, "CMP-A", "1001", "77")

    def concurrent_change():
        with db.engine.begin() as conn:
            conn.execute(Stock.__table__.update().where(Stock.sku_id == a.id).values(on_hand=4))
            stock_push.mark_sku_changed(a.id, connection=conn)

    calls: list = []
    _push(calls, seconds_later=30, during_push=concurrent_change)
    assert calls == [("CMP-A", 10, "1001", "77")]
    assert _pending(listing.id) is not None  # not cleared: the platform may have the old number
    _push(calls, seconds_later=30)
    assert calls[-1] == ("CMP-A", 4, "1001", "77") and _pending(listing.id) is None


def test_disabled_shops_and_unmatched_listings_are_not_pushed(ctx, ids):
    a = _sku("CMP-A")
    _set_stock(a, 10)
    _listing(ids["shops"]["A"], "CMP-A", "1001", "1")  # shop A: stock push not enabled
    _enable(ids["shops"]["B"])
    _listing(ids["shops"]["B"], "UNKNOWN-9", "2001", "2")
    calls: list = []
    assert _push(calls, seconds_later=30)["pushed"] == 0 and calls == []


def test_changing_a_shops_rules_makes_its_listings_due(ctx, ids):
    shop_id = ids["shops"]["A"]
    _enable(shop_id)
    a = _sku("CMP-A")
    _set_stock(a, 100)
    listing = _listing(shop_id, "CMP-A", "1001", "1")
    calls: list = []
    _push(calls, seconds_later=30)
    assert calls[-1][1] == 100 and _pending(listing.id) is None
    _enable(shop_id, ratio="0.50", cap=30, floor=5)
    assert _pending(listing.id) is not None
    _push(calls, seconds_later=30)
    assert calls[-1][1] == 30


def test_a_failed_push_keeps_the_change_shows_the_zh_error_and_lag_and_retries_later(ctx, ids):
    shop_id = ids["shops"]["A"]
    _enable(shop_id)
    a, b = _sku("CMP-A"), _sku("CMP-B")
    _set_stock(a, 10)
    _set_stock(b, 20)
    la = _listing(shop_id, "CMP-A", "1001", "1")
    lb = _listing(shop_id, "CMP-B", "1001", "2")
    calls: list = []
    bad = PlatformError("27", "淘宝会话已失效，请重新授权", kind="auth")
    result = _push(calls, seconds_later=30, fail=bad)
    assert result == {"pushed": 0, "failed": 2, "shops": 1, "left": 0}
    db.session.expire_all()
    shop = db.session.get(Shop, shop_id)
    for lid in (la.id, lb.id):  # the shop-wide error is shown on every listing that waits for it
        row = db.session.get(ShopListing, lid)
        assert row.last_push_error == "淘宝会话已失效，请重新授权" and row.push_pending_since is not None
        assert row.push_lag_seconds is not None
    assert shop.last_stock_push_error == "淘宝会话已失效，请重新授权" and shop.last_stock_push_error_at
    assert shop.stock_push_lag_seconds is not None and shop.stock_push_lag_seconds >= 0
    # Not retried at once (a failing platform is not hammered every 10 s) ...
    assert _push(calls, seconds_later=31)["failed"] == 0 and calls == []
    # ... but after the back-off, and success clears the errors.
    assert _push(calls, seconds_later=30 + stock_push.RETRY_AFTER_FAILURE + 1)["pushed"] == 2
    assert sorted(calls) == [("CMP-A", 10, "1001", "1"), ("CMP-B", 20, "1001", "2")]
    db.session.expire_all()
    shop = db.session.get(Shop, shop_id)
    assert shop.last_stock_push_error is None and shop.stock_push_lag_seconds is None
    assert db.session.get(ShopListing, la.id).last_push_error is None


class CountingClient(FakeClient):
    """A shop's client that fails every push with ``fail`` and counts the attempts."""

    def __init__(self, calls, attempts, fail=None):
        super().__init__(calls, fail=fail)
        self.attempts = attempts

    def push_stock(self, merchant_code, quantity, **kw):
        self.attempts.append(merchant_code)
        return super().push_stock(merchant_code, quantity, **kw)


def test_a_slow_gateway_does_not_hold_up_the_other_shops(ctx, ids):
    """Shop A's gateway times out: after two failures in a row its other listings wait for the
    retry (recorded with the same error, not tried), and shop B is pushed in the same run."""
    shop_a, shop_b = ids["shops"]["A"], ids["shops"]["B"]
    _enable(shop_a)
    _enable(shop_b)
    codes = [f"SLOW-{i}" for i in range(5)]
    for i, code in enumerate(codes):
        _set_stock(_sku(code), 10 + i)
        _listing(shop_a, code, "3001", str(i))
    _set_stock(_sku("FAST-1"), 7)
    fast = _listing(shop_b, "FAST-1", "4001", "1")
    calls, attempts = [], []
    timeout = PlatformError("timeout", "拼多多接口超过 15 秒未响应，稍后重试", kind="server")
    clients = {shop_a: CountingClient(calls, attempts, fail=timeout), shop_b: CountingClient(calls, attempts)}
    now = utcnow() + dt.timedelta(seconds=30)
    result = stock_push.push_due(10, now=now, client_factory=lambda shop: clients[shop.id])
    assert result == {"pushed": 1, "failed": 5, "shops": 2, "left": 0}
    assert len([a for a in attempts if a.startswith("SLOW-")]) == stock_push.SHOP_FAILURE_STREAK
    assert calls == [("FAST-1", 7, "4001", "1")]
    db.session.expire_all()
    rows = db.session.scalars(select(ShopListing).where(ShopListing.shop_id == shop_a)).all()
    assert len(rows) == 5 and all(r.last_push_error == timeout.message and r.push_pending_since for r in rows)
    assert _pending(fast.id) is None


def _one_due_listing(ids) -> ShopListing:
    """Shop A pushing, CMP-A with 10 in stock, its listing 1001/1 marked."""
    shop_id = ids["shops"]["A"]
    _enable(shop_id)
    _set_stock(_sku("CMP-A"), 10)
    return _listing(shop_id, "CMP-A", "1001", "1")


def test_a_run_stops_at_its_time_budget_and_the_next_run_goes_on(ctx, ids):
    listing, calls = _one_due_listing(ids), []
    now = utcnow() + dt.timedelta(seconds=30)
    result = stock_push.push_due(10, now=now, client_factory=lambda shop: FakeClient(calls), budget_seconds=0)
    assert result == {"pushed": 0, "failed": 0, "shops": 1, "left": 1} and calls == []
    assert _pending(listing.id) is not None  # still marked, no error recorded
    assert db.session.get(ShopListing, listing.id).last_push_error is None
    assert _push(calls, seconds_later=31)["pushed"] == 1 and calls == [("CMP-A", 10, "1001", "1")]


def test_the_jobs_own_timeout_ends_the_run_and_frees_the_lock(ctx, ids):
    from rq.timeouts import JobTimeoutException

    listing, calls = _one_due_listing(ids), []
    with pytest.raises(JobTimeoutException):
        _push(calls, seconds_later=30, fail=JobTimeoutException("Task exceeded maximum timeout value"))
    db.session.rollback()
    assert db.session.get(ShopListing, listing.id).last_push_error is None  # not a push failure
    assert _push(calls, seconds_later=31)["pushed"] == 1  # the lock was released


def test_upsert_keys_by_platform_ids_and_matches_codes_later(ctx, ids):
    shop_id = ids["shops"]["A"]
    listing = _listing(shop_id, "LATER-1", "5001", "9")
    assert listing.sku_id is None
    again, created = stock_push.upsert_listing(shop_id, "LATER-1", platform_item_id=5001, platform_sku_id=9)
    assert again.id == listing.id and not created
    sku = _sku("LATER-1")
    db.session.commit()
    assert stock_push.match_listings(shop_id) == 1
    assert db.session.get(ShopListing, listing.id).sku_id == sku.id
    assert _pending(listing.id) is not None  # matched: due for its first push
    with pytest.raises(ValidationError):
        stock_push.upsert_listing(shop_id, "", platform_item_id="")


def test_a_listing_re_coded_on_the_platform_leaves_the_old_sku(ctx, ids):
    """The seller re-codes listing 6001/1 from RECODE-A to RECODE-A2 (not a SKU yet): the link
    the old code made goes, and the listing matches RECODE-A2 once that SKU exists."""
    shop_id = ids["shops"]["A"]
    old = _sku("RECODE-A")
    db.session.commit()
    listing = _listing(shop_id, "RECODE-A", "6001", "1")
    assert listing.sku_id == old.id
    listing.last_pushed_quantity = 7
    db.session.commit()
    again = _listing(shop_id, "RECODE-A2", "6001", "1")
    assert again.id == listing.id and again.merchant_code == "RECODE-A2" and again.sku_id is None
    # not pushed (not even 0), and the listing says its platform figure is stale
    assert stock_push.explain_listing(again) == ("未匹配 SKU（商家编码 RECODE-A2），不推送；平台上仍是上次推送的 7，"
                                                 "请匹配 SKU 或在平台修改")
    new = _sku("RECODE-A2")
    db.session.commit()
    assert stock_push.match_listings(shop_id) == 1
    assert db.session.get(ShopListing, listing.id).sku_id == new.id


def test_a_listing_linked_by_hand_keeps_its_sku_when_re_coded(ctx, ids):
    shop_id = ids["shops"]["A"]
    target = _sku("HAND-B")
    db.session.commit()
    listing = _listing(shop_id, "PLATFORM-X", "6002", "1")
    listing.sku_id = target.id  # a person linked it to another SKU
    db.session.commit()
    again = _listing(shop_id, "PLATFORM-Y", "6002", "1")
    assert again.sku_id == target.id


def test_the_scheduler_runs_the_push_every_ten_seconds(ctx):
    from app.jobs.schedule import build_scheduler
    from app.jobs.stock_push import push_due_job

    jobs = [j for j in build_scheduler().get_jobs() if j.func is push_due_job]
    assert len(jobs) == 1 and jobs[0].interval == 10
    # the job may run longer than one run's budget, and the run lock outlives the job
    timeout = jobs[0].job_options["job_timeout"]
    assert stock_push.RUN_BUDGET_SECONDS < timeout == stock_push.JOB_TIMEOUT < stock_push.LOCK_TIMEOUT


def test_listing_page_shows_the_derivation_and_the_error(app, ids, login):
    with app.app_context():
        shop_id = ids["shops"]["A"]
        _enable(shop_id, ratio="0.80", cap=50, floor=5)
        a = _sku("CMP-A")
        _set_stock(a, 120)
        listing = _listing(shop_id, "CMP-A", "1001", "1")
        listing.last_push_error = "淘宝会话已失效，请重新授权"
        db.session.commit()
        lid = listing.id
    ops = login("ops")
    html = ops.get("/shoplistingview/list/").get_data(as_text=True)
    assert "可用 120 × 比例 0.8 = 96，上限 50 → 50，保底 5 → 50" in html
    assert "淘宝会话已失效" in html and "推送数量推导" in html
    row = ops.get(f"/api/v1/shop_listing/{lid}").json["result"]
    assert row["quantity_derivation"].startswith("可用 120") and row["push_lag_seconds"] is not None
    from tests.test_i18n import ALLOWED_WORDS, english_leaks

    admin = login("admin")
    allowed = ALLOWED_WORDS | {"CMP", "BLK", "WHT"}  # data: merchant codes CMP-A, TS-BLK-L, TS-WHT-M
    for url in ("/shoplistingview/list/", f"/shoplistingview/show/{lid}", f"/shoplistingview/edit/{lid}",
                f"/shopview/show/{shop_id}", f"/shopview/edit/{shop_id}", "/shopview/list/"):
        resp = admin.get(url)
        assert resp.status_code == 200, url
        assert english_leaks(resp.get_data(as_text=True), allowed) == [], url
    shop_page = admin.get(f"/shopview/show/{shop_id}").get_data(as_text=True)
    assert "库存比例" in shop_page and "库存保底" in shop_page
    # 客服 and 财务 do not see listings; 仓库 reads them but may not edit.
    assert login("cs").get("/api/v1/shop_listing/").status_code == 403
    wh = login("warehouse")
    assert wh.get("/api/v1/shop_listing/").status_code == 200
    assert wh.put(f"/api/v1/shop_listing/{lid}", json={"title": "改"}).status_code == 403


# --- end to end: the real clients against the sandbox -----------------------------------------
TWINS = {"taobao": DEMO_SHOPS[1], "pdd": DEMO_SHOPS[3], "jd": DEMO_SHOPS[2]}
# The sandbox catalogue's codes; the third is a bundle in our catalogue: 2 × the first + 1 × the second.
CODES = {"taobao": ("JJ001-01", "JJ001-02", "JJ001-03"), "pdd": ("JJ001-01", "JJ001-02", "JJ001-03"),
         "jd": ("FZ001-01", "FZ001-02", "FZ001-03")}
RULES = {"taobao": ("0.80", 50, 5), "pdd": ("0.50", None, 10), "jd": ("1.00", None, 0)}


@pytest.fixture
def sandbox():
    state = SandboxState(shops=list(TWINS.values()), seed=7, rate_per_minute=0)
    base, stop = serve_in_thread(state)
    yield base
    stop()


@pytest.fixture
def pushing_shops(ctx, sandbox):
    """One OMS shop per platform on its sandbox twin, with its listings imported from the
    platform and matched to our SKUs, and opening stock: component 1 = 120, 2 = 30."""
    base = sandbox
    out = {}
    for platform, twin in TWINS.items():
        ratio, cap, floor = RULES[platform]
        shop = Shop(name=f"沙箱-{twin.name}", platform=twin.platform, app_key=twin.app_key,
                    app_secret=twin.app_secret, access_token=twin.access_token,
                    gateway_url=base + twin.gateway_path, stock_push_enabled=True, stock_ratio=Decimal(ratio),
                    stock_max=cap, stock_floor=floor)
        validate_shop(shop)
        db.session.add(shop)
        db.session.commit()
        c1, c2, bundle = CODES[platform]
        first, second = _sku(c1), _sku(c2)
        _sku(bundle, bundle_of=[(first, 2), (second, 1)])
        db.session.commit()
        rows = requests.get(f"{base}/_sandbox/shops/{twin.app_key}/listings").json()["listings"]
        counts = stock_push.upsert_listings(shop.id, rows)
        assert counts["created"] == len(rows) and counts["matched"] >= 3
        out[platform] = shop.id
    for platform in ("taobao", "jd"):
        c1, c2, _bundle = CODES[platform]
        _set_stock(_sku(c1), 120)
        _set_stock(_sku(c2), 30)
    return out


def _pushes(base, platform):
    return requests.get(f"{base}/_sandbox/stock_pushes", params={"app_key": TWINS[platform].app_key}
                        ).json()["stock_pushes"]


def _last_by_code(pushes):
    return {p["outer_id"]: p["quantity"] for p in pushes}


def _push_now(seconds_later=0.0):
    return stock_push.push_due(0, now=utcnow() + dt.timedelta(seconds=seconds_later))


def test_stock_change_reaches_every_platform_with_each_shops_rules(sandbox, pushing_shops):
    base = sandbox
    result = _push_now()
    assert result["failed"] == 0 and result["pushed"] == 9
    # Opening stock: 1 = 120, 2 = 30, bundle = min(120 // 2, 30 // 1) = 30.
    opening = {"taobao": (50, 24, 24),   # 0.8: 96 → max 50; 24; 24
               "pdd": (60, 15, 15),      # 0.5: 60; 15; 15 (all above the floor 10)
               "jd": (120, 30, 30)}
    for platform, expected in opening.items():
        pushes = _pushes(base, platform)
        assert _last_by_code(pushes) == dict(zip(CODES[platform], expected)), platform
        listings = requests.get(f"{base}/_sandbox/shops/{TWINS[platform].app_key}/listings").json()["listings"]
        by_code = {x["merchant_code"]: x for x in listings}
        for p in pushes:  # each push addressed the listing's own platform ids
            assert (p["item_id"], p["sku_id"]) == (by_code[p["outer_id"]]["item_id"],
                                                   by_code[p["outer_id"]]["sku_id"])
    before = {platform: len(_pushes(base, platform)) for platform in TWINS}

    # Orders reserve 110 of component 1: 10 left; the bundle is now min(10 // 2, 30) = 5.
    for platform in ("taobao", "jd"):
        _set_stock(_sku(CODES[platform][0]), 120, 110)
    result = _push_now()
    assert result["failed"] == 0 and result["pushed"] == 6  # component 2 did not change: not pushed
    after = {"taobao": (8, 5),    # 10 × 0.8 = 8 (above floor 5); bundle 5 × 0.8 = 4 → floor 5
             "pdd": (10, 5),      # 10 × 0.5 = 5 → floor 10; bundle 5 × 0.5 = 2 → floor min(10, 5) = 5
             "jd": (10, 5)}
    for platform, (q1, qb) in after.items():
        new = _pushes(base, platform)[before[platform]:]
        c1, _c2, bundle = CODES[platform]
        assert _last_by_code(new) == {c1: q1, bundle: qb}, platform
    with_rules = db.session.execute(select(ShopListing).where(ShopListing.shop_id == pushing_shops["taobao"],
                                                              ShopListing.merchant_code == CODES["taobao"][2])
                                    ).scalar_one()
    assert with_rules.last_pushed_quantity == 5
    assert with_rules.quantity_derivation == (f"组合装 min({CODES['taobao'][0]} 10÷2=5，{CODES['taobao'][1]} 30÷1=30) = 5；"
                                              "可用 5 × 比例 0.8 = 4，上限 50 → 4，保底 5 → 5")


def test_invalid_session_leaves_the_zh_error_on_the_listing_and_the_shop(sandbox, pushing_shops):
    base = sandbox
    _push_now()
    requests.put(f"{base}/_sandbox/shops/{TWINS['pdd'].app_key}/faults", json={"invalid_session": True})
    _set_stock(_sku(CODES["pdd"][0]), 80)
    before = len(_pushes(base, "pdd"))
    result = _push_now()
    assert result["failed"] == 2  # the pdd listings of component 1 and of the bundle
    assert len(_pushes(base, "pdd")) == before
    db.session.expire_all()
    shop = db.session.get(Shop, pushing_shops["pdd"])
    assert shop.last_stock_push_error and "access_token" in shop.last_stock_push_error
    assert any("\u4e00" <= ch <= "\u9fff" for ch in shop.last_stock_push_error)
    assert shop.stock_push_lag_seconds is not None
    failed = db.session.scalars(select(ShopListing).where(ShopListing.shop_id == shop.id,
                                                          ShopListing.last_push_error.is_not(None))).all()
    assert {x.merchant_code for x in failed} == {CODES["pdd"][0], CODES["pdd"][2]}
    assert all(x.push_pending_since is not None for x in failed)
    # The taobao shop (same SKUs) was pushed in the same run.
    assert db.session.get(Shop, pushing_shops["taobao"]).last_stock_push_error is None
    # Fixed on the platform: the next attempt after the back-off publishes 80 × 0.5 = 40.
    requests.put(f"{base}/_sandbox/shops/{TWINS['pdd'].app_key}/faults", json={})
    assert _push_now(stock_push.RETRY_AFTER_FAILURE + 1)["pushed"] == 2
    assert _last_by_code(_pushes(base, "pdd")[before:]) == {CODES["pdd"][0]: 40, CODES["pdd"][2]: 15}
    db.session.expire_all()
    assert db.session.get(Shop, pushing_shops["pdd"]).last_stock_push_error is None


def test_shop_form_sets_the_stock_rules_and_refuses_a_ratio_above_one(app, ids, login):
    admin = login("admin")
    shop_id = ids["shops"]["B"]
    form = {"name": "B店-拼多多", "platform": "pdd", "sync_interval_seconds": "60", "backfill_days": "3",
            "active": "y", "sync_enabled": "y", "stock_push_enabled": "y", "stock_ratio": "0.8",
            "stock_max": "50", "stock_floor": "5"}
    assert admin.post(f"/shopview/edit/{shop_id}", data=form).status_code == 302
    html = admin.post(f"/shopview/edit/{shop_id}", data=dict(form, stock_ratio="1.5"),
                      follow_redirects=True).get_data(as_text=True)
    assert "「库存比例」必须在 0–1 之间" in html
    with app.app_context():
        shop = db.session.get(Shop, shop_id)
        assert (shop.stock_push_enabled, shop.stock_ratio, shop.stock_max, shop.stock_floor) == (
            True, Decimal("0.80"), 50, 5)
