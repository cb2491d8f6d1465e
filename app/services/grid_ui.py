"""What the browser grid needs besides rows: its definition for this user (columns,
quick filters with their options, tabs, batch actions), tab counts, and bulk cell
edits where each row succeeds or fails on its own."""
from __future__ import annotations

from typing import Callable, Mapping, Optional

from sqlalchemy import select

from app.extensions import db
from app.models import FLAGS, PLATFORMS, Carrier, Shop, Warehouse

from . import grid
from .errors import DomainError, ValidationError

PROVINCES = [
    "北京市", "天津市", "河北省", "山西省", "内蒙古自治区", "辽宁省", "吉林省", "黑龙江省", "上海市", "江苏省",
    "浙江省", "安徽省", "福建省", "江西省", "山东省", "河南省", "湖北省", "湖南省", "广东省", "广西壮族自治区",
    "海南省", "重庆市", "四川省", "贵州省", "云南省", "西藏自治区", "陕西省", "甘肃省", "青海省",
    "宁夏回族自治区", "新疆维吾尔自治区", "台湾省", "香港特别行政区", "澳门特别行政区",
]
MAX_EDITS = 5000


def _named(model, active_attr: Optional[str] = "active") -> list[dict]:
    stmt = select(model.id, model.name).order_by(model.name)
    if active_attr and hasattr(model, active_attr):
        stmt = stmt.where(getattr(model, active_attr).is_(True))
    return [{"value": i, "label": n} for i, n in db.session.execute(stmt)]


OPTION_SOURCES: dict[str, Callable[[], list[dict]]] = {
    "shops": lambda: _named(Shop, None),  # scoped: only the user's shops
    "carriers": lambda: _named(Carrier),
    "warehouses": lambda: _named(Warehouse),
    "platforms": lambda: [{"value": k, "label": str(v)} for k, v in PLATFORMS.items()],
    "flags": lambda: [{"value": k, "label": str(v)} for k, v in FLAGS.items()],
    "provinces": lambda: [{"value": p, "label": p} for p in PROVINCES],
    "yes_no": lambda: [{"value": True, "label": "是"}, {"value": False, "label": "否"}],
    "new_returning": lambda: [{"value": False, "label": "新客户"}, {"value": True, "label": "老客户"}],
}

# Relations whose rows are offered when editing a cell (carrier, warehouse).
EDIT_OPTION_SOURCES = {"carrier": "carriers", "warehouse": "warehouses"}

_TAB_PROVIDERS: dict[str, Callable[[Mapping], list[dict]]] = {}


def register_tabs(name: str):
    def deco(fn):
        _TAB_PROVIDERS[name] = fn
        return fn
    return deco


def meta(spec: grid.GridSpec, *, can_write: bool, has_access: Callable[[str], bool]) -> dict:
    cols = grid.readable_columns(spec)
    editable = grid.editable_keys(spec, can_write)
    out_cols = []
    for i, c in enumerate(cols):
        choices = {k: str(v) for k, v in c.choices.items()} if c.choices else None
        item = {"key": c.key, "label": str(c.label), "kind": c.kind, "sortable": c.sortable,
                "filter": c.filter, "choices": choices, "editable": c.key in editable,
                "frozen": i < spec.frozen, "width": c.width}
        if c.key in editable and c.edit_choices:
            source = EDIT_OPTION_SOURCES.get(c.edit_choices)
            item["edit_options"] = OPTION_SOURCES[source]() if source else []
            if c.edit_choices == "carrier" and "receiver_province" in spec.model.__mapper__.columns:
                item.update(_carrier_hints())
        if c.key in editable and c.kind == "choice":
            item["edit_options"] = [{"value": _typed(k), "label": v} for k, v in (choices or {}).items()]
        out_cols.append(item)
    quick = []
    for qf in spec.quick_filters:
        item = {k: (str(v) if k == "label" else v) for k, v in qf.items()}
        source = qf.get("options")
        if source:
            item["options"] = OPTION_SOURCES[source]()
        quick.append(item)
    actions = []
    for act in spec.actions:
        if has_access(act.get("permission", "can_write")):
            actions.append({k: (str(v) if k in ("label", "confirm") else v) for k, v in act.items()
                            if k != "permission"} | {"params": [_param(p) for p in act.get("params", [])]})
    tabs = None
    if spec.tabs:
        tabs = [{"code": t["code"], "label": t["label"]} for t in _TAB_PROVIDERS[spec.tabs]({})]
    key, direction = spec.default_sort
    return {
        "resource": spec.resource, "title": str(spec.title), "columns": out_cols, "quick_filters": quick,
        "tabs": tabs, "actions": actions, "can_write": bool(editable), "default_sort": f"{key}:{direction}",
        "page_size": 50, "count_cap": grid.COUNT_CAP,
    }


def _carrier_hints() -> dict:
    """快递考核: the recommended carrier per province, for the carrier editor (grid.js puts it
    first for the row's 收货省份, with its evidence). A hint: never breaks the grid."""
    from . import carrier_scorecard

    try:
        hints = carrier_scorecard.grid_hints()
    except Exception:  # noqa: BLE001
        import logging

        logging.getLogger(__name__).exception("carrier recommendations for the grid failed")
        return {}
    return {"recommendations": hints, "recommend_by": "receiver_province"} if hints else {}


def _typed(value: str):
    return int(value) if value.lstrip("-").isdigit() else value


def _param(p: dict) -> dict:
    item = {k: (str(v) if k == "label" else v) for k, v in p.items()}
    if p.get("options"):
        item["options"] = OPTION_SOURCES[p["options"]]()
    return item


def tab_counts(spec: grid.GridSpec, filters: Mapping) -> Optional[list[dict]]:
    if not spec.tabs:
        return None
    return _TAB_PROVIDERS[spec.tabs](filters)


def apply_edits(spec: grid.GridSpec, changes, *, editor: Callable[[int, dict], None],
                can_write: bool) -> list[dict]:
    """Apply cell edits ``[{id, key, value}]``. Rows are independent: each row's edits
    run in a savepoint, so a bad value fails that row only, and successes stay saved.
    Returns one result per row: ``{id, ok, message?, row?}`` (``row`` = fresh values)."""
    if not isinstance(changes, list) or not changes:
        raise ValidationError("没有要保存的修改", "changes")
    if len(changes) > MAX_EDITS:
        raise ValidationError(f"一次最多保存 {MAX_EDITS} 个单元格", "changes")
    editable = grid.editable_keys(spec, can_write)
    by_row: dict[int, dict] = {}
    for i, ch in enumerate(changes, start=1):
        if not isinstance(ch, dict):
            raise ValidationError(f"第 {i} 项修改格式错误", "changes")
        key = ch.get("key")
        col = spec.column(key) if isinstance(key, str) else None
        if col is None or key not in editable:
            label = col.label if col else key
            raise ValidationError(f"「{label}」不能修改", "changes")
        try:
            pk = int(ch.get("id"))
        except (TypeError, ValueError):
            raise ValidationError(f"第 {i} 项修改缺少记录编号", "changes") from None
        value = ch.get("value")
        if isinstance(value, str):
            value = value.strip()
        by_row.setdefault(pk, {})[col.edit_key] = value
    results = []
    for pk, fields in by_row.items():
        try:
            with db.session.begin_nested():
                editor(pk, fields)
            results.append({"id": pk, "ok": True})
        except DomainError as exc:
            results.append({"id": pk, "ok": False, "message": exc.message, "field": exc.field})
    db.session.commit()
    ok_ids = [r["id"] for r in results if r["ok"]]
    if ok_ids:
        fresh = {row["id"]: row for row in grid.page(spec, {"id": ok_ids}, size=len(ok_ids),
                                                        max_size=MAX_EDITS).rows}
        for r in results:
            if r["ok"]:
                r["row"] = fresh.get(r["id"])
    return results
