"""Warehouses, stock and the stock ledger. Stock rows and movements are read-only
here: only the stock service writes them, always together (issue: inventory)."""
from __future__ import annotations

from flask_babel import lazy_gettext as _l

from app.models import MOVEMENT_TYPES, Stock, StockMovement, Warehouse

from .base import OmsModelRestApi, OmsModelView
from .interface import OmsInterface


class WarehouseView(OmsModelView):
    datamodel = OmsInterface(Warehouse)
    class_permission_name = "Warehouse"
    list_title = _l("Warehouses")
    show_title = _l("Warehouse")
    add_title = _l("Add warehouse")
    edit_title = _l("Edit warehouse")
    list_columns = ["code", "name", "province", "city", "priority", "coverage_label", "active"]
    label_columns = {"coverage_label": _l("Coverage"), "priority": _l("Priority (1 is first)")}
    description_columns = {"priority": _l("Among warehouses that cover the province and can ship the whole "
                                          "order, the smallest number ships")}
    show_columns = ["code", "name", "province", "city", "address", "contact", "phone", "priority",
                    "coverage_label", "active"]
    add_columns = edit_columns = ["code", "name", "province", "city", "address", "contact",
                                                 "phone", "priority", "active"]
    search_columns = ["code", "name", "province", "active"]
    base_order = ("priority", "asc")


class StockView(OmsModelView):
    datamodel = OmsInterface(Stock)
    class_permission_name = "Stock"
    base_permissions = ["can_read"]
    list_title = show_title = _l("Stock")
    list_columns = ["warehouse", "sku", "on_hand", "reserved", "available", "updated_at"]
    show_columns = list_columns
    label_columns = {"available": _l("Available")}
    search_columns = ["warehouse", "on_hand", "reserved"]
    order_columns = ["on_hand", "reserved", "updated_at"]


class StockMovementView(OmsModelView):
    datamodel = OmsInterface(StockMovement)
    class_permission_name = "Stock"
    base_permissions = ["can_read"]
    list_title = show_title = _l("Stock movements")
    list_columns = ["created_at", "warehouse", "sku", "movement_type", "on_hand_delta", "reserved_delta",
                    "order", "source_ref", "user", "note"]
    show_columns = list_columns
    search_columns = ["warehouse", "movement_type", "source_ref", "created_at"]
    formatters_columns = {"movement_type": lambda v: str(MOVEMENT_TYPES.get(v, v))}
    base_order = ("id", "desc")


class WarehouseApi(OmsModelRestApi):
    resource_name = "warehouse"
    datamodel = OmsInterface(Warehouse)
    class_permission_name = "Warehouse"
    list_columns = show_columns = ["id", "code", "name", "province", "city", "address", "contact", "phone",
                                   "priority", "active"]
    add_columns = edit_columns = ["code", "name", "province", "city", "address", "contact", "phone",
                                  "priority", "active"]
    search_columns = ["code", "name", "province", "active"]


class StockApi(OmsModelRestApi):
    grid_title = _l("Stock grid")
    resource_name = "stock"
    datamodel = OmsInterface(Stock)
    class_permission_name = "Stock"
    base_permissions = ["can_read"]
    list_columns = show_columns = ["id", "warehouse.id", "sku.id", "sku.merchant_code", "on_hand", "reserved",
                                   "updated_at"]
    search_columns = ["warehouse", "sku", "on_hand", "reserved"]


class StockMovementApi(OmsModelRestApi):
    resource_name = "stock_movement"
    datamodel = OmsInterface(StockMovement)
    class_permission_name = "Stock"
    base_permissions = ["can_read"]
    list_columns = show_columns = ["id", "created_at", "warehouse.id", "sku.id", "movement_type",
                                   "on_hand_delta", "reserved_delta", "order.id", "source_ref", "user.id",
                                   "note"]
    search_columns = ["warehouse", "sku", "movement_type", "created_at"]
    base_order = ("id", "desc")
