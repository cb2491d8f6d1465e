"""Domain model v1 (GLOSSARY.md). Import everything so one metadata holds all tables."""
from .base import PLATFORMS, Model
from .counters import OrderCountDelta
from .customer import Customer, CustomerShop
from .inventory import MOVEMENT_TYPES, Stock, StockMovement, Warehouse
from .listing import ShopListing
from .logistics import (
    PRINT_DOCUMENTS, WAYBILL_STATUSES, Carrier, CarrierRule, EwaybillAccount, PrintRecord, PrintTemplate, Waybill,
)
from .order import (
    EVENT_SOURCES, FLAGS, HOLD_REASONS, ORDER_STATUSES, Order, OrderEvent, OrderHold, OrderLine,
    PiiAccessLog, WRITEBACK_STATUSES,
)
from .product import BundleComponent, Product, Sku
from .saved_view import SavedView
from .scorecard import CarrierBillLine, CarrierRate
from .security import OmsUser, user_shop
from .shop import Shop
from .stock_alert import StockAlert, StockAlertRead
from .sync import SYNC_STATUSES, SyncReject, SyncRun
from .tracking import EXCEPTION_REASONS, TRACKING_STATES, LogisticsException, Parcel, ParcelEvent
from .warehouse_coverage import WarehouseCoverage

__all__ = [
    "Model", "PLATFORMS", "Shop", "Product", "Sku", "BundleComponent", "Warehouse", "Stock",
    "StockMovement", "MOVEMENT_TYPES", "Carrier", "Customer", "CustomerShop", "Order",
    "OrderLine", "OrderHold", "OrderEvent", "PiiAccessLog", "ORDER_STATUSES", "HOLD_REASONS",
    "EVENT_SOURCES", "FLAGS", "OmsUser", "user_shop", "SyncRun", "SyncReject", "SYNC_STATUSES",
    "ShopListing", "OrderCountDelta", "SavedView", "StockAlert", "StockAlertRead", "WarehouseCoverage",
    "CarrierRule", "EwaybillAccount", "Waybill", "PrintTemplate", "PrintRecord", "PRINT_DOCUMENTS",
    "WAYBILL_STATUSES",
    "Parcel", "ParcelEvent", "LogisticsException", "TRACKING_STATES", "EXCEPTION_REASONS",
    "CarrierRate", "CarrierBillLine",
]
