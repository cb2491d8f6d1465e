"""Read models for order screens: status tab counts and action permissions."""
from __future__ import annotations

from app.models import Order

from .order_counts import tab_counts
from .order_status import STATUS_ZH, TRANSITIONS

# Which Order permission each state-machine action needs (besides can_read).
ACTION_PERMISSION = {
    "audit": "audit", "unaudit": "audit",
    "cancel": "write", "refund_close": "write",
    "ship": "write",
}


def permission_for_action(action: str) -> str | None:
    return ACTION_PERMISSION.get(action)


def status_tab_counts() -> list[dict]:
    """Counts per status tab, plus 异常 (held), within the current row scope.

    From the maintained counters (services/order_counts.py), never a COUNT over orders.
    A status tab here links to a filter on status alone, so it counts held orders too."""
    return tab_counts(held_apart=False)


_ACTION_ZH = {"create": "创建", "edit": "修改", "hold": "挂起", "release": "解除挂起", "reveal": "查看完整信息",
              "writeback": "发货回传", "print": "打印", "return": "退货入库",
              "split": "拆分订单"}


def action_label(action: str | None) -> str:
    if action in TRANSITIONS:
        return TRANSITIONS[action].zh
    return _ACTION_ZH.get(action or "", action or "")


def field_label(field: str | None) -> str:
    if not field:
        return ""
    if field == "hold":
        return "挂起"
    col = Order.__mapper__.columns.get(field)
    return str(col.info.get("label", field)) if col is not None else field


_WRITEBACK_ZH = {"pending": "待回传", "done": "已回传", "failed": "回传失败"}


def value_label(value: str | None) -> str:
    """Old/new values as written in the trail; status codes shown by their zh name."""
    if value is None:
        return ""
    return STATUS_ZH.get(value) or _WRITEBACK_ZH.get(value, value)
