"""Security manager: FAB's, with the user's row scope (shops) editable in the zh UI."""
from __future__ import annotations

from flask_appbuilder.security.sqla.manager import SecurityManager
from flask_appbuilder.security.views import UserDBModelView
from flask_babel import lazy_gettext as _l

from app.models import OmsUser


class OmsUserDBModelView(UserDBModelView):
    """Users, with which shops each one sees (or all shops)."""

    label_columns = dict(UserDBModelView.label_columns or {},
                         all_shops=_l("All shops"), shops=_l("Shops"))
    description_columns = {
        "all_shops": _l("Sees the orders and customers of every shop"),
        "shops": _l("Sees only the orders and customers of these shops"),
    }
    list_columns = ["first_name", "last_name", "username", "email", "active", "roles", "all_shops"]
    show_fieldsets = [
        (_l("User info"), {"fields": ["username", "active", "roles", "all_shops", "shops", "login_count"]}),
        (_l("Personal Info"), {"fields": ["first_name", "last_name", "email"], "expanded": True}),
        (_l("Audit Info"), {"fields": ["last_login", "fail_login_count", "created_on", "changed_on"],
                            "expanded": False}),
    ]
    add_columns = UserDBModelView.add_columns[:-2] + ["all_shops", "shops", "password", "conf_password"]
    edit_columns = UserDBModelView.edit_columns + ["all_shops", "shops"]
    search_columns = ["first_name", "last_name", "username", "email", "active", "roles"]


class OmsSecurityManager(SecurityManager):
    user_model = OmsUser
    userdbmodelview = OmsUserDBModelView

    def load_user(self, pk):
        # Load the user and their shops unscoped: the row scope is derived from them.
        from app.services.scope import as_scope

        with as_scope(None):
            user = super().load_user(pk)
            if user is not None:
                list(user.shops)
        return user

    def load_user_jwt(self, _jwt_header, jwt_data):
        from app.services.scope import as_scope

        with as_scope(None):
            user = super().load_user_jwt(_jwt_header, jwt_data)
            if user is not None:
                list(user.shops)
        return user
