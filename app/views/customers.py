from __future__ import annotations

from flask_babel import lazy_gettext as _l

from app.models import Customer
from app.services.customers import TIER_ZH

from .base import OmsModelRestApi, OmsModelView
from .interface import OmsInterface
from .orders import OrderView


class CustomerOrderView(OrderView):
    """A customer's purchase history (same permissions and scope as orders)."""

    list_template = "appbuilder/general/model/list.html"
    list_columns = ["platform_order_id", "shop", "status", "paid_amount", "paid_at"]
    related_views = []


class CustomerView(OmsModelView):
    datamodel = OmsInterface(Customer)
    class_permission_name = "Customer"
    list_title = _l("Customers")
    show_title = _l("Customer")
    edit_title = _l("Edit customer")
    list_columns = ["buyer_nick", "name", "phone", "province", "city", "order_count", "total_spent", "tier",
                    "last_order_at"]
    show_columns = ["buyer_nick", "name", "phone", "province", "city", "order_count", "total_spent", "tier",
                    "first_order_at", "last_order_at", "shops", "note"]
    edit_columns = ["note"]
    search_columns = ["buyer_nick", "phone", "province", "tier", "order_count", "last_order_at"]
    order_columns = ["order_count", "total_spent", "last_order_at"]
    formatters_columns = {"tier": lambda v: TIER_ZH.get(v or "none", v)}
    related_views = [CustomerOrderView]
    base_order = ("last_order_at", "desc")

    def __init__(self, **kw):
        super().__init__(**kw)
        self.base_permissions = [p for p in self.base_permissions if p not in ("can_delete", "can_add")]


class CustomerApi(OmsModelRestApi):
    grid_title = _l("Customer grid")
    resource_name = "customer"
    datamodel = OmsInterface(Customer)
    class_permission_name = "Customer"
    list_columns = show_columns = ["id", "buyer_nick", "name", "phone", "province", "city", "order_count",
                                   "total_spent", "tier", "first_order_at", "last_order_at", "note"]
    edit_columns = ["note"]
    search_columns = ["buyer_nick", "phone", "province", "tier"]

    def __init__(self):
        super().__init__()
        self.base_permissions = ["can_read", "can_write"]

    def post_headless(self):
        return self.response(405, message="客户由订单自动生成，不能通过接口新建")
