from __future__ import annotations

from flask_babel import lazy_gettext as _l
from sqlalchemy import (
    Boolean, CheckConstraint, Column, ForeignKey, Integer, Numeric, String, UniqueConstraint,
)
from sqlalchemy.orm import relationship

from .base import Model, col_info
from .types import Money, UTCDateTime, utcnow


class Product(Model):
    """商品: what the team sells; its sellable variants are SKUs."""

    __tablename__ = "oms_product"
    id = Column(Integer, primary_key=True)
    code = Column(String(64), unique=True, nullable=False, info=col_info(_l("Product code")))
    name = Column(String(200), nullable=False, info=col_info(_l("Product name")))
    category = Column(String(64), info=col_info(_l("Category")))
    active = Column(Boolean, nullable=False, default=True, info=col_info(_l("Active")))
    created_at = Column(UTCDateTime, nullable=False, default=utcnow, info=col_info(_l("Created at")))
    skus = relationship("Sku", back_populates="product", order_by="Sku.merchant_code")

    def __repr__(self) -> str:
        return self.name or ""


class Sku(Model):
    """规格/SKU: a sellable variant, identified by its unique merchant code (商家编码)."""

    __tablename__ = "oms_sku"
    __table_args__ = (
        CheckConstraint("cost_price >= 0", name="ck_sku_cost_nonneg"),
        CheckConstraint("sale_price >= 0", name="ck_sku_price_nonneg"),
        CheckConstraint("weight_kg >= 0", name="ck_sku_weight_nonneg"),
        CheckConstraint("low_stock_threshold >= 0", name="ck_sku_threshold_nonneg"),
    )
    id = Column(Integer, primary_key=True)
    product_id = Column(Integer, ForeignKey("oms_product.id"), nullable=False, index=True)
    product = relationship("Product", back_populates="skus", info=col_info(_l("Product")))
    merchant_code = Column(String(64), unique=True, nullable=False, info=col_info(_l("Merchant code")))
    name = Column(String(200), nullable=False, info=col_info(_l("SKU name")))
    spec = Column(String(200), info=col_info(_l("Spec")))
    barcode = Column(String(64), index=True, info=col_info(_l("Barcode")))
    cost_price = Column(Money, nullable=False, default=0, info=col_info(_l("Cost price"), "finance"))
    sale_price = Column(Money, nullable=False, default=0, info=col_info(_l("Sale price")))
    weight_kg = Column(Numeric(10, 3), nullable=False, default=0, info=col_info(_l("Weight (kg)")))
    is_bundle = Column(Boolean, nullable=False, default=False, info=col_info(_l("Bundle")))
    low_stock_threshold = Column(Integer, info=col_info(_l("Low-stock threshold")))
    active = Column(Boolean, nullable=False, default=True, info=col_info(_l("Active")))
    created_at = Column(UTCDateTime, nullable=False, default=utcnow, info=col_info(_l("Created at")))
    components = relationship(
        "BundleComponent",
        foreign_keys="BundleComponent.bundle_sku_id",
        back_populates="bundle",
        cascade="all, delete-orphan",
        info=col_info(_l("Bundle components")),
    )

    def __repr__(self) -> str:
        return f"{self.merchant_code} {self.name}"


class BundleComponent(Model):
    """组合装 component: the bundle SKU contains ``quantity`` of ``component``."""

    __tablename__ = "oms_bundle_component"
    __table_args__ = (
        UniqueConstraint("bundle_sku_id", "component_sku_id", name="uq_bundle_component"),
        CheckConstraint("quantity > 0", name="ck_bundle_qty_pos"),
        CheckConstraint("bundle_sku_id <> component_sku_id", name="ck_bundle_not_self"),
    )
    id = Column(Integer, primary_key=True)
    bundle_sku_id = Column(Integer, ForeignKey("oms_sku.id", ondelete="CASCADE"), nullable=False)
    component_sku_id = Column(Integer, ForeignKey("oms_sku.id"), nullable=False, index=True)
    quantity = Column(Integer, nullable=False, default=1, info=col_info(_l("Quantity")))
    bundle = relationship(
        "Sku", foreign_keys=[bundle_sku_id], back_populates="components", info=col_info(_l("Bundle"))
    )
    component = relationship("Sku", foreign_keys=[component_sku_id], info=col_info(_l("Component SKU")))

    def __repr__(self) -> str:
        return f"{self.component} × {self.quantity}"
