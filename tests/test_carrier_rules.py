"""快递规则 (services/carrier_rules.py): each kind of condition, priority, the default rule,
applied on 审单 and by the batch action 按规则选快递, the admin page and the CSV import
with its zh errors."""
from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import CarrierRule, OrderEvent, Shop
from app.services import batch_actions, carrier_rules
from app.services.errors import ValidationError
from tests.logistics_helpers import carrier_id, make_order, order, user_id


def add_rule(name, carrier, priority=100, **kw) -> int:
    rule = CarrierRule(name=name, priority=priority, carrier_id=carrier_id(carrier), active=True, **kw)
    carrier_rules.validate_rule(rule)
    db.session.add(rule)
    db.session.commit()
    return rule.id


def standard_rules() -> dict[str, int]:
    shop_c = db.session.scalar(select(Shop.id).where(Shop.name == "C店-京东"))
    return {
        "remote": add_rule("新疆西藏走EMS", "EMS", 10, provinces="新疆、西藏"),
        "heavy": add_rule("3公斤以上走德邦", "DBKD", 20, min_weight_kg=Decimal("3")),
        "dear": add_rule("500元以上走顺丰", "SF", 30, min_amount=Decimal("500")),
        "shop": add_rule("京东店走京东", "JD", 40, shop_id=shop_c),
        "sku": add_rule("白色款走圆通", "YTO", 50, merchant_codes="TS-WHT-M"),
        "default": add_rule("默认中通", "ZTO", 1, is_default=True),  # tried last whatever its priority
    }


def test_each_kind_of_rule_and_the_default_choose_the_carrier_on_audit(ctx, ids):
    rules = standard_rules()
    cases = {
        "remote": make_order("CR-XJ", province="新疆维吾尔自治区"),
        "heavy": make_order("CR-HEAVY", lines=[("TS-BLK-L", 12)]),  # 12 × 0.3 kg = 3.6 kg
        "dear": make_order("CR-DEAR", amount="599.00"),
        "shop": make_order("CR-SHOPC", shop="C"),
        "sku": make_order("CR-WHITE", lines=[("TS-BLK-L", 1), ("TS-WHT-M", 1)]),
        "default": make_order("CR-PLAIN"),
    }
    expected = {"remote": "EMS", "heavy": "DBKD", "dear": "SF", "shop": "JD", "sku": "YTO", "default": "ZTO"}
    for kind, oid in cases.items():
        o = order(oid)
        assert o.status == "to_ship"
        assert o.carrier.code == expected[kind], kind
        assert o.carrier_rule_id == rules[kind], kind
        ev = db.session.scalars(select(OrderEvent).where(OrderEvent.order_id == oid,
                                                         OrderEvent.field == "carrier_id")).one()
        assert ev.note.startswith(f"审单时按快递规则「{o.carrier_rule.name}」"), ev.note
        assert ev.source == "rule"
    note = db.session.scalar(select(OrderEvent.note).where(OrderEvent.order_id == cases["heavy"],
                                                           OrderEvent.field == "carrier_id"))
    assert "重量 3.6 kg" in note


def test_priority_decides_when_several_rules_match_and_a_hand_picked_carrier_stays(ctx, ids):
    standard_rules()
    # Xinjiang and heavy: the Xinjiang rule has the smaller priority number.
    both = make_order("CR-BOTH", province="新疆维吾尔自治区", lines=[("TS-BLK-L", 20)])
    assert order(both).carrier.code == "EMS"
    # A carrier chosen by hand before audit is kept.
    manual = make_order("CR-MANUAL", province="西藏自治区", carrier="SF")
    assert order(manual).carrier.code == "SF" and order(manual).carrier_rule_id is None


def test_no_rule_matching_leaves_the_carrier_and_the_batch_action_says_why(ctx, ids):
    add_rule("只管新疆", "EMS", 10, provinces="新疆")
    oid = make_order("CR-NONE")
    assert order(oid).carrier_id is None
    result = batch_actions.run("carrier_rules", [oid], {}, user_id=user_id("ops"))
    assert result["failed"][0]["message"] == "订单 CR-NONE 没有匹配的快递规则（也没有启用的默认规则）"


def test_batch_action_rechooses_after_a_rule_change_and_refuses_with_a_tracking_number(ctx, ids):
    rules = standard_rules()
    oid = make_order("CR-RE")
    numbered = make_order("CR-NUM", tracking="ZT0000001")
    assert order(oid).carrier.code == "ZTO"
    db.session.get(CarrierRule, rules["default"]).carrier_id = carrier_id("YUNDA")
    db.session.commit()
    result = batch_actions.run("carrier_rules", [oid, numbered], {}, user_id=user_id("ops"))
    assert result["ok"] == [oid]
    assert order(oid).carrier.code == "YUNDA"
    assert result["failed"][0]["message"] == "订单 CR-NUM 已有快递单号 ZT0000001，请先回收单号再改快递公司"
    again = batch_actions.run("carrier_rules", [oid], {}, user_id=user_id("ops"))
    assert again["skipped"][0]["message"] == "订单 CR-RE 的快递公司已是规则「默认中通」选的"


def test_rules_are_validated_with_zh_messages(ctx, ids):
    add_rule("默认中通", "ZTO", is_default=True)
    with pytest.raises(ValidationError) as err:
        add_rule("第二个默认", "YTO", is_default=True)
    assert err.value.message == "已有启用的默认规则「默认中通」，只能有一条"
    db.session.rollback()
    with pytest.raises(ValidationError) as err:
        add_rule("带条件的默认", "YTO", is_default=True, provinces="浙江")
    assert "默认规则不能带条件" in err.value.message
    db.session.rollback()
    with pytest.raises(ValidationError) as err:
        add_rule("反了", "YTO", min_weight_kg=Decimal("5"), max_weight_kg=Decimal("1"))
    assert err.value.message == "「重量起（kg）」（5）必须小于「重量止（kg）」（1）"


def test_import_with_an_unknown_carrier_code_names_the_row_and_saves_nothing(ctx, ids):
    text = ("规则名称,优先级,快递公司编码,目的省份,重量起（kg）,重量止（kg）,金额起,金额止,店铺,商家编码,默认规则,启用,备注\n"
            "新疆走EMS,10,EMS,新疆、西藏,,,,,,,,,\n"
            "某某快递,20,XYZ,,,,,,,,,,\n")
    with pytest.raises(ValidationError) as err:
        carrier_rules.import_rules(text)
    assert err.value.message.startswith("第 3 行「快递公司编码」未知：XYZ（可用：")
    assert db.session.scalar(select(func.count()).select_from(CarrierRule)) == 0
    header, first, _ = text.split("\n", 2)
    bad_shop = "\n".join([header, first, "A店顺丰,20,sf,,,,,,没有这个店,,,,"]) + "\n"
    with pytest.raises(ValidationError) as err:
        carrier_rules.import_rules(bad_shop)
    assert err.value.message == "第 3 行「店铺」不存在：没有这个店"
    good = "\n".join([header, first, "A店顺丰,20,sf,,,,,,A店-淘宝,,,,"]) + "\n"
    assert carrier_rules.import_rules(good)["saved"] == 2
    rule = db.session.scalar(select(CarrierRule).where(CarrierRule.name == "A店顺丰"))
    assert rule.carrier.code == "SF" and rule.shop.name == "A店-淘宝"


def test_admin_page_adds_a_rule_and_refuses_a_bad_one_in_chinese(app, login):
    admin = login("admin")
    page = admin.get("/carrierruleview/list/")
    assert page.status_code == 200 and "快递规则" in page.get_data(as_text=True)
    with app.app_context():
        ems = carrier_id("EMS")
    resp = admin.post("/carrierruleview/add", data={"name": "偏远地区", "priority": "5", "carrier": str(ems),
                                                     "provinces": "新疆，西藏", "active": "y"},
                      follow_redirects=True)
    assert resp.status_code == 200
    with app.app_context():
        rule = db.session.scalar(select(CarrierRule).where(CarrierRule.name == "偏远地区"))
        assert rule is not None and rule.provinces == "新疆、西藏"
    admin.post("/carrierruleview/add", data={"name": "反了", "priority": "5", "carrier": str(ems),
                                              "min_amount": "100", "max_amount": "10", "active": "y"})
    with admin.client.session_transaction() as session:
        assert ("danger", "「金额起」（100）必须小于「金额止」（10）") in session.get("_flashes", [])
    with app.app_context():
        assert db.session.scalar(select(CarrierRule).where(CarrierRule.name == "反了")) is None
    # 客服 may not edit rules
    assert login("cs").get("/carrierruleview/add").status_code in (302, 403)


def test_a_carrier_changed_by_hand_forgets_its_rule(ctx, ids):
    from app.services import orders

    standard_rules()
    oid = make_order("CR-HAND")
    assert order(oid).carrier_rule is not None
    orders.edit_order(oid, {"carrier_id": carrier_id("SF")}, user_id=user_id("ops"))
    assert order(oid).carrier.code == "SF" and order(oid).carrier_rule_id is None
