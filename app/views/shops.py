from __future__ import annotations

from flask import flash, g, redirect
from flask_appbuilder.actions import action
from flask_babel import lazy_gettext as _l
from wtforms import BooleanField, PasswordField, SelectField
from wtforms.validators import Optional as OptionalV

from app.models import PLATFORMS, Shop
from app.models.shop import RESERVE_AT

from app.services.display import format_plain

from .base import VIEW_METHOD_PERMISSIONS, OmsModelRestApi, OmsModelView
from .interface import OmsInterface


def _platform(value):
    return str(PLATFORMS.get(value, value or ""))


def _reserve_at(value):
    return str(RESERVE_AT.get(value, value or ""))


class ShopView(OmsModelView):
    datamodel = OmsInterface(Shop)
    class_permission_name = "Shop"
    list_title = _l("Shops")
    show_title = _l("Shop")
    add_title = _l("Add shop")
    edit_title = _l("Edit shop")
    method_permission_name = dict(VIEW_METHOD_PERMISSIONS, sync_now="sync")
    list_columns = ["name", "platform", "active", "sync_enabled", "sync_state", "sync_interval_seconds",
                    "sync_lag_seconds",
                    "last_sync_success_at", "last_sync_error", "last_sync_error_at", "stock_push_enabled",
                    "stock_push_lag_seconds", "last_stock_push_error"]
    label_columns = {"sync_lag_seconds": _l("Sync lag (s)"), "stock_push_lag_seconds": _l("Stock push lag (s)"),
                     "sync_state": _l("Sync in progress")}
    show_columns = ["name", "platform", "platform_shop_id", "app_key", "gateway_url", "token_expires_at",
                    "active", "sync_enabled", "sync_interval_seconds", "backfill_days", "sync_checkpoint",
                    "sync_lag_seconds", "last_sync_success_at", "last_sync_error", "last_sync_error_at",
                    "sync_not_before", "stock_push_enabled", "stock_ratio", "stock_max", "stock_floor",
                    "last_stock_push_at", "stock_push_lag_seconds", "last_stock_push_error",
                    "last_stock_push_error_at", "reserve_at", "allow_split", "created_at"]
    # Secrets are write-only: the form shows empty password fields; blank keeps the old value.
    add_columns = ["name", "platform", "platform_shop_id", "app_key", "new_app_secret", "new_access_token",
                   "gateway_url", "active", "sync_enabled", "sync_interval_seconds", "backfill_days",
                   "stock_push_enabled", "stock_ratio", "stock_max", "stock_floor", "reserve_at", "allow_split"]
    edit_columns = add_columns
    search_columns = ["name", "platform", "active", "sync_enabled"]
    description_columns = {
        "reserve_at": _l("At audit: stock is reserved when the order is audited. At payment: when it is paid; "
                         "the order waits in To audit with its stock reserved"),
        "allow_split": _l("When no single warehouse covering the province can ship the whole order, ship its "
                          "lines from several warehouses"),
    }
    add_form_extra_fields = edit_form_extra_fields = {
        "platform": SelectField(_l("Platform"), choices=[(k, v) for k, v in PLATFORMS.items()]),
        # default: a form posted without the field (API clients, older forms) keeps reserving at audit
        "reserve_at": SelectField(_l("Reserve stock at"), choices=[(k, v) for k, v in RESERVE_AT.items()],
                                  default="audit"),
        # FAB makes a NOT NULL boolean "required", so an unticked box would be refused.
        "allow_split": BooleanField(_l("Allow split shipment")),
        "new_app_secret": PasswordField(_l("App secret"), validators=[OptionalV()],
                                        description=_l("Leave blank to keep the current value")),
        "new_access_token": PasswordField(_l("Access token"), validators=[OptionalV()],
                                          description=_l("Leave blank to keep the current value")),
    }
    formatters_columns = {"platform": _platform, "reserve_at": _reserve_at, "sync_lag_seconds": format_plain,
                          "stock_push_lag_seconds": format_plain}
    base_order = ("name", "asc")

    @action("sync_now", _l("Sync now"), None, "fa-refresh")
    def sync_now(self, items):
        from app.jobs.sync import enqueue_sync

        shops = items if isinstance(items, list) else [items]
        queued = [s.name for s in shops if s is not None and enqueue_sync(s.id, "manual", g.user.id) is not None]
        if queued:
            flash(f"已排队同步：{'、'.join(queued)}", "success")
        skipped = len([s for s in shops if s is not None]) - len(queued)
        if skipped:
            flash(f"{skipped} 个店铺正在同步，已跳过", "warning")
        return redirect(self.get_redirect())

    def _store_secrets(self, item):
        from flask import request

        for field, column in (("new_app_secret", "app_secret"), ("new_access_token", "access_token")):
            value = (request.form.get(field) or "").strip()
            if value:
                setattr(item, column, value)

    def pre_add(self, item):
        from app.services.shops import validate_shop

        self._store_secrets(item)
        validate_shop(item)

    def pre_update(self, item):
        from app.services.shops import validate_shop

        self._store_secrets(item)
        validate_shop(item)


class ShopApi(OmsModelRestApi):
    grid_title = _l("Shop grid")
    resource_name = "shop"
    datamodel = OmsInterface(Shop)
    class_permission_name = "Shop"
    list_columns = ["id", "name", "platform", "platform_shop_id", "active", "sync_enabled",
                    "sync_interval_seconds", "backfill_days", "sync_checkpoint", "sync_lag_seconds",
                    "last_sync_success_at", "last_sync_error", "last_sync_error_at", "gateway_url",
                    "stock_push_enabled", "stock_ratio", "stock_max", "stock_floor", "last_stock_push_at",
                    "stock_push_lag_seconds", "last_stock_push_error", "last_stock_push_error_at",
                    "reserve_at", "allow_split"]
    show_columns = list_columns + ["app_key", "token_expires_at", "created_at"]
    add_columns = ["name", "platform", "platform_shop_id", "app_key", "gateway_url", "active", "sync_enabled",
                   "sync_interval_seconds", "backfill_days", "stock_push_enabled", "stock_ratio", "stock_max",
                   "stock_floor", "reserve_at", "allow_split"]
    grid_choices = {"reserve_at": RESERVE_AT}
    edit_columns = add_columns
    search_columns = ["name", "platform", "active"]

    def pre_add(self, item):
        from app.services.shops import validate_shop

        validate_shop(item)

    pre_update = pre_add
