"""Parcel tracking pages: 包裹跟踪 (parcels and their events), 物流异常 (the exception
list with assignee and resolution), the order page's timeline, and the buyer-facing
public tracking page (no login, rate-limited, no PII)."""
from __future__ import annotations

from flask import Blueprint, current_app, g, render_template, request
from flask_babel import lazy_gettext as _l
from sqlalchemy import inspect

from app.extensions import db
from app.platforms.base import CN_TZ
from app.models.tracking import EXCEPTION_REASONS, EXCEPTION_STATUSES, LogisticsException, Parcel, ParcelEvent
from app.services import logistics_exceptions, tracking

from .base import OmsModelView
from .interface import OmsInterface


def _state(value):
    return tracking.STATE_ZH.get(value, value or "")


class ParcelEventView(OmsModelView):
    datamodel = OmsInterface(ParcelEvent)
    class_permission_name = "Parcel"
    base_permissions = ["can_read"]
    list_title = show_title = _l("Tracking events")
    list_columns = ["event_time", "status_text", "area", "context"]
    show_columns = ["parcel", "event_time", "status_text", "area", "context", "created_at"]
    search_columns = ["event_time", "status_text"]
    base_order = ("event_time", "desc")


class ParcelView(OmsModelView):
    datamodel = OmsInterface(Parcel)
    class_permission_name = "Parcel"
    base_permissions = ["can_read"]
    list_title = _l("Parcel tracking")
    show_title = _l("Parcel")
    list_columns = ["order", "carrier", "tracking_number", "state", "shipped_at", "picked_up_at", "last_event_at",
                    "signed_at", "next_poll_at", "last_error"]
    show_columns = ["order", "carrier", "tracking_number", "kuaidi100_code", "state", "state_code", "shipped_at",
                    "picked_up_at", "last_event_at", "signed_at", "last_polled_at", "next_poll_at", "poll_errors",
                    "last_error"]
    order_columns = ["tracking_number", "state", "shipped_at", "last_event_at", "signed_at", "next_poll_at"]
    search_columns = ["tracking_number", "state", "carrier", "shipped_at", "last_event_at", "signed_at"]
    formatters_columns = {"state": _state}
    related_views = [ParcelEventView]
    base_order = ("shipped_at", "desc")


def _reason(value):
    return logistics_exceptions.REASON_ZH.get(value, value or "")


def _exc_status(value):
    return str(EXCEPTION_STATUSES.get(value, value or ""))


class LogisticsExceptionView(OmsModelView):
    datamodel = OmsInterface(LogisticsException)
    class_permission_name = "LogisticsException"
    base_permissions = ["can_read", "can_write"]
    list_title = _l("Logistics exceptions")
    show_title = _l("Logistics exception")
    edit_title = _l("Handle logistics exception")
    list_columns = ["detected_at", "reason", "status", "order", "parcel", "detail", "assignee", "resolution",
                    "resolved_at"]
    show_columns = ["order", "parcel", "reason", "status", "detail", "detected_at", "assignee", "resolution",
                    "resolved_at", "resolved_by"]
    edit_columns = ["assignee", "resolution", "resolved_at"]
    order_columns = ["detected_at", "reason", "status", "resolved_at"]
    search_columns = ["reason", "status", "assignee", "detected_at", "resolved_at"]
    formatters_columns = {"reason": _reason, "status": _exc_status}
    base_order = ("detected_at", "desc")

    def __init__(self, **kw):
        super().__init__(**kw)
        # Entries come from the rules; people assign and resolve them, never add or delete.
        self.base_permissions = [p for p in self.base_permissions if p not in ("can_add", "can_delete")]

    def pre_update(self, item: LogisticsException):
        """The form's changes go through the service (validated, scoped)."""
        state = inspect(item)
        changes = {}
        new_assignee = item.assignee.id if item.assignee is not None else None
        if new_assignee != item.assignee_id:
            changes["assignee_id"] = new_assignee
        for name in ("resolution", "resolved_at"):
            if state.attrs[name].history.has_changes():
                changes[name] = getattr(item, name)
        when = changes.get("resolved_at")
        if when is not None and when.tzinfo is None:  # the form speaks Beijing time
            changes["resolved_at"] = when.replace(tzinfo=CN_TZ)
        entry_id = item.id
        db.session.rollback()  # forget the form's direct writes; the service applies them
        if changes:
            logistics_exceptions.update_entry(entry_id, changes, user_id=g.user.id)


# --- the public page ----------------------------------------------------------------------
def _public_blueprint() -> Blueprint:
    bp = Blueprint("public_tracking", __name__)

    @bp.route("/track/", methods=["GET", "POST"])
    def lookup():
        result, searched = None, False
        if request.method == "POST":
            searched = True
            result = tracking.public_lookup(request.form.get("order_number", ""), request.form.get("phone_last4", ""))
        resp = current_app.make_response(render_template("tracking/public.html", result=result, searched=searched))
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-Robots-Tag"] = "noindex"
        return resp

    return bp


def register(appbuilder) -> None:
    """The public page (rate-limited per client IP by FAB's Flask-Limiter) and the
    order page's timeline helper."""
    app = current_app._get_current_object()
    bp = _public_blueprint()
    limit = app.config.get("OMS_PUBLIC_TRACKING_RATE_LIMIT") or "10 per minute"
    appbuilder.sm.limiter.limit(limit, methods=["POST"])(bp)
    app.register_blueprint(bp)
    app.jinja_env.globals["oms_tracking_timeline"] = tracking.timeline_for_order
    app.jinja_env.globals["oms_exception_reason"] = _reason


__all__ = ["ParcelView", "ParcelEventView", "LogisticsExceptionView", "register", "EXCEPTION_REASONS"]


# REST APIs, so parcels and 物流异常 get the spreadsheet grid and exports too ----------
from app.models.tracking import TRACKING_STATES  # noqa: E402

from .base import OmsModelRestApi  # noqa: E402


class ParcelApi(OmsModelRestApi):
    resource_name = "parcel"
    datamodel = OmsInterface(Parcel)
    class_permission_name = "Parcel"
    base_permissions = ["can_read"]
    list_columns = show_columns = ["id", "order.id", "order.platform_order_id", "carrier.name", "tracking_number",
                                   "state", "shipped_at", "picked_up_at", "last_event_at", "signed_at",
                                   "next_poll_at", "poll_errors", "last_error"]
    order_columns = ["tracking_number", "state", "shipped_at", "last_event_at", "signed_at", "next_poll_at"]
    search_columns = ["tracking_number", "state", "carrier", "shipped_at", "last_event_at", "signed_at"]
    base_order = ("shipped_at", "desc")
    grid_title = _l("Shipment grid")
    grid_choices = {"state": TRACKING_STATES}
    grid_default_sort = ("shipped_at", "desc")
    openapi_spec_tag = "Parcels"


class LogisticsExceptionApi(OmsModelRestApi):
    resource_name = "logistics_exception"
    datamodel = OmsInterface(LogisticsException)
    class_permission_name = "LogisticsException"
    base_permissions = ["can_read"]
    list_columns = show_columns = ["id", "order.id", "order.platform_order_id", "parcel.tracking_number", "reason",
                                   "status", "detected_at", "detail", "assignee.username", "resolution",
                                   "resolved_at"]
    order_columns = ["detected_at", "resolved_at", "reason", "status"]
    search_columns = ["reason", "status", "detected_at", "resolved_at"]
    base_order = ("detected_at", "desc")
    grid_title = _l("Logistics exceptions")
    grid_choices = {"reason": EXCEPTION_REASONS, "status": EXCEPTION_STATUSES}
    grid_default_sort = ("detected_at", "desc")
    openapi_spec_tag = "Logistics exceptions"
