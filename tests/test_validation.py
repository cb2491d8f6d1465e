"""Bad input gets a zh message naming the field, and nothing is half-written."""
from __future__ import annotations

import pytest

from app.extensions import db
from app.models import Order, OrderEvent, Shop
from app.services import orders
from app.services.errors import ValidationError

ORDER_A1 = "3000000000000000001"


def _payload(**over):
    data = {"platform_order_id": "NEW-1", "status": "to_audit", "receiver_phone": "13811112222",
            "lines": [{"platform_line_id": "1", "merchant_code": "TS-BLK-L", "title": "T恤", "quantity": 1,
                       "price": "79.00", "paid_amount": "79.00"}]}
    data.update(over)
    return data


@pytest.mark.parametrize("over,needle", [
    ({"lines": [{"title": "T恤", "quantity": -2, "price": "1"}]}, "第 1 行商品「数量」不能为负数"),
    ({"lines": [{"title": "T恤", "quantity": "1.5", "price": "1"}]}, "「数量」必须是整数"),
    ({"paid_amount": "12,3x"}, "「实付金额」金额格式不正确"),
    ({"post_fee": "-1"}, "「运费」不能为负数"),
    ({"status": "lost_in_space"}, "「订单状态」的值无效"),
    ({"buyer_message": "好" * 2001}, "「买家留言」过长"),
    ({"receiver_phone": "12345"}, "「收货人手机」号码格式不正确"),
    ({"platform_order_id": " "}, "「订单号」不能为空"),
    ({"flag": 7}, "「旗帜」必须是 0–5 的整数"),
])
def test_create_order_names_the_bad_field(ctx, ids, over, needle):
    shop = db.session.get(Shop, ids["shops"]["A"])
    before = db.session.query(Order).count()
    with pytest.raises(ValidationError) as err:
        orders.create_order(shop, _payload(**over))
    db.session.rollback()
    assert needle in err.value.message
    assert db.session.query(Order).count() == before


def test_money_is_parsed_exactly(ctx, ids):
    shop = db.session.get(Shop, ids["shops"]["A"])
    order = orders.create_order(shop, _payload(paid_amount="¥1,234.565", post_fee="0.1"))
    db.session.commit()
    assert str(order.paid_amount) == "1234.57" and str(order.post_fee) == "0.10"


def test_unknown_merchant_code_is_kept_and_held(ctx, ids):
    shop = db.session.get(Shop, ids["shops"]["A"])
    data = _payload()
    data["lines"][0]["merchant_code"] = "NO-SUCH-CODE"
    order = orders.create_order(shop, data)
    db.session.commit()
    assert order.lines[0].merchant_code == "NO-SUCH-CODE" and order.lines[0].sku_id is None
    assert order.is_held and order.active_hold_reasons == ["unmatched_sku"]


@pytest.mark.parametrize("body,status,needle", [
    ({"seller_memo": "好", "flag": 9}, 422, "旗帜"),
    ({"seller_memo": "长" * 2001}, 422, "卖家备注"),
    ({"seller_memo": "好", "carrier_id": 99999}, 422, "快递公司"),
    ({"seller_memo": "好", "status": "completed"}, 422, "status"),
    ({"seller_memo": "好", "receiver_phone": "abc"}, 422, "收货人手机"),
])
def test_api_edit_names_the_field_and_writes_nothing(app, ids, login, body, status, needle):
    oid = ids["orders"][ORDER_A1]
    with app.app_context():
        events_before = db.session.query(OrderEvent).filter_by(order_id=oid).count()
    resp = login("cs").put(f"/api/v1/order/{oid}", json=body)
    assert resp.status_code == status, resp.get_json()
    assert needle in resp.json["message"]
    with app.app_context():
        order = db.session.get(Order, oid)
        assert order.seller_memo is None and order.status == "to_audit" and order.flag == 0
        assert db.session.query(OrderEvent).filter_by(order_id=oid).count() == events_before


def test_form_edit_with_bad_value_shows_zh_error_and_saves_nothing(app, ids, login):
    oid = ids["orders"][ORDER_A1]
    resp = login("ops").post(f"/orderview/edit/{oid}", data={"seller_memo": "好" * 2001, "flag": "1"},
                             follow_redirects=True)
    assert "「卖家备注」过长" in resp.get_data(as_text=True)
    with app.app_context():
        order = db.session.get(Order, oid)
        assert order.seller_memo is None and order.flag == 0


def test_sku_with_negative_cost_is_refused_by_name(app, login):
    resp = login("ops").post("/api/v1/sku/", json={"product": 1, "merchant_code": "NEG", "name": "x",
                                                   "cost_price": -1, "sale_price": 2})
    assert resp.status_code == 422 and "成本价" in resp.json["message"]


def test_transition_api_names_illegal_moves(app, ids, login):
    oid = ids["orders"]["3000000000000000003"]  # pending payment
    resp = login("ops").post(f"/api/v1/order/{oid}/transition", json={"action": "audit"})
    assert resp.status_code == 409 and "待付款" in resp.json["message"]
    resp = login("ops").post(f"/api/v1/order/{oid}/transition", json={"action": "fly"})
    assert resp.status_code == 403 or "未知的订单操作" in resp.json["message"]
