"""快递考核 pages (issue #6 item 7): the scorecard with its per-province recommendation and
xlsx export, 运费价目 (rate card) and 快递账单 (imported bill lines, with their upload).
Thin: parse, call services/carrier_scorecard.py, render."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from flask import Response, current_app, flash, g, redirect, request, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.security.decorators import has_access
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from app.extensions import db
from app.models import Shop
from app.models.scorecard import CarrierBillLine, CarrierRate
from app.services import carrier_scorecard as scorecard
from app.services.columns import current_grant
from app.services.errors import DomainError

from .base import VIEW_METHOD_PERMISSIONS, OmsModelView
from .interface import OmsInterface


# --- 快递考核 --------------------------------------------------------------------------------
class CarrierScorecardView(BaseView):
    route_base = "/carrier-scorecard"
    class_permission_name = "CarrierScorecard"
    method_permission_name = {"index": "read", "export": "read"}
    base_permissions = ["can_read"]
    default_view = "index"

    def _query(self):
        args = request.args
        shop_ids = None
        shop = (args.get("shop") or "").strip()
        if shop:
            if not shop.isdigit():
                raise DomainError("「店铺」参数无效")
            shop_ids = [int(shop)]
        period = scorecard.period_from_dates(args.get("from"), args.get("to"))
        rows = scorecard.scorecard(period, shop_ids=shop_ids)
        recs = scorecard.recommend(rows, period)
        return period, rows, recs

    @expose("/")
    @has_access
    def index(self):
        shops = db.session.scalars(select(Shop).order_by(Shop.name)).all()
        form = {k: request.args.get(k, "") for k in ("from", "to", "shop")}
        try:
            period, rows, recs = self._query()
        except DomainError as exc:
            flash(exc.message, "danger")
            period, rows, recs = scorecard.last_days(), [], {}
        by_province: dict[str, list] = {}
        for r in rows:
            by_province.setdefault(r.province_label, []).append(r)
        return self.render_template("scorecard/index.html", shops=shops, form=form, period=period,
                                    groups=by_province, recs=recs, rules=scorecard.Rules.from_config(),
                                    show_cost=current_grant().finance)

    @expose("/export")
    @has_access
    def export(self):
        from app.services.exports import content_disposition

        try:
            period, rows, recs = self._query()
        except DomainError as exc:
            flash(exc.message, "danger")
            return redirect(url_for("CarrierScorecardView.index"))
        data = scorecard.export_xlsx(rows, recs, period, show_cost=current_grant().finance)
        resp = Response(data, mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
        resp.headers["Content-Disposition"] = content_disposition("快递考核.xlsx")
        return resp


# --- 运费价目 -------------------------------------------------------------------------------
class CarrierRateView(OmsModelView):
    datamodel = OmsInterface(CarrierRate)
    class_permission_name = "CarrierRate"
    list_title = _l("Carrier rate card")
    show_title = _l("Carrier rate")
    add_title = _l("Add carrier rate")
    edit_title = _l("Edit carrier rate")
    list_columns = ["carrier", "province", "first_weight_kg", "first_price", "additional_price", "flat_price",
                    "note", "updated_at"]
    show_columns = list_columns
    add_columns = edit_columns = ["carrier", "province", "first_weight_kg", "first_price", "additional_price",
                                  "flat_price", "note"]
    description_columns = {
        "province": _l("Short name such as Zhejiang; empty: every province without its own rate"),
        "additional_price": _l("Each started kilogram beyond the first weight"),
        "flat_price": _l("One price per parcel whatever its weight (leave the first weight price empty)"),
    }
    formatters_columns = {"province": lambda v: v or "（其他省份）"}
    search_columns = ["carrier", "province"]
    base_order = ("carrier_id", "asc")

    def pre_add(self, item):
        scorecard.validate_rate(item)

    pre_update = pre_add


# --- 快递账单 -------------------------------------------------------------------------------
class CarrierBillLineView(OmsModelView):
    datamodel = OmsInterface(CarrierBillLine)
    class_permission_name = "CarrierBill"
    method_permission_name = dict(VIEW_METHOD_PERMISSIONS, import_bill="write")
    base_permissions = ["can_read", "can_write", "can_delete"]
    list_template = "scorecard/bill_list.html"
    list_title = show_title = _l("Carrier bills")
    list_columns = ["imported_at", "carrier", "tracking_number", "order", "weight_kg", "amount", "source",
                    "imported_by"]
    show_columns = list_columns + ["parcel"]
    search_columns = ["tracking_number", "carrier", "imported_at", "source"]
    base_order = ("id", "desc")

    def __init__(self, **kw):
        super().__init__(**kw)
        # Lines come only from an imported bill; a wrong one can be deleted (and re-imported).
        self.base_permissions = [p for p in self.base_permissions if p not in ("can_add", "can_edit")]

    @expose("/add", methods=["GET", "POST"])
    @has_access
    def add(self):
        return redirect(url_for("CarrierBillLineView.import_bill"))

    @expose("/edit/<pk>", methods=["GET", "POST"])
    @has_access
    def edit(self, pk):
        flash("账单行只能通过导入快递账单修改：重新导入该单号即覆盖", "warning")
        return redirect(url_for("CarrierBillLineView.list"))

    @expose("/import/", methods=["GET", "POST"])
    @has_access
    def import_bill(self):
        result = None
        if request.method == "POST":
            up = request.files.get("file")
            if up is None or not up.filename:
                flash("请选择快递账单文件（.xlsx、.xls 或 .csv）", "danger")
            else:
                suffix = Path(up.filename).suffix.lower()
                if suffix not in (".xlsx", ".xls", ".csv"):
                    flash("只支持 .xlsx、.xls 和 .csv 文件", "danger")
                else:
                    fd, tmp = tempfile.mkstemp(suffix=suffix)
                    os.close(fd)
                    try:
                        up.save(tmp)
                        result = scorecard.import_bill(tmp, os.path.basename(up.filename), user_id=g.user.id)
                    except DomainError as exc:
                        db.session.rollback()
                        flash(exc.message, "danger")
                    finally:
                        os.unlink(tmp)
            if result is not None:
                flash(result["summary"], "success" if result["applied"] and not result["error_count"] else "danger")
        return self.render_template("scorecard/bill_import.html", result=result,
                                    max_mb=int(current_app.config.get("OMS_IMPORT_MAX_BYTES", 0)) // 1048576)


def register(appbuilder) -> None:
    """Template helpers for the places a carrier is chosen (order page, rule form)."""
    app = current_app._get_current_object()
    app.jinja_env.globals["oms_carrier_recommendation"] = _order_recommendation
    app.jinja_env.globals["oms_carrier_recommendations"] = _all_recommendations


def _order_recommendation(order_id):
    try:
        return scorecard.recommendation_for_order(int(order_id))
    except Exception:  # a hint must never break the order page
        current_app.logger.exception("carrier recommendation failed for order %s", order_id)
        return None


def _all_recommendations():
    try:
        recs = scorecard.current_recommendations()
    except Exception:
        current_app.logger.exception("carrier recommendations failed")
        return []
    return [recs[p].to_dict() for p in sorted(recs)]
