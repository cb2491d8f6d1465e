"""电子面单 against the sandbox (app/sandbox/ewaybill.py): numbers issued in each carrier's
format, idempotent per order, a cancelled number reused, signature / pool / 5xx errors in
zh, and duplicate tracking numbers refused wherever we set one."""
from __future__ import annotations

import json
import re
import time

import pytest
import requests
from sqlalchemy import func, select

from app.extensions import db
from app.models import EwaybillAccount, Order, OrderEvent, Waybill
from app.platforms.base import PlatformError
from app.platforms.ewaybill import EwaybillClient, Party, sign
from app.sandbox import SandboxState, serve_in_thread
from app.sandbox.ewaybill import demo_key, demo_secret
from app.services import batch_actions, ewaybill, orders
from app.services.errors import ValidationError
from tests.logistics_helpers import carrier_id, make_order, on_hand, order, user_id

RECEIVER = Party("张三", "13700009999", "浙江省杭州市西湖区文三路1号")
SENDER = Party("杭州仓", "0571-88886666", "浙江省杭州市余杭区良睦路1号")


@pytest.fixture
def sandbox():
    state = SandboxState(seed=5, rate_per_minute=0)
    base, stop = serve_in_thread(state)
    yield base, state
    stop()


def add_account(base: str, code: str = "ZTO", secret: str | None = None) -> int:
    acc = EwaybillAccount(carrier_id=carrier_id(code), endpoint=f"{base}/ewaybill/label", app_key=demo_key(code),
                          secret=secret or demo_secret(code), partner_id=f"SANDBOX-{code}", active=True)
    ewaybill.validate_account(acc)
    db.session.add(acc)
    db.session.commit()
    return acc.id


def zto_orders(n: int, prefix: str = "EW") -> list[int]:
    return [make_order(f"{prefix}{i:03d}", carrier="ZTO") for i in range(n)]


def test_numbers_are_issued_in_the_carriers_format_once_per_order(ctx, ids, sandbox):
    base, _ = sandbox
    add_account(base, "ZTO")
    add_account(base, "SF")
    batch = zto_orders(3)
    sf_order = make_order("EW-SF", carrier="SF")
    result = batch_actions.run("waybill", batch + [sf_order], {}, user_id=user_id("warehouse"))
    assert sorted(result["ok"]) == sorted(batch + [sf_order]) and not result["failed"]
    numbers = [order(i).tracking_number for i in batch]
    assert all(re.fullmatch(r"78\d{12}", n) for n in numbers) and len(set(numbers)) == 3
    assert re.fullmatch(r"SF\d{13}", order(sf_order).tracking_number)
    # written through update_fields (an edit event) and recorded as issued
    ev = db.session.scalars(select(OrderEvent).where(OrderEvent.order_id == batch[0],
                                                     OrderEvent.field == "tracking_number")).one()
    assert (ev.new_value, ev.note) == (numbers[0], "电子面单取号（中通快递）")
    assert db.session.scalar(select(func.count()).select_from(Waybill).where(Waybill.status == "issued")) == 4
    # asked again: nothing new, each order keeps its number
    again = batch_actions.run("waybill", batch, {}, user_id=user_id("warehouse"))
    assert again["ok"] == [] and len(again["skipped"]) == 3
    assert again["skipped"][0]["message"] == f"订单 EW000 已有快递单号 {numbers[0]}"
    # the client is idempotent by our order reference too
    acc = db.session.scalar(select(EwaybillAccount).where(EwaybillAccount.carrier_id == carrier_id("ZTO")))
    assert ewaybill.client_for(acc).issue(f"OMS{batch[1]}", RECEIVER, SENDER) == numbers[1]


def test_a_cancelled_number_goes_back_to_the_pool_and_is_issued_again(ctx, ids, sandbox):
    base, state = sandbox
    add_account(base, "ZTO")
    first, second = zto_orders(2)
    batch_actions.run("waybill", [first], {}, user_id=user_id("warehouse"))
    number = order(first).tracking_number
    result = batch_actions.run("cancel_waybill", [first], {}, user_id=user_id("warehouse"))
    assert result["ok"] == [first]
    assert order(first).tracking_number is None
    wb = db.session.scalars(select(Waybill).where(Waybill.order_id == first)).one()
    assert wb.status == "cancelled" and wb.cancelled_at is not None
    assert list(state.ewaybill.accounts[demo_key("ZTO")].recycled) == [number]
    batch_actions.run("waybill", [second], {}, user_id=user_id("warehouse"))
    assert order(second).tracking_number == number  # the recycled number, reused
    # a typed number is not an e-waybill number: nothing to give back
    typed = make_order("EW-TYPED", carrier="ZTO", tracking="78999999999999")
    failed = batch_actions.run("cancel_waybill", [typed], {}, user_id=user_id("warehouse"))["failed"]
    assert failed[0]["message"].startswith("订单 EW-TYPED 的快递单号 78999999999999 不是电子面单取的号，不能回收")
    # a shipped order keeps its number
    batch_actions.run("ship", [second], {}, user_id=user_id("warehouse"))
    failed = batch_actions.run("cancel_waybill", [second], {}, user_id=user_id("warehouse"))["failed"]
    assert "已发货的订单不能回收单号" in failed[0]["message"]


def test_bad_signature_empty_pool_and_server_errors_are_clear_and_write_nothing(ctx, ids, sandbox):
    base, _ = sandbox
    add_account(base, "ZTO", secret="wrong-secret")
    [oid] = zto_orders(1)
    failed = batch_actions.run("waybill", [oid], {}, user_id=user_id("warehouse"))["failed"]
    assert failed[0]["message"] == "订单 EW000 取号失败：电子面单签名验证失败，请检查账号密钥（403：签名验证失败）"
    assert order(oid).tracking_number is None
    assert db.session.scalar(select(func.count()).select_from(Waybill)) == 0

    # the sandbox checks the signature over the exact param string, like the real service
    param = json.dumps({"kuaidicom": "zhongtong", "orderId": "X1", "recMan": {"name": "a", "printAddr": "b"}})
    t = str(int(time.time() * 1000))
    good = sign(param, t, demo_key("ZTO"), demo_secret("ZTO"))
    form = {"method": "order", "key": demo_key("ZTO"), "t": t, "param": param + " ", "sign": good}
    body = requests.post(f"{base}/ewaybill/label", data=form, timeout=5).json()
    assert (body["success"], body["code"]) == (False, 403)
    old = str(int(time.time() * 1000) - 3_600_000)
    body = requests.post(f"{base}/ewaybill/label", data=dict(form, param=param, t=old,
                         sign=sign(param, old, demo_key("ZTO"), demo_secret("ZTO"))), timeout=5).json()
    assert body["code"] == 402

    client = EwaybillClient(f"{base}/ewaybill/label", demo_key("ZTO"), demo_secret("ZTO"), "zhongtong")
    requests.put(f"{base}/_sandbox/ewaybill/accounts/{demo_key('ZTO')}", json={"balance": 0}, timeout=5)
    with pytest.raises(PlatformError) as err:
        client.issue("NEW-1", RECEIVER, SENDER)
    assert err.value.kind == "pool" and err.value.message.startswith("电子面单余额不足")
    requests.put(f"{base}/_sandbox/ewaybill/accounts/{demo_key('ZTO')}", json={"balance": 10, "burst_5xx": 1},
                 timeout=5)
    with pytest.raises(PlatformError) as err:
        client.issue("NEW-2", RECEIVER, SENDER)
    assert err.value.kind == "server" and "HTTP 503" in err.value.message
    assert re.fullmatch(r"78\d{12}", client.issue("NEW-2", RECEIVER, SENDER))
    wrong_carrier = EwaybillClient(f"{base}/ewaybill/label", demo_key("ZTO"), demo_secret("ZTO"), "shunfeng")
    with pytest.raises(PlatformError) as err:
        wrong_carrier.issue("NEW-3", RECEIVER, SENDER)
    assert err.value.message.startswith("快递公司与电子面单账号不符")


def test_account_needs_an_allowed_host_and_a_carrier_with_a_kuaidi100_code(ctx, ids):
    acc = EwaybillAccount(carrier_id=carrier_id("ZTO"), endpoint="https://evil.example.com/label",
                          app_key="k", secret="s")
    with pytest.raises(ValidationError) as err:
        ewaybill.validate_account(acc)
    assert err.value.message.startswith("「服务地址」的主机 evil.example.com 不在允许列表中")
    [oid] = zto_orders(1)
    failed = batch_actions.run("waybill", [oid], {}, user_id=user_id("warehouse"))["failed"]
    assert failed[0]["message"] == "快递公司「中通快递」没有电子面单账号，请先在「电子面单账号」中添加"


def test_a_duplicate_tracking_number_is_refused_in_chinese_wherever_it_is_set(app, login, ids):
    with app.app_context():
        first = make_order("DUP-1", carrier="ZTO", tracking="78100000000001")
        second = make_order("DUP-2", carrier="ZTO")
        other_carrier = make_order("DUP-3", carrier="SF")
        # the service edit path (grid, form, import all go through update_fields)
        with pytest.raises(ValidationError) as err:
            orders.edit_order(second, {"tracking_number": "78100000000001"}, user_id=user_id("ops"))
        assert err.value.message == "快递单号 78100000000001 已用于订单 DUP-1，订单 DUP-2 不能再用"
        assert order(second).tracking_number is None
        # another carrier's number space is its own
        orders.edit_order(other_carrier, {"tracking_number": "78100000000001"}, user_id=user_id("ops"))
        assert order(other_carrier).tracking_number == "78100000000001"
    # the REST API (the grid's inline edit uses the same path) answers 422 with the zh message
    resp = login("ops").put(f"/api/v1/order/{second}", json={"tracking_number": "78100000000001"})
    assert resp.status_code == 422 and "已用于订单 DUP-1" in resp.json["message"]
    # an order that got the same number some other way (e.g. synced) is not shipped
    with app.app_context():
        db.session.get(Order, second).tracking_number = "78100000000001"
        db.session.commit()
        before = on_hand("TS-BLK-L")
        result = batch_actions.run("ship", [second], {}, user_id=user_id("warehouse"))
        assert result["failed"][0]["message"] == "快递单号 78100000000001 已用于订单 DUP-1，订单 DUP-2 不能再用"
        assert order(second).status == "to_ship" and on_hand("TS-BLK-L") == before
