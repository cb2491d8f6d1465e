"""电子面单: tracking numbers from a carrier's e-waybill account, and their cancellation.

* :func:`issue_for_order` (batch action 取号): the order's carrier account issues a
  number (client: app/platforms/ewaybill.py), written through
  ``orders.update_fields`` (a 快递单号 event) and recorded as a :class:`Waybill`.
  Asking twice for one order returns its number again (the service is idempotent by
  our order reference), so a retried batch never costs two numbers.
* :func:`cancel_for_order` (batch action 回收单号): before shipping, the number goes
  back to the account (the service will issue it again), the order's tracking
  number is cleared and the Waybill is marked cancelled.

Duplicate tracking numbers — decision: a service check, not a unique index. A
platform legitimately reports one number on several orders (orders shipped
together in one parcel, synced from the platform), and a unique index would make
such a sync fail. So the check applies where *we* set a number: 取号, every edit
through ``orders.update_fields`` (inline grid edit, 导入 快递单号, the edit form —
through the ``before_flush`` hook below, which looks at the orders whose number an
edit event changes), 发货 (batch and 扫描发货) and printing. Same number with the
same carrier (or on an order without a carrier) on another order → a zh
ValidationError naming the other order (or "其他店铺的一个订单" when the user cannot
see it).
"""
from __future__ import annotations

from typing import Optional
from urllib.parse import urlparse

from sqlalchemy import event, or_, select
from sqlalchemy.orm import Session

from app.extensions import db
from app.models import Carrier, EwaybillAccount, Order, OrderEvent, Waybill
from app.models.types import utcnow
from app.platforms.base import PlatformError

from . import scope
from .errors import DomainError, IllegalTransition, ValidationError

# Real e-waybill services an account may point at (besides the sandbox and OMS_ALLOWED_GATEWAY_HOSTS).
REAL_HOSTS = {"api.kuaidi100.com", "poll.kuaidi100.com", "link.cainiao.com", "open-api.pinduoduo.com"}
ISSUABLE = frozenset({"to_audit", "to_ship"})


class EwaybillError(DomainError):
    """The e-waybill service refused or failed (zh message from the client)."""

    status_code = 502


def order_ref(order: Order) -> str:
    return f"OMS{order.id}"


# --- accounts ------------------------------------------------------------------------
def validate_account(account: EwaybillAccount) -> None:
    from .shops import allowed_gateway_hosts

    carrier = account.carrier or (db.session.get(Carrier, account.carrier_id) if account.carrier_id else None)
    if carrier is None:
        raise ValidationError("请选择快递公司", "carrier")
    if not (carrier.kuaidi100_code or "").strip():
        raise ValidationError(f"快递公司「{carrier.name}」没有快递100编码，不能开通电子面单", "carrier")
    account.endpoint = (account.endpoint or "").strip()
    parsed = urlparse(account.endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValidationError(f"「服务地址」不是有效的 http(s) 地址：{account.endpoint}", "endpoint")
    allowed = allowed_gateway_hosts() | REAL_HOSTS
    if parsed.netloc.lower() not in allowed and (parsed.hostname or "").lower() not in allowed:
        # The secret signs every call to this host: only known services.
        raise ValidationError(f"「服务地址」的主机 {parsed.netloc} 不在允许列表中（电子面单服务、本地沙箱或"
                              "OMS_ALLOWED_GATEWAY_HOSTS）", "endpoint")
    account.app_key = (account.app_key or "").strip()
    if not account.app_key:
        raise ValidationError("「账号密钥编号」不能为空", "app_key")
    if not (account.secret or "").strip():
        raise ValidationError("「密钥」不能为空", "secret")


def account_for(order: Order) -> EwaybillAccount:
    pid = order.platform_order_id
    if order.carrier is None:
        raise ValidationError(f"订单 {pid} 未指定快递公司，不能取号", "carrier")
    account = db.session.scalar(select(EwaybillAccount).where(EwaybillAccount.carrier_id == order.carrier_id))
    if account is None:
        raise ValidationError(f"快递公司「{order.carrier.name}」没有电子面单账号，请先在「电子面单账号」中添加", "carrier")
    if not account.active:
        raise ValidationError(f"快递公司「{order.carrier.name}」的电子面单账号已停用", "carrier")
    return account


def client_for(account: EwaybillAccount):
    from app.platforms.ewaybill import EwaybillClient

    return EwaybillClient(account.endpoint, account.app_key, account.secret or "",
                          account.carrier.kuaidi100_code, partner_id=account.partner_id)


def _parties(order: Order, account: EwaybillAccount):
    from app.platforms.ewaybill import Party

    region = "".join(p for p in (order.receiver_province, order.receiver_city, order.receiver_district) if p)
    receiver = Party(order.receiver_name or "", order.receiver_phone or "", region + (order.receiver_address or ""))
    wh = order.warehouse
    if account.sender_name or account.sender_address:
        address = "".join(p for p in (account.sender_province, account.sender_city, account.sender_district,
                                      account.sender_address) if p)
        sender = Party(account.sender_name or "", account.sender_phone or "", address)
    elif wh is not None:
        sender = Party(wh.contact or wh.name, wh.phone or "",
                       "".join(p for p in (wh.province, wh.city, wh.address) if p))
    else:
        sender = Party(order.shop.name, "", "")
    return receiver, sender


# --- duplicates ----------------------------------------------------------------------
def clashes(order_id: Optional[int], carrier_id: Optional[int], number: str) -> list[tuple[str, int]]:
    """Other orders (platform order id, shop id) holding ``number`` with the same carrier
    (or without a carrier), in every shop."""
    number = (number or "").strip()
    if not number:
        return []
    stmt = select(Order.platform_order_id, Order.shop_id).where(Order.tracking_number == number)
    if order_id is not None:
        stmt = stmt.where(Order.id != order_id)
    if carrier_id is not None:
        stmt = stmt.where(or_(Order.carrier_id == carrier_id, Order.carrier_id.is_(None)))
    with scope.as_scope(None), db.session.no_autoflush:
        return [(pid, shop_id) for pid, shop_id in db.session.execute(stmt.limit(5))]


def check_unique(order: Order, number: Optional[str] = None, carrier_id: Optional[int] = None) -> None:
    number = (order.tracking_number if number is None else number) or ""
    carrier_id = order.carrier_id if carrier_id is None else carrier_id
    found = clashes(order.id, carrier_id, number)
    if found:
        names = "、".join(f"订单 {pid}" if scope.can_see_shop(shop_id) else "其他店铺的一个订单"
                         for pid, shop_id in found)
        raise ValidationError(f"快递单号 {number.strip()} 已用于{names}，订单 {order.platform_order_id} 不能再用",
                              "tracking_number")


@event.listens_for(Session, "before_flush")
def _check_edited_numbers(session, flush_context, instances) -> None:
    """Edits through orders.update_fields (their 快递单号/快递公司 edit events are in this
    flush) may not give an order a number another order holds."""
    orders = {ev.order for ev in session.new if isinstance(ev, OrderEvent) and ev.action == "edit"
              and ev.field in ("tracking_number", "carrier_id") and ev.order is not None}
    for order in orders:
        if (order.tracking_number or "").strip():
            check_unique(order)


# --- 取号 / 回收 -----------------------------------------------------------------------
def issue_for_order(order: Order, *, user_id: Optional[int], source: str = "user") -> Optional[str]:
    """Take a number for one order (the caller commits). None when it already has one."""
    from . import orders as order_service
    from .order_status import STATUS_ZH, _not_held

    pid = order.platform_order_id
    if (order.tracking_number or "").strip():
        return None
    if order.status not in ISSUABLE:
        raise IllegalTransition(f"订单 {pid} 当前为「{STATUS_ZH.get(order.status, order.status)}」，"
                                "只能为待审核或待发货的订单取号")
    _not_held(order, "取号")
    account = account_for(order)
    if not (order.receiver_name and order.receiver_address):
        raise ValidationError(f"订单 {pid} 收货人或地址为空，不能取号", "receiver")
    receiver, sender = _parties(order, account)
    cargo = "；".join(f"{ln.title}×{ln.quantity}" for ln in order.lines)[:100]
    try:
        number = client_for(account).issue(order_ref(order), receiver, sender, cargo)
    except PlatformError as exc:
        raise EwaybillError(f"订单 {pid} 取号失败：{exc.message}", "ewaybill") from None
    check_unique(order, number)
    order_service.update_fields(order, {"tracking_number": number}, source=source, user_id=user_id)
    for obj in db.session.new:
        if isinstance(obj, OrderEvent) and obj.order is order and obj.field == "tracking_number" and not obj.note:
            obj.note = f"电子面单取号（{order.carrier.name}）"
    db.session.add(Waybill(order=order, account_id=account.id, carrier_id=order.carrier_id, tracking_number=number,
                           status="issued", issued_at=utcnow(), issued_by_id=user_id))
    return number


def cancel_for_order(order: Order, *, user_id: Optional[int], source: str = "user") -> Optional[str]:
    """Give the order's e-waybill number back (the caller commits). None when it has none."""
    from . import orders as order_service
    from .order_status import STATUS_ZH

    pid = order.platform_order_id
    number = (order.tracking_number or "").strip()
    if not number:
        return None
    if order.status not in ("pending_payment", "to_audit", "to_ship", "closed"):
        raise IllegalTransition(f"订单 {pid} 当前为「{STATUS_ZH.get(order.status, order.status)}」，"
                                "已发货的订单不能回收单号")
    waybill = db.session.scalar(select(Waybill).where(
        Waybill.order_id == order.id, Waybill.tracking_number == number, Waybill.status == "issued"))
    if waybill is None:
        raise ValidationError(f"订单 {pid} 的快递单号 {number} 不是电子面单取的号，不能回收（可直接修改快递单号）",
                              "tracking_number")
    account = db.session.get(EwaybillAccount, waybill.account_id)
    try:
        client_for(account).cancel(number, order_ref(order))
    except PlatformError as exc:
        raise EwaybillError(f"订单 {pid} 回收单号失败：{exc.message}", "ewaybill") from None
    waybill.status = "cancelled"
    waybill.cancelled_at = utcnow()
    waybill.cancelled_by_id = user_id
    order_service.update_fields(order, {"tracking_number": None}, source=source, user_id=user_id)
    for obj in db.session.new:
        if isinstance(obj, OrderEvent) and obj.order is order and obj.field == "tracking_number" and not obj.note:
            obj.note = "回收电子面单单号"
    return number
