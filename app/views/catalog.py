from __future__ import annotations

from flask_babel import lazy_gettext as _l
from wtforms import BooleanField

from app.models import BundleComponent, Product, Sku

from .base import OmsModelRestApi, OmsModelView
from .interface import OmsInterface


class BundleComponentView(OmsModelView):
    datamodel = OmsInterface(BundleComponent)
    class_permission_name = "Product"
    list_title = show_title = _l("Bundle components")
    add_title = _l("Add bundle component")
    edit_title = _l("Edit bundle component")
    list_columns = ["bundle", "component", "quantity"]
    add_columns = edit_columns = show_columns = ["bundle", "component", "quantity"]
    search_columns = ["quantity"]

    def pre_add(self, item):
        from app.services.catalog import validate_component

        validate_component(item)

    pre_update = pre_add


class SkuView(OmsModelView):
    datamodel = OmsInterface(Sku)
    class_permission_name = "Product"
    list_title = _l("SKUs")
    show_title = _l("SKU")
    add_title = _l("Add SKU")
    edit_title = _l("Edit SKU")
    list_columns = ["merchant_code", "name", "spec", "product", "barcode", "sale_price", "cost_price",
                    "weight_kg", "is_bundle", "low_stock_threshold", "active"]
    show_columns = list_columns + ["created_at"]
    add_columns = edit_columns = ["product", "merchant_code", "name", "spec", "barcode", "sale_price",
                                  "cost_price", "weight_kg", "is_bundle", "low_stock_threshold", "active"]
    search_columns = ["merchant_code", "name", "barcode", "is_bundle", "active"]
    related_views = [BundleComponentView]
    base_order = ("merchant_code", "asc")
    # FAB makes a NOT NULL boolean an InputRequired checkbox, which refuses "unchecked":
    # a plain (non-bundle) or inactive SKU could not be saved through the form.
    add_form_extra_fields = edit_form_extra_fields = {
        "is_bundle": BooleanField(_l("Bundle"), default=False),
        "active": BooleanField(_l("Active"), default=True),
    }

    def pre_add(self, item):
        from app.services.catalog import validate_sku

        validate_sku(item)

    pre_update = pre_add


class ProductView(OmsModelView):
    datamodel = OmsInterface(Product)
    class_permission_name = "Product"
    list_title = _l("Products")
    show_title = _l("Product")
    add_title = _l("Add product")
    edit_title = _l("Edit product")
    list_columns = ["code", "name", "category", "active", "created_at"]
    show_columns = list_columns
    add_columns = edit_columns = ["code", "name", "category", "active"]
    search_columns = ["code", "name", "category", "active"]
    related_views = [SkuView]
    base_order = ("code", "asc")


class ProductApi(OmsModelRestApi):
    resource_name = "product"
    datamodel = OmsInterface(Product)
    class_permission_name = "Product"
    list_columns = show_columns = ["id", "code", "name", "category", "active", "created_at"]
    add_columns = edit_columns = ["code", "name", "category", "active"]
    search_columns = ["code", "name", "category", "active"]


class SkuApi(OmsModelRestApi):
    grid_title = _l("SKU grid")
    resource_name = "sku"
    datamodel = OmsInterface(Sku)
    class_permission_name = "Product"
    list_columns = show_columns = ["id", "product.id", "merchant_code", "name", "spec", "barcode", "sale_price",
                                   "cost_price", "weight_kg", "is_bundle", "low_stock_threshold", "active"]
    add_columns = edit_columns = ["product", "merchant_code", "name", "spec", "barcode", "sale_price",
                                  "cost_price", "weight_kg", "is_bundle", "low_stock_threshold", "active"]
    search_columns = ["merchant_code", "name", "barcode", "is_bundle", "active"]

    def pre_add(self, item):
        from app.services.catalog import validate_sku

        validate_sku(item)

    pre_update = pre_add


class BundleComponentApi(OmsModelRestApi):
    resource_name = "bundle_component"
    datamodel = OmsInterface(BundleComponent)
    class_permission_name = "Product"
    list_columns = show_columns = ["id", "bundle.id", "component.id", "quantity"]
    add_columns = edit_columns = ["bundle", "component", "quantity"]
    search_columns = ["bundle", "component"]

    def pre_add(self, item):
        from app.services.catalog import validate_component

        validate_component(item)

    pre_update = pre_add
