"""Model base and shared vocabulary (GLOSSARY.md)."""
from __future__ import annotations

from flask_appbuilder import Model  # one metadata for FAB's security tables and ours
from flask_babel import lazy_gettext as _l

PLATFORMS = {
    "taobao": _l("Taobao"),
    "tmall": _l("Tmall"),
    "jd": _l("JD"),
    "pdd": _l("Pinduoduo"),
    "douyin": _l("Douyin"),
    "manual": _l("Manual"),
}


def col_info(label, scope: str | None = None, **extra) -> dict:
    """Column metadata read by the views, the API and exports.

    ``label`` is the UI name (a lazy msgid, translated by our zh catalogue).
    ``scope`` tags a column ``finance`` (cost, profit), ``pii`` (receiver name,
    phone, address) or ``all_shops`` (aggregates over every shop); column scope
    hides or masks it for users without the matching permission or row scope,
    everywhere, through one mechanism (services/columns.py).
    """
    info = {"label": label}
    if scope:
        info["scope"] = scope
    info.update(extra)
    return info


__all__ = ["Model", "PLATFORMS", "col_info"]
