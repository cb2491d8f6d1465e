"""Parcel tracking end to end: the Kuaidi100 client (real signing) against the sandbox
(signature checks, journeys, faults), polling that adapts and stops at 签收, the
物流异常 rules, the order page's timeline, the public tracking page (no PII, wrong
digits show nothing, rate limit) and row scope on parcels and exceptions."""
from __future__ import annotations

import datetime as dt
import random
import re
import time

import pytest
import requests
from sqlalchemy import select

from app.extensions import db
from app.models import Carrier, Order
from app.models.tracking import LogisticsException, Parcel, ParcelEvent
from app.platforms import kuaidi100 as k100
from app.sandbox.kuaidi100 import DEMO_CUSTOMER, DEMO_KEY, QUERY_PATH
from app.sandbox.server import serve_in_thread
from app.sandbox.state import SandboxState
from app.services import logistics_exceptions, order_status, tracking
from tests import world
from tests.conftest import TEST_REDIS_URL, make_app

UTC = dt.timezone.utc
HOUR = dt.timedelta(hours=1)
ORDER_A = "3000000000000000002"   # shop A, 待发货, receiver 李四 13700001111
ORDER_A2 = "3000000000000000001"  # shop A, 待审核, receiver 张三丰 13812341234
ORDER_B = "261120-000000000000002"  # shop B, 待发货, receiver 钱七 13600003333


class Clock:
    def __init__(self):
        self.t = time.time()

    def __call__(self):
        return self.t


@pytest.fixture
def sandbox(app, monkeypatch):
    clock = Clock()
    state = SandboxState(shops=[], rate_per_minute=0, clock=clock)
    base, stop = serve_in_thread(state)
    monkeypatch.setitem(app.config, "OMS_KUAIDI100_URL", base + QUERY_PATH)
    monkeypatch.setitem(app.config, "OMS_KUAIDI100_CUSTOMER", DEMO_CUSTOMER)
    monkeypatch.setitem(app.config, "OMS_KUAIDI100_KEY", DEMO_KEY)
    yield base, clock
    stop()


def _journey(base, num, com="yuantong", **kw):
    resp = requests.post(f"{base}/_sandbox/kuaidi100/journeys", json={"num": num, "com": com, **kw})
    assert resp.status_code == 201, resp.text
    return resp.json()["journeys"][0]


def _advance(base, num, **kw):
    resp = requests.post(f"{base}/_sandbox/kuaidi100/journeys/{num}/advance", json=kw)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _queries(base, num):
    return requests.get(f"{base}/_sandbox/kuaidi100/queries", params={"num": num}).json()["queries"]


def _ship(ids, platform_order_id, number, carrier_code="YTO") -> int:
    """Ship a world order through the state machine; returns its parcel id."""
    order = db.session.get(Order, ids["orders"][platform_order_id])
    if order.status == "to_audit":
        order_status.apply(order, "audit")
    carrier = db.session.execute(select(Carrier).where(Carrier.code == carrier_code)).scalar_one()
    order.carrier_id = carrier.id
    order.tracking_number = number
    order_status.apply(order, "ship")
    db.session.commit()
    parcel = db.session.execute(select(Parcel).where(Parcel.order_id == order.id)).scalar_one()
    return parcel.id


def _parcel(pid) -> Parcel:
    db.session.expire_all()
    return db.session.get(Parcel, pid)


def _open(pid) -> list[LogisticsException]:
    db.session.expire_all()
    return list(db.session.scalars(select(LogisticsException).where(
        LogisticsException.parcel_id == pid, LogisticsException.status == "open")))


def _now(clock) -> dt.datetime:
    return dt.datetime.fromtimestamp(clock.t, UTC)


# --- the protocol --------------------------------------------------------------------------
def test_sign_matches_the_worked_example():
    param = k100.build_param("yuantong", "YT1234567890123")
    assert param == ('{"com":"yuantong","num":"YT1234567890123","phone":"","from":"","to":"",'
                     '"resultv2":"1","show":"0","order":"desc"}')
    assert k100.sign(param, "testKey", "testCustomer") == "199C923B0A348FF76DB98B43093176BC"


@pytest.mark.parametrize("code,state", [
    ("0", "in_transit"), ("1", "collected"), ("2", "problem"), ("3", "signed"), ("4", "return_signed"),
    ("5", "delivering"), ("6", "returning"), ("7", "redirected"), ("10", "customs"), ("11", "customs"),
    ("12", "customs"), ("13", "customs_problem"), ("14", "refused"), ("301", "signed"), ("1001", "in_transit"),
    ("99", None),
])
def test_each_kuaidi100_state_code_maps_to_our_state(code, state):
    assert k100.map_state(code) == state


@pytest.mark.parametrize("code,kind,words", [
    ("400", "bad_request", "快递公司编码错误"), ("408", "bad_request", "手机号校验失败"),
    ("500", "no_result", "暂无物流轨迹"), ("501", "server", "服务器错误"), ("502", "server", "繁忙"),
    ("503", "auth", "签名验证失败"), ("601", "auth", "已过期"),
])
def test_error_bodies_become_zh_errors(code, kind, words):
    with pytest.raises(k100.TrackingError) as err:
        k100.parse_result({"result": False, "returnCode": code, "message": "x"}, "yuantong", "YT1")
    assert err.value.code == code and err.value.kind == kind and words in err.value.message


def test_bad_signature_is_refused_by_the_sandbox_with_503(sandbox):
    base, _clock = sandbox
    _journey(base, "YT0000000000503", started_ago=3600 * 100)
    good = k100.Kuaidi100Client(DEMO_CUSTOMER, DEMO_KEY, url=base + QUERY_PATH)
    assert good.query("yuantong", "YT0000000000503").events
    bad = k100.Kuaidi100Client(DEMO_CUSTOMER, "wrong-key", url=base + QUERY_PATH)
    with pytest.raises(k100.TrackingError) as err:
        bad.query("yuantong", "YT0000000000503")
    assert err.value.code == "503" and err.value.kind == "auth" and "签名" in err.value.message
    # A lowercase signature of the right string is refused too: the spec says uppercase.
    form = good.form("yuantong", "YT0000000000503")
    form["sign"] = form["sign"].lower()
    body = requests.post(base + QUERY_PATH, data=form).json()
    assert body == {"result": False, "returnCode": "503", "message": "验证签名失败"}


def test_error_codes_400_500_503_against_the_sandbox(ctx, ids, sandbox):
    base, clock = sandbox
    client = k100.Kuaidi100Client(DEMO_CUSTOMER, DEMO_KEY, url=base + QUERY_PATH)
    requests.post(f"{base}/_sandbox/kuaidi100/reset", json={"auto_journeys": False})
    with pytest.raises(k100.TrackingError) as err:  # a carrier code Kuaidi100 does not know
        client.query("nosuchcarrier", "YT123")
    assert err.value.code == "400" and "快递公司编码错误" in err.value.message
    with pytest.raises(k100.TrackingError) as err:  # a number nobody knows
        client.query("yuantong", "YT999999999")
    assert err.value.code == "500" and err.value.kind == "no_result"
    # Through the poller: 500 is "nothing yet" (no error counted), 503 backs off.
    pid = _ship(ids, ORDER_A, "YT777000111")
    assert tracking.poll_parcel(pid) == "no_result"
    p = _parcel(pid)
    assert p.state == "pending" and p.poll_errors == 0 and p.next_poll_at is not None
    ctx.config["OMS_KUAIDI100_KEY"] = "wrong-key"
    now = _now(clock)
    assert tracking.poll_parcel(pid, now=now) == "error"
    p = _parcel(pid)
    assert p.poll_errors == 1 and "签名" in p.last_error and p.next_poll_at >= now + 2 * HOUR
    ctx.config["OMS_KUAIDI100_KEY"] = DEMO_KEY
    # Injected server errors (501, then HTTP 5xx) back off exponentially, then recover.
    _journey(base, "YT777000111", started_ago=3600 * 100)
    requests.put(f"{base}/_sandbox/kuaidi100/faults", json={"error_code": "501", "error_count": 1})
    assert tracking.poll_parcel(pid, now=now) == "error"
    p = _parcel(pid)
    assert p.poll_errors == 2 and "服务器错误" in p.last_error and p.next_poll_at == now + dt.timedelta(minutes=20)
    requests.put(f"{base}/_sandbox/kuaidi100/faults", json={"http_5xx": 1})
    assert tracking.poll_parcel(pid, now=now) == "error"
    p = _parcel(pid)
    assert p.poll_errors == 3 and "HTTP 502" in p.last_error and p.next_poll_at == now + dt.timedelta(minutes=40)
    assert tracking.poll_parcel(pid, now=now) == "signed"
    p = _parcel(pid)
    assert p.poll_errors == 0 and p.last_error is None


def test_phone_checked_carriers_get_the_last_four_digits(ctx, ids, sandbox):
    base, _clock = sandbox
    _journey(base, "SF1000000001", com="shunfeng", scenario="normal", phone="13700001111", started_ago=3600 * 100)
    pid = _ship(ids, ORDER_A, "SF1000000001", carrier_code="SF")
    assert tracking.poll_parcel(pid) == "signed"
    client = k100.Kuaidi100Client(DEMO_CUSTOMER, DEMO_KEY, url=base + QUERY_PATH)
    with pytest.raises(k100.TrackingError) as err:
        client.query("shunfeng", "SF1000000001", "13700009999")
    assert err.value.code == "408" and "手机号" in err.value.message


# --- polling ---------------------------------------------------------------------------------
def test_ship_starts_tracking_after_commit_and_a_rollback_tracks_nothing(ctx, ids, sandbox):
    import redis
    from rq import Queue

    order = db.session.get(Order, ids["orders"][ORDER_B])
    order.carrier_id = ids["carrier"]
    order.tracking_number = "SF2000000001"
    order_status.apply(order, "ship")
    db.session.rollback()
    assert db.session.scalars(select(Parcel)).all() == []
    pid = _ship(ids, ORDER_B, "SF2000000002", carrier_code="SF")
    p = _parcel(pid)
    assert p.state == "pending" and p.kuaidi100_code == "shunfeng" and p.next_poll_at is not None
    queue = Queue("tracking", connection=redis.Redis.from_url(TEST_REDIS_URL))
    jobs = [queue.fetch_job(jid) for jid in queue.job_ids]
    assert any(j is not None and j.func_name.endswith("poll_parcels_job") and j.args == ([pid],) for j in jobs)
    for j in jobs:
        if j is not None and j.func_name.endswith("poll_parcels_job") and j.args == ([pid],):
            j.delete()


def test_a_journey_moves_through_each_state_and_polling_adapts_then_stops_at_signed(ctx, ids, sandbox):
    base, clock = sandbox
    j = _journey(base, "YT3000000001", scenario="normal")
    pid = _ship(ids, ORDER_A, "YT3000000001")
    assert tracking.poll_parcel(pid, now=_now(clock)) == "no_result"  # not picked up yet
    seen = []
    for code, state, interval in [("1", "collected", 2 * HOUR), ("0", "in_transit", 2 * HOUR),
                                  ("5", "delivering", dt.timedelta(minutes=30)), ("3", "signed", None)]:
        clock.t += 600
        _advance(base, j["num"], to_state=code)
        now = _now(clock)
        assert tracking.poll_parcel(pid, now=now) == state
        p = _parcel(pid)
        seen.append(p.state)
        assert p.next_poll_at == (now + interval if interval else None), state
    assert seen == ["collected", "in_transit", "delivering", "signed"]
    p = _parcel(pid)
    steps = requests.get(f"{base}/_sandbox/kuaidi100/journeys/{j['num']}").json()["steps"]
    assert len(p.events) == len(steps)  # the whole history, each event once
    assert p.signed_at == p.last_event_at and p.picked_up_at < p.last_event_at
    assert {e.status_text for e in p.events} >= {"揽收", "在途", "派件", "签收"}
    # Signed: never claimed again, and a stray poll does not query Kuaidi100.
    asked = len(_queries(base, j["num"]))
    assert pid not in tracking.claim_due(now=_now(clock) + dt.timedelta(days=365))
    assert tracking.poll_parcel(pid) == "skipped"
    assert len(_queries(base, j["num"])) == asked
    assert _open(pid) == []


def test_the_dispatcher_claims_a_due_parcel_once(ctx, ids, sandbox):
    pid = _ship(ids, ORDER_A, "YT4000000001")
    now = dt.datetime.now(UTC) + dt.timedelta(minutes=1)
    assert pid in tracking.claim_due(now=now)
    assert pid not in tracking.claim_due(now=now)  # leased
    assert pid in tracking.claim_due(now=now + tracking.CLAIM_LEASE + dt.timedelta(seconds=1))


@pytest.mark.parametrize("scenario,state,reason", [
    ("problem", "problem", "problem"),
    ("returned", "returning", "returning"),
    ("return_signed", "return_signed", "return_signed"),
    ("refused", "refused", "refused"),
    ("redirected", "signed", None),
])
def test_each_exception_state_opens_one_entry(ctx, ids, sandbox, scenario, state, reason):
    base, clock = sandbox
    num = f"YT5{scenario[:4].upper()}01"
    _journey(base, num, scenario=scenario, started_ago=3600 * 24 * 10)
    pid = _ship(ids, ORDER_A, num)
    assert tracking.poll_parcel(pid, now=_now(clock)) == state
    assert tracking.poll_parcel(pid, now=_now(clock)) in (state, "skipped")  # polled again: no duplicate
    # (the journey ended days ago, so a travelling parcel is also 超时未更新: a second rule)
    entries = [e for e in _open(pid) if e.reason != "stalled"]
    if reason is None:
        assert entries == []
    else:
        assert [e.reason for e in entries] == [reason]
        assert logistics_exceptions.STATE_REASONS[reason] in entries[0].detail
        assert entries[0].order_id == ids["orders"][ORDER_A]
    if state in ("signed", "return_signed"):
        assert _parcel(pid).next_poll_at is None


def test_no_pickup_within_the_threshold_opens_one_entry_and_pickup_closes_it(ctx, ids, sandbox):
    base, clock = sandbox
    pid = _ship(ids, ORDER_A, "YT6000000001")
    _journey(base, "YT6000000001", steps=[{"after": 30 * 3600, "state": "1", "context": "【杭州市】已揽收"}])
    shipped = _parcel(pid).shipped_at
    assert logistics_exceptions.check_all(now=shipped + 23 * HOUR)["opened"] == {}
    assert logistics_exceptions.check_all(now=shipped + 25 * HOUR)["opened"] == {"no_pickup": 1}
    assert logistics_exceptions.check_all(now=shipped + 26 * HOUR)["opened"] == {}  # not duplicated while open
    tracking.poll_parcel(pid, now=shipped + 27 * HOUR)  # the poller sees it too: still one
    [entry] = _open(pid)
    assert entry.reason == "no_pickup" and "未揽收" in entry.detail and "24" in entry.detail
    clock.t += 31 * 3600
    assert tracking.poll_parcel(pid, now=shipped + 31 * HOUR) == "collected"
    assert _open(pid) == []
    db.session.expire_all()
    done = db.session.get(LogisticsException, entry.id)
    assert done.status == "resolved" and "揽收" in done.resolution


def test_no_pickup_threshold_is_configurable(ctx, ids, sandbox, monkeypatch):
    monkeypatch.setitem(ctx.config, "OMS_TRACKING_NO_PICKUP_HOURS", 2)
    pid = _ship(ids, ORDER_A, "YT6000000002")
    shipped = _parcel(pid).shipped_at
    assert logistics_exceptions.check_all(now=shipped + 3 * HOUR)["opened"] == {"no_pickup": 1}


def test_no_update_for_48_hours_opens_one_entry_and_a_new_event_closes_it(ctx, ids, sandbox, monkeypatch):
    base, clock = sandbox
    num = "YT7000000001"
    _journey(base, num, steps=[{"after": 0, "state": "1", "context": "【杭州市】已揽收"},
                               {"after": 3600, "state": "0", "context": "【杭州市】快件离开杭州转运中心"},
                               {"after": 60 * 3600, "state": "0", "context": "【南京市】快件到达南京转运中心"}])
    pid = _ship(ids, ORDER_A, num)
    clock.t += 2 * 3600
    assert tracking.poll_parcel(pid, now=_now(clock)) == "in_transit"
    last = _parcel(pid).last_event_at
    assert logistics_exceptions.check_all(now=last + 47 * HOUR)["opened"] == {}
    assert logistics_exceptions.check_all(now=last + 49 * HOUR)["opened"] == {"stalled": 1}
    assert logistics_exceptions.check_all(now=last + 50 * HOUR)["opened"] == {}
    [entry] = _open(pid)
    assert "没有新的物流轨迹" in entry.detail and "48" in entry.detail
    clock.t += 60 * 3600
    tracking.poll_parcel(pid, now=_now(clock))
    assert _open(pid) == []
    # Configurable: with 100 h nothing would have opened.
    monkeypatch.setitem(ctx.config, "OMS_TRACKING_STALL_HOURS", 100)
    assert logistics_exceptions.check_all(now=_parcel(pid).last_event_at + 99 * HOUR)["opened"] == {}


def test_a_stalled_journey_from_the_sandbox_is_detected_by_the_poller(ctx, ids, sandbox):
    base, clock = sandbox
    _journey(base, "YT7000000002", scenario="stalled", started_ago=3600 * 24 * 5)
    pid = _ship(ids, ORDER_A, "YT7000000002")
    assert tracking.poll_parcel(pid, now=_now(clock)) == "in_transit"
    assert [e.reason for e in _open(pid)] == ["stalled"]


def test_a_carrier_without_a_kuaidi100_code_is_not_polled_and_says_why(ctx, ids, sandbox):
    carrier = db.session.execute(select(Carrier).where(Carrier.code == "EMS")).scalar_one()
    carrier.kuaidi100_code = None
    db.session.commit()
    pid = _ship(ids, ORDER_A, "EM100000001", carrier_code="EMS")
    p = _parcel(pid)
    assert p.next_poll_at is None and "没有配置快递100编码" in p.last_error


# --- pages -------------------------------------------------------------------------------------
def _signed_parcel(app, ids, sandbox, platform_order_id=ORDER_A, num="YT8000000001"):
    base, clock = sandbox
    with app.app_context():
        _journey(base, num, scenario="normal", started_ago=3600 * 24 * 10)
        pid = _ship(ids, platform_order_id, num)
        tracking.poll_parcel(pid)
        return pid


def test_the_order_page_shows_the_timeline(app, ids, login, sandbox):
    _signed_parcel(app, ids, sandbox)
    page = login("cs").get(f"/orderview/show/{ids['orders'][ORDER_A]}").get_data(as_text=True)
    assert "YT8000000001" in page and "已签收" in page and "正在派件" in page and "已揽收" in page


def _strip_token(html: str) -> str:
    return re.sub(r'name="csrf_token" value="[^"]*"', "", html)


def test_public_page_shows_state_and_timeline_without_pii(app, ids, sandbox):
    _signed_parcel(app, ids, sandbox)
    client = app.test_client()
    assert client.get("/track/").status_code == 200  # no login
    resp = client.post("/track/", data={"order_number": ORDER_A, "phone_last4": "1111"})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "已签收" in html and "正在派件" in html and "YT8000000001" in html
    for pii in ("李四", "13700001111", "文三路", "100号", "西湖区"):
        assert pii not in html, pii
    assert not re.search(r"1[3-9]\d{9}", html)  # courier phones in the carrier's text are masked too
    assert "****" in html


def _signed_labels(html: str) -> dict:
    """tracking number → the state label shown in front of it on the public page."""
    return dict((num, label) for label, num in re.findall(
        r'class="oms-state[^"]*">([^<]+)</span>\s*<span class="oms-meta">[^<]*?(YT\d+)</span>', html))


def test_public_page_shows_every_parcel_of_a_split_trade(app, ids, sandbox):
    """拆分订单: the buyer knows one order number; each part's parcel is found by it (and by
    a part's own …-拆N number), shown under the platform's number. A part sent to another
    receiver (changed by hand) is not shown to someone who knows only the first one's digits."""
    from app.extensions import appbuilder
    from app.services import order_split

    base, _clock = sandbox
    with app.app_context():
        admin = appbuilder.sm.find_user(username="admin").id
        order = db.session.get(Order, ids["orders"][ORDER_A])
        first = order_split.split_order(order.id, {order.lines[0].id: 1}, user_id=admin)
        part = db.session.get(Order, first.new_order_id)
        part_number = part.platform_order_id
        ids = dict(ids, orders=dict(ids["orders"], **{part_number: part.id}))
        for pid, num in ((ORDER_A, "YT8000000021"), (part_number, "YT8000000022")):
            _journey(base, num, scenario="normal", started_ago=3600 * 24 * 10)
            tracking.poll_parcel(_ship(ids, pid, num))
    client = app.test_client()
    for number in (ORDER_A, part_number):
        html = client.post("/track/", data={"order_number": number, "phone_last4": "1111"}).get_data(as_text=True)
        assert _signed_labels(html) == {"YT8000000021": "已签收", "YT8000000022": "已签收"}, number
        assert f"{ORDER_A}-" not in html  # the platform's number, not the part's
    wrong = client.post("/track/", data={"order_number": part_number, "phone_last4": "1112"}).get_data(as_text=True)
    assert "YT80000000" not in wrong

    with app.app_context():  # the part now goes to someone else
        part = db.session.get(Order, ids["orders"][part_number])
        part.receiver_name, part.receiver_phone = "孙八", "13900009999"
        db.session.commit()
    html = client.post("/track/", data={"order_number": ORDER_A, "phone_last4": "1111"}).get_data(as_text=True)
    assert _signed_labels(html) == {"YT8000000021": "已签收"}
    html = client.post("/track/", data={"order_number": part_number, "phone_last4": "9999"}).get_data(as_text=True)
    assert _signed_labels(html) == {"YT8000000022": "已签收"} and "孙八" not in html


def test_public_page_wrong_digits_look_exactly_like_an_unknown_order(app, ids, sandbox):
    _signed_parcel(app, ids, sandbox)
    client = app.test_client()
    wrong = client.post("/track/", data={"order_number": ORDER_A, "phone_last4": "1112"}).get_data(as_text=True)
    unknown = client.post("/track/", data={"order_number": "999999", "phone_last4": "1111"}).get_data(as_text=True)
    assert _strip_token(wrong) == _strip_token(unknown)
    assert "YT8000000001" not in wrong and "签收" not in wrong and ORDER_A not in wrong
    assert "没有找到" in wrong


def test_public_page_masks_names_and_phones_in_carrier_text():
    text = "【北京市】您的快件已签收，签收人：李四。派件员 王师傅（13900001234），电话 010-12345678"
    safe = tracking.public_context(text, "李四")
    assert "李四" not in safe and "13900001234" not in safe and "12345678" not in safe
    assert "139****1234" in safe and "签收人：*" in safe
    assert tracking.public_context("您的快件已签收，签收人：本人签收") == "您的快件已签收，签收人：本人签收"


def test_public_page_is_rate_limited_per_client(db_path):
    app = make_app(db_path, RATELIMIT_ENABLED=True, RATELIMIT_STORAGE_URI=TEST_REDIS_URL,
                   OMS_PUBLIC_TRACKING_RATE_LIMIT="10 per minute")
    client = app.test_client()
    ip = f"127.{random.randint(1, 250)}.{random.randint(1, 250)}.{random.randint(1, 250)}"
    codes = [client.post("/track/", data={"order_number": "1", "phone_last4": "0000"},
                         environ_base={"REMOTE_ADDR": ip}).status_code for _ in range(11)]
    assert codes[:10] == [200] * 10 and codes[10] == 429
    other = client.post("/track/", data={"order_number": "1", "phone_last4": "0000"},
                        environ_base={"REMOTE_ADDR": "127.251.251.251"})
    assert other.status_code in (200, 429)  # another address has its own budget (unless reused by a rerun)


# --- the 物流异常 list: scope and editing -------------------------------------------------------------
def _exception_for(app, ids, sandbox, platform_order_id, num):
    base, clock = sandbox
    with app.app_context():
        _journey(base, num, scenario="problem", started_ago=3600 * 24 * 10)
        pid = _ship(ids, platform_order_id, num)
        tracking.poll_parcel(pid)
        [entry] = [e for e in _open(pid) if e.reason == "problem"]
        return pid, entry.id


def test_cs_of_shop_a_sees_only_shop_a_parcels_and_exceptions(app, ids, login, sandbox):
    pid_a, exc_a = _exception_for(app, ids, sandbox, ORDER_A, "YT9000000001")
    pid_b, exc_b = _exception_for(app, ids, sandbox, ORDER_B, "YT9000000002")
    cs = login("cs")
    parcels = cs.get("/parcelview/list/").get_data(as_text=True)
    assert "YT9000000001" in parcels and "YT9000000002" not in parcels
    excs = cs.get("/logisticsexceptionview/list/").get_data(as_text=True)
    assert ORDER_A in excs and ORDER_B not in excs
    assert "YT9000000002" not in cs.get(f"/parcelview/show/{pid_b}").get_data(as_text=True)
    assert ORDER_B not in cs.get(f"/logisticsexceptionview/show/{exc_b}").get_data(as_text=True)
    cs_b = login("cs_b")
    assert ORDER_B in cs_b.get("/logisticsexceptionview/list/").get_data(as_text=True)
    assert "YT9000000001" not in cs_b.get("/parcelview/list/").get_data(as_text=True)
    # cs cannot resolve shop B's entry either.
    cs.post(f"/logisticsexceptionview/edit/{exc_b}", data={"resolution": "越权", "resolved_at": "2026-11-30 10:00:00"})
    with app.app_context():
        assert db.session.get(LogisticsException, exc_b).status == "open"


def test_assign_and_resolve_an_exception_in_the_ui(app, ids, login, sandbox):
    _pid, exc_a = _exception_for(app, ids, sandbox, ORDER_A, "YT9100000001")
    with app.app_context():
        cs_id = db.session.execute(select(world.appbuilder.sm.user_model.id).where(
            world.appbuilder.sm.user_model.username == "cs")).scalar_one()
    cs = login("cs")
    form = cs.get(f"/logisticsexceptionview/edit/{exc_a}").get_data(as_text=True)
    assert "处理结果" in form and "处理人" in form
    now_cn = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).strftime("%Y-%m-%d %H:%M:%S")
    # A resolution time without a note is refused with a zh message, nothing saved.
    resp = cs.post(f"/logisticsexceptionview/edit/{exc_a}", data={"assignee": str(cs_id), "resolution": "",
                                                                 "resolved_at": now_cn},
                   follow_redirects=True)
    assert "请填写处理结果" in resp.get_data(as_text=True)
    with app.app_context():
        entry = db.session.get(LogisticsException, exc_a)
        assert entry.status == "open" and entry.assignee_id is None
    # Assign only: stays open.
    cs.post(f"/logisticsexceptionview/edit/{exc_a}", data={"assignee": str(cs_id), "resolution": "已联系快递员",
                                                          "resolved_at": ""})
    with app.app_context():
        entry = db.session.get(LogisticsException, exc_a)
        assert entry.assignee_id == cs_id and entry.resolution == "已联系快递员" and entry.status == "open"
    cs.post(f"/logisticsexceptionview/edit/{exc_a}", data={"assignee": str(cs_id), "resolution": "买家改约明天派送",
                                                          "resolved_at": now_cn})
    with app.app_context():
        entry = db.session.get(LogisticsException, exc_a)
        assert entry.status == "resolved" and entry.resolved_by_id == cs_id and entry.resolved_at is not None
        assert entry.resolution == "买家改约明天派送"


def test_update_entry_refuses_bad_input_with_zh_errors(ctx, ids, sandbox):
    from app.services.errors import NotFound, ValidationError

    _pid, exc_id = _exception_for(ctx, ids, sandbox, ORDER_A, "YT9200000001")
    with pytest.raises(ValidationError, match="不能晚于现在"):
        logistics_exceptions.update_entry(exc_id, {"resolution": "x", "resolved_at": dt.datetime.now(UTC) +
                                                   dt.timedelta(days=1)}, user_id=None)
    db.session.rollback()
    with pytest.raises(ValidationError, match="处理人不存在"):
        logistics_exceptions.update_entry(exc_id, {"assignee_id": 99999}, user_id=None)
    db.session.rollback()
    with pytest.raises(NotFound):
        logistics_exceptions.update_entry(424242, {"resolution": "x"}, user_id=None)
