"""Security manager: FAB's, with the user's row scope (shops) editable in the zh UI."""
from __future__ import annotations

import time

from flask_appbuilder.fields import QuerySelectMultipleField
from flask_appbuilder.fieldwidgets import Select2ManyWidget
from flask_appbuilder.security.sqla.manager import SecurityManager
from flask_appbuilder.security.sqla.models import Group, PermissionView
from flask_appbuilder.security.views import RoleModelView, UserDBModelView, UserGroupModelView
from flask_appbuilder.widgets import ListWidget, ShowWidget
from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.orm import joinedload
from wtforms import BooleanField

from app.models import OmsUser
from app.services.display import format_bool, format_plain, format_time
from app.services.permission_labels import permission_label, permissions_label


def _names(items) -> str:
    return "、".join(str(i) for i in items or [])


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
    # A plain checkbox: FAB would mark the non-null column "required" and refuse "unchecked".
    edit_form_extra_fields = {"all_shops": BooleanField(_l("All shops"), default=False,
                                                        description=description_columns["all_shops"])}
    add_form_extra_fields = dict(UserDBModelView.add_form_extra_fields, **edit_form_extra_fields)
    formatters_columns = {"active": format_bool, "all_shops": format_bool, "roles": _names,
                          "groups": _names, "shops": _names, "last_login": format_time,
                          "created_on": format_time, "changed_on": format_time,
                          "login_count": format_plain, "fail_login_count": format_plain,
                          "created_by": format_plain, "changed_by": format_plain}


def _all_permission_views():
    from app.extensions import db

    return db.session.query(PermissionView)


class OmsRoleModelView(RoleModelView):
    """Roles, with permissions named in zh (查看/编辑 · 订单) instead of FAB identifiers."""

    list_widget = ListWidget
    show_widget = ShowWidget
    list_columns = ["name", "user"]
    show_columns = ["name", "permissions", "user"]
    search_columns = ["name"]
    label_columns = dict(RoleModelView.label_columns, user=_l("Users"))
    formatters_columns = {"permissions": permissions_label, "user": _names}
    edit_form_extra_fields = add_form_extra_fields = {
        "permissions": QuerySelectMultipleField(
            _l("Permissions"), query_func=_all_permission_views, get_pk_func=lambda pv: pv.id,
            get_label=permission_label, widget=Select2ManyWidget()),
    }


class OmsGroupModelView(UserGroupModelView):
    label_columns = {"name": _l("Name"), "label": _l("Label"), "description": _l("Description"),
                     "users": _l("Users"), "roles": _l("Roles")}
    search_columns = ["name", "label"]
    formatters_columns = {"users": _names, "roles": _names}


class OmsSecurityManager(SecurityManager):
    user_model = OmsUser
    userdbmodelview = OmsUserDBModelView
    rolemodelview = OmsRoleModelView
    groupmodelview = OmsGroupModelView
    userstatschartview = None  # an English-only chart of FAB internals

    # Permission checks run on every request (FAB queries the role × permission
    # tables each time). Their answers are kept per process for a few seconds
    # (OMS_PERMISSION_CACHE_SECONDS, 0 = off): a role edited in the security UI
    # takes effect everywhere within that time.
    _permission_cache: dict = {}

    def _cached(self, key, compute):
        from flask import current_app

        ttl = float(current_app.config.get("OMS_PERMISSION_CACHE_SECONDS", 0) or 0)
        if ttl <= 0:
            return compute()
        now = time.monotonic()
        hit = self._permission_cache.get(key)
        if hit is not None and now - hit[1] < ttl:
            return hit[0]
        value = compute()
        if len(self._permission_cache) > 10_000:
            self._permission_cache.clear()
        self._permission_cache[key] = (value, now)
        return value

    def exist_permission_on_roles(self, view_name, permission_name, role_ids):
        return self._cached(("roles", view_name, permission_name, tuple(sorted(role_ids))),
                            lambda: super(OmsSecurityManager, self).exist_permission_on_roles(
                                view_name, permission_name, role_ids))

    def is_item_public(self, permission_name, view_name):
        # FAB asks this first on every protected call (one query for the public role).
        return self._cached(("public", view_name, permission_name),
                            lambda: super(OmsSecurityManager, self).is_item_public(permission_name, view_name))

    def get_user_by_id(self, pk):
        # Every request loads its user (Flask-Login), then FAB reads the user's roles and
        # groups' roles for each permission check and the row scope reads the shops: the
        # roles come with the user (one statement), the shops in one more (selectin, as the
        # relationship is configured: joined, a user of 50 shops would multiply the rows by
        # them and decrypt each shop's credentials once per row).
        stmt = (select(self.user_model).where(self.user_model.id == pk)
                .options(joinedload(self.user_model.roles),
                         joinedload(self.user_model.groups).joinedload(Group.roles)))
        return self.session.execute(stmt).unique().scalar_one_or_none()

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
