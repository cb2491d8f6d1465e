"""Register every page, API and menu. The menu ``name`` is the permission key;
``label`` is what the user reads (zh through our catalogue)."""
from __future__ import annotations

from flask_babel import lazy_gettext as _l

from .audit import PiiAccessLogApi, PiiAccessLogView
from .catalog import BundleComponentApi, BundleComponentView, ProductApi, ProductView, SkuApi, SkuView
from .grids import (
    CustomerGridView, OrderWorkbenchView, ShipmentGridView, ShopGridView, SkuGridView, StockGridView,
)
from .customers import CustomerApi, CustomerOrderView, CustomerView
from .imports import ImportView
from .inventory import StockApi, StockMovementApi, StockMovementView, StockView, WarehouseApi, WarehouseView
from .jobs import JobApi, JobsView
from .listings import ShopListingApi, ShopListingView
from .logistics import (
    CarrierApi, CarrierRuleView, CarrierView, EwaybillAccountView, PrintRecordView, ScanShipView, WaybillView,
)
from .printing import PrintDownloadView, PrintTemplateView
from .scorecard import CarrierBillLineView, CarrierRateView, CarrierScorecardView
from . import scorecard as scorecard_views
from .orders import (
    OrderApi, OrderEventApi, OrderEventView, OrderHoldApi, OrderHoldView, OrderLineApi, OrderLineView,
    OrderView,
)
from .shops import ShopApi, ShopView
from .stock_pages import (  # also the stock ORM hooks
    AdjustView, InboundView, ReturnView, StockAlertView, StocktakeView,
)
from .sync import SyncRejectView, SyncRunApi, SyncRunView
from .tracking import LogisticsExceptionApi, LogisticsExceptionView, ParcelApi, ParcelEventView, ParcelView
from . import tracking as tracking_views
from .warehouses import WarehouseCoverageApi, WarehouseCoverageGridView, WarehouseCoverageView

# (view class, menu name, menu label, category, category label, icon)
MENU = [
    (OrderWorkbenchView, "Order workbench", _l("Order workbench"), "OrderHub", _l("Order hub"), "fa-table"),
    (OrderView, "Orders", _l("Orders"), "OrderHub", _l("Order hub"), "fa-list"),
    (OrderEventView, "Order events", _l("Order events"), "OrderHub", _l("Order hub"), "fa-history"),
    (CustomerView, "Customers", _l("Customers"), "OrderHub", _l("Order hub"), "fa-users"),
    (CustomerGridView, "Customer grid", _l("Customer grid"), "OrderHub", _l("Order hub"), "fa-table"),
    (ImportView, "Import", _l("Import"), "OrderHub", _l("Order hub"), "fa-upload"),
    (ProductView, "Products", _l("Products"), "Catalog", _l("Catalog"), "fa-cube"),
    (SkuView, "SKUs", _l("SKUs"), "Catalog", _l("Catalog"), "fa-cubes"),
    (SkuGridView, "SKU grid", _l("SKU grid"), "Catalog", _l("Catalog"), "fa-table"),
    (BundleComponentView, "Bundle components", _l("Bundle components"), "Catalog", _l("Catalog"), "fa-object-group"),
    (StockView, "Stock", _l("Stock"), "Inventory", _l("Inventory"), "fa-archive"),
    (StockGridView, "Stock grid", _l("Stock grid"), "Inventory", _l("Inventory"), "fa-table"),
    (StockMovementView, "Stock movements", _l("Stock movements"), "Inventory", _l("Inventory"), "fa-exchange"),
    (WarehouseView, "Warehouses", _l("Warehouses"), "Inventory", _l("Inventory"), "fa-building"),
    (WarehouseCoverageView, "Warehouse coverage", _l("Warehouse coverage"), "Inventory", _l("Inventory"),
     "fa-map-marker"),
    (WarehouseCoverageGridView, "Warehouse coverage grid", _l("Warehouse coverage grid"), "Inventory",
     _l("Inventory"), "fa-table"),
    (ShopListingView, "Stock push", _l("Stock push"), "Inventory", _l("Inventory"), "fa-upload"),
    (StockAlertView, "Low-stock alerts", _l("Low-stock alerts"), "Inventory", _l("Inventory"), "fa-bell"),
    (InboundView, "Inbound", _l("Inbound"), "Inventory", _l("Inventory"), "fa-sign-in"),
    (AdjustView, "Stock adjustment", _l("Stock adjustment"), "Inventory", _l("Inventory"), "fa-sliders"),
    (StocktakeView, "Stocktake", _l("Stocktake"), "Inventory", _l("Inventory"), "fa-check-square-o"),
    (ReturnView, "Return receipt", _l("Return receipt"), "Inventory", _l("Inventory"), "fa-undo"),
    (CarrierView, "Carriers", _l("Carriers"), "Logistics", _l("Logistics"), "fa-truck"),
    (ScanShipView, "Scan to ship", _l("Scan to ship"), "Logistics", _l("Logistics"), "fa-barcode"),
    (CarrierRuleView, "Carrier rules", _l("Carrier rules"), "Logistics", _l("Logistics"), "fa-random"),
    (EwaybillAccountView, "E-waybill accounts", _l("E-waybill accounts"), "Logistics", _l("Logistics"), "fa-key"),
    (WaybillView, "Issued tracking numbers", _l("Issued tracking numbers"), "Logistics", _l("Logistics"),
     "fa-list-ol"),
    (PrintTemplateView, "Print templates", _l("Print templates"), "Logistics", _l("Logistics"), "fa-print"),
    (PrintRecordView, "Print log", _l("Print log"), "Logistics", _l("Logistics"), "fa-history"),
    (ParcelView, "Parcel tracking", _l("Parcel tracking"), "Logistics", _l("Logistics"), "fa-map-signs"),
    (ShipmentGridView, "Shipment grid", _l("Shipment grid"), "Logistics", _l("Logistics"), "fa-table"),
    (LogisticsExceptionView, "Logistics exceptions", _l("Logistics exceptions"), "Logistics", _l("Logistics"),
     "fa-exclamation-circle"),
    (CarrierScorecardView, "Carrier scorecard", _l("Carrier scorecard"), "Logistics", _l("Logistics"),
     "fa-line-chart"),
    (CarrierRateView, "Carrier rate card", _l("Carrier rate card"), "Logistics", _l("Logistics"), "fa-jpy"),
    (CarrierBillLineView, "Carrier bills", _l("Carrier bills"), "Logistics", _l("Logistics"), "fa-file-text-o"),
    (ShopView, "Shops", _l("Shops"), "Settings", _l("Settings"), "fa-shopping-bag"),
    (ShopGridView, "Shop grid", _l("Shop grid"), "Settings", _l("Settings"), "fa-table"),
    (SyncRunView, "Sync runs", _l("Sync runs"), "Settings", _l("Settings"), "fa-exchange"),
    (SyncRejectView, "Rejected platform orders", _l("Rejected platform orders"), "Settings", _l("Settings"),
     "fa-ban"),
    (JobsView, "Jobs", _l("Jobs"), "Settings", _l("Settings"), "fa-tasks"),
    (PiiAccessLogView, "PII access log", _l("PII access log"), "Settings", _l("Settings"), "fa-eye"),
]
HIDDEN_VIEWS = [OrderLineView, OrderHoldView, CustomerOrderView, ParcelEventView, PrintDownloadView]
APIS = [OrderApi, OrderLineApi, OrderHoldApi, OrderEventApi, CustomerApi, ProductApi, SkuApi,
        BundleComponentApi, WarehouseApi, StockApi, StockMovementApi, CarrierApi, ShopApi, PiiAccessLogApi,
        SyncRunApi, ShopListingApi, JobApi, WarehouseCoverageApi, ParcelApi, LogisticsExceptionApi]


def register_views(appbuilder) -> None:
    for view, name, label, category, category_label, icon in MENU:
        appbuilder.add_view(view, name, label=label, icon=icon, category=category,
                            category_label=category_label)
    appbuilder.add_link("Write-back failures", href="/orderview/list/?_flt_0_writeback_status=failed",
                        label=_l("Write-back failures"), icon="fa-exclamation-triangle", category="OrderHub",
                        category_label=_l("Order hub"))
    for view in HIDDEN_VIEWS:
        appbuilder.add_view_no_menu(view)
    for api in APIS:
        appbuilder.add_api(api)
    # 物流跟踪: the public tracking page (no login, rate-limited) and the order page's timeline
    tracking_views.register(appbuilder)
    # 快递考核: the carrier recommendation on the order page and the carrier rule form
    scorecard_views.register(appbuilder)
