"""Column scope: who may read the ``finance`` and ``pii`` columns, and PII masking.

FAB has no column permissions (its issue #914), so this is ours, in one place.
Columns are tagged in the model (``info["scope"]``). The permissions live on a
virtual FAB view menu, so an admin grants them per role in the security UI:

* ``can_read_finance`` on ``ColumnScope``: cost, profit.
* ``can_read_pii`` on ``ColumnScope``: receiver name, phone and address, masked.
* ``can_reveal_pii`` on ``ColumnScope``: may ask for the unmasked value (and edit
  PII); every reveal is logged in PiiAccessLog.

A column the user may not read is removed from list, show, edit, REST and
export; a PII column without reveal is shown masked and is read-only.
"""
from __future__ import annotations

import time
from typing import Iterable

from flask import has_request_context, request

COLUMN_SCOPE_VIEW = "ColumnScope"
PERM_FINANCE = "can_read_finance"
PERM_PII = "can_read_pii"
PERM_REVEAL = "can_reveal_pii"
ALL_COLUMN_PERMS = (PERM_FINANCE, PERM_PII, PERM_REVEAL)
SCOPE_PERM = {"finance": PERM_FINANCE, "pii": PERM_PII}


class ColumnGrant:
    """What one user may do with tagged columns.

    Besides ``finance`` and ``pii`` there is ``all_shops``: aggregates computed
    over every shop (a customer's total order count and spend) are readable only
    by users who see every shop; a shop-limited user would learn about the
    other shops' sales from them.
    """

    def __init__(self, finance: bool, pii: bool, reveal: bool, all_shops: bool = True):
        self.finance = finance
        self.pii = pii or reveal
        self.reveal = reveal
        self.all_shops = all_shops

    @classmethod
    def everything(cls) -> "ColumnGrant":
        return cls(True, True, True, True)

    @classmethod
    def nothing(cls) -> "ColumnGrant":
        return cls(False, False, False, False)

    def may_read(self, scope: str | None) -> bool:
        if scope is None:
            return True
        return {"finance": self.finance, "pii": self.pii, "all_shops": self.all_shops}.get(scope, False)


_grant_cache: dict = {}


def grant_for_user(user) -> ColumnGrant:
    """The user's column grant, from their roles' ColumnScope permissions. Reused per
    process for OMS_PERMISSION_CACHE_SECONDS per set of roles (as app/security.py
    does for FAB's permission checks)."""
    from flask import current_app

    from app.extensions import appbuilder

    if user is None or not getattr(user, "is_authenticated", False):
        return ColumnGrant.nothing()
    all_shops = bool(getattr(user, "all_shops", False))
    ttl = float(current_app.config.get("OMS_PERMISSION_CACHE_SECONDS", 0) or 0)
    key = tuple(sorted(r.id for r in user.roles))
    hit = _grant_cache.get(key) if ttl > 0 else None
    if hit is not None and time.monotonic() - hit[1] < ttl:
        finance, pii, reveal = hit[0]
        return ColumnGrant(finance, pii, reveal, all_shops)
    sm = appbuilder.sm
    perms = set()
    flags = None
    for role in user.roles:
        if role.name == sm.auth_role_admin:
            flags = (True, True, True)
            break
        for pv in role.permissions:
            if pv.view_menu and pv.view_menu.name == COLUMN_SCOPE_VIEW:
                perms.add(pv.permission.name)
    if flags is None:
        flags = (PERM_FINANCE in perms, PERM_PII in perms, PERM_REVEAL in perms)
    if ttl > 0:
        if len(_grant_cache) > 10_000:
            _grant_cache.clear()
        _grant_cache[key] = (flags, time.monotonic())
    return ColumnGrant(*flags, all_shops)


_job_grant = None


def current_grant() -> ColumnGrant:
    if _job_grant is not None:
        return _job_grant
    if has_request_context():
        env = request.environ  # per request; ``g`` may outlive one
        if "oms.grant" not in env:
            from flask_login import current_user

            env["oms.grant"] = grant_for_user(current_user)
        return env["oms.grant"]
    return ColumnGrant.everything()  # CLI and system jobs


def column_scope(model, name: str) -> str | None:
    """The scope tag of ``model.name``; a dotted relation path inherits the leaf's tag."""
    attr = _column(model, name)
    if attr is None:
        return None
    return attr.info.get("scope")


def _column(model, name: str):
    if "." in name:
        rel, rest = name.split(".", 1)
        prop = model.__mapper__.relationships.get(rel)
        return _column(prop.mapper.class_, rest) if prop is not None else None
    col = model.__mapper__.columns.get(name)
    return col


def column_info(model, name: str) -> dict:
    attr = _column(model, name)
    if attr is not None:
        return dict(attr.info)
    rel = model.__mapper__.relationships.get(name)
    return dict(rel.info) if rel is not None else {}


def readable(model, columns: Iterable[str], grant: ColumnGrant | None = None) -> list[str]:
    grant = grant or current_grant()
    return [c for c in columns if grant.may_read(column_scope(model, c)) and not _is_hidden(model, c)]


def editable(model, columns: Iterable[str], grant: ColumnGrant | None = None) -> list[str]:
    """Readable columns minus PII when the user cannot reveal it (a masked value can't be edited)."""
    grant = grant or current_grant()
    out = []
    for c in readable(model, columns, grant):
        if column_scope(model, c) == "pii" and not grant.reveal:
            continue
        out.append(c)
    return out


def form_editable(model, columns_: Iterable[str], grant: ColumnGrant | None = None) -> list[str]:
    """Columns an HTML form may carry: never PII. A form pre-fills its inputs, which
    would show the plaintext without a logged reveal; PII is changed through the
    API (blind write) by users who may reveal it."""
    return [c for c in editable(model, columns_, grant) if column_scope(model, c) != "pii"]


def hidden_columns(model, grant: ColumnGrant | None = None) -> set[str]:
    grant = grant or current_grant()
    return {
        c.key for c in model.__mapper__.columns
        if not grant.may_read(c.info.get("scope")) or c.info.get("hidden")
    }


def _is_hidden(model, name: str) -> bool:
    attr = _column(model, name)
    return bool(attr is not None and attr.info.get("hidden"))


# --- masking -------------------------------------------------------------
def mask_name(value: str | None) -> str:
    if not value:
        return value or ""
    return value[0] + "*" * max(1, len(value) - 1)


def mask_phone(value: str | None) -> str:
    if not value:
        return value or ""
    digits = "".join(ch for ch in value if ch.isdigit())
    if len(digits) >= 7:
        return digits[:3] + "****" + digits[-4:]
    return "*" * len(value)


def mask_address(value: str | None) -> str:
    if not value:
        return value or ""
    return value[0] + "****"


MASKERS = {"name": mask_name, "phone": mask_phone, "address": mask_address}


def present(model, name: str, value, grant: ColumnGrant | None = None, reveal: bool = False):
    """The value as this user may see it.

    PII is masked unless ``reveal`` is asked for *and* the user holds the reveal
    permission; the caller of a reveal logs it (``log_reveal``).
    """
    grant = grant or current_grant()
    info = column_info(model, name)
    if info.get("scope") == "pii" and not (reveal and grant.reveal):
        masker = MASKERS.get(info.get("mask"), mask_address)
        return masker(value if value is None else str(value))
    return value


def present_row(model, row: dict, grant: ColumnGrant | None = None, reveal: bool = False) -> dict:
    """Drop unreadable keys and mask PII in one serialised row (REST, export)."""
    grant = grant or current_grant()
    out = {}
    for key, value in row.items():
        if isinstance(value, dict) and key in model.__mapper__.relationships:
            target = model.__mapper__.relationships[key].mapper.class_
            out[key] = present_row(target, value, grant, reveal)
            continue
        if isinstance(value, list) and key in model.__mapper__.relationships:
            target = model.__mapper__.relationships[key].mapper.class_
            out[key] = [present_row(target, v, grant, reveal) if isinstance(v, dict) else v for v in value]
            continue
        scope = column_scope(model, key)
        if not grant.may_read(scope) or _is_hidden(model, key):
            continue
        out[key] = present(model, key, value, grant, reveal)
    return out


def log_reveal(entity: str, entity_id: int, fields: list[str], purpose: str = "view") -> None:
    """Record that the current user saw unmasked PII. Caller commits."""
    from flask_login import current_user

    from app.extensions import db
    from app.models import PiiAccessLog

    db.session.add(
        PiiAccessLog(
            user_id=current_user.id,
            entity=entity,
            entity_id=entity_id,
            fields=",".join(fields),
            purpose=purpose,
            remote_addr=request.remote_addr if has_request_context() else None,
        )
    )
