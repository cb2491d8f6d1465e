"""库存 pages: 入库, 调整, 盘点 (stock documents, services/stock_documents.py), 退货入库
(services/stock_returns.py) and 库存预警
with the navbar notification area (services/stock_alerts.py). Thin: parse the form,
call the service, render its result or its zh error."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from flask import flash, redirect, request, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.security.decorators import has_access
from flask_login import current_user
from sqlalchemy import select

# The ORM hooks of these services (re-match on mapping changes, alert evaluation after
# stock commits) must be registered in every process that builds the app.
from app.services import sku_mapping, stock_alerts, stock_documents, stock_returns  # noqa: F401
from app.services.errors import DomainError, NotFound
from app.services.imports import ImportFileError

DOC_PERMISSION = "StockDocument"


def _warehouses():
    from app.extensions import db
    from app.models import Warehouse

    return db.session.scalars(select(Warehouse).where(Warehouse.active.is_(True))
                              .order_by(Warehouse.priority, Warehouse.id)).all()


def _upload_lines(kind: str):
    """Lines from an uploaded file (our 入库/盘点 template), or None when no file was sent."""
    up = request.files.get("file")
    if up is None or not up.filename:
        return None
    suffix = Path(up.filename).suffix.lower()
    if suffix not in (".xlsx", ".xls", ".csv"):
        raise ImportFileError("只支持 .xlsx、.xls 和 .csv 文件")
    fd, tmp = tempfile.mkstemp(suffix=suffix)
    os.close(fd)
    try:
        up.save(tmp)
        return stock_documents.lines_from_file(tmp, os.path.basename(up.filename), kind)
    finally:
        os.unlink(tmp)


class _DocumentView(BaseView):
    class_permission_name = DOC_PERMISSION
    default_view = "form"
    kind = ""
    template = ""

    def _render(self, **kw):
        form = {k: request.form.get(k, "") for k in ("warehouse", "source_ref", "note", "lines")}
        return self.render_template(self.template, warehouses=_warehouses(), form=form, **kw)

    def _post(self, run):
        """The form on GET; on POST ``run()`` the document and flash its summary, or show
        the form again with the zh error (422)."""
        if request.method == "GET":
            return self._render()
        try:
            result = run()
        except (DomainError, ImportFileError) as exc:
            flash(exc.message, "danger")
            return self._render(), 422
        flash(result.summary, "success")
        return redirect(url_for(f"{type(self).__name__}.form"))


class InboundView(_DocumentView):
    """入库: warehouse, SKUs by merchant code with quantities, source document, note."""

    route_base = "/stock/inbound"
    method_permission_name = {"form": "write"}
    kind = "inbound"
    template = "stock/inbound.html"

    @expose("/", methods=["GET", "POST"])
    @has_access
    def form(self):
        def run():
            lines = _upload_lines("inbound")
            if lines is None:
                lines = stock_documents.parse_text(request.form.get("lines", ""))
            return stock_documents.inbound(request.form.get("warehouse"), lines,
                                           source_ref=request.form.get("source_ref"),
                                           note=request.form.get("note"), user_id=current_user.id)

        return self._post(run)


class AdjustView(_DocumentView):
    """调整: ± quantity per SKU with a reason."""

    route_base = "/stock/adjust"
    method_permission_name = {"form": "write"}
    kind = "adjust"
    template = "stock/adjust.html"

    @expose("/", methods=["GET", "POST"])
    @has_access
    def form(self):
        return self._post(lambda: stock_documents.adjust(
            request.form.get("warehouse"),
            stock_documents.parse_text(request.form.get("lines", ""), with_reason=True),
            source_ref=request.form.get("source_ref"), user_id=current_user.id))


class StocktakeView(_DocumentView):
    """盘点: counts for one warehouse (typed or uploaded) → diff preview → apply."""

    route_base = "/stock/stocktake"
    method_permission_name = {"form": "write", "apply": "write"}
    kind = "stocktake"
    template = "stock/stocktake.html"

    @expose("/", methods=["GET", "POST"])
    @has_access
    def form(self):
        if request.method == "GET":
            return self._render()
        try:
            lines = _upload_lines("stocktake")
            if lines is None:
                lines = stock_documents.parse_text(request.form.get("lines", ""))
            wh, rows = stock_documents.stocktake_preview(request.form.get("warehouse"), lines)
        except (DomainError, ImportFileError) as exc:
            flash(exc.message, "danger")
            return self._render(), 422
        payload = json.dumps([[ln.row, ln.merchant_code, ln.quantity] for ln in lines], ensure_ascii=False)
        expected = json.dumps({r.merchant_code: r.book for r in rows}, ensure_ascii=False)
        return self.render_template("stock/stocktake_preview.html", warehouse=wh, rows=rows, payload=payload,
                                    expected=expected, source_ref=request.form.get("source_ref", ""),
                                    note=request.form.get("note", ""),
                                    changed=sum(1 for r in rows if r.delta))

    @expose("/apply", methods=["POST"])
    @has_access
    def apply(self):
        try:
            try:
                raw = json.loads(request.form.get("payload") or "[]")
                expected = json.loads(request.form.get("expected") or "{}")
                lines = [stock_documents.Line(int(r), c, q) for r, c, q in raw]
            except (ValueError, TypeError):
                raise stock_documents.DocumentInvalid(["盘点数据无效，请重新预览"], "payload") from None
            result = stock_documents.stocktake_apply(request.form.get("warehouse"), lines, expected_book=expected,
                                                     source_ref=request.form.get("source_ref"),
                                                     note=request.form.get("note"), user_id=current_user.id)
        except DomainError as exc:
            flash(exc.message, "danger")
            return redirect(url_for("StocktakeView.form"))
        flash(result.summary, "success")
        return redirect(url_for("StocktakeView.form"))


class ReturnView(BaseView):
    """退货入库: type an 订单号, see its shipped lines (shipped, returned, returnable), enter
    the quantities that came back, the warehouse, source document and reason."""

    route_base = "/stock/return"
    class_permission_name = DOC_PERMISSION
    method_permission_name = {"form": "write"}
    default_view = "form"

    def _sheet_page(self, number: str, order_id, status: int = 200):
        """The page for an 订单号 (or an order id): the lookup form, a choice of shops, or the
        order's lines; a zh error when it is not found."""
        sheet, choices, error = None, [], None
        try:
            if order_id:
                sheet = stock_returns.return_sheet(int(order_id))
            elif number.strip():
                choices = stock_returns.find_orders(number)
                if not choices:
                    raise NotFound(f"订单不存在：{number.strip()}", "order")
                if len(choices) == 1:
                    sheet, choices = stock_returns.return_sheet(choices[0]), []
        except ValueError:
            error = f"订单不存在：{order_id}"
        except DomainError as exc:
            error = exc.message
        if error:
            flash(error, "danger")
            status = 404 if status == 200 else status
        quantities = {k[4:]: v for k, v in request.form.items() if k.startswith("qty_")}
        form = {k: request.form.get(k, "") for k in ("warehouse", "source_ref", "note")}
        if sheet is not None and request.method == "GET":
            form["warehouse"] = str(sheet.warehouse_id or "")
            quantities = {str(ln.line_id): (str(ln.returnable) if ln.returnable else "") for ln in sheet.lines}
        return self.render_template("stock/return.html", number=number or (sheet.order.platform_order_id if sheet
                                                                             else ""),
                                    sheet=sheet, choices=choices, warehouses=_warehouses(), form=form,
                                    quantities=quantities), status

    @expose("/", methods=["GET", "POST"])
    @has_access
    def form(self):
        if request.method == "GET":
            return self._sheet_page(request.args.get("order", ""), request.args.get("order_id"))
        order_id = request.form.get("order_id", "")
        try:
            quantities = {k[4:]: v for k, v in request.form.items() if k.startswith("qty_")}
            result = stock_returns.receive_return(int(order_id), quantities, warehouse=request.form.get("warehouse"),
                                                  note=request.form.get("note"),
                                                  source_ref=request.form.get("source_ref"),
                                                  user_id=current_user.id)
        except ValueError:
            flash("请先输入订单号查询订单", "danger")
            return self._sheet_page("", None, 422)
        except DomainError as exc:
            flash(exc.message, "danger")
            return self._sheet_page("", order_id, 422)
        flash(result.summary, "success")
        return redirect(url_for("ReturnView.form", order_id=result.order_id))

    def create_blueprint(self, appbuilder, *args, **kwargs):
        blueprint = super().create_blueprint(appbuilder, *args, **kwargs)
        sm = appbuilder.sm

        def return_url(order_id):
            """The 退货入库 page of a shipped order, for users who may book returns; else None."""
            try:
                if not sm.has_access("can_write", DOC_PERMISSION):
                    return None
                order = stock_returns.get_order(int(order_id))
                if not stock_returns.has_shipped(order):
                    return None
            except Exception:  # a link must never break the order page
                return None
            return url_for("ReturnView.form", order_id=order.id)

        blueprint.app_context_processor(lambda: {"oms_return_url": return_url})
        return blueprint


class StockAlertView(BaseView):
    """库存预警: the low-stock list, the alert history, and marking alerts read."""

    route_base = "/stock/alerts"
    class_permission_name = "Stock"
    method_permission_name = {"index": "read", "mark_read": "read"}
    default_view = "index"

    @expose("/")
    @has_access
    def index(self):
        return self.render_template("stock/alerts.html", rows=stock_alerts.low_stock(),
                                    formula=stock_alerts.formula_text(), history=stock_alerts.recent_alerts(50))

    @expose("/read", methods=["POST"])
    @has_access
    def mark_read(self):
        ids = request.form.getlist("alert_id", type=int)
        stock_alerts.mark_read(current_user.id, ids or None)
        target = request.form.get("next") or ""
        if not target.startswith("/") or target.startswith("//"):
            target = url_for("StockAlertView.index")
        return redirect(target)

    def create_blueprint(self, appbuilder, *args, **kwargs):
        blueprint = super().create_blueprint(appbuilder, *args, **kwargs)
        sm = appbuilder.sm

        def notices():
            """(unread count, newest unread alerts) for the navbar, or None: not logged in
            or not allowed to read stock."""
            if not getattr(current_user, "is_authenticated", False):
                return None
            if not sm.has_access("can_read", "Stock"):
                return None
            return stock_alerts.unread(current_user.id, limit=8)

        blueprint.app_context_processor(lambda: {"oms_stock_notices": notices})
        return blueprint
