"""The grid read model: one keyset-paged, scoped, column-scoped query for every entity grid.

A grid is described by a :class:`GridSpec`, built once from an entity's REST API
class (its list/edit/order/search columns, labels and ``grid_*`` options), so an
entity with an API gets a grid, an export and select-all-matching without new code.

* Rows: ``page(spec, filters, sort=..., after=cursor, size=n)``. Keyset paging on
  (sort column, id): page 200 costs what page 1 costs, and no COUNT(*) runs.
* Counts: ``count(spec, filters, cap=...)`` counts up to a cap ("10,000+").
* Scope: the query is an ORM select, so services/scope.py adds the row scope;
  columns the user may not read are dropped and PII is masked (services/columns.py).
* Filters are a plain JSON object, the same for the grid, batch actions (select
  all matching) and exports; see :func:`apply_filters`.

Filter values: a scalar (equals), a list (any of), ``{"from": a, "to": b}`` (a
range; dates are Asia/Shanghai calendar days, ``to`` inclusive), ``{"like": s}``
(text contains). Entity-specific filters (an order's keyword, SKU, tab) are
registered with :func:`register_filter`.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

from sqlalchemy import Boolean, Integer, Numeric, and_, func, or_, select, tuple_
from sqlalchemy.orm import aliased

from flask_babel import lazy_gettext as _l

from app.extensions import db

from . import columns as column_scope
from .display import SHANGHAI
from .errors import ValidationError

MAX_PAGE_SIZE = 500
COUNT_CAP = 10_000


@dataclass(frozen=True)
class GridColumn:
    key: str                     # "platform_order_id", "shop.name"
    label: Any                   # lazy: str() it inside a request
    kind: str                    # text | int | money | decimal | bool | time | choice
    sortable: bool = False
    filter: Optional[str] = None  # eq | choice | range | like | relation
    choices: Optional[dict] = None
    edit_key: Optional[str] = None  # the API field an edit writes ("carrier" for "carrier.name")
    edit_choices: Optional[str] = None  # relation whose rows are the edit choices
    scope_tag: Optional[str] = None
    width: Optional[int] = None


@dataclass
class GridSpec:
    resource: str
    model: type
    title: str
    permission: str                          # class permission name ("Order")
    columns: list[GridColumn]
    default_sort: tuple[str, str] = ("id", "desc")
    frozen: int = 1
    tabs: Optional[str] = None               # name of a registered tab provider
    quick_filters: list[dict] = field(default_factory=list)
    actions: list[dict] = field(default_factory=list)
    edit_columns: frozenset = frozenset()

    def column(self, key: str) -> Optional[GridColumn]:
        for c in self.columns:
            if c.key == key:
                return c
        return None


# --- building specs from the API classes ----------------------------------
_SPECS: dict[str, GridSpec] = {}
_API_CLASSES: dict[str, type] = {}


def register_api(api_cls) -> None:
    """Called for each registered REST API: its grid is available from then on."""
    _API_CLASSES[api_cls.resource_name] = api_cls
    _SPECS.pop(api_cls.resource_name, None)


def spec_for(resource: str) -> GridSpec:
    spec = _SPECS.get(resource)
    if spec is None:
        api_cls = _API_CLASSES.get(resource)
        if api_cls is None:
            from .errors import NotFound

            raise NotFound(f"没有这个表格：{resource}")
        spec = _SPECS[resource] = build_spec(api_cls)
    return spec


def resources() -> list[str]:
    return sorted(_API_CLASSES)


def _attr(model, key: str):
    """(mapped attribute, leaf column) for a column key, following one relation."""
    if "." in key:
        rel_name, col_name = key.split(".", 1)
        rel = model.__mapper__.relationships[rel_name]
        target = rel.mapper.class_
        return rel, target.__mapper__.columns[col_name]
    return None, model.__mapper__.columns[key]


def _is_column(model, key: str) -> bool:
    """A stored column (or a relation's column): computed properties cannot be
    filtered, sorted or paged in SQL, so they are not grid columns."""
    try:
        _attr(model, key)
    except KeyError:
        return False
    return True


def _kind(col, choices) -> str:
    from app.models.types import UTCDateTime

    if choices:
        return "choice"
    if isinstance(col.type, UTCDateTime):
        return "time"
    if isinstance(col.type, Boolean):
        return "bool"
    if isinstance(col.type, Numeric):
        return "money" if col.type.scale == 2 else "decimal"
    if isinstance(col.type, Integer):
        return "int"
    return "text"


def build_spec(api_cls) -> GridSpec:
    from .display import format_related  # noqa: F401  (keeps display imported for formatting)
    from app.views.base import model_labels

    model = api_cls.datamodel.obj
    labels = model_labels(model)
    labels.update(getattr(api_cls, "label_columns", None) or {})
    keys = list(getattr(api_cls, "grid_columns", None) or
                [k for k in api_cls.list_columns if k != "id" and not k.endswith(".id") and _is_column(model, k)])
    choices_by_key = dict(getattr(api_cls, "grid_choices", None) or {})
    order_cols = set(getattr(api_cls, "order_columns", None) or [])
    search_cols = set(getattr(api_cls, "search_columns", None) or [])
    edit_cols = set(getattr(api_cls, "edit_columns", None) or [])
    cols = []
    for key in keys:
        rel, col = _attr(model, key)
        choices = choices_by_key.get(key)
        kind = _kind(col, choices)
        flt = None
        if rel is not None:
            flt = "relation" if rel.key in search_cols else None
        elif key in search_cols:
            flt = {"choice": "choice", "bool": "choice", "time": "range", "money": "range",
                   "decimal": "range", "int": "range"}.get(kind, "like")
        edit_key, edit_choices = None, None
        if rel is not None and rel.key in edit_cols:
            edit_key, edit_choices = rel.key, rel.key
        elif rel is None and key in edit_cols:
            edit_key = key
        cols.append(GridColumn(
            # labels stay lazy (translated per request, in the user's language)
            key=key, label=labels.get(key) or labels.get(rel.key if rel is not None else key) or key,
            kind=kind, sortable=key in order_cols, filter=flt,
            choices={str(k): v for k, v in choices.items()} if choices else None,
            edit_key=edit_key, edit_choices=edit_choices,
            scope_tag=col.info.get("scope"),
            width=(getattr(api_cls, "grid_widths", None) or {}).get(key),
        ))
    sort = getattr(api_cls, "grid_default_sort", None) or getattr(api_cls, "base_order", None) or ("id", "desc")
    title = getattr(api_cls, "grid_title", None) or _l("Grid")
    return GridSpec(
        resource=api_cls.resource_name, model=model, title=title,
        permission=api_cls.class_permission_name or model.__name__,
        columns=cols, default_sort=tuple(sort), frozen=getattr(api_cls, "grid_frozen", 1),
        tabs=getattr(api_cls, "grid_tabs", None),
        quick_filters=list(getattr(api_cls, "grid_quick_filters", None) or []),
        actions=list(getattr(api_cls, "grid_actions", None) or []),
        edit_columns=frozenset(edit_cols),
    )


# --- per-user view of a spec -------------------------------------------------
def readable_columns(spec: GridSpec, wanted: Optional[Iterable[str]] = None) -> list[GridColumn]:
    """The spec's columns this user may read, optionally restricted to ``wanted`` (in that order)."""
    allowed = set(column_scope.readable(spec.model, [c.key for c in spec.columns]))
    if wanted is None:
        return [c for c in spec.columns if c.key in allowed]
    by_key = {c.key: c for c in spec.columns}
    out = []
    for key in wanted:
        c = by_key.get(key)
        if c is None:
            raise ValidationError(f"没有这一列：{key}", "columns")
        if key in allowed:
            out.append(c)
    return out


def editable_keys(spec: GridSpec, can_write: bool) -> set[str]:
    """Column keys this user may edit in the grid: never PII (masked), never unreadable."""
    if not can_write:
        return set()
    fields = [c.edit_key for c in spec.columns if c.edit_key]
    ok = set(column_scope.form_editable(spec.model, fields))
    return {c.key for c in spec.columns if c.edit_key in ok}


# --- filters -----------------------------------------------------------------
_FILTERS: dict[tuple[type, str], Callable] = {}


def register_filter(model, name: str):
    """Register ``fn(stmt, value, ctx) -> stmt`` for filter key ``name`` on ``model``."""
    def deco(fn):
        _FILTERS[(model, name)] = fn
        return fn
    return deco


def parse_filters(raw: Any) -> dict:
    if raw in (None, "", {}):
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ValidationError("筛选条件格式错误（应为 JSON 对象）", "filters") from None
    if not isinstance(raw, dict):
        raise ValidationError("筛选条件格式错误（应为 JSON 对象）", "filters")
    return {k: v for k, v in raw.items() if v not in (None, "", [])}


def _day_bound(value, end: bool) -> dt.datetime:
    """A date or datetime string → aware UTC; a bare date means the Asia/Shanghai day."""
    text = str(value).strip()
    try:
        if len(text) <= 10:
            day = dt.date.fromisoformat(text)
            local = dt.datetime.combine(day + dt.timedelta(days=1 if end else 0), dt.time(), SHANGHAI)
        else:
            local = dt.datetime.fromisoformat(text)
            if local.tzinfo is None:
                local = local.replace(tzinfo=SHANGHAI)
            if end:
                local += dt.timedelta(microseconds=1)
    except ValueError:
        raise ValidationError(f"无法识别的日期：{text}", "filters") from None
    return local.astimezone(dt.timezone.utc)


def _coerce(col: GridColumn, column, value):
    if col.kind == "bool":
        if isinstance(value, bool):
            return value
        return str(value).lower() in ("1", "true", "y", "yes", "是")
    if col.kind == "int":
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValidationError(f"「{col.label}」应为整数：{value}", col.key) from None
    if col.kind in ("money", "decimal"):
        try:
            return Decimal(str(value))
        except InvalidOperation:
            raise ValidationError(f"「{col.label}」应为数字：{value}", col.key) from None
    return value


def apply_filters(spec: GridSpec, stmt, filters: Mapping, joins: dict):
    """Add ``filters`` to ``stmt``. Unknown keys and unreadable columns are refused (a
    filter on a hidden column would leak its values)."""
    model = spec.model
    readable = {c.key for c in readable_columns(spec)}
    for key, value in filters.items():
        if key == "id":
            ids = value if isinstance(value, list) else [value]
            try:
                stmt = stmt.where(model.id.in_([int(v) for v in ids]))
            except (TypeError, ValueError):
                raise ValidationError("记录编号无效", "filters") from None
            continue
        custom = _FILTERS.get((model, key))
        if custom is not None:
            stmt = custom(stmt, value, joins)
            continue
        col = spec.column(key)
        if col is None or col.filter is None:
            raise ValidationError(f"不能按「{key}」筛选", "filters")
        if key not in readable:
            raise ValidationError(f"无权按「{col.label}」筛选", "filters")
        rel, column = _attr(model, key)
        if rel is not None:
            fk = list(rel.local_columns)[0]
            ids = value if isinstance(value, list) else [value]
            try:
                stmt = stmt.where(getattr(model, fk.key).in_([int(v) for v in ids]))
            except (TypeError, ValueError):
                raise ValidationError(f"「{col.label}」筛选值无效", "filters") from None
            continue
        attr = getattr(model, key)
        if isinstance(value, dict):
            if "like" in value:
                text = str(value["like"]).strip()
                if text:
                    esc = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                    stmt = stmt.where(attr.ilike(f"%{esc}%", escape="\\"))
                continue
            lo, hi = value.get("from"), value.get("to")
            if col.kind == "time":
                if lo not in (None, ""):
                    stmt = stmt.where(attr >= _day_bound(lo, end=False))
                if hi not in (None, ""):
                    stmt = stmt.where(attr < _day_bound(hi, end=True))
            else:
                if lo not in (None, ""):
                    stmt = stmt.where(attr >= _coerce(col, column, lo))
                if hi not in (None, ""):
                    stmt = stmt.where(attr <= _coerce(col, column, hi))
            continue
        if isinstance(value, list):
            stmt = stmt.where(attr.in_([_coerce(col, column, v) for v in value]))
        elif col.filter == "like":
            text = str(value).strip()
            esc = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            stmt = stmt.where(attr.ilike(f"%{esc}%", escape="\\"))
        else:
            stmt = stmt.where(attr == _coerce(col, column, value))
    return stmt


# --- sorting and cursors --------------------------------------------------------
def parse_sort(spec: GridSpec, raw: Optional[str]) -> tuple[str, str]:
    if not raw:
        return spec.default_sort
    key, _, direction = str(raw).partition(":")
    direction = direction or "asc"
    if direction not in ("asc", "desc"):
        raise ValidationError(f"排序方向无效：{direction}", "sort")
    if key != "id":
        col = spec.column(key)
        if col is None or not col.sortable:
            raise ValidationError(f"不能按「{key}」排序", "sort")
        if not column_scope.readable(spec.model, [key]):
            raise ValidationError(f"无权按「{col.label}」排序", "sort")
    return key, direction


def _encode_cursor(value, pk: int) -> str:
    if isinstance(value, dt.datetime):
        value = {"t": value.astimezone(dt.timezone.utc).isoformat()}
    elif isinstance(value, Decimal):
        value = {"d": str(value)}
    raw = json.dumps([value, pk], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str):
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value, pk = json.loads(raw)
        if isinstance(value, dict):
            value = (dt.datetime.fromisoformat(value["t"]) if "t" in value else Decimal(value["d"]))
        return value, int(pk)
    except (ValueError, TypeError, KeyError):
        raise ValidationError("分页游标无效，请刷新", "after") from None


def _keyset(attr, pk, direction: str, value, last_id: int):
    """Rows after (value, last_id) in ORDER BY attr <dir> NULLS (first for desc, last
    for asc), id <dir> -- PostgreSQL's default null placement, so its index serves it."""
    if direction == "desc":
        if value is None:
            return or_(and_(attr.is_(None), pk < last_id), attr.is_not(None))
        return tuple_(attr, pk) < tuple_(value, last_id)
    if value is None:
        return and_(attr.is_(None), pk > last_id)
    return or_(tuple_(attr, pk) > tuple_(value, last_id), attr.is_(None))


def _order_by(attr, pk, direction: str):
    if direction == "desc":
        return [attr.desc().nulls_first(), pk.desc()]
    return [attr.asc().nulls_last(), pk.asc()]


# --- the query -------------------------------------------------------------------
@dataclass
class Page:
    rows: list[dict]
    next_cursor: Optional[str]
    columns: list[str]


_BASES: dict = {}


def _base(spec: GridSpec, cols: list[GridColumn]):
    """select(id, columns...) with the outer joins the relation columns need.

    Built once per grid and column list (statements are immutable; filters and
    paging add to a copy), so a request does not rebuild aliases and labels."""
    key = (spec.resource, id(spec), tuple(c.key for c in cols))
    hit = _BASES.get(key)
    if hit is None:
        if len(_BASES) > 1000:
            _BASES.clear()
        hit = _BASES[key] = _build_base(spec, cols)
    return hit[0], dict(hit[1])


def _build_base(spec: GridSpec, cols: list[GridColumn]):
    model = spec.model
    joins: dict = {}
    selected = [model.id.label("id")]
    for c in cols:
        rel, column = _attr(model, c.key)
        if rel is None:
            selected.append(getattr(model, c.key).label(c.key))
            continue
        target = joins.get(rel.key)
        if target is None:
            target = joins[rel.key] = aliased(rel.mapper.class_)
        selected.append(getattr(target, column.key).label(c.key))
    stmt = select(*selected).select_from(model)
    for rel_key, target in joins.items():
        stmt = stmt.outerjoin(target, getattr(model, rel_key).of_type(target))
    return stmt, joins


def page(spec: GridSpec, filters: Mapping, *, sort: Optional[str] = None, after: Optional[str] = None,
         size: int = 50, columns: Optional[Iterable[str]] = None, max_size: int = MAX_PAGE_SIZE) -> Page:
    size = max(1, min(int(size or 50), max_size))
    cols = readable_columns(spec, columns)
    key, direction = parse_sort(spec, sort)
    stmt, joins = _base(spec, cols)
    stmt = apply_filters(spec, stmt, filters, joins)
    model = spec.model
    sort_attr = model.id if key == "id" else getattr(model, key)
    if after:
        value, last_id = _decode_cursor(after)
        if key == "id":
            stmt = stmt.where(model.id < last_id if direction == "desc" else model.id > last_id)
        else:
            stmt = stmt.where(_keyset(sort_attr, model.id, direction, value, last_id))
    if key == "id":
        stmt = stmt.order_by(model.id.desc() if direction == "desc" else model.id.asc())
    else:
        stmt = stmt.order_by(*_order_by(sort_attr, model.id, direction))
    stmt = stmt.limit(size + 1)
    if key != "id" and key not in {c.key for c in cols}:
        stmt = stmt.add_columns(sort_attr.label("__sort"))
    result = db.session.execute(stmt).all()  # the session's: its row scope (scope.py) applies
    more = len(result) > size
    result = result[:size]
    rows = present_rows(spec, cols, result)
    cursor = None
    if more and result:
        last = result[-1]._mapping
        sort_value = last["id"] if key == "id" else last.get("__sort", last.get(key))
        cursor = _encode_cursor(sort_value, last["id"])
    return Page(rows=rows, next_cursor=cursor, columns=[c.key for c in cols])


def present_rows(spec: GridSpec, cols: list[GridColumn], result) -> list[dict]:
    """Rows as JSON-able dicts: PII masked, money as strings, times in Asia/Shanghai."""
    grant = column_scope.current_grant()
    pii = [c.key for c in cols if c.scope_tag == "pii"]
    out = []
    for row in result:
        m = row._mapping
        item = {"id": m["id"]}
        for c in cols:
            item[c.key] = json_value(c, m[c.key])
        for key in pii:
            item[key] = column_scope.present(spec.model, key, m[key], grant)
        out.append(item)
    return out


_UTC = dt.timezone.utc
_CN = dt.timedelta(hours=8)
_CN_FIXED = dt.datetime(1992, 1, 1, tzinfo=_UTC)  # Asia/Shanghai has been UTC+8 all year since 1991


def json_value(col: GridColumn, value):
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_UTC)
        if value.tzinfo is _UTC and value >= _CN_FIXED:  # the common case, without the tz database
            return (value + _CN).isoformat(" ", "seconds")[:19]
        return value.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, Decimal):
        return f"{value:.2f}" if col.kind == "money" else str(value)
    return value


def count(spec: GridSpec, filters: Mapping, cap: int = COUNT_CAP) -> tuple[int, bool]:
    """How many rows match, counted up to ``cap``: (n, capped)."""
    stmt, joins = _base(spec, [])
    stmt = apply_filters(spec, stmt, filters, joins).limit(cap + 1)
    n = db.session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
    return min(n, cap), n > cap


def matching_ids(spec: GridSpec, filters: Mapping, limit: int) -> list[int]:
    """Ids of every row matching ``filters`` (select all matching), refusing more than ``limit``."""
    stmt, joins = _base(spec, [])
    stmt = apply_filters(spec, stmt, filters, joins).order_by(spec.model.id).limit(limit + 1)
    ids = list(db.session.execute(stmt).scalars())
    if len(ids) > limit:
        raise ValidationError(f"符合条件的记录超过 {limit} 条，请缩小筛选范围", "filters")
    return ids


def iter_rows(spec: GridSpec, filters: Mapping, *, columns: Optional[Iterable[str]] = None,
              sort: Optional[str] = None, batch: int = 2000) -> Iterator[tuple[list[GridColumn], list]]:
    """Every matching row, in keyset batches (flat memory): yields (columns, rows) per
    batch, rows as :func:`page` gives them (scoped, PII masked)."""
    cols = readable_columns(spec, columns)
    after = None
    while True:
        p = page(spec, filters, sort=sort, after=after, size=batch, columns=columns, max_size=batch)
        yield cols, p.rows
        if not p.next_cursor:
            return
        after = p.next_cursor


def pii_maskers(spec: GridSpec, cols: list[GridColumn]) -> dict[str, Callable]:
    """Per PII column, the function :func:`columns.present` applies (never a reveal):
    looked up once, so a streamed export masks 100,000 rows without per-cell lookups."""
    out = {}
    for c in cols:
        if c.scope_tag == "pii":
            masker = column_scope.MASKERS.get(column_scope.column_info(spec.model, c.key).get("mask"),
                                              column_scope.mask_address)
            out[c.key] = (lambda m: (lambda v: m(None if v is None else str(v))))(masker)
    return out


def stream_raw(spec: GridSpec, filters: Mapping, *, columns: Optional[Iterable[str]] = None,
               sort: Optional[str] = None, batch: int = 5000) -> tuple[list[GridColumn], Iterator[tuple]]:
    """Every matching row as a tuple ``(id, value, ...)`` of raw typed values (Decimal,
    aware UTC datetime, bool, int, str; choice columns as their code), for exports.

    The same query, filters, sort, row scope and column scope as :func:`page`, PII
    masked as :func:`present_rows` masks it, but one streamed query (``yield_per``:
    a server-side cursor on PostgreSQL) instead of keyset pages and no JSON
    conversion. Returns ``(columns, rows)``; the columns are the readable ones of
    ``columns`` in order, and tuple position ``i + 1`` holds column ``i``."""
    cols = readable_columns(spec, columns)
    key, direction = parse_sort(spec, sort)
    stmt, joins = _base(spec, cols)
    stmt = apply_filters(spec, stmt, filters, joins)
    model = spec.model
    if key == "id":
        stmt = stmt.order_by(model.id.desc() if direction == "desc" else model.id.asc())
    else:
        stmt = stmt.order_by(*_order_by(getattr(model, key), model.id, direction))
    maskers = pii_maskers(spec, cols)
    masked = [(i + 1, maskers[c.key]) for i, c in enumerate(cols) if c.key in maskers]

    def rows() -> Iterator[tuple]:
        result = db.session.execute(stmt.execution_options(yield_per=batch))
        try:
            for part in result.partitions():
                if not masked:
                    yield from (tuple(r) for r in part)
                    continue
                for r in part:
                    r = list(r)
                    for i, mask in masked:
                        r[i] = mask(r[i])
                    yield tuple(r)
        finally:
            result.close()

    return cols, rows()
