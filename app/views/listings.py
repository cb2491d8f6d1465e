"""店铺商品 and 库存同步: each shop listing with the quantity last pushed, how today's
quantity is derived (ratio, max, floor; bundles from their components), the
pending change and its lag, and the zh error of a failed push."""
from __future__ import annotations

from flask import flash, redirect
from flask_appbuilder.actions import action
from flask_babel import lazy_gettext as _l

from app.models import ShopListing
from app.services import stock_push
from app.services.display import format_plain

from .base import VIEW_METHOD_PERMISSIONS, OmsModelRestApi, OmsModelView
from .interface import OmsInterface

_LABELS = {"quantity_derivation": _l("Quantity derivation"), "push_lag_seconds": _l("Push lag (s)")}


class ShopListingView(OmsModelView):
    datamodel = OmsInterface(ShopListing)
    class_permission_name = "ShopListing"
    method_permission_name = dict(VIEW_METHOD_PERMISSIONS, push_now="write")
    list_title = _l("Stock push")
    show_title = _l("Shop listing")
    add_title = _l("Add shop listing")
    edit_title = _l("Edit shop listing")
    list_columns = ["shop", "merchant_code", "sku", "last_pushed_quantity", "last_pushed_at",
                    "quantity_derivation", "push_pending_since", "push_lag_seconds", "last_push_error",
                    "last_push_error_at"]
    show_columns = ["shop", "merchant_code", "sku", "title", "platform_item_id", "platform_sku_id",
                    "quantity_derivation", "last_pushed_quantity", "last_pushed_at", "push_pending_since",
                    "push_lag_seconds", "last_push_error", "last_push_error_at", "created_at"]
    add_columns = edit_columns = ["shop", "merchant_code", "platform_item_id", "platform_sku_id", "title", "sku"]
    search_columns = ["shop", "merchant_code", "sku", "last_push_error", "push_pending_since"]
    order_columns = ["merchant_code", "last_pushed_quantity", "last_pushed_at", "push_pending_since",
                     "last_push_error_at"]
    label_columns = _LABELS
    formatters_columns = {"push_lag_seconds": format_plain, "quantity_derivation": format_plain}
    base_order = ("id", "asc")

    @action("push_now", _l("Push now"), None, "fa-upload")
    def push_now(self, items):
        listings = items if isinstance(items, list) else [items]
        count = stock_push.request_push([x.id for x in listings if x is not None])
        if count:
            flash(f"已安排推送 {count} 个店铺商品，约 {stock_push.DEBOUNCE_SECONDS} 秒内完成", "success")
        else:
            flash("所选店铺商品都未匹配 SKU，无法推送", "warning")
        return redirect(self.get_redirect())

    def pre_add(self, item):
        stock_push.validate_listing(item)

    pre_update = pre_add


class ShopListingApi(OmsModelRestApi):
    resource_name = "shop_listing"
    datamodel = OmsInterface(ShopListing)
    class_permission_name = "ShopListing"
    list_columns = show_columns = ["id", "shop.id", "shop.name", "merchant_code", "sku.id", "sku.merchant_code",
                                   "platform_item_id", "platform_sku_id", "title", "last_pushed_quantity",
                                   "last_pushed_at", "push_pending_since", "push_lag_seconds", "last_push_error",
                                   "last_push_error_at", "quantity_derivation"]
    add_columns = edit_columns = ["shop", "merchant_code", "platform_item_id", "platform_sku_id", "title", "sku"]
    search_columns = ["shop", "merchant_code", "sku", "last_push_error"]
    label_columns = _LABELS

    def pre_add(self, item):
        stock_push.validate_listing(item)

    pre_update = pre_add
