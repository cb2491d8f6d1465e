"""Helpers shared by the logistics tests (carrier rules, e-waybill, scan-to-ship, printing ops)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from app.extensions import appbuilder, db
from app.models import Carrier, Order, Shop, Sku, Stock, Warehouse
from app.services import order_status, orders

UTC = dt.timezone.utc
SHOPS = {"A": "A店-淘宝", "B": "B店-拼多多", "C": "C店-京东"}


def user_id(username: str) -> int:
    return appbuilder.sm.find_user(username=username).id


def carrier_id(code: str) -> int:
    return db.session.scalar(select(Carrier.id).where(Carrier.code == code))


def make_order(number: str, *, shop: str = "A", status: str = "to_ship", province: str = "浙江省",
               lines=(("TS-BLK-L", 1),), amount: str = "79.00", carrier: str | None = None,
               tracking: str | None = None, name: str = "张三") -> int:
    """One order as sync would create it, moved on through the state machine; plain id back."""
    shop_obj = db.session.scalar(select(Shop).where(Shop.name == SHOPS[shop]))
    paid = dt.datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
    order = orders.create_order(shop_obj, {
        "platform_order_id": number, "status": "pending_payment",
        "receiver_name": name, "receiver_phone": "13700009999", "receiver_province": province,
        "receiver_city": "某市", "receiver_district": "某区", "receiver_address": "某路1号",
        "buyer_nick": "nick", "paid_at": paid, "platform_created_at": paid, "paid_amount": amount,
        "lines": [{"platform_line_id": str(i), "merchant_code": code, "title": "纯棉T恤", "quantity": qty,
                   "price": "79.00", "paid_amount": "79.00"} for i, (code, qty) in enumerate(lines, 1)],
    }, source="import")
    db.session.flush()
    if carrier:
        order.carrier_id = carrier_id(carrier)
    if status != "pending_payment":
        order_status.apply(order, "pay", source="sync")
    if status in ("to_ship", "shipped"):
        order_status.apply(order, "audit", source="user")
    if tracking:
        order.tracking_number = tracking
    if status == "shipped":
        order_status.apply(order, "ship", source="import")
    db.session.commit()
    return order.id


def on_hand(sku_code: str) -> int:
    sku = db.session.scalar(select(Sku).where(Sku.merchant_code == sku_code))
    return db.session.scalar(select(func.sum(Stock.on_hand)).where(Stock.sku_id == sku.id))


def warehouse_id() -> int:
    return db.session.scalar(select(Warehouse.id))


def order(oid: int) -> Order:
    db.session.expire_all()
    return db.session.get(Order, oid)
