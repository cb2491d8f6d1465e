from __future__ import annotations

from flask_babel import lazy_gettext as _l

from app.models import PiiAccessLog
from app.services.order_views import field_label

from .base import OmsModelRestApi, OmsModelView
from .interface import OmsInterface


class PiiAccessLogView(OmsModelView):
    datamodel = OmsInterface(PiiAccessLog)
    class_permission_name = "PiiAccessLog"
    base_permissions = ["can_read"]
    list_title = show_title = _l("PII access log")
    list_columns = ["created_at", "user", "entity", "entity_id", "fields", "purpose", "remote_addr"]
    show_columns = list_columns
    search_columns = ["user", "entity", "entity_id", "created_at"]
    formatters_columns = {
        "entity": lambda v: {"order": "订单", "customer": "客户"}.get(v, v),
        "purpose": lambda v: {"view": "查看", "print": "打印", "export": "导出"}.get(v, v),
        "fields": lambda v: "、".join(field_label(f) for f in (v or "").split(",") if f),
    }
    base_order = ("id", "desc")


class PiiAccessLogApi(OmsModelRestApi):
    resource_name = "pii_access_log"
    datamodel = OmsInterface(PiiAccessLog)
    class_permission_name = "PiiAccessLog"
    base_permissions = ["can_read"]
    list_columns = show_columns = ["id", "created_at", "user.id", "entity", "entity_id", "fields", "purpose",
                                   "remote_addr"]
    search_columns = ["user", "entity", "entity_id", "created_at"]
    base_order = ("id", "desc")
