"""Orders: list with status tabs, detail with lines / holds / events, batch actions,
and the REST API. Every change goes through services/orders.py and order_status.py."""
from __future__ import annotations

from flask import flash, g, redirect, request, url_for
from flask_appbuilder import expose
from flask_appbuilder.actions import action
from flask_appbuilder.api import expose as api_expose, protect, safe
from flask_appbuilder.security.decorators import has_access, permission_name
from flask_babel import gettext as _, lazy_gettext as _l
from sqlalchemy import inspect
from wtforms import SelectField

from app.extensions import db
from app.models import (
    EVENT_SOURCES, FLAGS, HOLD_REASONS, ORDER_STATUSES, PLATFORMS, WRITEBACK_STATUSES, Order, OrderEvent,
    OrderHold, OrderLine,
)
from app.services import columns, orders as order_service
from app.services import order_grid, order_views  # order_grid registers the grid filters and tabs
from app.services.errors import DomainError

from .base import OmsModelRestApi, OmsModelView, VIEW_METHOD_PERMISSIONS
from .interface import OmsInterface

ORDER_PERMISSIONS = dict(
    VIEW_METHOD_PERMISSIONS,
    audit_orders="audit", unaudit_orders="audit",
    hold_orders="hold", release_orders="hold",
    reveal="reveal", retry_writeback="write",
    split="audit",  # 拆分订单: it re-reserves and may re-audit, like 审单 (运营, 管理员)
)


def _status(value):
    return str(ORDER_STATUSES.get(value, value or ""))


def _platform(value):
    return str(PLATFORMS.get(value, value or ""))


def _flag(value):
    return str(FLAGS.get(value, value))


class OrderLineView(OmsModelView):
    datamodel = OmsInterface(OrderLine)
    class_permission_name = "Order"
    base_permissions = ["can_read"]
    list_title = show_title = _l("Order lines")
    list_columns = ["order", "merchant_code", "sku", "title", "spec", "quantity", "price",
                    "paid_amount", "cost_price", "refund_status", "warehouse"]
    show_columns = ["order", "platform_line_id", "merchant_code", "sku", "title", "spec", "quantity",
                    "price", "paid_amount", "cost_price", "refund_status", "warehouse"]
    search_columns = ["merchant_code", "title", "refund_status"]
    base_order = ("id", "asc")


class OrderHoldView(OmsModelView):
    datamodel = OmsInterface(OrderHold)
    class_permission_name = "Order"
    base_permissions = ["can_read"]
    list_title = show_title = _l("Holds")
    list_columns = ["order", "reason", "note", "created_at", "released_at"]
    show_columns = list_columns
    search_columns = ["reason", "created_at", "released_at"]
    formatters_columns = {"reason": lambda v: str(HOLD_REASONS.get(v, v))}
    base_order = ("id", "desc")


def _event_source(value):
    return str(EVENT_SOURCES.get(value, value or ""))


class OrderEventView(OmsModelView):
    datamodel = OmsInterface(OrderEvent)
    class_permission_name = "OrderEvent"
    base_permissions = ["can_read"]
    list_title = show_title = _l("Order events")
    list_columns = ["created_at", "order", "user", "source", "action", "field", "old_value", "new_value", "note"]
    show_columns = list_columns
    search_columns = ["source", "action", "field", "created_at"]
    formatters_columns = {"source": _event_source, "action": order_views.action_label,
                          "field": order_views.field_label, "old_value": order_views.value_label,
                          "new_value": order_views.value_label}
    base_order = ("id", "desc")


class OrderView(OmsModelView):
    datamodel = OmsInterface(Order)
    class_permission_name = "Order"
    method_permission_name = ORDER_PERMISSIONS
    base_permissions = ["can_read", "can_write", "can_audit", "can_hold", "can_reveal"]
    list_template = "orders/list.html"
    show_template = "orders/show.html"
    edit_template = "orders/edit.html"  # the carrier recommendation where the carrier is chosen
    list_title = _l("Orders")
    show_title = _l("Order detail")
    edit_title = _l("Edit order")
    list_columns = ["platform_order_id", "shop", "status", "is_held", "buyer_nick", "receiver_name",
                    "receiver_province", "paid_amount", "cost_amount", "paid_at", "carrier",
                    "tracking_number", "flag"]
    order_columns = ["platform_order_id", "status", "paid_amount", "cost_amount", "paid_at", "flag"]
    search_columns = ["platform_order_id", "shop", "platform", "status", "is_held", "flag", "buyer_nick",
                      "receiver_phone", "receiver_province", "tracking_number", "carrier", "warehouse",
                      "is_returning_customer", "writeback_status", "paid_at"]
    search_form_extra_fields = {
        "writeback_status": SelectField(_l("Write-back"), choices=[(k, v) for k, v in WRITEBACK_STATUSES.items()]),
        "status": SelectField(_l("Status"), choices=[(k, v) for k, v in ORDER_STATUSES.items()]),
        "platform": SelectField(_l("Platform"), choices=[(k, v) for k, v in PLATFORMS.items()]),
    }
    show_fieldsets = [
        (_l("Order"), {"fields": ["platform_order_id", "shop", "platform", "status", "platform_status",
                                  "is_held", "flag", "customer", "is_returning_customer", "close_reason",
                                  "split_from"]}),
        (_l("Amounts"), {"fields": ["goods_amount", "discount_amount", "post_fee", "paid_amount",
                                    "cost_amount"]}),
        (_l("Receiver"), {"fields": ["buyer_nick", "receiver_name", "receiver_phone", "receiver_province",
                                     "receiver_city", "receiver_district", "receiver_address",
                                     "receiver_zip"]}),
        (_l("Messages"), {"fields": ["buyer_message", "seller_memo"]}),
        (_l("Logistics"), {"fields": ["warehouse", "warehouse_reason", "carrier", "carrier_rule", "tracking_number",
                                      "writeback_status",
                                      "writeback_error", "writeback_at"]}),
        (_l("Times"), {"fields": ["platform_created_at", "paid_at", "audited_at", "shipped_at",
                                  "completed_at", "closed_at", "platform_modified_at", "updated_at"]}),
    ]
    edit_columns = ["seller_memo", "flag", "warehouse", "carrier", "tracking_number", "receiver_name",
                    "receiver_phone", "receiver_province", "receiver_city", "receiver_district",
                    "receiver_address", "receiver_zip"]
    formatters_columns = {"status": _status, "platform": _platform, "flag": _flag,
                          "writeback_status": lambda v: str(WRITEBACK_STATUSES.get(v, v or ""))}
    related_views = [OrderLineView, OrderHoldView, OrderEventView]
    base_order = ("paid_at", "desc")

    def __init__(self, **kw):
        super().__init__(**kw)
        # Orders are never deleted, only closed; adding happens through import and sync.
        self.base_permissions = [p for p in self.base_permissions if p not in ("can_delete", "can_add")]

    # status tabs ----------------------------------------------------------
    @expose("/list/")
    @has_access
    def list(self):
        g.oms_status_tabs = order_views.status_tab_counts()
        return super().list()

    # editing goes through the service: validated, one OrderEvent per field ----
    def pre_update(self, item: Order):
        """Turn the form's changes into a service call: validated, one event per field."""
        state = inspect(item)
        changes = {}
        for name in order_service.EDITABLE_FIELDS:
            if name in ("carrier_id", "warehouse_id"):
                rel = getattr(item, name[:-3])
                new_id = rel.id if rel is not None else None
                if new_id != getattr(item, name):  # the FK column still holds the old id
                    changes[name] = new_id
                continue
            hist = state.attrs[name].history
            if hist.has_changes():
                changes[name] = getattr(item, name)
                setattr(item, name, hist.deleted[0] if hist.deleted else None)
        order_service.update_fields(item, changes, user_id=g.user.id)

    # reveal PII -------------------------------------------------------------
    @expose("/reveal/<int:pk>", methods=["POST"])
    @has_access
    def reveal(self, pk):
        try:
            data = order_service.reveal(pk, g.user.id)
        except DomainError as exc:
            flash(exc.message, "danger")
            return redirect(self.get_redirect())
        g.oms_revealed = data
        return self.show(pk)

    # 拆分订单 (services/order_split.py) ---------------------------------------------------
    def create_blueprint(self, appbuilder, *args, **kwargs):
        blueprint = super().create_blueprint(appbuilder, *args, **kwargs)
        blueprint.app_context_processor(lambda: {"oms_split_info": split_info})  # the order page's panel
        return blueprint

    @expose("/split/<int:pk>", methods=["GET", "POST"])
    @has_access
    def split(self, pk):
        """The split form: per line a quantity to move into a new order, and optionally the
        new order's warehouse."""
        from app.services import order_split
        from app.services.errors import NotFound

        quantities, warehouse = {}, ""
        status = 200
        if request.method == "POST":
            quantities = {k[4:]: v.strip() for k, v in request.form.items() if k.startswith("qty_")}
            warehouse = request.form.get("warehouse_id", "")
            try:
                result = order_split.split_order(pk, {k: v for k, v in quantities.items() if v},
                                                 user_id=g.user.id, warehouse_id=warehouse or None)
            except DomainError as exc:
                flash(exc.message, "danger")
                status = exc.status_code
            else:
                flash(result.summary, "success")
                return redirect(url_for("OrderView.show", pk=result.new_order_id))
        try:
            order = order_service.get_order(pk)
        except NotFound as exc:
            flash(exc.message, "danger")
            return redirect(url_for("OrderView.list"))
        return self.render_template("orders/split.html", order=order, quantities=quantities,
                                    warehouse=warehouse, warehouses=_active_warehouses(),
                                    problem=order_split.why_not(order), title=_("Split order")), status

    # batch actions (services/batch_actions.py: savepoint per order, audit trail) --------
    def _run_batch(self, items, code: str, params: dict | None = None):
        from app.services import batch_actions

        items = items if isinstance(items, list) else [items]
        ids = [it.id for it in items if it is not None]
        missing = len(items) - len(ids)
        try:
            result = batch_actions.run(code, ids, params, user_id=g.user.id)
        except DomainError as exc:
            flash(exc.message, "danger")
            return redirect(self.get_redirect())
        flash(batch_actions.summary(result), "success" if result["ok"] else "warning")
        problems = [f["message"] for f in result["failed"]] + [s["message"] for s in result["skipped"]]
        for message in problems[:20]:
            flash(message, "danger")
        if len(problems) > 20:
            flash(f"另有 {len(problems) - 20} 个订单未处理", "danger")
        if missing:
            flash(f"{missing} 个订单不存在或无权访问", "danger")
        return redirect(self.get_redirect())

    @action("audit_orders", _l("Audit"), _l("Audit the selected orders?"), "fa-check")
    def audit_orders(self, items):
        return self._run_batch(items, "audit")

    @action("unaudit_orders", _l("Undo audit"), _l("Move the selected orders back to audit?"), "fa-undo")
    def unaudit_orders(self, items):
        return self._run_batch(items, "unaudit")

    @action("hold_orders", _l("Hold"), _l("Hold the selected orders?"), "fa-pause")
    def hold_orders(self, items):
        # The list page asks no reason: the hold says where it came from.
        return self._run_batch(items, "hold", {"reason": "订单列表批量挂起"})

    @action("retry_writeback", _l("Retry write-back"), _l("Write the tracking numbers back again?"),
            "fa-upload")
    def retry_writeback(self, items):
        from app.jobs.writeback import enqueue_writeback
        from app.services import writeback

        ids = [it.id for it in (items if isinstance(items, list) else [items]) if it is not None]
        queued = writeback.retry_failed(ids)
        for oid in queued:
            enqueue_writeback(oid)
        flash(f"已重新排队回传 {len(queued)} 个订单", "success" if queued else "warning")
        return redirect(self.get_redirect())

    @action("release_orders", _l("Release holds"),
            _l("Release the holds of the selected orders? Refund and platform locks stay until the "
               "platform clears them."), "fa-play")
    def release_orders(self, items):
        return self._run_batch(items, "release")


def _active_warehouses():
    from sqlalchemy import select

    from app.models import Warehouse

    return db.session.scalars(select(Warehouse).where(Warehouse.active.is_(True))
                              .order_by(Warehouse.priority, Warehouse.id)).all()


def split_info(order_id) -> dict | None:
    """For the order page: the split form's URL when this user may split this order now, and
    the split family (original and parts). None when there is nothing to show."""
    from app.extensions import appbuilder
    from app.services import order_split

    try:
        order = order_service.get_order(int(order_id))
        family = order_split.family(order) if order_split.is_split(order) else []
        can = (appbuilder.sm.has_access("can_audit", "Order") and order_split.why_not(order) is None)
    except Exception:  # a panel must never break the order page
        return None
    if not family and not can:
        return None
    return {"url": url_for("OrderView.split", pk=order.id) if can else None, "id": order.id,
            "family": [{"id": o.id, "number": o.platform_order_id, "status": o.status_label,
                        "root": o.split_from_id is None} for o in family]}


class OrderApi(OmsModelRestApi):
    resource_name = "order"
    datamodel = OmsInterface(Order)
    class_permission_name = "Order"
    method_permission_name = dict(
        OmsModelRestApi.method_permission_name, transition="write", reveal="reveal", batch="read",
        split="write",  # and can_audit, checked in split()
    )
    base_permissions = ["can_read", "can_write", "can_reveal"]
    list_columns = ["id", "platform_order_id", "shop.id", "shop.name", "platform", "status", "is_held",
                    "buyer_nick", "receiver_name", "receiver_phone", "receiver_province", "receiver_city",
                    "receiver_district", "receiver_address", "goods_amount", "paid_amount", "cost_amount",
                    "post_fee", "flag", "seller_memo", "buyer_message", "paid_at", "carrier.name",
                    "tracking_number", "warehouse.name", "warehouse_reason", "is_returning_customer",
                    "writeback_status", "writeback_error", "updated_at"]
    show_columns = list_columns + ["platform_status", "discount_amount", "receiver_zip", "close_reason",
                                   "platform_created_at", "audited_at", "shipped_at", "completed_at",
                                   "closed_at", "customer.id"]
    search_columns = ["platform_order_id", "shop", "platform", "status", "is_held", "flag", "buyer_nick",
                      "receiver_phone", "receiver_province", "tracking_number", "paid_at", "updated_at",
                      "is_returning_customer"]
    order_columns = ["id", "platform_order_id", "status", "paid_at", "paid_amount", "updated_at"]
    edit_columns = [f[:-3] if f.endswith("_id") else f for f in order_service.EDITABLE_FIELDS]
    add_columns = ["platform_order_id"]
    base_order = ("id", "desc")
    openapi_spec_tag = "Orders"

    # 订单工作台 (services/grid.py, services/order_grid.py) ------------------------
    grid_title = _l("Order workbench")
    grid_columns = ["platform_order_id", "shop.name", "platform", "status", "is_held", "flag", "buyer_nick",
                    "receiver_name", "receiver_phone", "receiver_province", "receiver_city", "paid_amount",
                    "cost_amount", "paid_at", "carrier.name", "tracking_number", "warehouse.name",
                    "warehouse_reason", "seller_memo", "buyer_message", "is_returning_customer",
                    "writeback_status", "platform_created_at", "updated_at"]
    grid_choices = {"status": ORDER_STATUSES, "platform": PLATFORMS, "flag": FLAGS,
                    "writeback_status": WRITEBACK_STATUSES}
    grid_default_sort = ("paid_at", "desc")
    grid_frozen = 2
    grid_tabs = "order_status"
    grid_widths = {"platform_order_id": 170, "warehouse_reason": 260, "seller_memo": 180, "buyer_message": 160,
                   "tracking_number": 150}
    grid_quick_filters = [
        {"key": "shop_id", "label": _l("Shop"), "type": "multiselect", "options": "shops"},
        {"key": "platform", "label": _l("Platform"), "type": "select", "options": "platforms"},
        {"key": "paid_at", "label": _l("Paid at"), "type": "daterange"},
        {"key": "flag", "label": _l("Flag"), "type": "select", "options": "flags"},
        {"key": "is_returning_customer", "label": _l("Customer"), "type": "select", "options": "new_returning"},
        {"key": "receiver_province", "label": _l("Province"), "type": "select", "options": "provinces"},
        {"key": "carrier_id", "label": _l("Carrier"), "type": "select", "options": "carriers"},
        {"key": "sku", "label": _l("SKU or merchant code"), "type": "text"},
        {"key": "keyword", "label": _l("Order / tracking no. / buyer / mobile"), "type": "text"},
    ]
    # Batch actions on a selection or on everything matching the filter
    # (services/batch_actions.py); ``permission`` is checked on Order.
    grid_actions = [
        {"code": "audit", "label": _l("Audit"), "permission": "can_audit"},
        {"code": "unaudit", "label": _l("Undo audit"), "permission": "can_audit"},
        {"code": "hold", "label": _l("Hold"), "permission": "can_hold",
         "params": [{"key": "reason", "label": _l("Hold reason"), "type": "text", "required": True}]},
        {"code": "release", "label": _l("Release holds"), "permission": "can_hold"},
        {"code": "flag", "label": _l("Set flag"), "permission": "can_write",
         "params": [{"key": "flag", "label": _l("Flag"), "type": "select", "options": "flags",
                     "required": True}]},
        {"code": "memo", "label": _l("Set seller memo"), "permission": "can_write",
         "params": [{"key": "memo", "label": _l("Seller memo"), "type": "text"}]},
        {"code": "carrier", "label": _l("Assign carrier"), "permission": "can_write",
         "params": [{"key": "carrier_id", "label": _l("Carrier"), "type": "select", "options": "carriers",
                     "required": True}]},
        {"code": "warehouse", "label": _l("Assign warehouse"), "permission": "can_write",
         "params": [{"key": "warehouse_id", "label": _l("Warehouse"), "type": "select",
                     "options": "warehouses", "required": True}]},
        {"code": "ship", "label": _l("Ship"), "permission": "can_write"},
        {"code": "carrier_rules", "label": _l("Choose carrier by rules"), "permission": "can_write"},
        {"code": "waybill", "label": _l("Get tracking numbers"), "permission": "can_write"},
        {"code": "cancel_waybill", "label": _l("Cancel tracking numbers"), "permission": "can_write"},
        {"code": "print", "label": _l("Print labels and packing lists"), "permission": "can_write"},
        {"code": "print_labels", "label": _l("Print labels"), "permission": "can_write"},
    ]

    def grid_save_row(self, pk: int, changes: dict) -> None:
        body = {({"carrier": "carrier_id", "warehouse": "warehouse_id"}.get(k, k)): v for k, v in changes.items()}
        order_service.update_fields(order_service.get_order(pk), body, user_id=g.user.id)

    def __init__(self):
        super().__init__()
        self.base_permissions = ["can_read", "can_write", "can_reveal"]

    def put_headless(self, pk):
        bad = self._forbidden_keys()
        if bad:
            return self.response(403, message=f"无权写入字段：{'、'.join(bad)}")
        if not request.is_json or not isinstance(request.json, dict):
            return self.response_400(message="请求体必须是 JSON 对象")
        # The schema (and OpenAPI) names relations "carrier"/"warehouse"; accept both.
        body = {({"carrier": "carrier_id", "warehouse": "warehouse_id"}.get(k, k)): v
                for k, v in request.json.items()}
        try:
            changed = order_service.edit_order(int(pk), body, user_id=g.user.id)
        except DomainError as exc:
            return self.response(exc.status_code, **exc.to_dict())
        order = order_service.get_order(int(pk))
        result = columns.present_row(Order, self.show_model_schema.dump(order))
        return self.response(200, result=result, changed=changed)

    def post_headless(self):
        return self.response(405, message="订单由平台同步或导入产生，不能通过接口新建")

    @api_expose("/<int:pk>/transition", methods=["POST"])
    @protect()
    @safe
    @permission_name("transition")
    def transition(self, pk):
        """Run a status transition on an order
        ---
        post:
          parameters:
          - in: path
            schema: {type: integer}
            name: pk
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    action: {type: string}
                    reason: {type: string}
          responses:
            200: {description: New status}
            404: {$ref: '#/components/responses/404'}
            409: {description: Illegal transition}
            422: {$ref: '#/components/responses/422'}
        """
        body = request.get_json(silent=True) or {}
        action_name = body.get("action") or ""
        needed = order_views.permission_for_action(action_name)
        if needed and not self.appbuilder.sm.has_access(f"can_{needed}", "Order"):
            return self.response(403, message="没有执行该操作的权限")
        try:
            order = order_service.transition(pk, action_name, user_id=g.user.id, reason=body.get("reason"))
        except DomainError as exc:
            return self.response(exc.status_code, **exc.to_dict())
        return self.response(200, id=order.id, status=order.status)

    @api_expose("/batch", methods=["POST"])
    @protect()
    @safe
    @permission_name("batch")
    def batch(self):
        """Run a batch action on selected orders, or on every order matching the grid filter
        ---
        post:
          description: >
            Body ``{action, ids?: [int], filters?: {...}, params?: {...}}``: ``action`` is a
            code of ``grid_actions`` (audit, unaudit, hold, release, flag, memo, carrier,
            warehouse, ship); ``ids`` the selected orders, or ``filters`` the grid's filter
            object (select all matching, at most OMS_BATCH_MAX orders); ``params`` the
            action's parameters (hold: reason; flag: flag 0-5; memo: memo; carrier:
            carrier_id; warehouse: warehouse_id). Up to OMS_BATCH_INLINE_MAX orders the
            batch runs now: 200 ``{result}`` with ``result`` = ``{action, action_zh, total,
            ok: [id], skipped: [{id, platform_order_id, message}], failed: [{id,
            platform_order_id, message}]}``. Above, it is queued: 202 ``{job_id, total,
            message}``; poll ``GET /api/v1/job/<job_id>`` for progress and the same result.
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    action: {type: string}
                    ids: {type: array, items: {type: integer}}
                    filters: {type: object}
                    params: {type: object}
          responses:
            200: {description: The result (run inline)}
            202: {description: Queued as a job}
            403: {$ref: '#/components/responses/403'}
            422: {$ref: '#/components/responses/422'}
        """
        from app.jobs import batch as batch_jobs
        from app.services import batch_actions

        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return self.response(422, message="请求体必须是 JSON 对象")
        code = str(body.get("action") or "")
        declared = {a["code"]: a for a in self.grid_actions}
        if code not in declared:
            return self.response(422, message=f"未知的批量操作：{code}", field="action")
        if not self.appbuilder.sm.has_access(declared[code].get("permission", "can_write"), "Order"):
            return self.response(403, message=f"没有「{batch_actions.get_action(code).zh}」的权限")
        try:
            params = batch_actions.clean_params(code, body.get("params"))
            ids = batch_actions.select_ids(body.get("ids"), body.get("filters"))
            outcome = batch_jobs.start(code, ids, params, user_id=g.user.id)
        except DomainError as exc:
            return self.response(exc.status_code, **exc.to_dict())
        if outcome.job is not None:
            return self.response(202, job_id=outcome.job.id, total=outcome.total,
                                 message=f"已转入后台处理 {outcome.total} 个订单")
        return self.response(200, result=outcome.result)

    @api_expose("/<int:pk>/split", methods=["POST"])
    @protect()
    @safe
    @permission_name("split")
    def split(self, pk):
        """拆分订单: move quantities of lines into a new order of the same shop
        ---
        post:
          description: >
            Body ``{lines: {"<line id>": quantity}, warehouse_id?: int}``. Needs ``can_audit`` on
            Order (运营, 管理员). Only 待审核/待发货 orders, not held 退款中 or 平台锁定; at
            least one unit stays. 201 ``{result: {id, platform_order_id, status, new_order: {id,
            platform_order_id, status}, moved, message}}``; errors ``{message, field}`` in zh.
          parameters:
          - in: path
            schema: {type: integer}
            name: pk
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    lines: {type: object, additionalProperties: {type: integer}}
                    warehouse_id: {type: integer}
          responses:
            201: {description: The original and the new order}
            403: {$ref: '#/components/responses/403'}
            404: {$ref: '#/components/responses/404'}
            409: {description: The order cannot be split now}
            422: {$ref: '#/components/responses/422'}
        """
        from app.services import order_split

        if not self.appbuilder.sm.has_access("can_audit", "Order"):
            return self.response(403, message="没有拆分订单的权限")
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return self.response(422, message="请求体必须是 JSON 对象")
        try:
            result = order_split.split_order(pk, body.get("lines"), user_id=g.user.id,
                                             warehouse_id=body.get("warehouse_id"))
        except DomainError as exc:
            return self.response(exc.status_code, **exc.to_dict())
        return self.response(201, result=result.to_dict())

    @api_expose("/<int:pk>/reveal", methods=["POST"])
    @protect()
    @safe
    @permission_name("reveal")
    def reveal(self, pk):
        """Unmasked receiver data (logged)
        ---
        post:
          parameters:
          - in: path
            schema: {type: integer}
            name: pk
          responses:
            200: {description: Receiver data}
            403: {$ref: '#/components/responses/403'}
            404: {$ref: '#/components/responses/404'}
        """
        try:
            return self.response(200, result=order_service.reveal(pk, g.user.id))
        except DomainError as exc:
            return self.response(exc.status_code, **exc.to_dict())


class OrderLineApi(OmsModelRestApi):
    resource_name = "order_line"
    datamodel = OmsInterface(OrderLine)
    class_permission_name = "Order"
    base_permissions = ["can_read"]
    list_columns = ["id", "order.id", "platform_line_id", "merchant_code", "sku.id", "title", "spec",
                    "quantity", "price", "paid_amount", "cost_price", "refund_status", "warehouse.id"]
    show_columns = list_columns
    search_columns = ["order", "merchant_code", "title", "refund_status"]


class OrderEventApi(OmsModelRestApi):
    resource_name = "order_event"
    datamodel = OmsInterface(OrderEvent)
    class_permission_name = "OrderEvent"
    base_permissions = ["can_read"]
    list_columns = ["id", "order.id", "created_at", "user.id", "source", "action", "field", "old_value",
                    "new_value", "note"]
    show_columns = list_columns
    search_columns = ["order", "source", "action", "field", "created_at"]
    base_order = ("id", "desc")


class OrderHoldApi(OmsModelRestApi):
    resource_name = "order_hold"
    datamodel = OmsInterface(OrderHold)
    class_permission_name = "Order"
    base_permissions = ["can_read"]
    list_columns = ["id", "order.id", "reason", "note", "created_at", "released_at"]
    show_columns = list_columns
    search_columns = ["order", "reason", "created_at", "released_at"]
