"""Product and SKU rules."""
from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select

from app.extensions import db
from app.models import BundleComponent, Sku, Stock

from .errors import ValidationError
from .validation import parse_money


def validate_sku(sku: Sku) -> None:
    if not (sku.merchant_code or "").strip():
        raise ValidationError("「商家编码」不能为空", "merchant_code")
    sku.merchant_code = sku.merchant_code.strip()
    sku.cost_price = parse_money(sku.cost_price, "cost_price", "成本价")
    sku.sale_price = parse_money(sku.sale_price, "sale_price", "售价")
    if sku.weight_kg is not None and Decimal(sku.weight_kg) < 0:
        raise ValidationError(f"「重量（千克）」不能为负数：{sku.weight_kg}", "weight_kg")
    if sku.low_stock_threshold is not None and sku.low_stock_threshold < 0:
        raise ValidationError(f"「预警值」不能为负数：{sku.low_stock_threshold}", "low_stock_threshold")
    if sku.is_bundle and sku.id is not None:
        _check_can_become_bundle(sku)


def _check_can_become_bundle(sku: Sku) -> None:
    """A SKU ticked 组合装 (or saved as one) must not be another bundle's component (bundles
    do not nest: stock, push and reservation expand one level) nor hold stock of its own (a
    bundle's stock is its components'; its own rows could never move again)."""
    with db.session.no_autoflush:
        parent = db.session.execute(
            select(Sku.merchant_code).join(BundleComponent, BundleComponent.bundle_sku_id == Sku.id)
            .where(BundleComponent.component_sku_id == sku.id).order_by(Sku.merchant_code).limit(1)).scalar()
        if parent is not None:
            raise ValidationError(f"「{sku.merchant_code}」是组合装「{parent}」的组成商品，不能设为组合装", "is_bundle")
        on_hand, reserved = db.session.execute(
            select(func.coalesce(func.sum(Stock.on_hand), 0), func.coalesce(func.sum(Stock.reserved), 0))
            .where(Stock.sku_id == sku.id)).one()
    if on_hand or reserved:
        raise ValidationError(f"「{sku.merchant_code}」还有库存（实物 {on_hand}，占用 {reserved}），不能设为组合装："
                              "组合装的库存按组成商品计算，请先把它的库存调整为 0", "is_bundle")


def validate_component(comp: BundleComponent) -> None:
    if comp.quantity is None or comp.quantity <= 0:
        raise ValidationError(f"「数量」必须大于 0：{comp.quantity}", "quantity")
    bundle_id = comp.bundle.id if comp.bundle is not None else comp.bundle_sku_id
    component_id = comp.component.id if comp.component is not None else comp.component_sku_id
    if bundle_id is not None and bundle_id == component_id:
        raise ValidationError("组合装不能包含自身", "component")
    if comp.component is not None and comp.component.is_bundle:
        raise ValidationError("组合装的组成商品不能是另一个组合装", "component")
