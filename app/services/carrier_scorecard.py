"""快递考核 (carrier scorecard) and the carrier recommendation per province (issue #6 item 7).

Per carrier × destination province (the order's 收货省份, short form: 浙江省 → 浙江),
over the parcels *shipped* in a period (default: the last ``OMS_SCORECARD_DAYS`` = 30
days), within the user's row scope (their shops) and an optional shop filter:

* **parcels**: parcels with that carrier shipped in the period (parcels without a
  carrier are not scored);
* **average and p90 hours from ship to sign** (``signed_at − shipped_at``) over the
  *signed* parcels only (state 签收 with a sign time). Unsigned parcels — still
  travelling, 退回, 退签, lost — are left out of both times (their duration is not
  known yet) but count in ``parcels`` and in the exception rate; ``signed`` says how
  many parcels the times rest on. p90 is the nearest-rank percentile: the
  ⌈0.9·n⌉-th shortest of the n signed durations;
* **exception rate**: parcels with at least one 物流异常 (any reason, open or
  resolved) / parcels;
* **cost per parcel**: per parcel its 快递账单 amount when an imported bill covers it,
  else the 运费价目 price for its weight (the order's Σ quantity × SKU weight): the
  flat price, or 首重 + each started kilogram beyond at 续重; a carrier's row for the
  province wins over its row without province. Parcels with neither are left out
  of the average (``cost_parcels`` says how many it rests on).

Everything is computed in SQL (one grouped query; p90 with window functions; costs
as counts per carrier × province × weight), the same on PostgreSQL and SQLite;
Python only merges a few rows per group, so memory does not grow with parcels.

**Recommendation** per province: among carriers with at least
``OMS_RECOMMEND_MIN_PARCELS`` parcels and a signed parcel there, an exception rate ≤
``OMS_RECOMMEND_MAX_EXCEPTION_RATE`` % and a cost per parcel ≤
``OMS_RECOMMEND_MAX_COST`` (or, when that is empty, ≤ the median cost per parcel of
those carriers in the province; with no known cost there, cost does not limit), the
fastest average wins (then p90, cost, name). Its evidence reads
``近30天 浙江: 中通 均时 31h, 异常 0.8%``.

The bill import (:func:`validate_bill`, :func:`apply_bill`) runs in the importer
(``imports/carrier_bill.toml``, services/imports/service.py): all or nothing, zh
errors per row and column.
"""
from __future__ import annotations

import datetime as dt
import statistics
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Iterable, Optional

from flask import current_app, has_app_context
from sqlalchemy import Integer, and_, case, cast, exists, func, select

from app.extensions import db
from app.models import Carrier, Order, OrderLine, Sku
from app.models.scorecard import CarrierBillLine, CarrierRate
from app.models.tracking import LogisticsException, Parcel
from app.models.types import utcnow

from .carrier_rules import short_province
from .errors import ValidationError
from .scope import UNRESTRICTED, current_scope

_CARRIER_SUFFIXES = ("快递包裹", "速运", "速递", "快递", "快运", "物流")
_THREE_CHAR = ("黑龙江", "内蒙古")
UNKNOWN_PROVINCE = "未知省份"


def province_key(name: Optional[str]) -> str:
    """The grouping key of a province: its first two characters (three for 黑龙江 and
    内蒙古), which is the short name of every province (浙江省 → 浙江)."""
    text = (name or "").strip()
    if text[:3] in _THREE_CHAR:
        return text[:3]
    return text[:2]


def _province_key_sql(col):
    s3 = func.substr(col, 1, 3)
    return case((s3.in_(_THREE_CHAR), s3), else_=func.substr(func.coalesce(col, ""), 1, 2))


def carrier_short(name: Optional[str]) -> str:
    """中通快递 → 中通, 顺丰速运 → 顺丰, 邮政快递包裹 → 邮政; EMS stays."""
    text = (name or "").strip()
    for suffix in _CARRIER_SUFFIXES:
        if text.endswith(suffix) and len(text) > len(suffix) + 1:
            return text[: -len(suffix)]
    return text


# --- period -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Period:
    start: dt.datetime  # inclusive, aware UTC
    end: dt.datetime  # exclusive

    @property
    def days(self) -> int:
        return max(1, round((self.end - self.start).total_seconds() / 86400))

    @property
    def label(self) -> str:
        return f"近{self.days}天"


def default_days() -> int:
    if has_app_context():
        try:
            return max(1, int(current_app.config.get("OMS_SCORECARD_DAYS") or 30))
        except (TypeError, ValueError):
            return 30
    return 30


def last_days(days: Optional[int] = None, now: Optional[dt.datetime] = None) -> Period:
    now = now or utcnow()
    return Period(now - dt.timedelta(days=days or default_days()), now)


def period_from_dates(date_from: Optional[str], date_to: Optional[str], now: Optional[dt.datetime] = None) -> Period:
    """The page's filter: Beijing calendar days, ``date_to`` inclusive; empty → the default period."""
    from .display import SHANGHAI

    if not (date_from or "").strip() and not (date_to or "").strip():
        return last_days(now=now)
    now = now or utcnow()

    def day(text: str, field_name: str, label: str) -> dt.date:
        try:
            return dt.date.fromisoformat(text.strip())
        except ValueError:
            raise ValidationError(f"「{label}」不是有效的日期：{text}（格式 2026-11-30）", field_name) from None

    end_day = day(date_to, "date_to", "结束日期") if (date_to or "").strip() else now.astimezone(SHANGHAI).date()
    start_day = day(date_from, "date_from", "开始日期") if (date_from or "").strip() \
        else end_day - dt.timedelta(days=default_days() - 1)
    if start_day > end_day:
        raise ValidationError(f"开始日期 {start_day} 晚于结束日期 {end_day}", "date_from")
    if (end_day - start_day).days > 366:
        raise ValidationError("统计期间最长 366 天", "date_from")
    start = dt.datetime.combine(start_day, dt.time(), SHANGHAI).astimezone(dt.timezone.utc)
    end = dt.datetime.combine(end_day + dt.timedelta(days=1), dt.time(), SHANGHAI).astimezone(dt.timezone.utc)
    return Period(start, end)


# --- the scorecard ------------------------------------------------------------------------
@dataclass
class ScoreRow:
    carrier_id: int
    carrier_name: str
    province: str  # short name ("" when the order has none)
    parcels: int = 0
    signed: int = 0
    avg_hours: Optional[float] = None
    p90_hours: Optional[float] = None
    exception_parcels: int = 0
    billed_parcels: int = 0
    cost_parcels: int = 0  # parcels with a known cost (bill or rate card)
    cost_total: Decimal = Decimal("0.00")

    @property
    def exception_rate(self) -> float:
        return self.exception_parcels / self.parcels if self.parcels else 0.0

    @property
    def cost_per_parcel(self) -> Optional[Decimal]:
        if not self.cost_parcels:
            return None
        return (self.cost_total / self.cost_parcels).quantize(Decimal("0.01"), ROUND_HALF_UP)

    @property
    def carrier_short(self) -> str:
        return carrier_short(self.carrier_name)

    @property
    def province_label(self) -> str:
        return self.province or UNKNOWN_PROVINCE


def _hours_sql(start, end):
    if db.engine.dialect.name == "postgresql":
        return func.extract("epoch", end - start) / 3600.0
    # julianday is a float of days: round to whole seconds so 31.5 h stays 31.5 h
    return func.round((func.julianday(end) - func.julianday(start)) * 86400.0) / 3600.0


def _scope_shops(shop_ids: Optional[Iterable[int]]) -> Optional[list[int]]:
    """The shops to count: the user's row scope, narrowed by the page's shop filter."""
    scope = current_scope()
    wanted = None if shop_ids is None else set(int(s) for s in shop_ids)
    if scope is UNRESTRICTED:
        return None if wanted is None else sorted(wanted)
    allowed = set(scope)
    return sorted(allowed if wanted is None else allowed & wanted)


def _base_filter(stmt, period: Period, shops: Optional[list[int]], provinces: Optional[set[str]], pkey):
    stmt = stmt.where(Parcel.shipped_at >= period.start, Parcel.shipped_at < period.end,
                      Parcel.carrier_id.is_not(None))
    if shops is not None:  # the row-scope hook adds the same for a user; explicit for subqueries
        stmt = stmt.where(Order.shop_id.in_(shops or [-1]))
    if provinces:
        stmt = stmt.where(pkey.in_(sorted(provinces)))
    return stmt


def scorecard(period: Optional[Period] = None, *, shop_ids: Optional[Iterable[int]] = None,
              provinces: Optional[Iterable[str]] = None) -> list[ScoreRow]:
    """One row per carrier × province with parcels in the period, sorted by province
    then average hours. Row scope applies (a user sees their shops' parcels only)."""
    period = period or last_days()
    shops = _scope_shops(shop_ids)
    wanted = {province_key(p) for p in provinces} if provinces else None
    pkey = _province_key_sql(Order.receiver_province).label("province")
    hours = _hours_sql(Parcel.shipped_at, Parcel.signed_at)
    is_signed = and_(Parcel.state == "signed", Parcel.signed_at.is_not(None))
    has_exception = exists().where(LogisticsException.parcel_id == Parcel.id)

    # 1. counts, sums of hours, exceptions and billed amounts: one grouped query.
    main = select(
        Parcel.carrier_id, pkey,
        func.count(Parcel.id),
        func.sum(case((is_signed, 1), else_=0)),
        func.sum(case((is_signed, hours), else_=None)),
        func.sum(case((has_exception, 1), else_=0)),
        func.count(CarrierBillLine.id),
        func.sum(CarrierBillLine.amount),
    ).select_from(Parcel).join(Order, Order.id == Parcel.order_id) \
        .outerjoin(CarrierBillLine, CarrierBillLine.parcel_id == Parcel.id)
    main = _base_filter(main, period, shops, wanted, pkey).group_by(Parcel.carrier_id, pkey)
    rows: dict[tuple[int, str], ScoreRow] = {}
    names = dict(db.session.execute(select(Carrier.id, Carrier.name)).all())
    for carrier_id, prov, n, n_signed, sum_hours, n_exc, n_billed, billed in db.session.execute(main):
        row = rows[(carrier_id, prov or "")] = ScoreRow(carrier_id, names.get(carrier_id, ""), prov or "")
        row.parcels = int(n)
        row.signed = int(n_signed or 0)
        row.avg_hours = float(sum_hours) / row.signed if row.signed else None
        row.exception_parcels = int(n_exc or 0)
        row.billed_parcels = int(n_billed or 0)
        row.cost_parcels = row.billed_parcels
        row.cost_total = Decimal(billed or 0)
    if not rows:
        return []

    # 2. p90: the ⌈0.9·n⌉-th shortest signed duration per group (window functions).
    inner = select(
        Parcel.carrier_id.label("carrier_id"), pkey, hours.label("hours"),
        func.row_number().over(partition_by=(Parcel.carrier_id, pkey), order_by=hours).label("rn"),
        func.count(Parcel.id).over(partition_by=(Parcel.carrier_id, pkey)).label("n"),
    ).select_from(Parcel).join(Order, Order.id == Parcel.order_id).where(is_signed)
    inner = _base_filter(inner, period, shops, wanted, pkey).subquery()
    p90 = select(inner.c.carrier_id, inner.c.province, inner.c.hours) \
        .where(inner.c.rn == (inner.c.n * 9 + 9) // 10)  # ⌈0.9·n⌉ in integers
    for carrier_id, prov, value in db.session.execute(p90):
        row = rows.get((carrier_id, prov or ""))
        if row is not None:
            row.p90_hours = float(value)

    # 3. rate-card cost of the parcels no bill covers: counts per weight (in grams).
    line_weight = select(func.coalesce(func.sum(OrderLine.quantity * func.coalesce(Sku.weight_kg, 0)), 0)) \
        .select_from(OrderLine).outerjoin(Sku, Sku.id == OrderLine.sku_id) \
        .where(OrderLine.order_id == Parcel.order_id).correlate(Parcel).scalar_subquery()
    grams = cast(func.round(line_weight * 1000), Integer).label("grams")
    unbilled = select(Parcel.carrier_id, pkey, grams, func.count(Parcel.id)) \
        .select_from(Parcel).join(Order, Order.id == Parcel.order_id) \
        .where(~exists().where(CarrierBillLine.parcel_id == Parcel.id))
    unbilled = _base_filter(unbilled, period, shops, wanted, pkey).group_by(Parcel.carrier_id, pkey, grams)
    rates = RateBook.load()
    for carrier_id, prov, g, n in db.session.execute(unbilled):
        row = rows.get((carrier_id, prov or ""))
        if row is None:
            continue
        price = rates.price(carrier_id, prov or "", int(g or 0))
        if price is not None:
            row.cost_parcels += int(n)
            row.cost_total += price * int(n)

    return sorted(rows.values(), key=lambda r: (r.province == "", r.province,
                                                r.avg_hours if r.avg_hours is not None else 1e12,
                                                r.carrier_name))


# --- rate card ------------------------------------------------------------------------------
def rate_price(rate: CarrierRate, grams: int) -> Decimal:
    """One parcel's price under a rate: flat, or 首重 + each started kg beyond at 续重."""
    if rate.flat_price is not None:
        return Decimal(rate.flat_price)
    first_grams = int((Decimal(rate.first_weight_kg or 0) * 1000).to_integral_value(ROUND_HALF_UP))
    extra = max(0, grams - first_grams)
    extra_kg = -(-extra // 1000)  # started kilograms
    return Decimal(rate.first_price or 0) + Decimal(rate.additional_price or 0) * extra_kg


class RateBook:
    """The rate card in memory (a few rows per carrier)."""

    def __init__(self, rates: list[CarrierRate]):
        self.by_key = {(r.carrier_id, r.province or ""): r for r in rates}

    @classmethod
    def load(cls) -> "RateBook":
        return cls(list(db.session.scalars(select(CarrierRate))))

    def rate(self, carrier_id: int, province: str) -> Optional[CarrierRate]:
        return self.by_key.get((carrier_id, province_key(province))) or self.by_key.get((carrier_id, ""))

    def price(self, carrier_id: int, province: str, grams: int) -> Optional[Decimal]:
        rate = self.rate(carrier_id, province)
        return None if rate is None else rate_price(rate, grams)


def validate_rate(rate: CarrierRate) -> None:
    """A rate from the admin form: short province, a price, no negatives (zh errors name the field)."""
    if rate.carrier is None and rate.carrier_id is None:
        raise ValidationError("请选择快递公司", "carrier")
    raw = (rate.province or "").strip()
    if raw in ("*", "全部", "其他", "其他省份"):
        raw = ""
    if raw:
        from .grid_ui import PROVINCES

        key = province_key(short_province(raw))
        if key not in {province_key(p) for p in PROVINCES}:
            raise ValidationError(f"「目的省份」无法识别：{raw}（例如 浙江、新疆；留空表示其他省份）", "province")
        raw = key
    rate.province = raw
    if rate.first_weight_kg is None:
        rate.first_weight_kg = Decimal("1")
    if rate.additional_price is None:
        rate.additional_price = Decimal("0")
    for name, zh in (("first_weight_kg", "首重（kg）"), ("first_price", "首重价格"), ("additional_price", "续重单价（每 kg）"),
                     ("flat_price", "一口价")):
        value = getattr(rate, name)
        if value is not None and Decimal(value) < 0:
            raise ValidationError(f"「{zh}」不能为负数：{value}", name)
    if rate.flat_price is None and rate.first_price is None:
        raise ValidationError("请填写「一口价」，或「首重价格」（和续重单价）", "first_price")
    carrier_id = rate.carrier.id if rate.carrier is not None else rate.carrier_id
    clash = select(CarrierRate.id).where(CarrierRate.carrier_id == carrier_id, CarrierRate.province == raw)
    if rate.id is not None:
        clash = clash.where(CarrierRate.id != rate.id)
    with db.session.no_autoflush:
        if db.session.scalar(clash) is not None:
            where = f"到「{raw}」" if raw else "（其他省份）"
            raise ValidationError(f"该快递公司{where}已有运费价目，请修改那一条", "province")


# --- recommendation ------------------------------------------------------------------------
@dataclass(frozen=True)
class Rules:
    min_parcels: int = 20
    max_exception_rate: float = 3.0  # percent
    max_cost: Optional[Decimal] = None  # None: the province's median

    @classmethod
    def from_config(cls) -> "Rules":
        cfg = current_app.config if has_app_context() else {}
        cost = str(cfg.get("OMS_RECOMMEND_MAX_COST") or "").strip()
        return cls(min_parcels=int(cfg.get("OMS_RECOMMEND_MIN_PARCELS") or 20),
                   max_exception_rate=float(cfg.get("OMS_RECOMMEND_MAX_EXCEPTION_RATE") or 3.0),
                   max_cost=Decimal(cost) if cost else None)

    def describe(self) -> str:
        cost = f"每件费用 ≤ {self.max_cost} 元" if self.max_cost is not None else "每件费用 ≤ 该省各快递的中位数"
        return (f"包裹数 ≥ {self.min_parcels}、异常率 ≤ {self.max_exception_rate:g}%、{cost}的快递中，"
                "平均签收时长最短者")


@dataclass
class Recommendation:
    province: str
    carrier_id: int
    carrier_name: str
    row: ScoreRow
    evidence: str
    cost_limit: Optional[Decimal] = None
    considered: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"province": self.province, "carrier_id": self.carrier_id, "carrier": self.carrier_name,
                "evidence": self.evidence}


def _round_half_up(value: float, places: int = 0) -> Decimal:
    q = Decimal(1).scaleb(-places)
    return Decimal(repr(value)).quantize(q, ROUND_HALF_UP)


def evidence(row: ScoreRow, period: Period) -> str:
    """近30天 浙江: 中通 均时 31h, 异常 0.8%"""
    avg = _round_half_up(row.avg_hours or 0.0)
    rate = _round_half_up(row.exception_rate * 100, 1)
    return f"{period.label} {row.province_label}: {row.carrier_short} 均时 {avg}h, 异常 {rate}%"


def recommend(rows: list[ScoreRow], period: Period, rules: Optional[Rules] = None) -> dict[str, Recommendation]:
    """The recommended carrier per province (provinces without an eligible carrier are absent)."""
    rules = rules or Rules.from_config()
    by_province: dict[str, list[ScoreRow]] = defaultdict(list)
    for r in rows:
        if r.province:
            by_province[r.province].append(r)
    out = {}
    for province, group in by_province.items():
        evident = [r for r in group if r.parcels >= rules.min_parcels and r.signed > 0]
        if not evident:
            continue
        limit = rules.max_cost
        if limit is None:
            costs = [r.cost_per_parcel for r in evident if r.cost_per_parcel is not None]
            limit = Decimal(statistics.median(costs)).quantize(Decimal("0.01"), ROUND_HALF_UP) if costs else None
        eligible = []
        for r in evident:
            if r.exception_rate * 100 > rules.max_exception_rate + 1e-9:
                continue
            if limit is not None and (r.cost_per_parcel is None or r.cost_per_parcel > limit):
                continue
            eligible.append(r)
        if not eligible:
            continue
        best = min(eligible, key=lambda r: (r.avg_hours, r.p90_hours if r.p90_hours is not None else 1e12,
                                            r.cost_per_parcel if r.cost_per_parcel is not None else Decimal("1e9"),
                                            r.carrier_name))
        out[province] = Recommendation(province, best.carrier_id, best.carrier_name, best, evidence(best, period),
                                       limit, evident)
    return out


# The recommendations shown where a carrier is chosen (order page, grid, rule form):
# the default period, per row scope, reused for a few minutes per process.
_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()
CACHE_SECONDS = 300


def current_recommendations(*, fresh: bool = False) -> dict[str, Recommendation]:
    scope = current_scope()
    key = ("all" if scope is UNRESTRICTED else tuple(sorted(scope)), db.engine.url.render_as_string())
    ttl = 0 if (fresh or (has_app_context() and current_app.testing)) else CACHE_SECONDS
    now = time.monotonic()
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
    period = last_days()
    recs = recommend(scorecard(period), period)
    with _CACHE_LOCK:
        if len(_CACHE) > 500:
            _CACHE.clear()
        _CACHE[key] = (now, recs)
    return recs


def recommendation_for(province: Optional[str]) -> Optional[Recommendation]:
    if not (province or "").strip():
        return None
    return current_recommendations().get(province_key(province))


def recommendation_for_order(order_id: int) -> Optional[dict]:
    """For the order page: the recommendation for the order's province (row scope applies),
    and whether the order's carrier is the recommended one."""
    order = db.session.execute(select(Order).where(Order.id == order_id)).scalar_one_or_none()
    if order is None:
        return None
    rec = recommendation_for(order.receiver_province)
    if rec is None:
        return None
    return rec.to_dict() | {"is_current": order.carrier_id == rec.carrier_id}


def grid_hints() -> dict[str, dict]:
    """{province key: {carrier_id, carrier, evidence}} for the grid's carrier editor."""
    return {p: r.to_dict() for p, r in current_recommendations().items()}


# --- export -------------------------------------------------------------------------------
COLUMNS = [("carrier", "快递公司"), ("province", "目的省份"), ("parcels", "包裹数"), ("signed", "已签收"),
           ("avg_hours", "平均时长（小时）"), ("p90_hours", "P90 时长（小时）"), ("exception_rate", "异常率"),
           ("cost_per_parcel", "每件费用（元）"), ("cost_parcels", "有费用的包裹"), ("recommended", "推荐")]
FINANCE_KEYS = {"cost_per_parcel", "cost_parcels"}


def export_xlsx(rows: list[ScoreRow], recs: dict[str, Recommendation], period: Period, *,
                show_cost: bool) -> bytes:
    """The scorecard as an xlsx (numbers as numbers; text neutralised against formulas)."""
    import io

    import xlsxwriter

    from .exports import neutralise

    buf = io.BytesIO()
    wb = xlsxwriter.Workbook(buf, {"in_memory": True})
    ws = wb.add_worksheet("快递考核")
    bold = wb.add_format({"bold": True})
    pct = wb.add_format({"num_format": "0.0%"})
    one = wb.add_format({"num_format": "0.0"})
    money = wb.add_format({"num_format": "0.00"})
    cols = [c for c in COLUMNS if show_cost or c[0] not in FINANCE_KEYS]
    from .display import SHANGHAI

    ws.write(0, 0, f"快递考核 {period.start.astimezone(SHANGHAI):%Y-%m-%d %H:%M} ~ "
                   f"{period.end.astimezone(SHANGHAI):%Y-%m-%d %H:%M}（发货时间）", bold)
    for c, (_, zh) in enumerate(cols):
        ws.write(1, c, zh, bold)
    for i, r in enumerate(rows, start=2):
        rec = recs.get(r.province)
        values = {"carrier": r.carrier_name, "province": r.province_label, "parcels": r.parcels,
                  "signed": r.signed, "avg_hours": r.avg_hours, "p90_hours": r.p90_hours,
                  "exception_rate": r.exception_rate,
                  "cost_per_parcel": float(r.cost_per_parcel) if r.cost_per_parcel is not None else None,
                  "cost_parcels": r.cost_parcels,
                  "recommended": rec.evidence if rec is not None and rec.carrier_id == r.carrier_id else ""}
        for c, (key, _) in enumerate(cols):
            v = values[key]
            if v is None:
                ws.write_blank(i, c, None)
            elif isinstance(v, str):
                ws.write_string(i, c, neutralise(v))
            elif key == "exception_rate":
                ws.write_number(i, c, v, pct)
            elif key in ("avg_hours", "p90_hours"):
                ws.write_number(i, c, v, one)
            elif key == "cost_per_parcel":
                ws.write_number(i, c, v, money)
            else:
                ws.write_number(i, c, v)
    ws.set_column(0, 1, 14)
    ws.set_column(2, len(cols) - 1, 14)
    if "recommended" in dict(cols):
        ws.set_column(len(cols) - 1, len(cols) - 1, 40)
    wb.close()
    return buf.getvalue()


# --- 快递账单 import (the importer's carrier_bill entity) --------------------------------------------
_IN_CHUNK = 500


def validate_bill(ps) -> dict:
    """Resolve each bill row's parcel by tracking number (within the user's row scope) and
    check its carrier: {row index: (parcel_id, order_id, carrier_id)}. Problems become zh
    issues naming the row and column."""
    from .imports.order_import import resolve_carriers

    for row in ps.rows:
        for name, zh in (("tracking_number", "快递单号"), ("amount", "金额")):
            if row.values.get(name) is None and not row.bad:
                ps.issue(row.index, name, f"{zh}不能为空")
                row.bad = True
    numbers = sorted({r.values.get("tracking_number") for r in ps.rows} - {None})
    found: dict[str, list[tuple[int, int, Optional[int]]]] = defaultdict(list)
    for i in range(0, len(numbers), _IN_CHUNK):
        chunk = numbers[i:i + _IN_CHUNK]
        for pid, oid, cid, number in db.session.execute(
                select(Parcel.id, Parcel.order_id, Parcel.carrier_id, Parcel.tracking_number)
                .join(Order, Order.id == Parcel.order_id).where(Parcel.tracking_number.in_(chunk))):
            found[number].append((pid, oid, cid))
    carriers = resolve_carriers({r.values.get("carrier_name") for r in ps.rows} - {None})
    names = dict(db.session.execute(select(Carrier.id, Carrier.name)).all())
    seen: dict = {}
    out = {}
    for row in ps.rows:
        if row.bad:
            continue
        v = row.values
        number = v["tracking_number"]
        if number in seen:
            ps.issue(row.index, "tracking_number", f"快递单号 {number} 与第 {seen[number] + 1} 行重复")
            row.bad = True
            continue
        seen[number] = row.index
        hits = found.get(number, [])
        carrier_id = None
        if v.get("carrier_name") is not None:
            carrier_id = carriers.get(v["carrier_name"])
            if carrier_id is None:
                ps.issue(row.index, "carrier_name", f"快递公司不存在：{v['carrier_name']}")
                row.bad = True
                continue
            same = [h for h in hits if h[2] == carrier_id]
            if hits and not same:
                other = "、".join(sorted({names.get(h[2], "未指定") for h in hits}))
                ps.issue(row.index, "carrier_name", f"快递单号 {number} 的包裹属于{other}，不是{names.get(carrier_id)}")
                row.bad = True
                continue
            hits = same
        if not hits:
            ps.issue(row.index, "tracking_number", f"快递单号不存在或无权访问：{number}（账单只能对应已发货的包裹）")
            row.bad = True
            continue
        if len(hits) > 1:
            ps.issue(row.index, "tracking_number", f"快递单号 {number} 对应 {len(hits)} 个包裹（多个订单共用一个单号），"
                     "无法确定费用归属")
            row.bad = True
            continue
        w = v.get("weight_kg")
        if w is not None and (w < 0 or w > Decimal("9999999")):
            ps.issue(row.index, "weight_kg", f"重量无效：{w}")
            row.bad = True
            continue
        pid, oid, cid = hits[0]
        out[row.index] = (pid, oid, carrier_id or cid)
    return out


def apply_bill(resolved: dict, rows: list, *, user_id: Optional[int], source: str):
    """Write the bill lines (one per parcel; a later bill replaces the parcel's line).
    The caller (the importer) commits or rolls back."""
    from .imports.order_import import Counts

    counts = Counts()
    parcel_ids = [resolved[r.index][0] for r in rows]
    existing = {}
    for i in range(0, len(parcel_ids), _IN_CHUNK):
        for line in db.session.scalars(select(CarrierBillLine)
                                       .where(CarrierBillLine.parcel_id.in_(parcel_ids[i:i + _IN_CHUNK]))):
            existing[line.parcel_id] = line
    now = utcnow()
    for row in rows:
        pid, oid, cid = resolved[row.index]
        v = row.values
        weight = v.get("weight_kg")
        weight = weight.quantize(Decimal("0.001")) if weight is not None else None
        amount = v["amount"]
        line = existing.get(pid)
        if line is None:
            db.session.add(CarrierBillLine(parcel_id=pid, order_id=oid, carrier_id=cid,
                                           tracking_number=v["tracking_number"], weight_kg=weight, amount=amount,
                                           source=source[:200], imported_at=now, imported_by_id=user_id))
            counts.created += 1
        elif (line.amount, line.weight_kg, line.carrier_id) == (amount, weight, cid):
            counts.unchanged += 1
        else:
            line.amount, line.weight_kg, line.carrier_id = amount, weight, cid
            line.source, line.imported_at, line.imported_by_id = source[:200], now, user_id
            counts.updated += 1
    db.session.flush()
    return counts


def import_bill(path, label: str, *, user_id: Optional[int]) -> dict:
    """The 快递账单 page: one file through the importer, all or nothing."""
    from .imports import run_import

    result = run_import([(path, label)], profile_names=["carrier_bill"], user_id=user_id)
    return result.to_dict()


__all__ = ["Period", "ScoreRow", "Recommendation", "Rules", "scorecard", "recommend", "evidence",
           "current_recommendations", "recommendation_for", "recommendation_for_order", "grid_hints",
           "last_days", "period_from_dates", "province_key", "carrier_short", "rate_price", "RateBook",
           "validate_rate", "validate_bill", "apply_bill", "import_bill", "export_xlsx"]

