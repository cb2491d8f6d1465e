"""Cell converters: one spreadsheet cell → one clean value, or a zh message.

Every converter takes the raw cell (a str from CSV; str, float, int, bool,
datetime or date from calamine) and returns the value, or raises
:class:`CellError` whose message the caller prefixes with the row and column
("第 12 行「订单付款时间」：无法识别的日期 2026-13-45").

The quirks of real seller exports live here: ``="123"`` and a leading ``'`` on
numbers, ids above 2^53 (never through float), ``¥1,234.50``, several date
formats including Excel serial numbers, and one-string addresses.
"""
from __future__ import annotations

import datetime as dt
import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Optional

CN_TZ = dt.timezone(dt.timedelta(hours=8))  # sheets are in Beijing time
UTC = dt.timezone.utc
CENT = Decimal("0.01")
MAX_MONEY = Decimal("9999999999.99")
_FLOAT_EXACT = 2 ** 53


class CellError(ValueError):
    """A cell that cannot be converted; ``message`` is zh, without the row/column prefix."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


# --- text and ids --------------------------------------------------------------------
def _float_text(value: float) -> str:
    if value != value or value in (float("inf"), float("-inf")):
        raise CellError("数值无效")
    if value.is_integer():
        if abs(value) > _FLOAT_EXACT:
            # Excel keeps numbers as doubles: a 19-digit order number typed as a number has
            # already lost its last digits in the file. Never guess them.
            raise CellError(f"数字 {value:.0f} 超过 15 位，已被 Excel 存成数值并丢失精度，"
                            "请把该列设为文本后重新导出")
        return str(int(value))
    return repr(value)


def text(value: Any) -> Optional[str]:
    """Plain text: stripped, ``="..."`` unwrapped, a leading ``'`` dropped; empty → None."""
    if value is None:
        return None
    if type(value) is str:  # the common case first (CSV cells, calamine strings)
        s = value.strip()
    elif isinstance(value, str):
        s = value.strip()
    elif isinstance(value, bool):
        s = "是" if value else "否"
    elif isinstance(value, float):
        s = _float_text(value)
    elif isinstance(value, (dt.datetime, dt.date)):
        s = value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    else:
        s = str(value).strip()
    if not s:
        return None
    c = s[0]
    if c == "=":
        if s.startswith('="') and s.endswith('"') and len(s) >= 3:
            s = s[2:-1].strip()
    elif c == "'":
        s = s[1:].strip()
    elif c == "\t":
        s = s.strip()
    return s or None


_INT_DOT0 = re.compile(r"\d+\.0+")
_SCIENTIFIC = re.compile(r"\d(\.\d+)?[eE]\+\d+")


_QUIRKS = "='\t"  # first characters text() has to look at


def identifier(value: Any) -> Optional[str]:
    """An order / line id: digits kept as text (Taobao ids exceed 2^53)."""
    if type(value) is str and value and value[0] not in _QUIRKS:  # text()'s common case, inline
        s = value.strip() or None
        if s is not None and s[0] in _QUIRKS:
            s = text(s)
    else:
        s = text(value)
    if s is None:
        return None
    if len(s) > 64:
        raise CellError(f"编号过长：{s[:20]}…（最多 64 个字符）")
    if "." in s and _INT_DOT0.fullmatch(s):  # a number formatted by a text export
        s = s.split(".")[0]
    if "+" in s and _SCIENTIFIC.fullmatch(s):  # 3.91234E+18: Excel's display of a long number
        raise CellError(f"编号 {s} 是科学计数法，已丢失精度，请把该列设为文本后重新导出")
    return s


def short_text(limit: int):
    def conv(value: Any) -> Optional[str]:
        if type(value) is str and value and value[0] not in _QUIRKS:  # text()'s common case, inline
            s = value.strip() or None
            if s is not None and s[0] in _QUIRKS:
                s = text(s)
        else:
            s = text(value)
        if s is not None and len(s) > limit:
            raise CellError(f"过长：{len(s)} 个字符，最多 {limit} 个")
        return s
    conv.__name__ = f"text{limit}"
    return conv


# --- numbers -------------------------------------------------------------------------
def _decimal(value: Any) -> Optional[Decimal]:
    if value is None:
        return None
    if isinstance(value, bool):
        raise CellError(f"不是数字：{value}")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise CellError("数值无效")
        return Decimal(repr(value))
    s = text(value)
    if s is None:
        return None
    cleaned = (s.replace("¥", "").replace("￥", "").replace(",", "").replace("，", "")
               .replace("元", "").replace(" ", ""))
    negative = cleaned.startswith("(") and cleaned.endswith(")")  # accounting format (12.50)
    if negative:
        cleaned = cleaned[1:-1]
    try:
        number = Decimal(cleaned)
    except InvalidOperation:
        raise CellError(f"不是数字：{s[:30]}") from None
    if not number.is_finite():
        raise CellError(f"不是数字：{s[:30]}")
    return -number if negative else number


def _money(value: Any) -> Optional[Decimal]:
    number = _decimal(value)
    if number is None:
        return None
    if number < 0:
        raise CellError(f"金额不能为负数：{number}")
    if number > MAX_MONEY:
        raise CellError(f"金额过大：{number}")
    return number.quantize(CENT, rounding=ROUND_HALF_UP)


_MONEY_CACHE: dict = {}  # cell text / float → Decimal: prices repeat across a sheet (Decimal is immutable)
_MONEY_CACHE_MAX = 50_000


def money(value: Any) -> Optional[Decimal]:
    """元 with 2 places; ``¥1,234.5`` → 1234.50. Negative amounts are refused."""
    kind = type(value)
    if kind is not str and kind is not float:
        return _money(value)
    try:
        return _MONEY_CACHE[(kind, value)]
    except KeyError:
        pass
    number = _money(value)  # a bad cell raises and is not cached
    if len(_MONEY_CACHE) >= _MONEY_CACHE_MAX:
        _MONEY_CACHE.clear()
    _MONEY_CACHE[(kind, value)] = number
    return number


def integer(value: Any) -> Optional[int]:
    number = _decimal(value)
    if number is None:
        return None
    if number != number.to_integral_value():
        raise CellError(f"必须是整数：{number}")
    return int(number)


def quantity(value: Any) -> Optional[int]:
    """A line quantity: a positive integer."""
    n = integer(value)
    if n is None:
        return None
    if n < 0:
        raise CellError(f"数量不能为负数：{n}")
    if n == 0:
        raise CellError("数量必须大于 0")
    return n


def count(value: Any) -> Optional[int]:
    """A counted stock quantity (盘点): zero or more."""
    n = integer(value)
    if n is None:
        return None
    if n < 0:
        raise CellError(f"数量不能为负数：{n}")
    return n


def flag(value: Any) -> Optional[int]:
    n = integer(value)
    if n is None:
        return None
    if not 0 <= n <= 5:
        raise CellError(f"旗帜必须是 0–5 的整数：{n}")
    return n


# --- times ---------------------------------------------------------------------------
_ISO = re.compile(r"^(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?(?:[ T](\d{1,2}):(\d{1,2})(?::(\d{1,2}))?(?:\.\d+)?)?$")
_EXCEL_EPOCH = dt.datetime(1899, 12, 30)


_CN_OFFSET = dt.timedelta(hours=8)


def _cn(naive: dt.datetime) -> dt.datetime:
    return (naive - _CN_OFFSET).replace(tzinfo=UTC)  # Beijing has no daylight saving: UTC+8 all year


def datetime(value: Any) -> Optional[dt.datetime]:
    """A Beijing time in the sheet → aware UTC. Accepts 2026-11-05 10:03:04,
    2026/11/5 10:03, 2026年11月5日, Excel serial numbers and date objects."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return _cn(value) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, dt.date):
        return _cn(dt.datetime(value.year, value.month, value.day))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if 20000 <= value <= 80000:  # Excel serial day numbers: 1954 … 2119
            return _cn(_EXCEL_EPOCH + dt.timedelta(days=float(value)))
        raise CellError(f"无法识别的日期 {_float_text(float(value)) if isinstance(value, float) else value}")
    s = text(value)
    if s is None:
        return None
    if len(s) == 19 and s[4] == s[7] == "-" and s[10] == " " and s[13] == s[16] == ":":  # the usual form
        try:
            return _cn(dt.datetime.fromisoformat(s))
        except ValueError:
            pass  # the general path below says what is wrong
    m = _ISO.match(s)
    if m is None:
        try:
            serial = float(s)
        except ValueError:
            raise CellError(f"无法识别的日期 {s[:30]}") from None
        return datetime(serial)
    y, mo, d, h, mi, sec = m.groups()
    try:
        naive = dt.datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(sec or 0))
    except ValueError:
        raise CellError(f"无法识别的日期 {s[:30]}") from None
    return _cn(naive)


# --- addresses and phones --------------------------------------------------------------
PROVINCES = (
    "北京市", "天津市", "上海市", "重庆市", "河北省", "山西省", "辽宁省", "吉林省", "黑龙江省",
    "江苏省", "浙江省", "安徽省", "福建省", "江西省", "山东省", "河南省", "湖北省", "湖南省",
    "广东省", "海南省", "四川省", "贵州省", "云南省", "陕西省", "甘肃省", "青海省", "台湾省",
    "内蒙古自治区", "广西壮族自治区", "西藏自治区", "宁夏回族自治区", "新疆维吾尔自治区",
    "香港特别行政区", "澳门特别行政区",
)
# Short forms seen in sheets ("浙江 杭州市 …", "广西 …") → the full name.
_PROVINCE_SHORT = {p.replace("省", "").replace("市", "").replace("壮族自治区", "").replace(
    "回族自治区", "").replace("维吾尔自治区", "").replace("自治区", "").replace("特别行政区", ""): p
    for p in PROVINCES}
_ZIP = re.compile(r"[（(]\s*(\d{6})\s*[)）]\s*$")
_CITY = re.compile(r"^(.{1,12}?(?:自治州|地区|盟|市))")
_DISTRICT = re.compile(r"^(.{1,12}?(?:区|县|旗|市))")


def _province(s: str) -> tuple[Optional[str], str]:
    for p in PROVINCES:
        if s.startswith(p):
            return p, s[len(p):]
    for short, full in _PROVINCE_SHORT.items():
        if short and s.startswith(short):
            return full, s[len(short):]
    return None, s


def split_address(value: Any) -> Optional[dict]:
    """"广东省 深圳市 南山区 东莞街f座(761318)" or "四川省成都市武侯区邯郸街H座" →
    province / city / district / street address / zip."""
    s = text(value)
    if s is None:
        return None
    out = {"receiver_province": None, "receiver_city": None, "receiver_district": None,
           "receiver_address": None, "receiver_zip": None}
    m = _ZIP.search(s)
    if m:
        out["receiver_zip"] = m.group(1)
        s = s[:m.start()].strip()
    parts = s.split()
    if len(parts) >= 4:
        province, rest = _province(parts[0])
        out["receiver_province"] = province or parts[0]
        out["receiver_city"], out["receiver_district"] = parts[1], parts[2]
        out["receiver_address"] = " ".join(parts[3:])
        return out
    compact = s.replace(" ", "")
    province, rest = _province(compact)
    if province is None:
        out["receiver_address"] = s
        return out
    out["receiver_province"] = province
    if province in ("北京市", "天津市", "上海市", "重庆市") and not rest.startswith(province):
        # "上海市浦东新区…": the city is the municipality itself
        out["receiver_city"] = province
    else:
        m = _CITY.match(rest)
        if m:
            out["receiver_city"] = m.group(1)
            rest = rest[len(m.group(1)):]
    m = _DISTRICT.match(rest)
    if m and len(rest) > len(m.group(1)):
        out["receiver_district"] = m.group(1)
        rest = rest[len(m.group(1)):]
    out["receiver_address"] = rest or None
    return out


_PHONE_CHARS = re.compile(r"[\s\-()（）]")


def phone(value: Any) -> Optional[str]:
    """A phone number; a platform's masked phone (151****1234) is not a phone: None."""
    s = text(value)
    if s is None:
        return None
    if "*" in s:
        return None
    cleaned = _PHONE_CHARS.sub("", s)
    if len(cleaned) > 32:
        raise CellError(f"号码过长：{s[:20]}")
    return cleaned


def yes_no(value: Any) -> Optional[bool]:
    s = text(value)
    if s is None:
        return None
    if s.lower() in ("是", "y", "yes", "true", "1", "启用", "有效"):
        return True
    if s.lower() in ("否", "n", "no", "false", "0", "停用", "无效"):
        return False
    raise CellError(f"请填写 是 或 否：{s[:10]}")
