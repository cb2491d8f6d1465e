"""How values are shown: times in Asia/Shanghai, money with two decimals."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


def format_time(value) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def format_money(value) -> str:
    if value is None or value == "":
        return ""
    return f"{Decimal(value):,.2f}"


def format_bool(value) -> str:
    return "是" if value else "否"


def format_plain(value) -> str:
    """Empty instead of "None"; everything else as text (Jinja escapes it)."""
    return "" if value is None else str(value)


def format_related(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, set)):
        return "、".join(str(v) for v in value)
    return str(value)
