"""The home page: the user's order counts by status, within their shops."""
from __future__ import annotations

from flask import g
from flask_appbuilder import IndexView, expose
from flask_login import current_user


class OmsIndexView(IndexView):
    index_template = "oms_index.html"

    @expose("/")
    def index(self):
        tabs = []
        if current_user.is_authenticated and self.appbuilder.sm.has_access("can_read", "Order"):
            from app.services.order_views import status_tab_counts

            tabs = status_tab_counts()
        return self.render_template(self.index_template, appbuilder=self.appbuilder, tabs=tabs)
