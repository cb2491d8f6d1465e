"""同步记录: every sync run with its window, counts, duration and zh error."""
from __future__ import annotations

from flask_babel import lazy_gettext as _l

from app.models import SYNC_STATUSES, SyncRun
from app.services.display import format_plain

from .base import OmsModelRestApi, OmsModelView
from .interface import OmsInterface

TRIGGERS = {"schedule": "定时", "manual": "立即同步", "cli": "命令行"}


class SyncRunView(OmsModelView):
    datamodel = OmsInterface(SyncRun)
    class_permission_name = "SyncRun"
    base_permissions = ["can_read"]
    list_title = show_title = _l("Sync runs")
    list_columns = ["started_at", "shop", "trigger", "status", "window_start", "window_end", "pages", "fetched",
                    "created", "updated", "unchanged", "retries", "duration_seconds", "error"]
    show_columns = list_columns + ["finished_at"]
    label_columns = {"duration_seconds": _l("Duration (s)")}
    search_columns = ["shop", "status", "trigger", "started_at"]
    order_columns = ["started_at", "fetched", "created", "updated"]
    formatters_columns = {"status": lambda v: str(SYNC_STATUSES.get(v, v)),
                          "trigger": lambda v: TRIGGERS.get(v, v), "duration_seconds": format_plain}
    base_order = ("id", "desc")


class SyncRunApi(OmsModelRestApi):
    resource_name = "sync_run"
    datamodel = OmsInterface(SyncRun)
    class_permission_name = "SyncRun"
    base_permissions = ["can_read"]
    list_columns = show_columns = ["id", "shop.id", "shop.name", "trigger", "status", "started_at", "finished_at",
                                   "window_start", "window_end", "pages", "fetched", "created", "updated",
                                   "unchanged", "retries", "error"]
    search_columns = ["shop", "status", "started_at"]
    base_order = ("id", "desc")
