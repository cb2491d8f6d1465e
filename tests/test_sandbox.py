"""The sandbox gateways (app/sandbox/), driven over HTTP with ``requests`` and a
signer written here from the spec (not the project's clients)."""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import time

import pytest
import requests

from app.sandbox import CATALOGUE, DEMO_SHOPS, SandboxState, order_checksum, serve_in_thread
from app.sandbox import signing

TB = next(s for s in DEMO_SHOPS if s.platform == "taobao")
TM = next(s for s in DEMO_SHOPS if s.platform == "tmall")
PDD = next(s for s in DEMO_SHOPS if s.platform == "pdd")
JD = next(s for s in DEMO_SHOPS if s.platform == "jd")
T0 = 1767240000  # 2026-01-01 12:00:00 Beijing


class FakeClock:
    def __init__(self, t: float = T0):
        self.t = float(t)

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def bj(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(ts) + 8 * 3600))


# --- an independent signer (platform-apis.md) --------------------------------------
def _joined(params: dict) -> str:
    return "".join(f"{k}{v}" for k, v in sorted(params.items()) if k != "sign" and v not in (None, ""))


def md5_wrapped(params: dict, secret: str) -> str:
    return hashlib.md5((secret + _joined(params) + secret).encode()).hexdigest().upper()


def top_signed(params: dict, secret: str) -> dict:
    method = params.get("sign_method", "md5")
    if method == "md5":
        sign = md5_wrapped(params, secret)
    else:
        algo = hashlib.md5 if method == "hmac" else hashlib.sha256
        sign = hmac.new(secret.encode(), _joined(params).encode(), algo).hexdigest().upper()
    return {**params, "sign": sign}


# --- fixtures ---------------------------------------------------------------------------
@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def state(clock):
    return SandboxState(seed=7, clock=clock, rate_per_minute=0)


@pytest.fixture
def base(state):
    url, stop = serve_in_thread(state)
    yield url
    stop()


class Caller:
    def __init__(self, base: str, clock: FakeClock):
        self.base, self.clock = base, clock

    def top(self, shop, method, *, secret=None, session=None, timestamp=None, sign_method="md5",
            http="post", **biz):
        params = {"method": method, "app_key": shop.app_key,
                  "session": shop.access_token if session is None else session,
                  "timestamp": timestamp or bj(self.clock()), "format": "json", "v": "2.0",
                  "sign_method": sign_method, **{k: str(v) for k, v in biz.items()}}
        params = top_signed(params, secret or shop.app_secret)
        url = f"{self.base}/router/rest"
        return requests.get(url, params=params) if http == "get" else requests.post(url, data=params)

    def pdd(self, shop, type_, *, secret=None, token=None, timestamp=None, **biz):
        params = {"type": type_, "client_id": shop.app_key,
                  "access_token": shop.access_token if token is None else token,
                  "timestamp": str(int(self.clock()) if timestamp is None else timestamp),
                  "data_type": "JSON", **{k: str(v) for k, v in biz.items()}}
        params["sign"] = md5_wrapped(params, secret or shop.app_secret)
        return requests.post(f"{self.base}/api/router", data=params)

    def jd(self, shop, method, biz: dict, *, secret=None, token=None, timestamp=None):
        params = {"method": method, "app_key": shop.app_key,
                  "access_token": shop.access_token if token is None else token,
                  "timestamp": timestamp or bj(self.clock()) + ".123+0800", "v": "2.0",
                  "360buy_param_json": json.dumps(biz, separators=(",", ":"), ensure_ascii=False)}
        params["sign"] = md5_wrapped(params, secret or shop.app_secret)
        return requests.post(f"{self.base}/routerjson", data=params)


@pytest.fixture
def call(base, clock):
    return Caller(base, clock)


def admin(base, method, path, body=None):
    r = requests.request(method, f"{base}/_sandbox{path}", json=body)
    return r


# --- signing: the spec's worked examples -----------------------------------------------------
def test_signing_worked_examples():
    p = dict(app_key="12345678", fields="num_iid,title,nick,price,num", format="json",
             method="taobao.item.seller.get", num_iid="11223344", session="test", sign_method="md5",
             timestamp="2016-01-01 12:00:00", v="2.0")
    assert signing.top_sign(p, "helloworld") == "66987CB115214E59E6EC978214934FB8"
    assert signing.top_sign({**p, "sign_method": "hmac"}, "helloworld", "hmac") == \
        "D56D7858309C31B6251083A874D48273"
    assert signing.verify_top({**p, "sign": "66987CB115214E59E6EC978214934FB8"}, "helloworld")
    assert not signing.verify_top({**p, "sign": "66987cb115214e59e6ec978214934fb8"}, "helloworld")
    pdd = dict(access_token="asd78172s8ds9a921j9qqwda12312w1w21211", client_id="1", data_type="XML",
               order_status="1", page="1", page_size="10", timestamp="1480411125",
               type="pdd.order.number.list.get")
    assert signing.wrapped_md5_sign(pdd, "testSecret") == "E4DE3ED21002510DED352819E7AE6775"
    jd = {"360buy_param_json": '{"end_date":null,"optional_fields":null,"order_state":"WAIT_SELLER_STOCK_OUT",'
                               '"page":"1","page_size":"200","start_date":null}',
          "access_token": "yourtoken", "app_key": "yourappkey", "method": "jingdong.pop.order.search",
          "timestamp": "2021-05-07 09:20:39.683+0800", "v": "2.0"}
    assert signing.wrapped_md5_sign(jd, "yourappSecret") == "D70825340F4084360B9362B60DFD7930"
    assert md5_wrapped(jd, "yourappSecret") == "D70825340F4084360B9362B60DFD7930"


# --- Taobao -----------------------------------------------------------------------------------
def test_top_increment_real_shape_with_19_digit_tids(state, call, clock):
    state.seed_orders(TB, 30, T0 - 3600, T0 - 60)
    r = call.top(TB, "taobao.trades.sold.increment.get", fields="tid,status,payment,modified,orders,"
                 "receiver_name,receiver_state,buyer_nick", start_modified=bj(T0 - 7200),
                 end_modified=bj(T0), page_size=100)
    assert r.status_code == 200
    raw = r.text
    # tid / oid are bare JSON numbers of 19 digits (above 2^53), never strings or floats
    tids = re.findall(r'"tid":(\d+)[,}]', raw)
    assert len(tids) == 30 and all(len(t) == 19 and int(t) > 2 ** 53 for t in tids)
    assert '"tid":"' not in raw and re.search(r'"oid":\d{19}[,}]', raw)
    body = r.json()["trades_sold_increment_get_response"]
    assert body["total_results"] == 30 and body["has_next"] is False and body["request_id"]
    trades = body["trades"]["trade"]
    assert [t["modified"] for t in trades] == sorted((t["modified"] for t in trades), reverse=True)
    t = trades[0]
    assert set(t) <= {"tid", "status", "payment", "modified", "orders", "receiver_name",
                      "receiver_state", "buyer_nick"}
    assert re.fullmatch(r"\d+\.\d\d", t["payment"])
    line = t["orders"]["order"][0]
    assert {"oid", "outer_sku_id", "num_iid", "sku_id", "title", "price", "num", "payment",
            "refund_status", "status"} <= set(line)
    assert line["outer_sku_id"] in {c for c, *_ in CATALOGUE} or "901-" in line["outer_sku_id"]
    # the unsold-fields request gives no trades key when empty (TOP leaves empty lists out)
    r = call.top(TB, "taobao.trades.sold.increment.get", fields="tid", start_modified=bj(T0 - 86400),
                 end_modified=bj(T0 - 80000))
    assert r.json()["trades_sold_increment_get_response"]["total_results"] == 0
    assert "trades" not in r.json()["trades_sold_increment_get_response"]


def test_top_fullinfo_get_and_hmac_methods(state, call):
    o = state.create_order(TM.app_key, {"buyer_message": "请尽快发货", "seller_memo": "老客户", "flag": 2,
                                        "lines": [{"merchant_code": "FZ001-01", "num": 2}]})
    for sm in ("md5", "hmac", "hmac-sha256"):
        r = call.top(TM, "taobao.trade.fullinfo.get", fields="tid,tid_str,status,buyer_message,seller_memo,"
                     "seller_flag,orders.outer_sku_id,orders.num,total_fee", tid=o.key, sign_method=sm, http="get")
        trade = r.json()["trade_fullinfo_get_response"]["trade"]
        assert trade["tid_str"] == o.key and trade["tid"] == int(o.key)
        assert trade["status"] == "WAIT_SELLER_SEND_GOODS"
        assert trade["buyer_message"] == "请尽快发货" and trade["seller_memo"] == "老客户"
        assert trade["seller_flag"] == 2 and trade["total_fee"] == "118.00"
        assert trade["orders"]["order"] == [{"outer_sku_id": "FZ001-01", "num": 2}]
    r = call.top(TM, "taobao.trade.fullinfo.get", fields="tid", tid="1234567890123456789")
    assert r.json()["error_response"]["sub_code"] == "isv.trade-not-exist"


def test_top_auth_errors(call, clock):
    args = dict(fields="tid", start_modified=bj(T0 - 600), end_modified=bj(T0))
    m = "taobao.trades.sold.increment.get"
    err = call.top(TB, m, secret="wrong", **args).json()["error_response"]
    assert err["code"] == 25 and err["request_id"]
    err = call.top(TB, m, session="bad-session", **args).json()["error_response"]
    assert (err["code"], err["msg"], err["sub_code"], err["sub_msg"]) == \
        (27, "Invalid session", "invalid-sessionkey", "SessionKey非法")
    err = call.top(TB, m, timestamp=bj(T0 - 601), **args).json()["error_response"]
    assert err["code"] == 31
    assert "error_response" not in call.top(TB, m, timestamp=bj(T0 - 590), **args).json()
    err = call.top(TB, "taobao.no.such.method", **args).json()["error_response"]
    assert err["code"] == 22
    shop = type(TB)(**{**TB.__dict__, "app_key": "nope"})
    assert call.top(shop, m, **args).json()["error_response"]["code"] == 29


def test_top_window_and_page_size_limits(call):
    m = "taobao.trades.sold.increment.get"
    err = call.top(TB, m, fields="tid", start_modified=bj(T0 - 86401), end_modified=bj(T0)).json()
    assert err["error_response"]["code"] == 41
    ok = call.top(TB, m, fields="tid", start_modified=bj(T0 - 86400), end_modified=bj(T0)).json()
    assert "trades_sold_increment_get_response" in ok
    err = call.top(TB, m, fields="tid", start_modified=bj(T0 - 60), end_modified=bj(T0), page_size=101).json()
    assert err["error_response"]["code"] == 41
    err = call.top(TB, m, start_modified=bj(T0 - 60), end_modified=bj(T0)).json()
    assert err["error_response"]["code"] == 40


def _top_pages(call, shop, start, end, page_size):
    seen, page = [], 1
    while True:
        body = call.top(shop, "taobao.trades.sold.increment.get", fields="tid,modified",
                        start_modified=bj(start), end_modified=bj(end), page_no=page,
                        page_size=page_size).json()["trades_sold_increment_get_response"]
        seen += [t["tid"] for t in body.get("trades", {}).get("trade", [])]
        if not body["has_next"]:
            return seen, body["total_results"]
        page += 1


def test_paging_serves_each_order_once_on_all_platforms(state, call):
    for shop in (TB, PDD, JD):
        state.seed_orders(shop, 250, T0 - 1500, T0 - 100, statuses={"paid": 1, "shipped": 1})
    seen, total = _top_pages(call, TB, T0 - 1700, T0, 40)
    assert total == 250 and len(seen) == 250 and len(set(seen)) == 250

    seen, page = [], 1
    while True:
        body = call.pdd(PDD, "pdd.order.number.list.increment.get", start_updated_at=T0 - 1700,
                        end_updated_at=T0, order_status=5, refund_status=5, page=page,
                        page_size=100).json()["order_sn_increment_get_response"]
        seen += [o["order_sn"] for o in body["order_sn_list"]]
        if not body["has_next"]:
            break
        page += 1
    assert body["total_count"] == 250 and len(seen) == 250 and len(set(seen)) == 250
    assert all(re.fullmatch(r"\d{6}-\d{15}", sn) for sn in seen)

    seen = []
    for page in (1, 2, 3):
        res = call.jd(JD, "jingdong.pop.order.search", {
            "start_date": bj(T0 - 1700), "end_date": bj(T0), "page": str(page), "page_size": "100",
            "order_state": "WAIT_SELLER_STOCK_OUT,WAIT_GOODS_RECEIVE_CONFIRM"}).json()
        result = res["jingdong_pop_order_search_responce"]["searchorderinfo_result"]
        assert result["apiResult"]["success"] is True and result["orderTotal"] == 250
        seen += [o["orderId"] for o in result["orderInfoList"]]
    assert len(seen) == 250 and len(set(seen)) == 250 and all(isinstance(i, str) for i in seen)


def test_change_between_pages_moves_unserved_orders(state, call, clock):
    state.seed_orders(TB, 50, T0 - 3000, T0 - 600, statuses={"paid": 1})
    r = admin(call.base, "PUT", f"/shops/{TB.app_key}/faults", {"change_between_pages": 3})
    assert r.status_code == 200
    first = call.top(TB, "taobao.trades.sold.increment.get", fields="tid", start_modified=bj(T0 - 3600),
                     end_modified=bj(T0 - 300), page_size=20).json()["trades_sold_increment_get_response"]
    assert first["total_results"] == 50
    served = {t["tid"] for t in first["trades"]["trade"]}
    moved = [o for o in state.book(TB.app_key).orders.values() if o.modified == T0]
    assert len(moved) == 3 and not served & {o.tid for o in moved}
    # they left the window (modified now): the window has 47 now, and a later window finds them
    again = call.top(TB, "taobao.trades.sold.increment.get", fields="tid", start_modified=bj(T0 - 3600),
                     end_modified=bj(T0 - 300), page_no=2, page_size=20).json()
    assert again["trades_sold_increment_get_response"]["total_results"] == 47
    later = call.top(TB, "taobao.trades.sold.increment.get", fields="tid", start_modified=bj(T0 - 300),
                     end_modified=bj(T0 + 1)).json()["trades_sold_increment_get_response"]
    assert {t["tid"] for t in later["trades"]["trade"]} == {o.tid for o in moved}


# --- Pinduoduo and JD errors and windows -------------------------------------------------------------
def test_pdd_errors_and_window(call):
    m = "pdd.order.number.list.increment.get"
    args = dict(start_updated_at=T0 - 1800, end_updated_at=T0, order_status=5, refund_status=5)
    assert "order_sn_increment_get_response" in call.pdd(PDD, m, **args).json()
    err = call.pdd(PDD, m, secret="wrong", **args).json()["error_response"]
    assert err["error_code"] == 20004 and err["request_id"]
    err = call.pdd(PDD, m, token="expired", **args).json()["error_response"]
    assert (err["error_code"], err["error_msg"]) == (10019, "access_token已过期")
    err = call.pdd(PDD, m, timestamp=T0 - 601, **args).json()["error_response"]
    assert err["error_code"] == 10001
    err = call.pdd(PDD, m, **{**args, "start_updated_at": T0 - 1801}).json()["error_response"]
    assert err["error_code"] == 10000 and "30" in err["sub_msg"]


def test_jd_errors_and_window(call):
    m = "jingdong.pop.order.search"
    biz = {"start_date": bj(T0 - 86400), "end_date": bj(T0), "page": "1", "page_size": "10"}
    ok = call.jd(JD, m, biz).json()
    assert ok["jingdong_pop_order_search_responce"]["code"] == "0"
    assert call.jd(JD, m, biz, secret="wrong").json()["error_response"]["code"] == "12"
    err = call.jd(JD, m, biz, token="bad").json()["error_response"]
    assert err["code"] == "19" and err["zh_desc"] and err["en_desc"]
    assert call.jd(JD, m, biz, timestamp=bj(T0 - 601)).json()["error_response"]["code"] == "16"
    assert call.jd(JD, "jingdong.no.such", biz).json()["error_response"]["code"] == "15"
    wide = call.jd(JD, m, {**biz, "start_date": bj(T0 - 32 * 86400)}).json()
    api = wide["jingdong_pop_order_search_responce"]["searchorderinfo_result"]["apiResult"]
    assert api["success"] is False and api["chineseErr"]


def test_pdd_and_jd_order_shapes(state, call):
    o = state.create_order(PDD.app_key, {"lines": [{"merchant_code": "JJ001-01", "num": 1}],
                                         "receiver": {"name": "林小坤", "phone": "13800000000"}})
    info = call.pdd(PDD, "pdd.order.information.get", order_sn=o.key).json()["order_info_get_response"]["order_info"]
    assert info["order_sn"] == o.key and info["order_status"] == 1 and info["refund_status"] == 1
    assert info["receiver_name"] == "林小坤" and info["receiver_phone"] == "13800000000"
    item = info["item_list"][0]
    assert item["outer_id"] == "JJ001-01" and item["goods_count"] == 1 and isinstance(item["goods_price"], float)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", info["updated_at"])
    # unpaid orders are invisible on PDD
    unpaid = state.create_order(PDD.app_key, {"status": "unpaid"})
    err = call.pdd(PDD, "pdd.order.information.get", order_sn=unpaid.key).json()
    assert "error_response" in err

    j = state.create_order(JD.app_key, {"lines": [{"merchant_code": "FZ002-01", "num": 3}]})
    res = call.jd(JD, "jingdong.pop.order.get", {"order_id": j.key}).json()
    info = res["jingdong_pop_order_get_responce"]["orderDetailInfo"]["orderInfo"]
    assert info["orderId"] == j.key and info["orderState"] == "WAIT_SELLER_STOCK_OUT"
    assert info["itemInfoList"][0]["itemTotal"] == "3" and info["itemInfoList"][0]["outerSkuId"] == "FZ002-01"
    assert set(info["consigneeInfo"]) >= {"fullname", "mobile", "province", "city", "county", "fullAddress"}
    assert re.fullmatch(r"\d+\.\d\d", info["orderPayment"])


# --- faults ------------------------------------------------------------------------------
def test_rate_limit_fault_bans_then_recovers(state, call, clock):
    admin(call.base, "PUT", f"/shops/{TB.app_key}/faults", {"rate_limit_every": 3, "rate_limit_ban": 30})
    m, args = "taobao.trades.sold.increment.get", dict(fields="tid", start_modified=bj(T0 - 60),
                                                       end_modified=bj(T0))
    assert "error_response" not in call.top(TB, m, **args).json()
    assert "error_response" not in call.top(TB, m, **args).json()
    err = call.top(TB, m, **args).json()["error_response"]
    assert (err["code"], err["msg"], err["sub_code"]) == \
        (7, "App Call Limited", "accesscontrol.limited-by-dynamic-access-count")
    assert err["sub_msg"] == "This ban will last for 30 more seconds"
    clock.advance(10)
    err = call.top(TB, m, **args).json()["error_response"]
    assert err["code"] == 7 and err["sub_msg"] == "This ban will last for 20 more seconds"
    clock.advance(21)
    assert "error_response" not in call.top(TB, m, **args).json()
    # PDD and JD equivalents
    admin(call.base, "PUT", f"/shops/{PDD.app_key}/faults", {"rate_limit_every": 1, "rate_limit_ban": 5})
    err = call.pdd(PDD, "pdd.order.information.get", order_sn="x").json()["error_response"]
    assert err["error_code"] == 70031
    admin(call.base, "PUT", f"/shops/{JD.app_key}/faults", {"rate_limit_every": 1, "rate_limit_ban": 5})
    assert call.jd(JD, "jingdong.pop.order.get", {"order_id": "1"}).json()["error_response"]["code"] == "4"
    # {} clears
    admin(call.base, "PUT", f"/shops/{JD.app_key}/faults", {})
    assert "error_response" not in call.jd(JD, "jingdong.pop.order.get", {"order_id": "1"}).json()


def test_5xx_burst_then_success(call):
    admin(call.base, "PUT", f"/shops/{PDD.app_key}/faults", {"burst_5xx": 3})
    m = "pdd.order.number.list.increment.get"
    args = dict(start_updated_at=T0 - 600, end_updated_at=T0, order_status=5, refund_status=5)
    statuses = [call.pdd(PDD, m, **args) for _ in range(3)]
    assert [r.status_code for r in statuses] == [502, 500, 502]
    assert "<html>" in statuses[0].text and statuses[1].text == ""
    r = call.pdd(PDD, m, **args)
    assert r.status_code == 200 and "order_sn_increment_get_response" in r.json()


def test_invalid_session_and_slow_faults(call):
    admin(call.base, "PUT", f"/shops/{JD.app_key}/faults", {"invalid_session": True, "slow_ms": 150})
    t = time.monotonic()
    err = call.jd(JD, "jingdong.pop.order.get", {"order_id": "1"}).json()["error_response"]
    assert err["code"] == "19" and time.monotonic() - t >= 0.15
    r = admin(call.base, "PUT", f"/shops/{JD.app_key}/faults", {"no_such_fault": 1})
    assert r.status_code == 400


# --- write-backs and stock pushes ------------------------------------------------------------------
def test_writebacks_are_recorded_and_ship_the_order(state, call):
    t = state.create_order(TB.app_key, {})
    p = state.create_order(PDD.app_key, {})
    j = state.create_order(JD.app_key, {})
    r = call.top(TB, "taobao.logistics.offline.send", tid=t.key, out_sid="YT1234567890123", company_code="YTO")
    assert r.json() == {"logistics_offline_send_response": {"shipping": {"is_success": True},
                                                            "request_id": r.json()["logistics_offline_send_response"]["request_id"]}}
    trade = call.top(TB, "taobao.trade.fullinfo.get", fields="status", tid=t.key).json()
    assert trade["trade_fullinfo_get_response"]["trade"]["status"] == "WAIT_BUYER_CONFIRM_GOODS"
    # shipping twice with another number is refused; the same number again is accepted
    again = call.top(TB, "taobao.logistics.offline.send", tid=t.key, out_sid="ZT999", company_code="ZTO")
    assert again.json()["error_response"]["code"] == 15
    same = call.top(TB, "taobao.logistics.offline.send", tid=t.key, out_sid="YT1234567890123", company_code="YTO")
    assert same.json()["logistics_offline_send_response"]["shipping"]["is_success"] is True

    r = call.pdd(PDD, "pdd.logistics.online.send", order_sn=p.key, logistics_id=115, tracking_number="7300000001")
    assert r.json()["logistics_online_send_response"]["is_success"] is True
    r = call.jd(JD, "jingdong.pop.order.shipment", {"orderId": j.key, "logiCoprId": "2087", "logiNo": "JDVA001"})
    assert r.json()["jingdong_pop_order_shipment_responce"]["sopjosshipment_result"]["success"] is True
    assert state.order(JD.app_key, j.key).status == "shipped"

    rows = admin(call.base, "GET", "/writebacks").json()["writebacks"]
    assert [(w["platform"], w["order_id"], w["carrier_code"], w["tracking_number"], w["repeat"]) for w in rows] == [
        ("taobao", t.key, "YTO", "YT1234567890123", False),
        ("taobao", t.key, "YTO", "YT1234567890123", True),
        ("pdd", p.key, "115", "7300000001", False),
        ("jd", j.key, "2087", "JDVA001", False)]
    assert all(w["shop"] and w["time"] for w in rows)


def test_stock_pushes_are_recorded(call):
    def listing(shop, code):
        rows = admin(call.base, "GET", f"/shops/{shop.app_key}/listings").json()["listings"]
        return next(x for x in rows if x["merchant_code"] == code)

    lt = listing(TB, "SP001-01")
    r = call.top(TB, "taobao.item.quantity.update", num_iid=lt["item_id"], outer_id="SP001-01", quantity=42, type=1)
    item = r.json()["item_quantity_update_response"]["item"]
    assert item["num_iid"] == int(lt["item_id"]) and "modified" in item and "quantity" in item
    lp = listing(PDD, "JJ001-01")
    r = call.pdd(PDD, "pdd.goods.quantity.update", goods_id=lp["item_id"], sku_id=lp["sku_id"], quantity=7,
                 update_type=1)
    assert r.json()["goods_quantity_update_response"]["is_success"] is True
    lj = listing(JD, "FZ001-01")
    r = call.jd(JD, "jingdong.stock.write.updateSkuStock", {"skuId": lj["sku_id"], "outerId": "FZ001-01",
                                                             "stockNum": 5})
    assert r.json()["jingdong_stock_write_updateSkuStock_responce"]["success"] is True
    # the real Taobao API needs num_iid
    err = call.top(TB, "taobao.item.quantity.update", outer_id="SP001-01", quantity=1).json()
    assert err["error_response"]["code"] == 40
    rows = admin(call.base, "GET", "/stock_pushes").json()["stock_pushes"]
    assert [(s["platform"], s["outer_id"], s["quantity"]) for s in rows] == [
        ("taobao", "SP001-01", 42), ("pdd", "JJ001-01", 7), ("jd", "FZ001-01", 5)]
    assert listing(TB, "SP001-01")["quantity"] == 42


# --- evolution ------------------------------------------------------------------------------
def test_evolution_creates_pays_and_bumps_modified():
    clock = FakeClock()
    st = SandboxState(seed=3, clock=clock, rate_per_minute=1.0)
    assert all(not b.orders for b in st.books.values())
    clock.advance(30 * 60)
    counts = st.evolve()
    assert counts["created"] >= 10 * 20  # about 30 per shop
    book = st.book(TB.app_key)
    orders = list(book.orders.values())
    assert 20 <= len(orders) <= 45
    paid = [o for o in orders if o.paid is not None]
    assert len(paid) >= len(orders) // 2
    assert all(o.modified >= o.paid > o.created for o in paid)
    assert all(T0 < o.modified <= clock() for o in orders)
    before = {o.key: o.modified for o in orders}
    unpaid_before = {o.key for o in orders if o.status == "unpaid"}
    clock.advance(3 * 3600)
    st.evolve()
    changed = [o for o in orders if o.modified > before[o.key]]
    assert changed and all(st.order(TB.app_key, k).status != "unpaid" for k in unpaid_before)
    # evolution is deterministic per seed
    clock2 = FakeClock()
    st2 = SandboxState(seed=3, clock=clock2, rate_per_minute=1.0)
    clock2.advance(30 * 60)
    st2.evolve()
    clock2.advance(3 * 3600)
    st2.evolve()
    assert sorted(st2.book(TB.app_key).orders) == sorted(book.orders)


def test_evolution_is_visible_through_the_gateway(call, clock, state):
    state.reset(rate_per_minute=2.0)
    clock.advance(20 * 60)  # the next gateway call evolves lazily
    body = call.pdd(PDD, "pdd.order.number.list.increment.get", start_updated_at=int(clock()) - 1800,
                    end_updated_at=int(clock()), order_status=5, refund_status=5).json()
    assert body["order_sn_increment_get_response"]["total_count"] >= 20


# --- admin API ---------------------------------------------------------------------------
def test_admin_endpoints(base, state, clock):
    shops = admin(base, "GET", "/shops").json()["shops"]
    assert len(shops) == len(DEMO_SHOPS) and {s["platform"] for s in shops} == {"taobao", "tmall", "jd", "pdd"}
    assert shops[0]["app_secret"] and shops[0]["access_token"] and shops[0]["gateway_path"] == "/router/rest"
    r = admin(base, "POST", f"/shops/{TB.app_key}/orders", {"count": 3})
    assert r.status_code == 201 and len(r.json()["orders"]) == 3
    r = admin(base, "POST", f"/shops/{TB.app_key}/orders", {"orders": [
        {"status": "unpaid", "lines": [{"merchant_code": "MZ001-01", "num": 2}],
         "receiver": {"name": "张三", "phone": "13900000000"}}]})
    order = r.json()["orders"][0]
    assert order["platform_status"] == "WAIT_BUYER_PAY" and order["paid_amount"] == "98.00"
    oid = order["order_id"]
    clock.advance(60)
    r = admin(base, "POST", f"/shops/{TB.app_key}/orders/{oid}/pay")
    assert r.json()["order"]["platform_status"] == "WAIT_SELLER_SEND_GOODS"
    assert r.json()["order"]["modified_ts"] == int(clock())
    assert admin(base, "POST", f"/shops/{TB.app_key}/orders/{oid}/cancel").status_code == 409
    for event, status in (("refund", "WAIT_SELLER_SEND_GOODS"), ("refund_done", "TRADE_CLOSED")):
        assert admin(base, "POST", f"/shops/{TB.app_key}/orders/{oid}/{event}").json()["order"]["platform_status"] == status
    assert admin(base, "POST", f"/shops/{TB.app_key}/orders/nope/pay").status_code == 404
    assert admin(base, "POST", f"/shops/{TB.app_key}/orders/{oid}/explode").status_code == 400
    listing = admin(base, "GET", f"/shops/{TB.app_key}/orders").json()
    assert listing["count"] == 4
    row = next(o for o in listing["orders"] if o["order_id"] == oid)
    assert row["checksum"] == order_checksum(oid, "TRADE_CLOSED", "98.00", "张三", "13900000000",
                                             row["receiver_province"], row["receiver_city"],
                                             row["receiver_district"], row["receiver_address"],
                                             [("MZ001-01", 2)])
    assert admin(base, "POST", "/tick").json()["now"] == int(clock())
    assert admin(base, "POST", "/reset", {}).json()["ok"] is True
    assert admin(base, "GET", f"/shops/{TB.app_key}/orders").json()["count"] == 0


# --- scale ------------------------------------------------------------------------------------
def test_seed_100k_orders_is_fast(state):
    t = time.perf_counter()
    ids = state.seed_orders(TB, 100_000, T0 - 30 * 86400, T0)
    elapsed = time.perf_counter() - t
    print(f"\nseed_orders(100000) took {elapsed:.2f} s")
    assert len(set(ids)) == 100_000
    assert elapsed < 30  # generous: the printed figure is the benchmark
    t = time.perf_counter()
    window = state.listing_window(TB.app_key, T0 - 86400, T0, filter_key="all", predicate=lambda o: True)
    assert 3000 < len(window) < 3700
    print(f"one-day window of {len(window)} orders in {time.perf_counter() - t:.3f} s")


# --- keep-alive and cached order texts ---------------------------------------------------
def test_gateway_keeps_the_connection_open_as_real_gateways_do(state, base, clock):
    """HTTP/1.1 keep-alive: many calls on one connection, a body the app does not read
    is drained before the next request, and a client that asks to close gets closed."""
    import http.client
    from urllib.parse import urlencode

    state.seed_orders(TB, 5, T0 - 3600, T0 - 60)
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    params = top_signed({"method": "taobao.trades.sold.increment.get", "app_key": TB.app_key,
                         "session": TB.access_token, "timestamp": bj(clock()), "format": "json", "v": "2.0",
                         "fields": "tid,modified", "start_modified": bj(T0 - 7200), "end_modified": bj(T0)},
                        TB.app_secret)
    form = urlencode(params).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    sockets = set()
    for _ in range(3):
        conn.request("POST", "/router/rest", body=form, headers=headers)
        sockets.add(id(conn.sock))
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200 and r.getheader("Connection") is None
        assert int(r.getheader("Content-Length")) == len(body)
        assert json.loads(body)["trades_sold_increment_get_response"]["total_results"] == 5
    conn.request("POST", "/_sandbox/tick", body=b"x" * 5000, headers={"Content-Type": "text/plain"})
    assert conn.getresponse().read()  # the body it did not read is drained
    conn.request("GET", "/_sandbox/shops")
    r = conn.getresponse()
    assert r.read() and r.status == 200 and len(sockets) == 1 and conn.sock is not None
    conn.request("GET", "/_sandbox/shops", headers={"Connection": "close"})
    r = conn.getresponse()
    r.read()
    assert r.getheader("Connection") == "close" and r.will_close
    conn.close()


def test_a_changed_order_is_served_changed_not_from_the_cached_text(state, call, clock):
    [key] = state.seed_orders(TB, 1, T0 - 3600, T0 - 60, statuses={"paid": 1})

    def listed():
        body = call.top(TB, "taobao.trades.sold.increment.get", fields="tid,modified,receiver_address",
                        start_modified=bj(T0 - 7200), end_modified=bj(T0 + 3600)).json()
        return body["trades_sold_increment_get_response"]["trades"]["trade"]

    first = listed()
    assert listed() == first and len(state.book(TB.app_key).fragments) == 1
    clock.advance(30)
    state.apply_event(TB.app_key, key, "address", receiver={"address": "新地址 9 号"})
    [changed] = listed()
    assert changed["receiver_address"] == "新地址 9 号" and changed["modified"] == bj(clock())
    state.clear_fragments()
    assert listed() == [changed]


def test_gateway_form_posts_skip_the_wsgi_layer_and_answer_as_through_it(state, call, clock, monkeypatch):
    """A form POST to a gateway path is answered by the handler's fast path (no Flask
    request, so ``_params`` is not called), with the same answer as the same call made
    through Flask (GET), success and error alike; parameters split between the query
    string and the form are merged as Flask's path merges them."""
    from app.sandbox import server

    through_flask = []
    real_params = server._params
    monkeypatch.setattr(server, "_params", lambda: through_flask.append(1) or real_params())
    state.seed_orders(TB, 7, T0 - 3600, T0 - 60)
    biz = {"fields": "tid,status,payment,orders.outer_sku_id", "start_modified": bj(T0 - 7200),
           "end_modified": bj(T0), "page_size": 5}

    def body(r):
        data = r.json()
        for v in data.values():
            v.pop("request_id", None)
        return data

    fast = call.top(TB, "taobao.trades.sold.increment.get", **biz)
    assert fast.status_code == 200 and not through_flask
    slow = call.top(TB, "taobao.trades.sold.increment.get", http="get", **biz)
    assert slow.status_code == 200 and through_flask == [1]
    assert body(fast) == body(slow)
    assert body(fast)["trades_sold_increment_get_response"]["total_results"] == 7
    assert len(body(fast)["trades_sold_increment_get_response"]["trades"]["trade"]) == 5

    bad_fast = call.top(TB, "taobao.trades.sold.increment.get", secret="wrong", **biz)
    bad_slow = call.top(TB, "taobao.trades.sold.increment.get", secret="wrong", http="get", **biz)
    assert bad_fast.status_code == bad_slow.status_code
    assert body(bad_fast) == body(bad_slow) and body(bad_fast)["error_response"]["code"] == 25
    assert through_flask == [1, 1]  # the GET only

    signed = top_signed({"method": "taobao.trades.sold.increment.get", "app_key": TB.app_key,
                         "session": TB.access_token, "timestamp": bj(clock()), "format": "json", "v": "2.0",
                         "sign_method": "md5", **{k: str(v) for k, v in biz.items()}}, TB.app_secret)
    query = {k: signed[k] for k in ("method", "app_key", "sign")}
    form = {k: v for k, v in signed.items() if k not in query}
    split = requests.post(f"{call.base}/router/rest", params=query, data=form)
    assert split.status_code == 200 and body(split) == body(fast) and through_flask == [1, 1]

    # Bad input is read as werkzeug reads it: an invalid escape stays percent-encoded (the
    # gateway names the app_key it did not find), a body that is not UTF-8 is an empty form.
    bad = "method=taobao.trades.sold.increment.get&app_key=%C9%CF&format=json"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    fast_bad = requests.post(f"{call.base}/router/rest", data=bad, headers=headers)
    slow_bad = requests.get(f"{call.base}/router/rest?{bad}")
    assert (fast_bad.status_code, body(fast_bad)) == (slow_bad.status_code, body(slow_bad))
    raw = requests.post(f"{call.base}/router/rest", data="app_key=上".encode("gbk"), headers=headers)
    empty = requests.get(f"{call.base}/router/rest")
    assert (raw.status_code, body(raw)) == (empty.status_code, body(empty))


def test_message_lookup_serves_the_same_fields_as_the_whole_trade(state, call, clock):
    """``top_notes`` (the fast answer to fullinfo with message fields only) equals the whole
    trade filtered to those fields, for orders with and without message or memo."""
    from app.sandbox import server

    state.seed_orders(TB, 40, T0 - 3600, T0 - 60)
    book = state.book(TB)
    book.orders[next(iter(book.orders))].memo = "改地址"
    seen = set()
    for o in book.orders.values():
        whole = server.top_trade(state, TB, o, full=True)
        for fields in ({"tid", "buyer_message", "seller_memo"}, {"tid_str", "seller_memo"}, {"buyer_message"}):
            assert server._top_filter(server.top_notes(o), fields) == server._top_filter(whole, fields)
        seen.add((bool(o.message), bool(o.memo)))
    assert (True, False) in seen and (False, False) in seen and any(memo for _m, memo in seen)
    o = next(o for o in book.orders.values() if o.message)
    r = call.top(TB, "taobao.trade.fullinfo.get", tid=o.tid, fields="tid,buyer_message,seller_memo")
    assert r.json()["trade_fullinfo_get_response"]["trade"]["buyer_message"] == o.message
