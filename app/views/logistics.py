"""Logistics pages: carriers, 快递规则, 电子面单账号 and their numbers, 打印记录, 扫描发货.
Every page is a thin adapter over app/services/carrier_rules.py, ewaybill.py,
printing.py and scan_ship.py."""
from __future__ import annotations

from flask import flash, g, redirect, request, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.security.decorators import has_access
from flask_babel import lazy_gettext as _l
from wtforms import BooleanField, PasswordField
from wtforms.validators import Optional as OptionalV

from app.extensions import db
# Imported for their ORM hooks: a hand-changed carrier forgets its rule; duplicate tracking numbers.
from app.services import carrier_rules, ewaybill  # noqa: F401
from app.models import PRINT_DOCUMENTS, WAYBILL_STATUSES, Carrier, CarrierRule, EwaybillAccount, PrintRecord, Waybill
from app.services.errors import DomainError

from .base import VIEW_METHOD_PERMISSIONS, OmsModelRestApi, OmsModelView
from .interface import OmsInterface


class CarrierView(OmsModelView):
    datamodel = OmsInterface(Carrier)
    class_permission_name = "Carrier"
    list_title = _l("Carriers")
    show_title = _l("Carrier")
    add_title = _l("Add carrier")
    edit_title = _l("Edit carrier")
    list_columns = ["code", "name", "kuaidi100_code", "taobao_code", "pdd_code", "jd_code", "active"]
    show_columns = add_columns = edit_columns = list_columns
    search_columns = ["code", "name", "active"]
    base_order = ("code", "asc")


class CarrierApi(OmsModelRestApi):
    resource_name = "carrier"
    datamodel = OmsInterface(Carrier)
    class_permission_name = "Carrier"
    list_columns = show_columns = ["id", "code", "name", "kuaidi100_code", "taobao_code", "pdd_code", "jd_code",
                                   "active"]
    add_columns = edit_columns = ["code", "name", "kuaidi100_code", "taobao_code", "pdd_code", "jd_code",
                                  "active"]
    search_columns = ["code", "name", "active"]


# --- 快递规则 ------------------------------------------------------------------------------
class CarrierRuleView(OmsModelView):
    datamodel = OmsInterface(CarrierRule)
    class_permission_name = "CarrierRule"
    method_permission_name = dict(VIEW_METHOD_PERMISSIONS, import_rules="write")
    list_template = "logistics/rules_list.html"
    # The recommended carrier per province (快递考核) beside the form.
    add_template = "scorecard/rule_add.html"
    edit_template = "scorecard/rule_edit.html"
    list_title = _l("Carrier rules")
    show_title = _l("Carrier rule")
    add_title = _l("Add carrier rule")
    edit_title = _l("Edit carrier rule")
    list_columns = ["priority", "name", "carrier", "is_default", "provinces", "min_weight_kg", "max_weight_kg",
                    "min_amount", "max_amount", "shop", "merchant_codes", "active"]
    show_columns = list_columns + ["note", "created_at"]
    add_columns = edit_columns = ["name", "priority", "carrier", "is_default", "provinces", "min_weight_kg",
                                  "max_weight_kg", "min_amount", "max_amount", "shop", "merchant_codes", "active",
                                  "note"]
    description_columns = {
        "priority": _l("Smaller first; the default rule is tried last"),
        "provinces": _l("e.g. Xinjiang, Tibet (separated by commas); empty: any"),
        "max_weight_kg": _l("Orders weighing less than this (from the SKU weights)"),
        "max_amount": _l("Orders paying less than this"),
        "merchant_codes": _l("Orders with a line of one of these merchant codes"),
    }
    # Non-null booleans: FAB would make them required, so an unticked box could not be saved.
    add_form_extra_fields = edit_form_extra_fields = {
        "is_default": BooleanField(_l("Default rule"), default=False),
        "active": BooleanField(_l("Active"), default=True),
    }
    search_columns = ["name", "carrier", "active", "is_default"]
    base_order = ("priority", "asc")

    def pre_add(self, item):
        from app.services.carrier_rules import validate_rule

        validate_rule(item)

    pre_update = pre_add

    @expose("/import/", methods=["GET", "POST"])
    @has_access
    def import_rules(self):
        from app.services import carrier_rules

        if request.method == "POST":
            upload = request.files.get("file")
            text = request.form.get("text") or ""
            if upload is not None and upload.filename:
                raw = upload.read(2_000_000)
                for enc in ("utf-8-sig", "gb18030"):
                    try:
                        text = raw.decode(enc)
                        break
                    except UnicodeDecodeError:
                        continue
            try:
                result = carrier_rules.import_rules(text)
            except DomainError as exc:
                flash(exc.message, "danger")
                return self.render_template("logistics/rules_import.html", text=text,
                                            columns=carrier_rules.IMPORT_COLUMNS)
            flash(f"已导入 {result['saved']} 条快递规则", "success")
            return redirect(url_for("CarrierRuleView.list"))
        return self.render_template("logistics/rules_import.html", text="", columns=carrier_rules.IMPORT_COLUMNS)


# --- 电子面单 -------------------------------------------------------------------------------
class EwaybillAccountView(OmsModelView):
    datamodel = OmsInterface(EwaybillAccount)
    class_permission_name = "EwaybillAccount"
    list_title = _l("E-waybill accounts")
    show_title = _l("E-waybill account")
    add_title = _l("Add e-waybill account")
    edit_title = _l("Edit e-waybill account")
    list_columns = ["carrier", "app_key", "partner_id", "endpoint", "sender_name", "sender_phone", "active"]
    show_columns = ["carrier", "app_key", "partner_id", "endpoint", "sender_name", "sender_phone",
                    "sender_province", "sender_city", "sender_district", "sender_address", "active", "created_at"]
    # The secret is write-only: blank keeps the stored one.
    add_columns = edit_columns = ["carrier", "endpoint", "app_key", "new_secret", "partner_id", "sender_name",
                                  "sender_phone", "sender_province", "sender_city", "sender_district",
                                  "sender_address", "active"]
    add_form_extra_fields = edit_form_extra_fields = {
        "new_secret": PasswordField(_l("Secret"), validators=[OptionalV()],
                                    description=_l("Leave blank to keep the current value")),
        "active": BooleanField(_l("Active"), default=True),
    }
    search_columns = ["carrier", "app_key", "active"]
    base_order = ("id", "asc")

    def pre_add(self, item):
        from app.services.ewaybill import validate_account

        secret = (request.form.get("new_secret") or "").strip()
        if secret:
            item.secret = secret
        validate_account(item)

    pre_update = pre_add


class WaybillView(OmsModelView):
    datamodel = OmsInterface(Waybill)
    class_permission_name = "EwaybillAccount"
    base_permissions = ["can_read"]
    list_title = show_title = _l("Issued tracking numbers")
    list_columns = ["issued_at", "order", "carrier", "tracking_number", "status", "cancelled_at"]
    show_columns = list_columns + ["account"]
    search_columns = ["tracking_number", "carrier", "status", "issued_at"]
    formatters_columns = {"status": lambda v: str(WAYBILL_STATUSES.get(v, v or ""))}
    base_order = ("id", "desc")


# --- 打印记录 --------------------------------------------------------------------------------
def _documents(value):
    return "、".join(str(PRINT_DOCUMENTS.get(d, d)) for d in (value or "").split(",") if d)


class PrintRecordView(OmsModelView):
    """Every print and reprint, per order (row scope through the order)."""

    datamodel = OmsInterface(PrintRecord)
    class_permission_name = "Order"
    base_permissions = ["can_read"]
    list_title = show_title = _l("Print log")
    list_columns = ["created_at", "order", "user", "documents", "print_no", "is_reprint", "batch_size", "batch"]
    show_columns = list_columns + ["source"]
    search_columns = ["order", "user", "is_reprint", "created_at", "batch"]
    formatters_columns = {"documents": _documents,
                          "source": lambda v: {"user": "页面", "job": "后台任务", "cli": "命令行"}.get(v, v)}
    base_order = ("id", "desc")


# --- 扫描发货 --------------------------------------------------------------------------------
class ScanShipView(BaseView):
    """Scan or type a tracking number: the matching order ships (services/scan_ship.py)."""

    route_base = "/scan-ship"
    class_permission_name = "Order"
    method_permission_name = {"index": "write", "ship": "write"}
    base_permissions = ["can_write"]
    default_view = "index"

    @expose("/")
    @has_access
    def index(self):
        return self.render_template("logistics/scan_ship.html")

    @expose("/ship", methods=["POST"])
    @has_access
    def ship(self):
        from app.services import scan_ship

        body = request.get_json(silent=True) or {}
        try:
            result = scan_ship.ship_by_tracking(body.get("tracking_number"), user_id=g.user.id)
        except DomainError as exc:
            db.session.rollback()
            return {"ok": False, "message": exc.message}, exc.status_code
        return {"ok": True, "order": result, "message": f"订单 {result['platform_order_id']} 已发货"}
