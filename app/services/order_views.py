"""Read models for order screens: status tab counts and action permissions."""
from __future__ import annotations

from sqlalchemy import func, select

from app.extensions import db
from app.models import Order

from .order_status import STATUS_ZH

# Which Order permission each state-machine action needs (besides can_read).
ACTION_PERMISSION = {
    "audit": "audit", "unaudit": "audit",
    "cancel": "write", "refund_close": "write",
    "ship": "write", "complete": "write", "pay": "write",
}


def permission_for_action(action: str) -> str | None:
    return ACTION_PERMISSION.get(action)


def status_tab_counts() -> list[dict]:
    """Counts per status tab, plus 异常 (held), within the current row scope."""
    rows = dict(db.session.execute(select(Order.status, func.count()).group_by(Order.status)).all())
    held = db.session.execute(select(func.count()).select_from(Order).where(Order.is_held.is_(True))).scalar()
    tabs = [{"code": code, "label": zh, "count": rows.get(code, 0)} for code, zh in STATUS_ZH.items()]
    tabs.append({"code": "held", "label": "异常", "count": held or 0})
    return tabs
