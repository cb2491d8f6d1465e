from __future__ import annotations

from flask_babel import lazy_gettext as _l
from wtforms import PasswordField, SelectField
from wtforms.validators import Optional as OptionalV

from app.models import PLATFORMS, Shop

from .base import OmsModelRestApi, OmsModelView
from .interface import OmsInterface


def _platform(value):
    return str(PLATFORMS.get(value, value or ""))


class ShopView(OmsModelView):
    datamodel = OmsInterface(Shop)
    class_permission_name = "Shop"
    list_title = _l("Shops")
    show_title = _l("Shop")
    add_title = _l("Add shop")
    edit_title = _l("Edit shop")
    list_columns = ["name", "platform", "platform_shop_id", "active", "sync_enabled", "sync_interval_seconds",
                    "sync_checkpoint", "last_sync_success_at", "last_sync_error"]
    show_columns = ["name", "platform", "platform_shop_id", "app_key", "gateway_url", "token_expires_at",
                    "active", "sync_enabled", "sync_interval_seconds", "backfill_days", "sync_checkpoint",
                    "last_sync_success_at", "last_sync_error", "created_at"]
    # Secrets are write-only: the form shows empty password fields; blank keeps the old value.
    add_columns = ["name", "platform", "platform_shop_id", "app_key", "new_app_secret", "new_access_token",
                   "gateway_url", "active", "sync_enabled", "sync_interval_seconds", "backfill_days"]
    edit_columns = add_columns
    search_columns = ["name", "platform", "active", "sync_enabled"]
    add_form_extra_fields = edit_form_extra_fields = {
        "platform": SelectField(_l("Platform"), choices=[(k, v) for k, v in PLATFORMS.items()]),
        "new_app_secret": PasswordField(_l("App secret"), validators=[OptionalV()],
                                        description=_l("Leave blank to keep the current value")),
        "new_access_token": PasswordField(_l("Access token"), validators=[OptionalV()],
                                          description=_l("Leave blank to keep the current value")),
    }
    formatters_columns = {"platform": _platform}
    base_order = ("name", "asc")

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
    resource_name = "shop"
    datamodel = OmsInterface(Shop)
    class_permission_name = "Shop"
    list_columns = ["id", "name", "platform", "platform_shop_id", "active", "sync_enabled",
                    "sync_interval_seconds", "backfill_days", "sync_checkpoint", "last_sync_success_at",
                    "last_sync_error", "gateway_url"]
    show_columns = list_columns + ["app_key", "token_expires_at", "created_at"]
    add_columns = ["name", "platform", "platform_shop_id", "app_key", "gateway_url", "active", "sync_enabled",
                   "sync_interval_seconds", "backfill_days"]
    edit_columns = add_columns
    search_columns = ["name", "platform", "active"]

    def pre_add(self, item):
        from app.services.shops import validate_shop

        validate_shop(item)

    pre_update = pre_add
