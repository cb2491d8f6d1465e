"""Input parsing shared by forms, the REST API, imports and sync.

Every failure raises ValidationError with a zh message naming the field, so a
user knows which cell or field to fix; nothing is written before validation.
"""
from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from flask import current_app, has_app_context

from .errors import ValidationError

_MAX_MONEY = Decimal("9999999999.99")


def _label(field: str, label: str | None) -> str:
    """「字段」, or the caller's own phrase when it already names where (第 3 行商品「数量」)."""
    text = label or field
    return text if "「" in text else f"「{text}」"


def parse_money(value, field: str, label: str | None = None, allow_negative: bool = False) -> Decimal:
    name = _label(field, label)
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return Decimal("0.00")
    if isinstance(value, float):
        value = repr(value)
    text = str(value).strip().replace("¥", "").replace("￥", "").replace(",", "").replace("元", "")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ValidationError(f"{name}金额格式不正确：{str(value)[:30]}", field) from None
    if not amount.is_finite():
        raise ValidationError(f"{name}金额格式不正确：{str(value)[:30]}", field)
    if amount < 0 and not allow_negative:
        raise ValidationError(f"{name}不能为负数：{value}", field)
    if abs(amount) > _MAX_MONEY:
        raise ValidationError(f"{name}金额过大：{value}", field)
    return amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def parse_quantity(value, field: str, label: str | None = None, minimum: int = 1) -> int:
    name = _label(field, label)
    try:
        if isinstance(value, str):
            value = value.strip()
        number = Decimal(str(value))
    except (InvalidOperation, TypeError):
        raise ValidationError(f"{name}必须是整数：{value}", field) from None
    if number != number.to_integral_value():
        raise ValidationError(f"{name}必须是整数：{value}", field)
    qty = int(number)
    if qty < 0:
        raise ValidationError(f"{name}不能为负数：{value}", field)
    if qty < minimum:
        raise ValidationError(f"{name}至少为 {minimum}：{value}", field)
    return qty


def check_text(value, field: str, label: str | None = None, max_len: int | None = None) -> str | None:
    if value is None:
        return None
    text = str(value)
    if max_len is None:
        max_len = current_app.config.get("OMS_MAX_TEXT", 2000) if has_app_context() else 2000
    if len(text) > max_len:
        raise ValidationError(f"{_label(field, label)}过长：{len(text)} 个字符，最多 {max_len} 个", field)
    return text


def check_choice(value, choices, field: str, label: str | None = None):
    if value not in choices:
        raise ValidationError(f"{_label(field, label)}的值无效：{value}", field)
    return value


def parse_flag(value, field: str = "flag", label: str = "旗帜") -> int:
    try:
        flag = int(str(value).strip())
    except (TypeError, ValueError):
        raise ValidationError(f"{_label(field, label)}必须是 0–5 的整数：{value}", field) from None
    if not 0 <= flag <= 5:
        raise ValidationError(f"{_label(field, label)}必须是 0–5 的整数：{value}", field)
    return flag


_PHONE = re.compile(r"^(\+?86)?1\d{10}$")


def check_phone(value, field: str = "receiver_phone", label: str = "收货人手机") -> str | None:
    if value in (None, ""):
        return value
    text = re.sub(r"[\s-]", "", str(value))
    if not (_PHONE.match(text) or re.match(r"^0\d{2,3}\d{7,8}$", text)):
        raise ValidationError(f"{_label(field, label)}号码格式不正确：{value}", field)
    return text
