"""Orders that arrive already paid (an import) in a shop that reserves at payment
reserve at once, first paid first; the one that cannot gets a 缺货 hold."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import Order, Shop, Sku, Stock
from tests.test_imports_bulk import HEADER, admin_id, write_xlsx


def _row(pid: str, paid: str, qty: int) -> list:
    values = dict.fromkeys(HEADER)
    values.update({"店铺": "A店-淘宝", "订单号": pid, "状态": "待审核", "下单时间": paid, "付款时间": paid,
                   "收货人": "王五", "收货人手机": "13900001111", "省": "浙江省", "市": "杭州市", "区": "西湖区",
                   "详细地址": "文三路1号", "实付金额": "79.00", "商家编码": "TS-BLK-L", "商品名称": "T恤",
                   "数量": qty, "单价": "79.00", "子订单编号": f"{pid}-1"})
    return [values[h] for h in HEADER]


@pytest.mark.parametrize("bulk", [True, False])
def test_imported_paid_orders_reserve_at_payment_first_paid_first(ctx, tmp_path, bulk):
    from app.services.imports import run_import

    shop = db.session.scalars(select(Shop).where(Shop.name == "A店-淘宝")).one()
    shop.reserve_at = "payment"
    sku = db.session.scalars(select(Sku).where(Sku.merchant_code == "TS-BLK-L")).one()
    rows = db.session.scalars(select(Stock).where(Stock.sku_id == sku.id)).all()
    available = sum(r.on_hand - r.reserved for r in rows)
    reserved_before = sum(r.reserved for r in rows)
    db.session.commit()
    # the later-paid order would take the rest and one more: it is the one held
    sheet = [HEADER, _row("ARR-2", "2026-11-20 10:00:00", 1), _row("ARR-1", "2026-11-20 09:00:00", available)]
    result = run_import([write_xlsx(tmp_path / "paid.xlsx", sheet)], user_id=admin_id(), bulk=bulk)
    assert result.failed == 0, result
    db.session.expire_all()
    first = db.session.scalars(select(Order).where(Order.platform_order_id == "ARR-1")).one()
    second = db.session.scalars(select(Order).where(Order.platform_order_id == "ARR-2")).one()
    assert first.status == "to_audit" and not first.is_held and first.warehouse_id is not None
    assert second.is_held and "out_of_stock" in second.active_hold_reasons
    reserved = db.session.scalar(select(func.sum(Stock.reserved)).where(Stock.sku_id == sku.id))
    assert reserved == reserved_before + available


def test_synced_paid_orders_reserve_at_payment(ctx):
    """The same rule for orders that arrive from platform sync already paid."""
    import datetime as dt
    from decimal import Decimal

    from app.platforms.base import PlatformLine, PlatformOrder
    from app.services import sync

    shop = db.session.scalars(select(Shop).where(Shop.name == "A店-淘宝")).one()
    shop.reserve_at = "payment"
    db.session.commit()
    paid = dt.datetime(2026, 11, 21, 2, 0, tzinfo=dt.timezone.utc)
    po = PlatformOrder(
        platform_order_id="SYNC-ARR-1", status="to_audit", platform_status="WAIT_SELLER_SEND_GOODS",
        created_at=paid, paid_at=paid, modified_at=paid, receiver_province="浙江省", receiver_city="杭州市",
        receiver_district="西湖区", receiver_name="钱七", receiver_phone="13911112222",
        receiver_address="文三路2号", paid_amount=Decimal("79.00"),
        lines=[PlatformLine(platform_line_id="1", merchant_code="TS-BLK-L", title="T恤", quantity=1,
                            price=Decimal("79.00"), paid_amount=Decimal("79.00"))])
    sync.apply_page(shop, [po], sync.RunContext())
    db.session.commit()
    order = db.session.scalars(select(Order).where(Order.platform_order_id == "SYNC-ARR-1")).one()
    assert order.status == "to_audit" and order.warehouse_id is not None and not order.is_held
