"""Saved grid views (视图): each user keeps named layouts per grid; one may be the default.

A view only stores what the user chose (tab, filters, sort, columns, widths, order);
applying it goes through the same permission-checked grid API, so a view can never
show a column or a shop the user may not see.
"""
from __future__ import annotations

import json
from typing import Optional

from sqlalchemy import select, update

from app.extensions import db
from app.models import SavedView

from .errors import NotFound, ValidationError

MAX_STATE_BYTES = 64 * 1024
MAX_VIEWS = 50


def _as_dict(view: SavedView) -> dict:
    return {"id": view.id, "name": view.name, "is_default": view.is_default, "state": json.loads(view.state)}


def list_views(user_id: int, resource: str) -> list[dict]:
    rows = db.session.scalars(select(SavedView).where(
        SavedView.user_id == user_id, SavedView.resource == resource).order_by(SavedView.name))
    return [_as_dict(v) for v in rows]


def save_view(user_id: int, resource: str, name, state, is_default: bool = False) -> dict:
    """Create or replace the user's view ``name`` of grid ``resource``."""
    name = str(name or "").strip()
    if not name:
        raise ValidationError("「视图名称」不能为空", "name")
    if len(name) > 64:
        raise ValidationError("「视图名称」最多 64 个字", "name")
    if not isinstance(state, dict):
        raise ValidationError("「视图」内容格式错误", "state")
    text = json.dumps(state, ensure_ascii=False, separators=(",", ":"))
    if len(text.encode()) > MAX_STATE_BYTES:
        raise ValidationError("「视图」内容过大", "state")
    try:
        view = db.session.scalars(select(SavedView).where(
            SavedView.user_id == user_id, SavedView.resource == resource, SavedView.name == name)).first()
        if view is None:
            count = len(list_views(user_id, resource))
            if count >= MAX_VIEWS:
                raise ValidationError(f"每个表格最多保存 {MAX_VIEWS} 个视图", "name")
            view = SavedView(user_id=user_id, resource=resource, name=name)
            db.session.add(view)
        view.state = text
        if is_default:
            db.session.execute(update(SavedView).where(
                SavedView.user_id == user_id, SavedView.resource == resource).values(is_default=False))
        view.is_default = bool(is_default)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return _as_dict(view)


def delete_view(user_id: int, view_id: int) -> None:
    view: Optional[SavedView] = db.session.get(SavedView, view_id)
    if view is None or view.user_id != user_id:
        raise NotFound(f"视图不存在：{view_id}")
    db.session.delete(view)
    db.session.commit()
