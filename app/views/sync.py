"""同步记录: every sync run with its window, counts, duration and zh error."""
from __future__ import annotations

from flask import flash, g, redirect
from flask_appbuilder.actions import action
from flask_babel import lazy_gettext as _l

from app.models import SYNC_STATUSES, SyncReject, SyncRun
from app.services.display import format_plain

from .base import VIEW_METHOD_PERMISSIONS, OmsModelRestApi, OmsModelView
from .interface import OmsInterface

TRIGGERS = {"schedule": "定时", "manual": "立即同步", "cli": "命令行"}


class SyncRunView(OmsModelView):
    datamodel = OmsInterface(SyncRun)
    class_permission_name = "SyncRun"
    base_permissions = ["can_read"]
    list_title = show_title = _l("Sync runs")
    list_columns = ["started_at", "shop", "trigger", "status", "window_start", "window_end", "pages", "fetched",
                    "created", "updated", "unchanged", "rejected", "retries", "duration_seconds", "error"]
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
                                   "unchanged", "rejected", "retries", "error"]
    search_columns = ["shop", "status", "started_at"]
    base_order = ("id", "desc")


class SyncRejectView(OmsModelView):
    """无法保存的平台订单: what the sync left out, with its reason naming the line and field;
    asked for again every hour, or now (立即重试)."""
    datamodel = OmsInterface(SyncReject)
    class_permission_name = "SyncReject"
    base_permissions = ["can_read", "can_delete", "can_sync"]
    method_permission_name = dict(VIEW_METHOD_PERMISSIONS, retry_now="sync")
    list_title = show_title = _l("Rejected platform orders")
    list_columns = ["shop", "platform_order_id", "error", "first_seen_at", "last_seen_at", "last_tried_at",
                    "times_seen"]
    show_columns = list_columns
    search_columns = ["shop", "platform_order_id", "last_seen_at"]
    order_columns = ["first_seen_at", "last_seen_at", "times_seen"]
    base_order = ("last_seen_at", "desc")

    @action("retry_now", _l("Retry now"), None, "fa-refresh")
    def retry_now(self, items):
        from app.jobs.sync import enqueue_sync
        from app.services import sync

        rows = [r for r in (items if isinstance(items, list) else [items]) if r is not None]
        shops = sync.retry_rejects([r.id for r in rows])
        queued = [sid for sid in shops if enqueue_sync(sid, "manual", g.user.id) is not None]
        flash(f"将重试 {len(rows)} 单：{len(queued)} 个店铺已加入同步队列"
              + ("；其余店铺正在同步，下次同步时重试" if len(queued) < len(shops) else ""), "success")
        return redirect(self.get_redirect())
