"""A small, fixed 店群 for the tests: three shops, one user per role, a few orders.

Users (password PASSWORD): ops/finance/warehouse see all shops; cs and ops_a
see shop A only; cs_b sees shop B only.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from app.extensions import appbuilder, db
from app.models import Carrier, Product, Shop, Sku, Warehouse
from app.services import order_status, orders, stock
from app.services.setup import ROLE_CS, ROLE_FINANCE, ROLE_OPS, ROLE_WAREHOUSE

PASSWORD = "Test-pass-123"
ADMIN_PASSWORD = "Admin-pass-123"
UTC = dt.timezone.utc

USERS = {
    "ops": (ROLE_OPS, None),
    "ops_a": (ROLE_OPS, ["A店-淘宝"]),
    "cs": (ROLE_CS, ["A店-淘宝"]),
    "cs_b": (ROLE_CS, ["B店-拼多多"]),
    "warehouse": (ROLE_WAREHOUSE, None),
    "finance": (ROLE_FINANCE, None),
}

OPENING_STOCK = 1000  # per SKU in 杭州仓, through the stock ledger

PHONE_A1 = "13812341234"
PHONE_B1 = "13998765432"


def build() -> dict:
    shops = {
        "A": Shop(name="A店-淘宝", platform="taobao", sync_interval_seconds=60, backfill_days=3),
        "B": Shop(name="B店-拼多多", platform="pdd", sync_interval_seconds=60, backfill_days=3),
        "C": Shop(name="C店-京东", platform="jd", sync_interval_seconds=60, backfill_days=3),
    }
    db.session.add_all(shops.values())
    product = Product(code="P001", name="纯棉T恤")
    db.session.add(product)
    skus = [
        Sku(product=product, merchant_code="TS-BLK-L", name="纯棉T恤 黑 L", spec="颜色:黑色;尺码:L",
            cost_price=Decimal("25.00"), sale_price=Decimal("79.00"), weight_kg=Decimal("0.3")),
        Sku(product=product, merchant_code="TS-WHT-M", name="纯棉T恤 白 M", spec="颜色:白色;尺码:M",
            cost_price=Decimal("24.00"), sale_price=Decimal("79.00"), weight_kg=Decimal("0.3")),
    ]
    db.session.add_all(skus)
    hz = Warehouse(code="HZ", name="杭州仓", province="浙江省", city="杭州市", priority=1)
    db.session.add(hz)
    db.session.commit()
    for sku in skus:  # opening stock, through the ledger
        stock.inbound(hz.id, sku.id, OPENING_STOCK, source_ref="期初", note="测试期初库存")
    db.session.commit()

    sm = appbuilder.sm
    for username, (role, shop_names) in USERS.items():
        user = sm.add_user(username, username, "测试", f"{username}@example.com", sm.find_role(role), PASSWORD)
        user.all_shops = shop_names is None
        user.shops = [s for s in shops.values() if shop_names and s.name in shop_names]
    db.session.commit()

    paid = dt.datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
    specs = [
        ("A", "3000000000000000001", "to_audit", PHONE_A1, "张三丰", "<script>alert('x')</script>请尽快发货"),
        ("A", "3000000000000000002", "to_ship", "13700001111", "李四", None),
        ("A", "3000000000000000003", "pending_payment", "13700002222", "王五", None),
        ("B", "261120-000000000000001", "to_audit", PHONE_B1, "赵六", None),
        ("B", "261120-000000000000002", "to_ship", "13600003333", "钱七", None),
        ("C", "300000000001", "to_audit", PHONE_A1, "张三丰", None),
    ]
    ids = {}
    for shop_key, pid, status, phone, name, message in specs:
        order = orders.create_order(shops[shop_key], {
            "platform_order_id": pid, "status": "pending_payment",
            "receiver_name": name, "receiver_phone": phone, "receiver_province": "浙江省",
            "receiver_city": "杭州市", "receiver_district": "西湖区", "receiver_address": "文三路100号2栋301室",
            "buyer_nick": f"buyer_{pid[-3:]}", "buyer_message": message, "paid_at": paid,
            "platform_created_at": paid, "paid_amount": "158.00", "post_fee": "0",
            "lines": [{"platform_line_id": "1", "merchant_code": "TS-BLK-L", "title": "纯棉T恤",
                       "spec": "黑色 L", "quantity": 2, "price": "79.00", "paid_amount": "158.00"}],
        }, source="import")
        db.session.flush()
        if status in ("to_audit", "to_ship"):
            order_status.apply(order, "pay", source="sync")
        if status == "to_ship":
            order_status.apply(order, "audit", source="user")
        ids[pid] = order.id
    db.session.commit()
    return {"shops": {k: s.id for k, s in shops.items()}, "orders": ids,
            "carrier": db.session.query(Carrier).filter_by(code="SF").one().id}
