"""Base classes every OMS ModelView and ModelRestApi derives from.

They add, once for all views:
* zh labels taken from the model's column metadata (``info["label"]``);
* column scope: per request, columns tagged ``finance``/``pii`` that the user
  may not read disappear from list, show, edit, add, ordering, filters and REST
  responses; PII is masked unless revealed (services/columns.py);
* typed domain errors mapped to flash messages / HTTP codes with zh text.

Row scope needs nothing here: it is applied to every ORM query by
services/scope.py. ``tests/test_scope.py`` checks every registered
view and API derives from these classes.
"""
from __future__ import annotations

from decimal import Decimal

import orjson
from flask import Response, abort, flash, has_request_context, redirect, request
from flask_appbuilder import ModelRestApi, ModelView
from flask_appbuilder.api import expose as api_expose, rison, safe
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_appbuilder.security.decorators import protect
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from sqlalchemy import Boolean, Numeric

from app.services import columns, display, grid, grid_ui
from app.services.errors import DomainError

class _ColumnScoped:
    """Data descriptor: the stored column list, filtered by the current user's grant."""

    def __init__(self, name: str, kind: str):
        self.name = name
        self.kind = kind
        self.slot = "_scoped_" + name

    def _keep(self):
        return columns.form_editable if self.kind == "edit" else columns.readable

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        value = obj.__dict__.get(self.slot)
        if value is None or not has_request_context():
            return value
        return self._keep()(obj.datamodel.obj, value)

    def __set__(self, obj, value):
        obj.__dict__[self.slot] = value


class _FieldsetsScoped(_ColumnScoped):
    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        value = obj.__dict__.get(self.slot)
        if not value or not has_request_context():
            return value
        keep = self._keep()
        out = []
        for title, spec in value:
            fields = keep(obj.datamodel.obj, spec.get("fields", []))
            if fields:
                out.append((title, dict(spec, fields=fields)))
        return out


class _ScopedForm:
    """Wraps a FAB form class so each refreshed form drops fields the user may not edit.

    Dropping the field (not just hiding it) matters: populate_obj would
    otherwise blank a column the user never saw.
    """

    def __init__(self, form_cls, model):
        self.form_cls = form_cls
        self.model = model

    def __getattr__(self, item):
        return getattr(self.form_cls, item)

    def __call__(self, *args, **kwargs):
        return self._prune(self.form_cls(*args, **kwargs))

    def refresh(self, *args, **kwargs):
        return self._prune(self.form_cls.refresh(*args, **kwargs))

    def _prune(self, form):
        from wtforms import BooleanField
        from wtforms.validators import DataRequired, InputRequired

        allowed = set(columns.form_editable(self.model, list(form._fields)))
        for name in list(form._fields):
            if name not in allowed and name != "csrf_token":
                del form[name]
            elif isinstance(form[name], BooleanField):
                # FAB makes a NOT NULL boolean a *required* checkbox, which refuses
                # "unticked": every 是/否 column could only ever be saved as 是.
                field = form[name]
                field.validators = [v for v in field.validators if not isinstance(v, (InputRequired, DataRequired))]
                field.flags.required = False
            elif getattr(form[name], "allow_blank", False):
                # WTForms 3.3 shows FAB's blank choice as its value "__None".
                form[name].blank_text = "（未指定）"
        return form


class _FormScoped:
    def __init__(self, name: str):
        self.name = name
        self.slot = "_scoped_" + name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        form = obj.__dict__.get(self.slot)
        if form is None or not has_request_context():
            return form
        return _ScopedForm(form, obj.datamodel.obj)

    def __set__(self, obj, value):
        obj.__dict__[self.slot] = value


_DESCRIPTORS = {
    "list_columns": lambda: _ColumnScoped("list_columns", "read"),
    "show_columns": lambda: _ColumnScoped("show_columns", "read"),
    "edit_columns": lambda: _ColumnScoped("edit_columns", "edit"),
    "add_columns": lambda: _ColumnScoped("add_columns", "edit"),
    "order_columns": lambda: _ColumnScoped("order_columns", "read"),
    "show_fieldsets": lambda: _FieldsetsScoped("show_fieldsets", "read"),
    "edit_fieldsets": lambda: _FieldsetsScoped("edit_fieldsets", "edit"),
    "add_fieldsets": lambda: _FieldsetsScoped("add_fieldsets", "edit"),
    "edit_form": lambda: _FormScoped("edit_form"),
    "add_form": lambda: _FormScoped("add_form"),
}


def model_labels(model) -> dict:
    """zh labels for every column and relationship, from the model metadata."""
    labels = {}
    mapper = model.__mapper__
    for col in mapper.columns:
        if "label" in col.info:
            labels[col.key] = col.info["label"]
    for rel in mapper.relationships:
        if "label" in rel.info:
            labels[rel.key] = rel.info["label"]
            target = rel.mapper.class_
            for col in target.__mapper__.columns:
                if "label" in col.info:
                    labels[f"{rel.key}.{col.key}"] = col.info["label"]
    return labels


def default_formatters(model) -> dict:
    """Display formatters: PII masked, times in Asia/Shanghai, money with 2 decimals."""
    from app.models.types import UTCDateTime

    out = {}
    for rel in model.__mapper__.relationships:
        out[rel.key] = display.format_related
    for col in model.__mapper__.columns:
        out[col.key] = display.format_plain
        if col.info.get("scope") == "pii":
            out[col.key] = (lambda key: (lambda value: columns.present(model, key, value)))(col.key)
        elif isinstance(col.type, UTCDateTime):
            out[col.key] = display.format_time
        elif isinstance(col.type, Numeric) and col.type.scale == 2:
            out[col.key] = display.format_money
        elif isinstance(col.type, Boolean):
            out[col.key] = display.format_bool
    return out


# One permission vocabulary for pages and APIs of an entity: read / write / delete
# on the entity's name (``class_permission_name``), so a role reads like the job.
VIEW_METHOD_PERMISSIONS = {
    "list": "read", "show": "read", "download": "read",
    "add": "write", "edit": "write", "delete": "delete",
    "api": "read", "api_read": "read", "api_get": "read", "api_readvalues": "read",
    "api_column_add": "write", "api_column_edit": "write",
    "api_create": "write", "api_update": "write", "api_delete": "delete",
}
API_METHOD_PERMISSIONS = {
    "get": "read", "get_list": "read", "info": "read",
    "post": "write", "put": "write", "delete": "delete",
    "grid_meta": "read", "grid_rows": "read", "grid_count": "read", "grid_edit": "write",
    # a saved view is the user's own layout: reading the grid is enough to keep one
    "grid_views": "read", "grid_view_save": "read", "grid_view_delete": "read",
    # export and round trip (services/exports.py, services/roundtrip.py)
    "grid_export": "read", "grid_export_download": "read",
    "grid_roundtrip_preview": "write", "grid_roundtrip_apply": "write",
}


class OmsModelView(ModelView):
    """Every CRUD page of the OMS derives from this."""

    page_size = 50
    method_permission_name = VIEW_METHOD_PERMISSIONS

    def __init_subclass__(cls, **kwargs):
        # A subclass's plain ``list_columns = [...]`` would shadow the scoping
        # descriptor: keep the declaration aside and reinstall the descriptor.
        super().__init_subclass__(**kwargs)
        for attr, make in _DESCRIPTORS.items():
            declared = cls.__dict__.get(attr)
            if declared is not None and not isinstance(declared, (_ColumnScoped, _FormScoped)):
                setattr(cls, "_decl_" + attr, declared)
            if not isinstance(declared, (_ColumnScoped, _FormScoped)):
                setattr(cls, attr, make())

    def __init__(self, **kwargs):
        cls = type(self)
        for attr in _DESCRIPTORS:
            self.__dict__["_scoped_" + attr] = getattr(cls, "_decl_" + attr, None)
        model = self.datamodel.obj
        labels = model_labels(model)
        labels.update(getattr(cls, "label_columns", None) or {})
        self.label_columns = labels
        formatters = default_formatters(model)
        formatters.update(getattr(cls, "formatters_columns", None) or {})
        self.formatters_columns = formatters
        super().__init__(**kwargs)

    def _list(self, **kwargs):
        self._refuse_unreadable_filters()
        self._refuse_unreadable_ordering()
        return super()._list(**kwargs)

    def _show(self, pk):
        self._refuse_unreadable_ordering()
        return super()._show(pk)

    def _edit(self, pk):
        self._refuse_unreadable_ordering()
        return super()._edit(pk)

    def _refuse_unreadable_ordering(self):
        """FAB sorts by any ``_oc_<View>=column`` without checking ``order_columns``;
        sorting by a hidden column (cost) would leak its ranking. This view's and its
        related views' sort columns must be readable and offered for sorting."""
        from flask_appbuilder.urltools import get_order_args

        views = {type(self).__name__: self}
        views.update({type(v).__name__: v for v in (self._related_views or [])})
        for name, (column, _direction) in get_order_args().items():
            view = views.get(name)
            if view is None or not column:
                continue
            allowed = view.order_columns or []
            if column not in allowed or not columns.readable(view.datamodel.obj, [column]):
                abort(403)

    def _refuse_unreadable_filters(self):
        from flask_appbuilder.urltools import get_filter_args

        get_filter_args(self._filters)
        model = self.datamodel.obj
        for flt in self._filters.filters:
            if not columns.readable(model, [flt.column_name]):
                abort(403)


def _csrf_for_browser_sessions():
    """FAB exempts its API blueprints from CSRF, yet ``allow_browser_login`` accepts
    the session cookie: a cookie-authenticated write must carry the CSRF token
    (``X-CSRFToken`` header), as a page form would. Token (JWT) clients are unaffected."""
    from flask import current_app

    if request.method in ("GET", "HEAD", "OPTIONS") or not current_app.config.get("WTF_CSRF_ENABLED", True):
        return None
    if request.headers.get("Authorization"):
        return None
    from app.extensions import csrf

    csrf.protect()
    return None


def _json_default(value):
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


def _json_response(code: int, body: dict) -> Response:
    """``body`` as JSON, written by orjson: a grid page's rows are most of a page
    request's output, and the standard library's encoder took a tenth of its CPU. The
    values are already JSON-ready (``grid.json_value``); the same text as ``self.response``
    apart from key order and escaping (UTF-8 instead of \\u escapes)."""
    return Response(orjson.dumps(body, default=_json_default), status=code,
                    content_type="application/json; charset=utf-8")


class OmsModelRestApi(ModelRestApi):
    """Every REST API of the OMS derives from this: scoped rows and columns, zh errors."""

    allow_browser_login = True
    page_size = 50
    max_page_size = 500
    method_permission_name = API_METHOD_PERMISSIONS

    def __init__(self):
        model = self.datamodel.obj
        labels = model_labels(model)
        labels.update(type(self).__dict__.get("label_columns") or {})
        self.label_columns = labels
        super().__init__()
        grid.register_api(type(self))

    # the grid (services/grid.py): keyset pages, capped counts, bulk cell edits ------
    def _grid_error(self, exc: DomainError):
        return self.response(exc.status_code, **exc.to_dict())

    @api_expose("/grid/meta", methods=["GET"])
    @protect()
    @safe
    def grid_meta(self):
        """Columns, filters, tabs and actions of this entity's grid, for this user
        ---
        get:
          responses:
            200: {description: Grid definition}
        """
        spec = grid.spec_for(self.resource_name)
        can_write = self.appbuilder.sm.has_access("can_write", spec.permission)
        return self.response(200, **grid_ui.meta(spec, can_write=can_write, has_access=self._has))

    def _has(self, permission: str, view: str | None = None) -> bool:
        return bool(self.appbuilder.sm.has_access(permission, view or grid.spec_for(self.resource_name).permission))

    @api_expose("/grid/rows", methods=["GET"])
    @protect()
    @safe
    def grid_rows(self):
        """One keyset page of the grid
        ---
        get:
          parameters:
          - {in: query, name: filters, schema: {type: string}, description: JSON object}
          - {in: query, name: sort, schema: {type: string}, description: "column:asc|desc"}
          - {in: query, name: after, schema: {type: string}, description: cursor of the previous page}
          - {in: query, name: size, schema: {type: integer}}
          - {in: query, name: count, schema: {type: integer}, description: 1 to count (capped)}
          responses:
            200: {description: Rows and the next cursor}
            422: {$ref: '#/components/responses/422'}
        """
        spec = grid.spec_for(self.resource_name)
        try:
            filters = grid.parse_filters(request.args.get("filters"))
            cols = request.args.get("columns")
            result = grid.page(spec, filters, sort=request.args.get("sort"), after=request.args.get("after"),
                               size=request.args.get("size", 50, type=int),
                               columns=cols.split(",") if cols else None)
            body = {"rows": result.rows, "next_cursor": result.next_cursor, "columns": result.columns}
            if request.args.get("count") == "1":
                body["count"], body["count_capped"] = grid.count(spec, filters)
        except DomainError as exc:
            return self._grid_error(exc)
        return _json_response(200, body)

    @api_expose("/grid/count", methods=["GET"])
    @protect()
    @safe
    def grid_count(self):
        """Matching rows (capped) and, for entities with tabs, the tab counts
        ---
        get:
          parameters:
          - {in: query, name: filters, schema: {type: string}}
          responses:
            200: {description: Counts}
        """
        spec = grid.spec_for(self.resource_name)
        try:
            filters = grid.parse_filters(request.args.get("filters"))
            n, capped = grid.count(spec, filters)
            tabs = grid_ui.tab_counts(spec, filters)
        except DomainError as exc:
            return self._grid_error(exc)
        return self.response(200, count=n, count_capped=capped, tabs=tabs)

    @api_expose("/grid/edit", methods=["POST"])
    @protect()
    @safe
    def grid_edit(self):
        """Save edited cells (typed or pasted); each row succeeds or fails on its own
        ---
        post:
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    changes:
                      type: array
                      items: {type: object, properties: {id: {type: integer}, key: {type: string}, value: {}}}
          responses:
            200: {description: Per-row results}
            422: {$ref: '#/components/responses/422'}
        """
        spec = grid.spec_for(self.resource_name)
        body = request.get_json(silent=True) or {}
        try:
            results = grid_ui.apply_edits(spec, body.get("changes"), editor=self.grid_save_row,
                                          can_write=True)
        except DomainError as exc:
            return self._grid_error(exc)
        return self.response(200, results=results)

    @api_expose("/grid/views", methods=["GET"])
    @protect()
    @safe
    def grid_views(self):
        """The current user's saved views of this grid
        ---
        get:
          responses:
            200: {description: Views}
        """
        from app.services import saved_views

        return self.response(200, views=saved_views.list_views(current_user.id, self.resource_name))

    @api_expose("/grid/views", methods=["POST"])
    @protect()
    @safe
    def grid_view_save(self):
        """Save (create or replace by name) a view of this grid for the current user
        ---
        post:
          requestBody:
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    name: {type: string}
                    state: {type: object}
                    is_default: {type: boolean}
          responses:
            200: {description: The saved view}
            422: {$ref: '#/components/responses/422'}
        """
        from app.services import saved_views

        body = request.get_json(silent=True) or {}
        try:
            view = saved_views.save_view(current_user.id, self.resource_name, body.get("name"),
                                         body.get("state"), bool(body.get("is_default")))
        except DomainError as exc:
            return self._grid_error(exc)
        return self.response(200, view=view)

    @api_expose("/grid/views/<int:view_id>", methods=["DELETE"])
    @protect()
    @safe
    def grid_view_delete(self, view_id):
        """Delete one of the current user's views
        ---
        delete:
          parameters:
          - {in: path, name: view_id, schema: {type: integer}}
          responses:
            200: {description: Deleted}
            404: {$ref: '#/components/responses/404'}
        """
        from app.services import saved_views

        try:
            saved_views.delete_view(current_user.id, view_id)
        except DomainError as exc:
            return self._grid_error(exc)
        return self.response(200, message="已删除")

    # export and round trip (services/exports.py, services/roundtrip.py) -------------
    def _is_admin(self) -> bool:
        return self.appbuilder.sm.auth_role_admin in {r.name for r in (current_user.roles or [])}

    @api_expose("/grid/export", methods=["GET"])
    @protect()
    @safe
    def grid_export(self):
        """Export the grid's current filter, sort and columns (xlsx, CSV UTF-8 with BOM, CSV GBK)
        ---
        get:
          description: >-
            Up to OMS_EXPORT_INLINE_MAX (5,000) matching rows the file is the response
            (Content-Disposition with the zh name as RFC 5987 filename*). Above, an RQ job
            is queued and the answer is 202 {job_id, filename}; GET /api/v1/job/<job_id>
            then gives the job's state and, when finished, result {download_url, filename, rows}.
          parameters:
          - {in: query, name: format, schema: {type: string, enum: [xlsx, csv, csv_gbk]}}
          - {in: query, name: filters, schema: {type: string}, description: JSON object, as for grid/rows}
          - {in: query, name: columns, schema: {type: string}, description: comma-separated column keys}
          - {in: query, name: sort, schema: {type: string}, description: "column:asc|desc"}
          responses:
            200: {description: The file}
            202: {description: "Queued: {job_id, filename}"}
            422: {$ref: '#/components/responses/422'}
        """
        from flask import Response, current_app

        from app.services import exports

        try:
            req = exports.ExportRequest.parse(
                self.resource_name, filters=request.args.get("filters"), columns=request.args.get("columns"),
                sort=request.args.get("sort"), fmt=request.args.get("format"))
            kind, payload, name = exports.start(req, user_id=current_user.id,
                                                inline_max=int(current_app.config["OMS_EXPORT_INLINE_MAX"]))
        except DomainError as exc:
            return self._grid_error(exc)
        if kind == "job":
            return self.response(202, job_id=payload.id, filename=name)
        resp = Response(payload, mimetype=exports.FORMATS[req.fmt][1])
        resp.headers["Content-Disposition"] = exports.content_disposition(name)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @api_expose("/grid/export/download/<file_id>", methods=["GET"])
    @protect()
    @safe
    def grid_export_download(self, file_id):
        """A finished export job's file: only for the user who queued it, or an admin (404 otherwise)
        ---
        get:
          parameters:
          - {in: path, name: file_id, required: true, schema: {type: string}}
          responses:
            200: {description: The file}
            404: {$ref: '#/components/responses/404'}
        """
        from flask import send_file

        from app.services import exports

        try:
            found = exports.export_file(file_id, user_id=current_user.id, is_admin=self._is_admin(),
                                        resource=self.resource_name)
        except DomainError as exc:
            return self._grid_error(exc)
        resp = send_file(found.path, mimetype=found.mimetype, max_age=0)
        resp.headers["Content-Disposition"] = exports.content_disposition(found.filename)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @api_expose("/grid/roundtrip/preview", methods=["POST"])
    @protect()
    @safe
    def grid_roundtrip_preview(self):
        """Upload an exported and edited xlsx: the cells that would change, old → new (nothing saved yet)
        ---
        post:
          requestBody:
            content:
              multipart/form-data:
                schema: {type: object, properties: {file: {type: string, format: binary}}}
          responses:
            200:
              description: >-
                {token, resource, title, changes: [{id, row, key, label, old, new}],
                errors: [{row, column, message}], unchanged_rows, rows}; send the token to
                grid/roundtrip/apply (valid OMS_ROUNDTRIP_TTL seconds, for this user only)
            422: {$ref: '#/components/responses/422'}
        """
        from app.services import roundtrip
        from app.services.errors import ValidationError as DomainValidation

        upload = request.files.get("file")
        try:
            if upload is None:
                raise DomainValidation("请选择要导入的 xlsx 文件", "file")
            result = roundtrip.preview(upload.stream, resource=self.resource_name, can_write=self._has("can_write"))
            token = roundtrip.stage(result, user_id=current_user.id)
        except DomainError as exc:
            return self._grid_error(exc)
        return self.response(200, token=token, **roundtrip.public(result))

    @api_expose("/grid/roundtrip/apply", methods=["POST"])
    @protect()
    @safe
    def grid_roundtrip_apply(self):
        """Apply a previewed import: per-row results; rows changed since the preview are skipped
        ---
        post:
          requestBody:
            content:
              application/json:
                schema: {type: object, properties: {token: {type: string}}}
          responses:
            200:
              description: >-
                {results: [{id, ok, message?, field?, conflict?}], applied, failed, conflicts}
            404: {$ref: '#/components/responses/404'}
            422: {$ref: '#/components/responses/422'}
        """
        from app.services import roundtrip

        body = request.get_json(silent=True) or {}
        try:
            outcome = roundtrip.apply(body.get("token"), resource=self.resource_name, user_id=current_user.id,
                                      can_write=self._has("can_write"), editor=self.grid_save_row)
        except DomainError as exc:
            return self._grid_error(exc)
        return self.response(200, **outcome)

    def grid_save_row(self, pk: int, changes: dict) -> None:
        """Apply one row's edits (``changes`` by API field name); the caller owns the
        savepoint. Entities with a service override this; the default loads the scoped
        row and validates through the API's edit schema, as PUT does."""
        from sqlalchemy import select as sa_select

        from app.extensions import db
        from app.services.errors import NotFound, ValidationError as DomainValidation
        from marshmallow import ValidationError as SchemaError

        model = self.datamodel.obj
        item = db.session.execute(sa_select(model).where(model.id == pk)).scalar_one_or_none()
        if item is None:
            raise NotFound(f"记录不存在或无权访问：{pk}")
        try:
            self.edit_model_schema.load(changes, instance=item, partial=True, session=db.session)
        except SchemaError as exc:
            field_name, messages = next(iter(exc.messages.items()))
            label = self.label_columns.get(field_name, field_name)
            raise DomainValidation(f"「{label}」：{'；'.join(map(str, messages))}", field_name) from None
        db.session.flush()

    def create_blueprint(self, appbuilder, *args, **kwargs):
        blueprint = super().create_blueprint(appbuilder, *args, **kwargs)
        blueprint.before_request(_csrf_for_browser_sessions)
        return blueprint

    # responses -----------------------------------------------------------
    def pre_get(self, data):
        data["result"] = columns.present_row(self.datamodel.obj, data["result"],
                                             reveal=self._reveal_requested(data.get("id")))

    def pre_get_list(self, data):
        from .interface import CappedCount

        model = self.datamodel.obj
        data["result"] = [columns.present_row(model, row) for row in data["result"]]
        # OmsInterface counts up to OMS_LIST_COUNT_CAP: more rows match than "count" says
        data["count_capped"] = isinstance(data.get("count"), CappedCount)
        data["count"] = int(data.get("count") or 0)

    def _reveal_requested(self, pk) -> bool:
        return False

    # requests ------------------------------------------------------------
    def _handle_filters_args(self, rison_args):
        model = self.datamodel.obj
        for flt in rison_args.get("filters", []):
            col = flt.get("col")
            if col and not columns.readable(model, [col]):
                from flask_appbuilder.exceptions import FABException

                raise FABException(f"无权按该列筛选：{col}")
        return super()._handle_filters_args(rison_args)

    def _handle_order_args(self, rison_args):
        col = rison_args.get("order_column")
        if col and not columns.readable(self.datamodel.obj, [col]):
            from flask_appbuilder.exceptions import InvalidOrderByColumnFABException

            raise InvalidOrderByColumnFABException(f"无权按该列排序：{col}")
        return super()._handle_order_args(rison_args)

    def _forbidden_keys(self) -> list[str]:
        if not request.is_json or not isinstance(request.json, dict):
            return []
        model = self.datamodel.obj
        keys = [k for k in request.json if k in model.__mapper__.columns or k in model.__mapper__.relationships]
        allowed = set(columns.editable(model, keys))
        return [k for k in keys if k not in allowed]

    def post_headless(self):
        bad = self._forbidden_keys()
        if bad:
            return self.response(403, message=f"无权写入字段：{'、'.join(bad)}")
        try:
            return super().post_headless()
        except DomainError as exc:
            return self.response(exc.status_code, **exc.to_dict())

    def put_headless(self, pk):
        bad = self._forbidden_keys()
        if bad:
            return self.response(403, message=f"无权写入字段：{'、'.join(bad)}")
        try:
            return super().put_headless(pk)
        except DomainError as exc:
            return self.response(exc.status_code, **exc.to_dict())
