"""The Taobao, PDD and JD clients against tiny fake gateways (no network).

Each fake gateway stands in for the client's transport (``client.http``). Like the
real gateway it checks the app key, the timestamp and the signature (computed here
independently of app.platforms.signing) and the access token, then answers with
canned JSON in the real response shapes. One test uses the real transport against
real sockets (refused, silent).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from decimal import Decimal
from urllib.parse import parse_qsl

import pytest

from app.platforms import jd as jd_module
from app.platforms import pdd as pdd_module
from app.platforms import taobao as taobao_module
from app.platforms.base import CN_TZ, PlatformError
from app.platforms.http import TransportError
from app.platforms.jd import JdClient
from app.platforms.pdd import PddClient
from app.platforms.taobao import TaobaoClient

UTC = dt.timezone.utc
APP_KEY, SECRET, TOKEN = "12345678", "s3cret", "tok-abc"
BIG_TID = 4053129948573152889  # > 2**53: a float would turn it into ...152768
BIG_OID = 4053129948573152890
assert BIG_TID > 2**53 and float(BIG_TID) != BIG_TID


# --- the fake transport --------------------------------------------------------------
class FakeGateway:
    """Stands in for the client's transport (app/platforms/http.py): receives the form
    POST, lets ``respond(form)`` answer: a dict (JSON, HTTP 200), a (status, body) tuple,
    or an exception to raise (``TransportError``: timeouts, refused connections)."""

    def __init__(self, respond):
        self.respond = respond
        self.calls: list[dict] = []
        self.timeouts: list = []
        self.raw: list[str] = []

    def post(self, url, body, headers, timeout):
        assert url.startswith("http://gw.test/")
        assert headers["Content-Type"] == "application/x-www-form-urlencoded"
        form = dict(parse_qsl(body.decode("ascii"), keep_blank_values=True))
        self.calls.append(form)
        self.timeouts.append(timeout)
        result = self.respond(form)
        if isinstance(result, BaseException):
            raise result
        status, payload = result if isinstance(result, tuple) else (200, result)
        text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
        self.raw.append(text)
        return status, text.encode("utf-8")

    def close(self):
        pass


def mount(client, respond) -> FakeGateway:
    gateway = FakeGateway(respond)
    client.http = gateway
    return gateway


def joined(form: dict) -> str:
    return "".join(f"{k}{v}" for k, v in sorted(form.items()) if k != "sign" and v != "")


def md5_wrapped(form: dict, secret: str) -> str:
    return hashlib.md5(f"{secret}{joined(form)}{secret}".encode()).hexdigest().upper()


def fresh(moment: dt.datetime) -> bool:
    return abs(dt.datetime.now(UTC) - moment) < dt.timedelta(minutes=10)


# --- Taobao gateway ---------------------------------------------------------------------
def top_error(code, msg, sub_code=None, sub_msg=None):
    err = {"code": code, "msg": msg, "request_id": "r1"}
    if sub_code:
        err.update(sub_code=sub_code, sub_msg=sub_msg)
    return {"error_response": err}


def top_gateway(routes):
    def respond(form):
        if form.get("app_key") != APP_KEY:
            return top_error(29, "Invalid app Key")
        stamp = dt.datetime.strptime(form["timestamp"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=CN_TZ)
        if not fresh(stamp):
            return top_error(31, "Invalid timestamp")
        method = form["sign_method"]
        if method == "md5":
            expected = md5_wrapped(form, SECRET)
        else:
            digest = hashlib.md5 if method == "hmac" else hashlib.sha256
            expected = hmac.new(SECRET.encode(), joined(form).encode(), digest).hexdigest().upper()
        if form.get("sign") != expected:
            return top_error(25, "Invalid signature")
        if form.get("session") != TOKEN:
            return top_error(27, "Invalid session", "invalid-sessionkey", "SessionKey非法")
        assert form["format"] == "json" and form["v"] == "2.0"
        return routes[form["method"]](form)
    return respond


def taobao_client(**kwargs) -> TaobaoClient:
    return TaobaoClient("http://gw.test/router/rest", APP_KEY, kwargs.pop("secret", SECRET),
                        kwargs.pop("token", TOKEN), timeout=7.5, **kwargs)


def tb_trade(tid, status="WAIT_SELLER_SEND_GOODS", refund="NO_REFUND", **extra):
    trade = {
        "tid": tid, "status": status, "created": "2024-03-18 10:00:00", "pay_time": "2024-03-18 10:01:02",
        "modified": "2024-03-18 10:20:00", "payment": "118.00", "post_fee": "10.00", "total_fee": "128.00",
        "discount_fee": "20.00", "buyer_nick": "tb买家", "receiver_name": "张三", "receiver_mobile": "13800138000",
        "receiver_state": "浙江省", "receiver_city": "杭州市", "receiver_district": "西湖区",
        "receiver_address": "文三路 1 号", "receiver_zip": "310000", "seller_flag": 0, "has_buyer_message": False,
        "orders": {"order": [{"oid": tid + 1, "outer_sku_id": "SKU-A", "title": "纯棉T恤",
                              "sku_properties_name": "颜色分类:白;尺码:L", "num": 2, "price": "64.00",
                              "payment": "108.00", "refund_status": refund}]},
    }
    trade.update(extra)
    return trade


def increment_routes(pages: dict[int, list], total: int, **more):
    def increment(form):
        trades = pages[int(form["page_no"])]
        return {"trades_sold_increment_get_response": {"total_results": total, "trades": {"trade": trades},
                                                        "request_id": "r"}}
    return {"taobao.trades.sold.increment.get": increment, **more}


WINDOW = (dt.datetime(2024, 3, 18, 2, 0, tzinfo=UTC), dt.datetime(2024, 3, 18, 2, 30, tzinfo=UTC))


def test_taobao_pages_backwards_and_keeps_ids_above_2_53_exact():
    client = taobao_client()
    pages = {1: [tb_trade(BIG_TID), tb_trade(1001)], 2: [tb_trade(1003), tb_trade(1004)], 3: [tb_trade(1005)]}
    gw = mount(client, top_gateway(increment_routes(pages, total=5)))

    result = list(client.fetch_changed(*WINDOW, page_size=2))

    assert [int(c["page_no"]) for c in gw.calls] == [1, 3, 2, 1]
    assert [p.page_no for p in result] == [3, 2, 1]
    assert str(BIG_TID) in gw.raw[0]  # sent as a bare JSON number, as the real gateway does
    order = result[-1].orders[0]
    assert order.platform_order_id == "4053129948573152889"
    assert order.lines[0].platform_line_id == "4053129948573152890"
    first = gw.calls[0]
    assert first["method"] == "taobao.trades.sold.increment.get"
    assert first["start_modified"] == "2024-03-18 10:00:00" and first["end_modified"] == "2024-03-18 10:30:00"
    assert first["use_has_next"] == "false" and first["page_size"] == "2"
    assert first["sign_method"] == "md5" and first["session"] == TOKEN
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", first["timestamp"])
    for name in ("tid", "modified", "has_buyer_message", "receiver_state", "orders.oid", "orders.outer_sku_id",
                 "orders.refund_status"):
        assert name in first["fields"].split(",")
    assert set(gw.timeouts) == {7.5}


def test_taobao_order_leaving_the_window_while_paging_makes_no_other_order_missed():
    """Newest first; after the last page is served, the newest trade is modified again
    (its modified time passes end_modified, so it leaves the window): every trade after it
    moves one place up. Paging backwards sees each remaining trade at least once."""
    client = taobao_client()
    listing = [tb_trade(2000 + n, modified=f"2024-03-18 10:2{9 - n}:00") for n in range(5)]
    served = []

    def increment(form):
        served.append(int(form["page_no"]))
        if len(served) == 3:  # page 1, then the last page, are served: now the newest trade changes
            listing.pop(0)
        page = int(form["page_no"])
        return {"trades_sold_increment_get_response": {"total_results": len(listing),
                                                        "trades": {"trade": listing[(page - 1) * 2:page * 2]}}}

    mount(client, top_gateway({"taobao.trades.sold.increment.get": increment}))
    seen = {o.platform_order_id for page in client.fetch_changed(*WINDOW, page_size=2) for o in page.orders}
    assert served == [1, 3, 2, 1]
    assert seen >= {"2001", "2002", "2003", "2004"}


def test_taobao_trade_is_normalised_with_decimal_money_and_utc_times():
    client = taobao_client()
    notes = {"taobao.trade.fullinfo.get": lambda form: {"trade_fullinfo_get_response": {"trade": {"tid": BIG_TID}}}}
    mount(client, top_gateway(increment_routes({1: [tb_trade(BIG_TID, seller_flag=2)]}, total=1, **notes)))

    [page] = list(client.fetch_changed(*WINDOW))
    order = page.orders[0]

    assert (order.status, order.platform_status) == ("to_audit", "WAIT_SELLER_SEND_GOODS")
    assert order.created_at == dt.datetime(2024, 3, 18, 2, 0, tzinfo=UTC)
    assert order.paid_at == dt.datetime(2024, 3, 18, 2, 1, 2, tzinfo=UTC)
    assert order.modified_at == dt.datetime(2024, 3, 18, 2, 20, tzinfo=UTC)
    assert order.paid_amount == Decimal("118.00") and isinstance(order.paid_amount, Decimal)
    assert (order.goods_amount, order.discount_amount, order.post_fee) == (
        Decimal("128.00"), Decimal("20.00"), Decimal("10.00"))
    assert (order.receiver_province, order.receiver_city, order.receiver_district, order.receiver_address) == (
        "浙江省", "杭州市", "西湖区", "文三路 1 号")
    assert (order.receiver_name, order.receiver_phone, order.flag) == ("张三", "13800138000", 2)
    line = order.lines[0]
    assert (line.merchant_code, line.quantity, line.price, line.paid_amount, line.spec) == (
        "SKU-A", 2, Decimal("64.00"), Decimal("108.00"), "颜色分类:白;尺码:L")
    assert order.hold_reason is None and order.refund_closed is False


def test_taobao_buyer_message_comes_from_fullinfo():
    client = taobao_client()

    def fullinfo(form):
        assert form["tid"] == str(BIG_TID)
        fields = set(form["fields"].split(","))
        assert fields == {"tid", "buyer_message", "seller_memo"}  # not the whole trade again
        trade = tb_trade(BIG_TID, buyer_message="请发顺丰", seller_memo="已核对地址", has_buyer_message=True)
        return {"trade_fullinfo_get_response": {"trade": {k: v for k, v in trade.items() if k in fields}}}

    routes = increment_routes({1: [tb_trade(BIG_TID, has_buyer_message=True), tb_trade(1001, seller_flag=0)]},
                              total=2, **{"taobao.trade.fullinfo.get": fullinfo})
    gw = mount(client, top_gateway(routes))

    [page] = list(client.fetch_changed(*WINDOW))

    assert [c["method"] for c in gw.calls] == ["taobao.trades.sold.increment.get", "taobao.trade.fullinfo.get"]
    assert (page.orders[0].buyer_message, page.orders[0].seller_memo) == ("请发顺丰", "已核对地址")
    assert page.orders[1].buyer_message is None


def test_taobao_seller_memo_of_a_flagged_trade_without_message_comes_from_fullinfo():
    """插旗备注: a flagged trade's memo is looked up although the buyer left no message; an
    unflagged trade without message costs no call."""
    client = taobao_client()
    asked = []

    def fullinfo(form):
        asked.append(form["tid"])
        return {"trade_fullinfo_get_response": {"trade": {"tid": int(form["tid"]), "seller_memo": "送小样"}}}

    routes = increment_routes({1: [tb_trade(1001, seller_flag=3), tb_trade(1002, seller_flag="0"),
                                   tb_trade(1003, seller_flag=0)]}, total=3,
                              **{"taobao.trade.fullinfo.get": fullinfo})
    mount(client, top_gateway(routes))

    [page] = list(client.fetch_changed(*WINDOW))

    assert asked == ["1001"]
    assert [(o.seller_memo, o.buyer_message, o.flag) for o in page.orders] == [
        ("送小样", None, 3), (None, None, 0), (None, None, 0)]


def test_taobao_empty_window_yields_nothing():
    client = taobao_client()
    mount(client, top_gateway({"taobao.trades.sold.increment.get": lambda form: {
        "trades_sold_increment_get_response": {"total_results": 0}}}))
    assert list(client.fetch_changed(*WINDOW)) == []


@pytest.mark.parametrize("sign_method", ["hmac", "hmac-sha256"])
def test_taobao_hmac_sign_methods_pass_the_gateway(sign_method):
    client = taobao_client(sign_method=sign_method)
    gw = mount(client, top_gateway(increment_routes({1: [tb_trade(1001)]}, total=1)))
    [page] = list(client.fetch_changed(*WINDOW))
    assert page.orders[0].platform_order_id == "1001"
    assert gw.calls[0]["sign_method"] == sign_method


@pytest.mark.parametrize("status, unified", [
    ("WAIT_BUYER_PAY", "pending_payment"), ("TRADE_NO_CREATE_PAY", "pending_payment"),
    ("PAY_PENDING", "pending_payment"), ("WAIT_SELLER_SEND_GOODS", "to_audit"),
    ("SELLER_CONSIGNED_PART", "shipped"), ("WAIT_BUYER_CONFIRM_GOODS", "shipped"),
    ("TRADE_BUYER_SIGNED", "completed"), ("TRADE_FINISHED", "completed"),
    ("TRADE_CLOSED", "closed"), ("TRADE_CLOSED_BY_TAOBAO", "closed"),
])
def test_taobao_status_mapping(status, unified):
    order = taobao_module.parse_trade(tb_trade(1001, status=status))
    assert (order.status, order.platform_status) == (unified, status)
    assert order.refund_closed is (status == "TRADE_CLOSED")
    assert order.hold_reason is None


@pytest.mark.parametrize("refund", ["WAIT_SELLER_AGREE", "WAIT_BUYER_RETURN_GOODS", "WAIT_SELLER_CONFIRM_GOODS"])
def test_taobao_refund_before_shipping_holds_as_refunding(refund):
    order = taobao_module.parse_trade(tb_trade(1001, refund=refund))
    assert (order.status, order.hold_reason, order.lines[0].refund_status) == ("to_audit", "refunding", refund)


def test_taobao_refund_after_shipping_or_closed_refund_does_not_hold():
    shipped = taobao_module.parse_trade(tb_trade(1001, "WAIT_BUYER_CONFIRM_GOODS", "WAIT_SELLER_AGREE"))
    assert shipped.hold_reason is None
    assert taobao_module.parse_trade(tb_trade(1001, refund="CLOSED")).hold_reason is None


def test_taobao_paid_forbid_consign_is_a_platform_lock():
    order = taobao_module.parse_trade(tb_trade(1001, status="PAID_FORBID_CONSIGN"))
    assert (order.status, order.hold_reason) == ("to_audit", "platform_locked")


def test_taobao_message_lookups_of_a_page_are_made_concurrently():
    """A page parsed at once asks for its trades' messages several at a time: each fake
    fullinfo answer waits until another call is in flight too (one at a time would time
    out here), and every message lands on its own order. One failing lookup fails the page."""
    import threading

    client = taobao_client()
    assert client.message_calls == 4
    # a gateway on this machine (the sandbox) answers at once: one at a time there
    assert TaobaoClient(gateway_url="http://127.0.0.1:8900/router/rest", app_key=APP_KEY, app_secret=SECRET,
                        access_token=TOKEN).message_calls == 1
    barrier = threading.Barrier(2, timeout=5)

    def fullinfo(form):
        barrier.wait()  # returns only once two calls are in flight at the same time
        tid = int(form["tid"])
        if tid == 1099:
            return top_error(15, "Remote service error", "isv.trade-not-exist", "交易不存在")
        return {"trade_fullinfo_get_response": {"trade": {"tid": tid, "buyer_message": f"留言{tid}"}}}

    trades = [tb_trade(1000 + i, has_buyer_message=True) for i in range(4)] + [tb_trade(1010)]
    gw = mount(client, top_gateway(increment_routes({1: trades}, total=5,
                                                    **{"taobao.trade.fullinfo.get": fullinfo})))
    try:
        [page] = list(client.fetch_changed(*WINDOW))
        assert [o.buyer_message for o in page.orders] == ["留言1000", "留言1001", "留言1002", "留言1003", None]
        assert sorted(c["tid"] for c in gw.calls if c["method"] == "taobao.trade.fullinfo.get") == \
            ["1000", "1001", "1002", "1003"]

        trades = [tb_trade(1098, has_buyer_message=True), tb_trade(1099, has_buyer_message=True)]
        mount(client, top_gateway(increment_routes({1: trades}, total=2,
                                                   **{"taobao.trade.fullinfo.get": fullinfo})))
        with pytest.raises(PlatformError) as info:
            list(client.fetch_changed(*WINDOW))
        assert info.value.sub_code == "isv.trade-not-exist"
    finally:
        client.close()


def test_taobao_fetch_order_uses_fullinfo():
    client = taobao_client()
    routes = {"taobao.trade.fullinfo.get": lambda form: {"trade_fullinfo_get_response": {
        "trade": tb_trade(int(form["tid"]), status="TRADE_FINISHED", tid_str=form["tid"], seller_memo="备注")}}}
    gw = mount(client, top_gateway(routes))
    order = client.fetch_order(str(BIG_TID))
    assert (order.platform_order_id, order.status, order.seller_memo) == (str(BIG_TID), "completed", "备注")
    assert gw.calls[0]["tid"] == str(BIG_TID)


def test_taobao_rate_limit_has_retry_after():
    client = taobao_client()
    mount(client, top_gateway({"taobao.trades.sold.increment.get": lambda form: top_error(
        7, "App Call Limited", "accesscontrol.limited-by-dynamic-access-count",
        "This ban will last for 27 more seconds")}))
    with pytest.raises(PlatformError) as info:
        list(client.fetch_changed(*WINDOW))
    err = info.value
    assert (err.kind, err.code, err.retry_after, err.retryable) == ("rate_limit", "7", 27.0, True)
    assert "限流" in err.message and "27" in err.message


def test_taobao_invalid_session_is_auth():
    client = taobao_client(token="expired")
    mount(client, top_gateway({}))
    with pytest.raises(PlatformError) as info:
        client.fetch_order("1001")
    assert (info.value.kind, info.value.code, info.value.sub_code) == ("auth", "27", "invalid-sessionkey")
    assert "授权" in info.value.message and not info.value.retryable


def test_taobao_wrong_secret_is_a_signature_error():
    client = taobao_client(secret="wrong")
    mount(client, top_gateway({}))
    with pytest.raises(PlatformError) as info:
        client.fetch_order("1001")
    assert info.value.kind == "auth"
    assert info.value.message.startswith("淘宝接口签名错误（code 25）：请检查 App Secret")


@pytest.mark.parametrize("code, sub_code, kind", [
    (15, "isp.top-remote-connection-timeout", "server"), (10, None, "server"),
    (15, "isv.trade-not-exist", "bad_request"), (41, None, "bad_request"),
])
def test_taobao_error_kinds(code, sub_code, kind):
    client = taobao_client()
    mount(client, top_gateway({"taobao.trade.fullinfo.get": lambda form: top_error(
        code, "Remote service error", sub_code, "出错了" if sub_code else None)}))
    with pytest.raises(PlatformError) as info:
        client.fetch_order("1001")
    assert (info.value.kind, info.value.code) == (kind, str(code))


@pytest.mark.parametrize("failure, kind", [
    ((502, "<html>Bad Gateway</html>"), "server"),
    (TransportError("timeout", "ReadTimeoutError"), "server"),
    (TransportError("connect", "NewConnectionError"), "network"),
    ((200, "<html>not json</html>"), "server"),
])
def test_transport_failures_become_platform_errors(failure, kind):
    client = taobao_client()
    mount(client, lambda form: failure)
    with pytest.raises(PlatformError) as info:
        client.fetch_order("1001")
    assert info.value.kind == kind and info.value.retryable
    assert re.search(r"[\u4e00-\u9fff]", info.value.message)  # zh


def test_real_sockets_refused_and_silent_gateways_become_zh_platform_errors():
    """The real transport (urllib3) against a closed port and a server that accepts the
    connection and never answers: a network error and a timeout, both retryable, in zh."""
    import socket
    import threading

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    client = TaobaoClient(gateway_url=f"http://127.0.0.1:{port}/router/rest", app_key=APP_KEY,
                          app_secret=SECRET, access_token=TOKEN, timeout=2)
    with pytest.raises(PlatformError) as info:
        client.fetch_order("1001")
    assert (info.value.kind, info.value.code) == ("network", "network") and info.value.retryable
    assert "无法连接淘宝接口" in info.value.message

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    held = []
    threading.Thread(target=lambda: held.append(silent.accept()), daemon=True).start()
    client = TaobaoClient(gateway_url=f"http://127.0.0.1:{silent.getsockname()[1]}/router/rest",
                          app_key=APP_KEY, app_secret=SECRET, access_token=TOKEN, timeout=0.3)
    try:
        with pytest.raises(PlatformError) as info:
            client.fetch_order("1001")
        assert (info.value.kind, info.value.code) == ("server", "timeout") and info.value.retryable
        assert info.value.message == "淘宝接口 taobao.trade.fullinfo.get 超过 0.3 秒未响应，稍后重试"
    finally:
        client.http.close()
        for conn, _addr in held:
            conn.close()
        silent.close()


def test_taobao_window_wider_than_a_day_is_refused():
    client = taobao_client()
    start = dt.datetime(2024, 3, 1, tzinfo=UTC)
    with pytest.raises(PlatformError) as info:
        list(client.fetch_changed(start, start + dt.timedelta(days=1, seconds=1)))
    assert info.value.kind == "bad_request"


def test_taobao_ship_sends_tid_tracking_number_and_company():
    client = taobao_client()
    gw = mount(client, top_gateway({"taobao.logistics.offline.send": lambda form: {
        "logistics_offline_send_response": {"shipping": {"is_success": True}}}}))
    client.ship(str(BIG_TID), "ZTO", "75312345678901")
    form = gw.calls[0]
    assert (form["tid"], form["out_sid"], form["company_code"]) == (str(BIG_TID), "75312345678901", "ZTO")


def test_taobao_ships_named_sub_orders_apart_with_is_split_and_sub_tid():
    client = taobao_client()
    gw = mount(client, top_gateway({"taobao.logistics.offline.send": lambda form: {
        "logistics_offline_send_response": {"shipping": {"is_success": True}}}}))
    oids = [str(BIG_TID + 1), str(BIG_TID + 2)]
    assert client.ships_parts(oids)
    client.ship(str(BIG_TID), "ZTO", "75312345678901", line_ids=oids)
    client.ship(str(BIG_TID), "ZTO", "75312345678902")
    split, whole = gw.calls
    assert (split["tid"], split["out_sid"], split["is_split"], split["sub_tid"]) == (
        str(BIG_TID), "75312345678901", "1", ",".join(oids))
    assert "is_split" not in whole and "sub_tid" not in whole
    # Lines imported from a sheet without 子订单编号 are numbered 1, 2, …: not sub-orders Taobao knows.
    assert not client.ships_parts(["1", "2"]) and not client.ships_parts([str(BIG_TID), "B2026-1"])
    assert not client.ships_parts([])


def test_taobao_ship_not_confirmed_is_an_error():
    client = taobao_client()
    mount(client, top_gateway({"taobao.logistics.offline.send": lambda form: {
        "logistics_offline_send_response": {"shipping": {"is_success": False}}}}))
    with pytest.raises(PlatformError) as info:
        client.ship("1001", "ZTO", "753")
    assert "发货回传失败" in info.value.message


def test_taobao_push_stock_parameters():
    client = taobao_client()
    gw = mount(client, top_gateway({"taobao.item.quantity.update": lambda form: {
        "item_quantity_update_response": {"item": {"num_iid": int(form["num_iid"]), "num": 8}}}}))
    client.push_stock("SKU-A", 8, item_id="600000000001", sku_id="5000000001")
    form = gw.calls[0]
    assert {k: form[k] for k in ("num_iid", "sku_id", "outer_id", "quantity", "type")} == {
        "num_iid": "600000000001", "sku_id": "5000000001", "outer_id": "SKU-A", "quantity": "8", "type": "1"}


# --- PDD gateway --------------------------------------------------------------------------
def pdd_error(code, msg):
    return {"error_response": {"error_code": code, "error_msg": msg, "request_id": "r"}}


def pdd_gateway(routes):
    def respond(form):
        if form.get("client_id") != APP_KEY:
            return pdd_error(10016, "client_id不存在")
        if not fresh(dt.datetime.fromtimestamp(int(form["timestamp"]), UTC)):
            return pdd_error(10001, "timestamp已过期")
        if form.get("sign") != md5_wrapped(form, SECRET):
            return pdd_error(10002, "签名sign校验失败")
        if form.get("access_token") != TOKEN:
            return pdd_error(10019, "access_token已过期")
        assert form["data_type"] == "JSON" and form["version"] == "V1"
        return routes[form["type"]](form)
    return respond


def pdd_client(**kwargs) -> PddClient:
    return PddClient("http://gw.test/api/router", APP_KEY, SECRET, kwargs.pop("token", TOKEN), timeout=5, **kwargs)


def pdd_order(sn, order_status=1, refund_status=1, **extra):
    order = {
        "order_sn": sn, "order_status": order_status, "refund_status": refund_status, "confirm_status": 1,
        "group_status": 1, "created_time": "2024-03-18 10:00:00", "confirm_time": "2024-03-18 10:00:30",
        "pay_time": "2024-03-18 10:00:05", "updated_at": "2024-03-18 10:12:00", "shipping_time": "",
        "pay_amount": "35.80", "goods_amount": "39.80", "discount_amount": "6.00", "postage": "2.00",
        "province": "广东省", "city": "深圳市", "town": "南山区", "address": "科技园 8 栋",
        "receiver_name": "李四", "receiver_phone": "13900139000", "buyer_memo": "", "remark": "",
        "item_list": [{"goods_id": 1001, "sku_id": 2002, "outer_id": "SKU-B", "outer_goods_id": "G-B",
                       "goods_name": "保温杯", "goods_spec": "蓝色 500ml", "goods_price": "19.90",
                       "goods_count": 2}],
    }
    order.update(extra)
    return order


def test_pdd_pages_backwards_with_real_parameters():
    client = pdd_client()
    pages = {n: [pdd_order(f"240318-42279637967012{n}")] for n in (1, 2, 3)}

    def increment(form):
        return {"order_sn_increment_get_response": {"total_count": 5, "has_next": False,
                                                    "order_sn_list": pages[int(form["page"])]}}

    gw = mount(client, pdd_gateway({"pdd.order.number.list.increment.get": increment}))
    start = dt.datetime(2024, 3, 18, 2, 0, tzinfo=UTC)

    result = list(client.fetch_changed(start, start + dt.timedelta(minutes=30), page_size=2))

    assert [int(c["page"]) for c in gw.calls] == [1, 3, 2, 1]
    assert [p.page_no for p in result] == [3, 2, 1]
    form = gw.calls[0]
    assert form["start_updated_at"] == str(int(start.timestamp()))
    assert form["end_updated_at"] == str(int(start.timestamp()) + 1800)
    assert (form["order_status"], form["refund_status"], form["is_lucky_flag"], form["use_has_next"],
            form["page_size"]) == ("5", "5", "0", "false", "2")
    assert re.fullmatch(r"\d{10}", form["timestamp"])
    assert client.max_window == dt.timedelta(minutes=30) and client.safety_lag == dt.timedelta(minutes=3)


def test_pdd_order_is_normalised():
    order = pdd_module.parse_order(pdd_order("240318-422796379670125", buyer_memo="不要放驿站", remark="加急"))
    assert (order.platform_order_id, order.status, order.platform_status) == ("240318-422796379670125", "to_audit", "1")
    assert order.modified_at == dt.datetime(2024, 3, 18, 2, 12, tzinfo=UTC)
    assert order.paid_at == dt.datetime(2024, 3, 18, 2, 0, 5, tzinfo=UTC) and order.shipped_at is None
    assert (order.paid_amount, order.goods_amount, order.discount_amount, order.post_fee) == (
        Decimal("35.80"), Decimal("39.80"), Decimal("6.00"), Decimal("2.00"))
    assert (order.receiver_name, order.receiver_phone, order.receiver_province, order.receiver_city,
            order.receiver_district, order.receiver_address) == (
        "李四", "13900139000", "广东省", "深圳市", "南山区", "科技园 8 栋")
    assert (order.buyer_message, order.seller_memo) == ("不要放驿站", "加急")
    line = order.lines[0]
    assert (line.platform_line_id, line.merchant_code, line.quantity, line.price, line.paid_amount, line.spec) == (
        "2002", "SKU-B", 2, Decimal("19.90"), Decimal("39.80"), "蓝色 500ml")


def test_pdd_duplicate_sku_lines_get_distinct_ids():
    item = pdd_order("x")["item_list"][0]
    order = pdd_module.parse_order(pdd_order("240318-1", item_list=[item, dict(item, goods_price="0.00")]))
    assert [line.platform_line_id for line in order.lines] == ["2002", "2002-1"]


def test_pdd_ciphertext_falls_back_to_the_masks():
    order = pdd_module.parse_order(pdd_order(
        "240318-1", receiver_name="~AgAAAAbc~xyz~0~~", receiver_name_mask="李*",
        receiver_phone="$135$AgAAAA123$0$$", receiver_phone_mask="1*********0"))
    assert (order.receiver_name, order.receiver_phone) == ("李*", "1*********0")


@pytest.mark.parametrize("order_status, refund_status, status, hold, closed", [
    (1, 1, "to_audit", None, False),
    (2, 1, "shipped", None, False),
    (3, 1, "completed", None, False),
    (1, 3, "to_audit", "refunding", False),
    (1, 4, "closed", None, True),
    (2, 3, "shipped", None, False),  # after shipping: a return, not a hold
    (2, 4, "shipped", None, False),
])
def test_pdd_status_and_refund_mapping(order_status, refund_status, status, hold, closed):
    order = pdd_module.parse_order(pdd_order("240318-1", order_status, refund_status))
    assert (order.status, order.hold_reason, order.refund_closed) == (status, hold, closed)


def test_pdd_fetch_order():
    client = pdd_client()
    gw = mount(client, pdd_gateway({"pdd.order.information.get": lambda form: {
        "order_info_get_response": {"order_info": pdd_order(form["order_sn"], 2, 1, tracking_number="YT1",
                                                            logistics_id=85)}}}))
    order = client.fetch_order("240318-422796379670125")
    assert (order.status, order.tracking_number, order.carrier_code) == ("shipped", "YT1", "85")
    assert gw.calls[0]["order_sn"] == "240318-422796379670125"


def test_pdd_expired_token_is_auth():
    client = pdd_client(token="old")
    mount(client, pdd_gateway({}))
    with pytest.raises(PlatformError) as info:
        client.fetch_order("240318-1")
    assert (info.value.kind, info.value.code) == ("auth", "10019")
    assert "重新授权" in info.value.message


def test_pdd_wrong_secret_is_a_signature_error():
    client = PddClient("http://gw.test/api/router", APP_KEY, "wrong", TOKEN)
    mount(client, pdd_gateway({}))
    with pytest.raises(PlatformError) as info:
        client.fetch_order("240318-1")
    assert info.value.kind == "auth" and "签名" in info.value.message


def test_pdd_rate_limit_is_retryable_later():
    client = pdd_client()
    mount(client, pdd_gateway({"pdd.order.information.get": lambda form: pdd_error(70031, "调用太频繁")}))
    with pytest.raises(PlatformError) as info:
        client.fetch_order("240318-1")
    assert (info.value.kind, info.value.retry_after) == ("rate_limit", 60.0)
    assert info.value.message == "拼多多接口限流，请 60 秒后重试"


def test_pdd_server_error_and_window():
    client = pdd_client()
    mount(client, lambda form: (503, "Service Unavailable"))
    with pytest.raises(PlatformError) as info:
        client.fetch_order("240318-1")
    assert info.value.kind == "server"
    start = dt.datetime(2024, 3, 18, tzinfo=UTC)
    with pytest.raises(PlatformError):
        list(client.fetch_changed(start, start + dt.timedelta(minutes=31)))


def test_pdd_ship_and_push_stock_parameters():
    client = pdd_client()
    gw = mount(client, pdd_gateway({
        "pdd.logistics.online.send": lambda form: {"logistics_online_send_response": {"is_success": True}},
        "pdd.goods.quantity.update": lambda form: {"goods_quantity_update_response": {"is_success": True}},
    }))
    client.ship("240318-422796379670125", "85", "YT9876543210")
    client.push_stock("SKU-B", 12, item_id="1001", sku_id="2002")
    ship, stock = gw.calls
    assert {k: ship[k] for k in ("type", "order_sn", "logistics_id", "tracking_number")} == {
        "type": "pdd.logistics.online.send", "order_sn": "240318-422796379670125", "logistics_id": "85",
        "tracking_number": "YT9876543210"}
    assert {k: stock[k] for k in ("type", "goods_id", "sku_id", "outer_id", "quantity", "update_type")} == {
        "type": "pdd.goods.quantity.update", "goods_id": "1001", "sku_id": "2002", "outer_id": "SKU-B",
        "quantity": "12", "update_type": "1"}


# --- JD gateway ---------------------------------------------------------------------------
def jd_gateway(routes):
    def respond(form):
        if form.get("app_key") != APP_KEY:
            return {"error_response": {"code": "18", "zh_desc": "无效的app_key", "en_desc": "Invalid app_key"}}
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\+0800", form["timestamp"])
        stamp = dt.datetime.strptime(form["timestamp"][:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=CN_TZ)
        assert fresh(stamp)
        if form.get("sign") != md5_wrapped(form, SECRET):
            return {"error_response": {"code": "18", "zh_desc": "签名无效", "en_desc": "Invalid signature"}}
        if form.get("access_token") != TOKEN:
            return {"error_response": {"code": "19", "zh_desc": "无效的access_token",
                                       "en_desc": "Invalid access_token"}}
        assert form["v"] == "2.0"
        return routes[form["method"]](form, json.loads(form["360buy_param_json"]))
    return respond


def jd_client(**kwargs) -> JdClient:
    return JdClient("http://gw.test/routerjson", APP_KEY, SECRET, kwargs.pop("token", TOKEN), **kwargs)


def jd_order(order_id, state="WAIT_SELLER_STOCK_OUT", **extra):
    order = {
        "orderId": order_id, "venderId": "10001", "orderState": state, "orderStateRemark": "等待出库",
        "orderTotalPrice": "299.00", "orderSellerPrice": "279.00", "orderPayment": "285.00", "freightPrice": "6.00",
        "sellerDiscount": "20.00", "orderStartTime": "2024-03-18 09:00:00", "paymentConfirmTime": "2024-03-18 09:01:00",
        "modified": "2024-03-18 09:30:00", "payType": "4-在线支付", "pin": "jd_buyer", "orderRemark": "周末送",
        "venderRemark": "", "consigneeInfo": {"fullname": "王五", "mobile": "13700137000", "province": "北京",
                                               "city": "北京市", "county": "朝阳区", "fullAddress": "北京朝阳区建国路 1 号"},
        "itemInfoList": [{"skuId": "100012345678", "outerSkuId": "SKU-C", "skuName": "蓝牙耳机 黑色",
                          "jdPrice": "299.00", "itemTotal": "1", "wareId": "100001"}],
    }
    order.update(extra)
    return order


def test_jd_search_sends_signed_param_json_and_pages_backwards():
    client = jd_client()
    pages = {1: [jd_order("300000000001")], 2: [jd_order("300000000002")]}

    def search(form, params):
        return {"jingdong_pop_order_search_responce": {"code": "0", "searchorderinfo_result": {
            "apiResult": {"success": True}, "orderInfoList": pages[int(params["page"])], "orderTotal": 150}}}

    gw = mount(client, jd_gateway({"jingdong.pop.order.search": search}))
    start = dt.datetime(2024, 3, 18, 1, 0, tzinfo=UTC)

    result = list(client.fetch_changed(start, start + dt.timedelta(hours=1)))

    raw = gw.calls[0]["360buy_param_json"]
    params = json.loads(raw)
    assert raw == json.dumps(params, ensure_ascii=False, separators=(",", ":"), sort_keys=True)  # compact
    assert [json.loads(c["360buy_param_json"])["page"] for c in gw.calls] == ["1", "2", "1"]
    assert [p.page_no for p in result] == [2, 1]
    assert (params["start_date"], params["end_date"]) == ("2024-03-18 09:00:00", "2024-03-18 10:00:00")
    assert params["order_state"] == ("WAIT_SELLER_STOCK_OUT,WAIT_GOODS_RECEIVE_CONFIRM,FINISHED_L,"
                                     "TRADE_CANCELED,LOCKED,POP_ORDER_PAUSE,PAUSE")
    assert (params["page_size"], params["sortType"], params["dateType"]) == ("100", 0, 0)
    assert "consigneeInfo" in params["optional_fields"]

    order = result[-1].orders[0]
    assert (order.platform_order_id, order.status, order.platform_status) == (
        "300000000001", "to_audit", "WAIT_SELLER_STOCK_OUT")
    assert order.modified_at == dt.datetime(2024, 3, 18, 1, 30, tzinfo=UTC)
    assert (order.paid_amount, order.goods_amount, order.discount_amount, order.post_fee) == (
        Decimal("285.00"), Decimal("299.00"), Decimal("20.00"), Decimal("6.00"))
    assert (order.receiver_name, order.receiver_phone, order.receiver_province, order.receiver_city,
            order.receiver_district, order.receiver_address) == (
        "王五", "13700137000", "北京", "北京市", "朝阳区", "建国路 1 号")  # the street part; the regions are separate fields
    line = order.lines[0]
    assert (line.platform_line_id, line.merchant_code, line.quantity, line.price) == (
        "100012345678", "SKU-C", 1, Decimal("299.00"))


@pytest.mark.parametrize("state, status, hold", [
    ("WAIT_SELLER_STOCK_OUT", "to_audit", None), ("WAIT_GOODS_RECEIVE_CONFIRM", "shipped", None),
    ("FINISHED_L", "completed", None), ("TRADE_CANCELED", "closed", None),
    ("LOCKED", "to_audit", "platform_locked"), ("POP_ORDER_PAUSE", "to_audit", "platform_locked"),
    ("PAUSE", "to_audit", "platform_locked"),
])
def test_jd_status_mapping(state, status, hold):
    order = jd_module.parse_order(jd_order("1", state))
    assert (order.status, order.hold_reason, order.platform_status) == (status, hold, state)


def test_jd_fetch_order():
    client = jd_client()
    gw = mount(client, jd_gateway({"jingdong.pop.order.get": lambda form, params: {
        "jingdong_pop_order_get_responce": {"code": "0", "orderDetailInfo": {
            "apiResult": {"success": True}, "orderInfo": jd_order(params["order_id"], "FINISHED_L")}}}}))
    order = client.fetch_order("300000000009")
    assert (order.platform_order_id, order.status) == ("300000000009", "completed")
    assert json.loads(gw.calls[0]["360buy_param_json"])["order_id"] == "300000000009"


@pytest.mark.parametrize("response, kind", [
    ({"error_response": {"code": "19", "zh_desc": "无效的access_token"}}, "auth"),
    ({"error_response": {"code": "4", "zh_desc": "调用次数超限"}}, "rate_limit"),
    ({"error_response": {"code": "15", "zh_desc": "不存在的方法名", "en_desc": "Invalid Method"}}, "bad_request"),
])
def test_jd_error_kinds(response, kind):
    client = jd_client()
    mount(client, jd_gateway({"jingdong.pop.order.get": lambda form, params: response}))
    with pytest.raises(PlatformError) as info:
        client.fetch_order("1")
    assert info.value.kind == kind
    if kind == "rate_limit":
        assert info.value.retry_after == 60.0


def test_jd_expired_token_is_auth_and_5xx_is_server():
    client = jd_client(token="old")
    mount(client, jd_gateway({}))
    with pytest.raises(PlatformError) as info:
        client.fetch_order("1")
    assert (info.value.kind, info.value.code) == ("auth", "19")
    client = jd_client()
    mount(client, lambda form: (500, "{}"))
    with pytest.raises(PlatformError) as info:
        client.fetch_order("1")
    assert info.value.kind == "server"


def test_jd_ship_and_push_stock_parameters():
    client = jd_client()
    gw = mount(client, jd_gateway({
        "jingdong.pop.order.shipment": lambda form, params: {"jingdong_pop_order_shipment_responce": {
            "code": "0", "sopjosshipment_result": {"success": True}}},
        "jingdong.stock.write.updateSkuStock": lambda form, params: {
            "jingdong_stock_write_updateSkuStock_responce": {"code": "0", "success": True}},
    }))
    client.ship("300000000001", "463", "JDV000123456789")
    client.push_stock("SKU-C", 0, sku_id="100012345678")
    ship, stock = (json.loads(c["360buy_param_json"]) for c in gw.calls)
    assert ship == {"orderId": "300000000001", "logiCoprId": "463", "logiNo": "JDV000123456789"}
    assert stock == {"skuId": "100012345678", "outerId": "SKU-C", "stockNum": 0}
    assert [c["method"] for c in gw.calls] == ["jingdong.pop.order.shipment", "jingdong.stock.write.updateSkuStock"]


def test_pdd_and_jd_ship_whole_orders_only():
    for client, pid in ((pdd_client(), "240318-1"), (jd_client(), "300000000001")):
        gw = mount(client, lambda form: (500, "must not be called"))
        assert not client.ships_parts(["1000000000001", "1000000000002"])
        with pytest.raises(PlatformError) as info:
            client.ship(pid, "85", "YT1", line_ids=["1000000000001"])
        assert info.value.kind == "bad_request" and "按整单发货" in info.value.message and pid in info.value.message
        assert gw.calls == []


def test_jd_ship_failure_is_reported():
    client = jd_client()
    mount(client, jd_gateway({"jingdong.pop.order.shipment": lambda form, params: {
        "jingdong_pop_order_shipment_responce": {"code": "0", "sopjosshipment_result": {
            "success": False, "chineseErrCode": "订单已出库"}}}}))
    with pytest.raises(PlatformError) as info:
        client.ship("1", "463", "JDV1")
    assert "订单已出库" in info.value.message


# --- JSON without loss, and orders listed unparsed (Deferred) ---------------------------------
def test_ids_above_2_53_and_beyond_64_bits_come_out_as_their_exact_digits():
    from app.platforms.common import loads, text

    small = loads(f'{{"tid":{BIG_TID},"oid":[{BIG_OID}],"n":1}}'.encode())
    assert small["tid"] == BIG_TID and text(small["tid"]) == "4053129948573152889"
    assert text(small["oid"][0]) == "4053129948573152890"
    huge = 2 ** 64 + 12345  # beyond 64 bits: orjson would make it a float
    parsed = loads(f'{{"tid":{huge},"payment":12.30,"s":"x"}}'.encode())
    assert text(parsed["tid"]) == str(huge) and parsed["payment"] == Decimal("12.30")


def test_pdd_money_sent_as_json_numbers_is_exact():
    from app.platforms.common import loads, money

    payload = loads(b'{"a":59.9,"b":0.1,"c":1234567890.07,"d":100,"e":0.0}')
    assert [money(payload[k]) for k in "abcde"] == [Decimal("59.90"), Decimal("0.10"), Decimal("1234567890.07"),
                                                     Decimal("100.00"), Decimal("0.00")]
    with pytest.raises(PlatformError):
        money(1.5e15)  # beyond what a float can carry to the cent


def test_taobao_trade_with_tid_above_2_53_parses_the_same_deferred_or_not():
    """Listed unparsed, an order keeps its exact id and its payload's digest; parsing it
    later gives the same order as parsing it at once, and only then is fullinfo called."""
    def fullinfo(form):
        trade = tb_trade(BIG_TID, buyer_message="请发顺丰", seller_memo="已核对地址", has_buyer_message=True)
        return {"trade_fullinfo_get_response": {"trade": trade}}

    def fetch(defer):
        client = taobao_client()
        client.defer_parsing = defer
        routes = increment_routes({1: [tb_trade(BIG_TID, has_buyer_message=True), tb_trade(1001)]}, total=2,
                                  **{"taobao.trade.fullinfo.get": fullinfo})
        gw = mount(client, top_gateway(routes))
        [page] = list(client.fetch_changed(*WINDOW))
        return page.orders, gw

    eager, gw_eager = fetch(False)
    deferred, gw_deferred = fetch(True)
    assert len(gw_eager.calls) == 2 and len(gw_deferred.calls) == 1  # no fullinfo until parsed
    assert [d.platform_order_id for d in deferred] == ["4053129948573152889", "1001"]
    assert [d.raw_digest for d in deferred] == [o.raw_digest for o in eager]
    assert all(len(d.raw_digest) == 32 for d in deferred)
    parsed = [d.parse() for d in deferred]
    assert [c["method"] for c in gw_deferred.calls][1:] == ["taobao.trade.fullinfo.get"]
    assert parsed == eager and [p.raw_digest for p in parsed] == [o.raw_digest for o in eager]
    assert parsed[0].lines[0].platform_line_id == "4053129948573152890"


def test_a_changed_payload_has_another_raw_digest():
    client = taobao_client()
    mount(client, top_gateway(increment_routes({1: [tb_trade(1001), tb_trade(1002, receiver_zip="310001")]},
                                               total=2)))
    [page] = list(client.fetch_changed(*WINDOW))
    a, b = page.orders
    assert a.raw_digest != b.raw_digest
    client2 = taobao_client()
    mount(client2, top_gateway(increment_routes({1: [tb_trade(1001)]}, total=1)))
    [again] = list(client2.fetch_changed(*WINDOW))
    assert again.orders[0].raw_digest == a.raw_digest


def test_pdd_deferred_order_parses_to_the_same_order():
    def listing(defer):
        client = pdd_client()
        client.defer_parsing = defer
        mount(client, pdd_gateway({"pdd.order.number.list.increment.get": lambda form: {
            "order_sn_increment_get_response": {"total_count": 1, "order_sn_list": [
                pdd_order("240318-422796379670121", pay_amount=35.8, goods_amount=39.8)]}}}))
        start = dt.datetime(2024, 3, 18, 2, 0, tzinfo=UTC)
        [page] = list(client.fetch_changed(start, start + dt.timedelta(minutes=30)))
        return page.orders[0]

    eager, deferred = listing(False), listing(True)
    assert deferred.platform_order_id == "240318-422796379670121"
    assert deferred.parse() == eager and eager.paid_amount == Decimal("35.80")
