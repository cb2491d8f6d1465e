"""Grid pages: 订单工作台 and one spreadsheet-like grid per entity.

A page is only a shell: app/static/grid.js reads the entity's grid definition and
rows from its REST API (``/api/v1/<resource>/grid/...``), so row scope, column
scope and permissions are those of the API. Each page class is made by
``grid_page`` with the entity's permission name, so a role that may read the
entity may open its grid, and no new permission exists for it.
"""
from __future__ import annotations

from flask_appbuilder import BaseView, expose
from flask_appbuilder.security.decorators import has_access


def grid_page(resource: str, permission: str, title: str, class_name: str) -> type:
    """A page class for ``resource``'s grid, guarded by ``can_read`` on ``permission``."""

    class _GridPage(BaseView):
        route_base = f"/grid/{resource}"
        oms_grid_resource = resource  # marks a grid page (tests/test_scope.py)
        class_permission_name = permission
        method_permission_name = {"index": "read"}
        default_view = "index"

        @expose("/")
        @has_access
        def index(self):
            return self.render_template("grid/index.html", resource=resource, title=title)

    _GridPage.__name__ = _GridPage.__qualname__ = class_name
    return _GridPage


OrderWorkbenchView = grid_page("order", "Order", "订单工作台", "OrderWorkbenchView")
SkuGridView = grid_page("sku", "Product", "SKU 表格", "SkuGridView")
StockGridView = grid_page("stock", "Stock", "库存表格", "StockGridView")
CustomerGridView = grid_page("customer", "Customer", "客户表格", "CustomerGridView")
ShopGridView = grid_page("shop", "Shop", "店铺表格", "ShopGridView")
ShipmentGridView = grid_page("parcel", "Parcel", "包裹表格", "ShipmentGridView")
