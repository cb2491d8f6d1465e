"""The state machine accepts every legal transition and refuses every illegal one."""
from __future__ import annotations

import itertools

import pytest

from app.extensions import db
from app.models import ORDER_STATUSES, Order, OrderEvent
from app.services import order_status
from app.services.errors import DomainError, IllegalTransition, ValidationError

LEGAL = {
    ("pending_payment", "pay"), ("to_audit", "audit"), ("to_ship", "unaudit"), ("to_ship", "ship"),
    ("to_audit", "ship_on_platform"), ("to_ship", "ship_on_platform"), ("shipped", "complete"),
    ("pending_payment", "cancel"), ("to_audit", "cancel"), ("to_ship", "cancel"),
    ("to_audit", "refund_close"), ("to_ship", "refund_close"), ("shipped", "refund_close"),
}
TARGET = {"pay": "to_audit", "audit": "to_ship", "unaudit": "to_audit", "ship": "shipped",
          "ship_on_platform": "shipped", "complete": "completed", "cancel": "closed", "refund_close": "closed"}


def _order(ids, status):
    order = db.session.get(Order, ids["orders"]["3000000000000000001"])
    order.status = status
    order.carrier_id = ids["carrier"]
    order.tracking_number = "SF1234567890"
    db.session.flush()
    return order


def test_the_table_covers_every_status_and_action():
    assert set(order_status.TRANSITIONS) == set(TARGET)
    assert {s for s, _ in LEGAL} | {"completed", "closed"} == set(ORDER_STATUSES)


@pytest.mark.parametrize("status,action", sorted(itertools.product(ORDER_STATUSES, TARGET)))
def test_transition(ctx, ids, status, action):
    order = _order(ids, status)
    before = db.session.query(OrderEvent).filter_by(order_id=order.id).count()
    kwargs = {"source": "sync", "reason": "买家取消", "user_id": None}
    if (status, action) in LEGAL:
        order_status.apply(order, action, **kwargs)
        db.session.commit()
        assert order.status == TARGET[action]
        ev = db.session.query(OrderEvent).filter_by(order_id=order.id).order_by(OrderEvent.id.desc()).first()
        assert (ev.action, ev.old_value, ev.new_value, ev.source) == (action, status, TARGET[action], "sync")
        assert db.session.query(OrderEvent).filter_by(order_id=order.id).count() == before + 1
    else:
        with pytest.raises(IllegalTransition) as err:
            order_status.apply(order, action, **kwargs)
        assert "不能" in err.value.message
        assert order.status == status


def test_held_order_cannot_be_audited_or_shipped(ctx, ids):
    order = _order(ids, "to_audit")
    order_status.hold(order, "out_of_stock", note="等待补货")
    with pytest.raises(IllegalTransition, match="缺货"):
        order_status.apply(order, "audit")
    order_status.release(order, "out_of_stock")
    order_status.apply(order, "audit")
    assert order.status == "to_ship" and not order.is_held


def test_ship_needs_carrier_and_tracking_number(ctx, ids):
    order = _order(ids, "to_ship")
    order.tracking_number = " "
    with pytest.raises(ValidationError, match="快递单号"):
        order_status.apply(order, "ship")
    order.carrier_id = None
    with pytest.raises(ValidationError, match="快递公司"):
        order_status.apply(order, "ship")


def test_user_cannot_fake_a_platform_shipment(ctx, ids):
    order = _order(ids, "to_audit")
    with pytest.raises(IllegalTransition):
        order_status.apply(order, "ship_on_platform", source="user")


def test_closing_needs_a_reason_and_releases_holds(ctx, ids):
    order = _order(ids, "to_audit")
    order_status.hold(order, "manual")
    with pytest.raises(ValidationError, match="原因"):
        order_status.apply(order, "cancel", reason="")
    order_status.apply(order, "cancel", reason="买家取消")
    assert order.status == "closed" and order.close_reason == "买家取消"
    assert not order.is_held and all(h.released_at for h in order.holds)


def test_hold_only_on_to_audit_or_to_ship(ctx, ids):
    order = _order(ids, "shipped")
    with pytest.raises(IllegalTransition, match="只有待审核或待发货"):
        order_status.hold(order, "manual")


def test_unknown_action_and_hold_reason_are_named(ctx, ids):
    order = _order(ids, "to_audit")
    with pytest.raises(DomainError, match="未知的订单操作"):
        order_status.apply(order, "teleport")
    with pytest.raises(DomainError, match="未知的挂起原因"):
        order_status.hold(order, "bored")


def test_customer_spend_follows_payment_and_closing(ctx, ids):
    order = db.session.get(Order, ids["orders"]["3000000000000000003"])  # pending payment, 158.00
    customer = order.customer
    before = customer.total_spent
    order_status.apply(order, "pay", source="sync")
    assert customer.total_spent == before + order.paid_amount
    order_status.apply(order, "cancel", reason="买家取消")
    assert customer.total_spent == before


@pytest.mark.parametrize("status,action", [("pending_payment", "pay"), ("shipped", "complete"),
                                           ("to_audit", "ship_on_platform")])
def test_users_cannot_fake_what_happens_on_the_platform(ctx, ids, status, action):
    order = _order(ids, status)
    with pytest.raises(IllegalTransition, match="平台同步或导入"):
        order_status.apply(order, action, source="user")
    assert order.status == status


def test_api_refuses_user_payment(app, ids, login):
    oid = ids["orders"]["3000000000000000003"]
    resp = login("cs").post(f"/api/v1/order/{oid}/transition", json={"action": "pay"})
    assert resp.status_code == 409
    with app.app_context():
        assert db.session.get(Order, oid).status == "pending_payment"
