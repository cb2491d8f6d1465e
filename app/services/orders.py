"""Order commands: create, edit with an audit trail, reveal PII, batch transitions.

Services take plain values and ids, validate everything before writing, own
their transaction, and raise typed errors with zh messages.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Iterable, Optional

from sqlalchemy import select

from app.extensions import db
from app.models import (
    ORDER_STATUSES, PLATFORMS, Carrier, Customer, CustomerShop, Order, OrderEvent, OrderLine,
    Shop, Sku, Warehouse,
)
from app.models.types import utcnow

from . import columns, crypto, order_status, sku_mapping
from .errors import DomainError, NotFound, ValidationError
from .stock import OutOfStock
from .validation import (
    check_choice, check_phone, check_text, parse_flag, parse_money, parse_quantity,
)

# Fields a user may edit directly; status moves only through the state machine.
EDITABLE_FIELDS = {
    "seller_memo": "卖家备注",
    "flag": "旗帜",
    "carrier_id": "快递公司",
    "tracking_number": "快递单号",
    "warehouse_id": "仓库",
    "receiver_name": "收货人",
    "receiver_phone": "收货人手机",
    "receiver_province": "省",
    "receiver_city": "市",
    "receiver_district": "区",
    "receiver_address": "详细地址",
    "receiver_zip": "邮编",
}
PII_FIELDS = {"receiver_name", "receiver_phone", "receiver_address"}
# An order counts towards its customer's spend while it is paid and not closed.
SPEND_STATUSES = frozenset({"to_audit", "to_ship", "shipped", "completed"})


def phone_hash(phone: Optional[str]) -> Optional[str]:
    """The receiver phone's blind index, the key that links one customer across shops; None
    for a masked phone (platforms send 151****1234 or 151********): a mask names many buyers
    and must never join them into one customer."""
    if not phone or "*" in phone:
        return None
    return crypto.phone_index(phone)


def update_customer_spend(order: Order, old_status: str, new_status: str) -> None:
    """Keep Customer.total_spent equal to the sum of its paid, unclosed orders."""
    customer = order.customer
    if customer is None:
        return
    was, now = old_status in SPEND_STATUSES, new_status in SPEND_STATUSES
    if was == now:
        return
    delta = (order.paid_amount or Decimal("0")) * (1 if now else -1)
    customer.total_spent = max(Decimal("0.00"), (customer.total_spent or Decimal("0")) + delta)


def _clean(name: str, value: Any) -> Any:
    label = EDITABLE_FIELDS.get(name, name)
    if name == "flag":
        return parse_flag(value, name, label)
    if name == "receiver_phone":
        return check_phone(value, name, label)
    if name in ("carrier_id", "warehouse_id"):
        if value in (None, ""):
            return None
        model = Carrier if name == "carrier_id" else Warehouse
        try:
            obj = db.session.get(model, int(value))
        except (TypeError, ValueError):
            obj = None
        if obj is None:
            raise ValidationError(f"「{label}」不存在：{value}", name)
        return obj.id
    if name == "tracking_number":
        text = (str(value).strip() if value is not None else "") or None
        return check_text(text, name, label, 64)
    limit = {"receiver_province": 32, "receiver_city": 32, "receiver_district": 32,
             "receiver_zip": 16, "receiver_name": 100}.get(name)
    return check_text(value, name, label, limit)


PII_EVENT_NOTE = "收货信息已修改（敏感内容不记录）"


def _display(name: str, value: Any) -> Optional[str]:
    """How a value is written into the audit trail. Buyer PII is not written at all:
    the trail is readable by roles that may not read PII, and even a mask leaks
    most of a phone number."""
    if value is None or name in PII_FIELDS:
        return None
    return str(value)


def event_note(name: str) -> Optional[str]:
    return PII_EVENT_NOTE if name in PII_FIELDS else None


def update_fields(order: Order, changes: dict, *, source: str = "user",
                  user_id: Optional[int] = None) -> list[str]:
    """Validate all changes first, then apply them and write one OrderEvent per changed field."""
    cleaned = {}
    for name, value in changes.items():
        if name not in EDITABLE_FIELDS:
            raise ValidationError(f"字段「{name}」不能直接修改", name)
        cleaned[name] = _clean(name, value)
    if "warehouse_id" in cleaned and cleaned["warehouse_id"] != order.warehouse_id and order.status not in (
            "pending_payment", "to_audit"):
        # Audited: the stock is reserved in the current warehouse (services/stock.py).
        where = f"「{order.warehouse.name}」" if order.warehouse is not None else ""
        raise ValidationError(f"订单 {order.platform_order_id} 已审核，库存已在{where}占用，请先反审核再改仓库",
                              "warehouse_id")
    changed = []
    for name, value in cleaned.items():
        old = getattr(order, name)
        if old == value:
            continue
        setattr(order, name, value)
        if name == "receiver_phone":
            order.receiver_phone_hash = crypto.phone_index(value)
        db.session.add(OrderEvent(order=order, action="edit", field=name, source=source,
                                  user_id=user_id, old_value=_display(name, old),
                                  new_value=_display(name, value), note=event_note(name),
                                  created_at=utcnow()))
        changed.append(name)
    return changed


def edit_order(order_id: int, changes: dict, *, user_id: Optional[int] = None,
               source: str = "user") -> list[str]:
    order = get_order(order_id)
    try:
        changed = update_fields(order, changes, source=source, user_id=user_id)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return changed


def get_order(order_id: int) -> Order:
    # A scoped query: another shop's order is simply not found (404).
    order = db.session.execute(select(Order).where(Order.id == order_id)).scalar_one_or_none()
    if order is None:
        raise NotFound(f"订单不存在：{order_id}")
    return order


def transition(order_id: int, action: str, *, user_id: Optional[int] = None,
               source: str = "user", reason: Optional[str] = None) -> Order:
    order = get_order(order_id)
    try:
        order_status.apply(order, action, source=source, user_id=user_id, reason=reason)
        db.session.commit()
    except OutOfStock as exc:
        db.session.rollback()
        hold_out_of_stock(exc, source=source, user_id=user_id)
        db.session.commit()
        raise
    except Exception:
        db.session.rollback()
        raise
    return order


@dataclass
class BatchResult:
    ok: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "failed": [{"id": k, "message": v} for k, v in self.failed.items()]}


def batch(order_ids: Iterable[int], fn, *, user_id: Optional[int] = None) -> BatchResult:
    """Run ``fn(order)`` per order, each in its own savepoint: failures never undo successes."""
    result = BatchResult()
    for oid in order_ids:
        try:
            with db.session.begin_nested():
                fn(get_order(oid))
            result.ok.append(oid)
        except DomainError as exc:
            result.failed[oid] = exc.message
            if isinstance(exc, OutOfStock):  # the savepoint is gone: keep the 缺货 hold
                hold_out_of_stock(exc, user_id=user_id)
    db.session.commit()
    return result


def hold_out_of_stock(exc: OutOfStock, *, source: str = "user", user_id: Optional[int] = None) -> None:
    """审单 was refused for want of stock and its transaction rolled back: put the 缺货
    hold again (the caller commits)."""
    order = db.session.get(Order, exc.order_id)
    if order is not None and order.status in order_status.HOLDABLE:
        order_status.hold(order, "out_of_stock", note=exc.note, source=source, user_id=user_id)


def reveal(order_id: int, user_id: int) -> dict:
    """Unmasked receiver data for one order, for a user with the reveal permission; logged."""
    grant = columns.current_grant()
    if not grant.reveal:
        from .errors import Forbidden

        raise Forbidden("没有查看完整收货信息的权限")
    order = get_order(order_id)
    fields = sorted(PII_FIELDS)
    columns.log_reveal("order", order.id, fields)
    db.session.commit()
    return {f: getattr(order, f) for f in fields}


# --- creating orders (demo, import, sync) -----------------------------------
def _line_from(data: dict, index: int, skus_by_code: dict[str, Sku]) -> OrderLine:
    where = f"第 {index} 行商品"
    title = check_text(data.get("title"), "title", f"{where}「商品标题」", 255)
    if not title:
        raise ValidationError(f"{where}「商品标题」不能为空", "title")
    code = (data.get("merchant_code") or "").strip() or None
    sku = skus_by_code.get(code) if code else None
    qty = parse_quantity(data.get("quantity", 1), "quantity", f"{where}「数量」")
    return OrderLine(
        platform_line_id=str(data.get("platform_line_id") or index),
        merchant_code=code,
        sku=sku,
        title=title,
        spec=check_text(data.get("spec"), "spec", f"{where}「规格」", 255),
        quantity=qty,
        price=parse_money(data.get("price"), "price", f"{where}「单价」"),
        paid_amount=parse_money(data.get("paid_amount"), "paid_amount", f"{where}「实付金额」"),
        cost_price=sku_mapping.line_cost(sku) if sku is not None else Decimal("0.00"),
        refund_status=data.get("refund_status"),
    )


def create_order(shop: Shop, data: dict, *, source: str = "import",
                 user_id: Optional[int] = None, skus_by_code: Optional[dict] = None,
                 trusted: bool = False) -> Order:
    """Build a validated order with its lines and first event; the caller commits.

    ``data`` uses our field names; ``lines`` is a list of dicts. Each line's SKU is
    found by services/sku_mapping.py's rule (its own code, else this shop's listing
    mapping); ``skus_by_code`` (a caller creating many orders): that lookup for this
    shop, ``SkuCatalogue.for_shop``. An unknown merchant code is kept and the order is
    held as 未匹配商品, never dropped.
    ``trusted`` (platform sync): the phone is stored as the platform sent it,
    which may be masked (151********), instead of being refused.
    """
    pid = str(data.get("platform_order_id") or "").strip()
    if not pid:
        raise ValidationError("「订单号」不能为空", "platform_order_id")
    status = check_choice(data.get("status", "pending_payment"), ORDER_STATUSES, "status", "订单状态")
    if shop.platform not in PLATFORMS:
        raise ValidationError(f"「平台」的值无效：{shop.platform}", "platform")
    if skus_by_code is None:  # the SKU of each code, or the one this shop's listings map it to
        skus_by_code = sku_mapping.resolve(
            shop.id, {(ln.get("merchant_code") or "").strip() for ln in data.get("lines", [])})
    lines = [_line_from(ln, i, skus_by_code) for i, ln in enumerate(data.get("lines", []), start=1)]
    order = Order(
        shop=shop, platform=shop.platform, platform_order_id=pid, status=status,
        platform_status=check_text(data.get("platform_status"), "platform_status", "平台状态", 64),
        goods_amount=parse_money(data.get("goods_amount"), "goods_amount", "商品金额"),
        discount_amount=parse_money(data.get("discount_amount"), "discount_amount", "优惠金额"),
        post_fee=parse_money(data.get("post_fee"), "post_fee", "运费"),
        paid_amount=parse_money(data.get("paid_amount"), "paid_amount", "实付金额"),
        buyer_nick=check_text(data.get("buyer_nick"), "buyer_nick", "买家昵称", 100),
        receiver_name=check_text(data.get("receiver_name"), "receiver_name", "收货人", 100),
        receiver_phone=(check_text(data.get("receiver_phone"), "receiver_phone", "收货人手机", 64) if trusted
                        else check_phone(data.get("receiver_phone"))),
        receiver_province=check_text(data.get("receiver_province"), "receiver_province", "省", 32),
        receiver_city=check_text(data.get("receiver_city"), "receiver_city", "市", 32),
        receiver_district=check_text(data.get("receiver_district"), "receiver_district", "区", 32),
        receiver_address=check_text(data.get("receiver_address"), "receiver_address", "详细地址", 500),
        receiver_zip=check_text(data.get("receiver_zip"), "receiver_zip", "邮编", 16),
        buyer_message=check_text(data.get("buyer_message"), "buyer_message", "买家留言"),
        seller_memo=check_text(data.get("seller_memo"), "seller_memo", "卖家备注"),
        flag=parse_flag(data.get("flag", 0)),
        platform_created_at=data.get("platform_created_at"),
        paid_at=data.get("paid_at"),
        platform_modified_at=data.get("platform_modified_at"),
        lines=lines,
    )
    order.receiver_phone_hash = phone_hash(order.receiver_phone)
    order.cost_amount = sum((ln.cost_price * ln.quantity for ln in lines), Decimal("0.00"))
    if not data.get("goods_amount"):
        order.goods_amount = sum((ln.price * ln.quantity for ln in lines), Decimal("0.00"))
    for key in ("audited_at", "shipped_at", "completed_at", "closed_at", "close_reason",
                "tracking_number", "carrier_id", "warehouse_id"):
        if data.get(key) is not None:
            setattr(order, key, data[key])
    db.session.add(order)
    db.session.add(OrderEvent(order=order, action="create", source=source, user_id=user_id,
                              field="status", new_value=status, created_at=utcnow()))
    link_customer(order)
    if any(ln.sku is None for ln in lines) and status in order_status.HOLDABLE:
        order_status.hold(order, "unmatched_sku", source=source, user_id=user_id,
                          note="商家编码未匹配：" + "、".join(
                              sorted({ln.merchant_code or "（空）" for ln in lines if ln.sku is None})))
    return order


def link_customer(order: Order) -> Optional[Customer]:
    """One customer across shops: matched by the keyed hash of the receiver phone."""
    if not order.receiver_phone_hash:
        return None
    from .scope import as_scope

    # Unscoped: the buyer may so far be known only in shops this user does not see;
    # the link is made, nothing of the other shops is shown.
    with as_scope(None):
        customer = db.session.execute(
            select(Customer).where(Customer.phone_hash == order.receiver_phone_hash)
        ).scalar_one_or_none()
    when = order.paid_at or order.platform_created_at or utcnow()
    if customer is None:
        customer = Customer(phone_hash=order.receiver_phone_hash, phone=order.receiver_phone,
                            name=order.receiver_name, buyer_nick=order.buyer_nick,
                            province=order.receiver_province, city=order.receiver_city,
                            first_order_at=when, last_order_at=when, order_count=0,
                            total_spent=Decimal("0.00"))
        db.session.add(customer)
        db.session.flush([customer])
        order.is_returning_customer = False
    else:
        order.is_returning_customer = customer.order_count > 0 and (
            customer.first_order_at is None or customer.first_order_at <= when)
        if customer.first_order_at is None or when < customer.first_order_at:
            customer.first_order_at = when
        if customer.last_order_at is None or when > customer.last_order_at:
            customer.last_order_at = when
    customer.order_count = (customer.order_count or 0) + 1
    if order.status in SPEND_STATUSES:
        customer.total_spent = (customer.total_spent or Decimal("0")) + (order.paid_amount or 0)
    order.customer = customer
    shop_id = order.shop_id or (order.shop.id if order.shop else None)
    if shop_id and db.session.get(CustomerShop, (customer.id, shop_id)) is None:
        db.session.add(CustomerShop(customer_id=customer.id, shop_id=shop_id))
    return customer
