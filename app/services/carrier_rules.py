"""快递规则: choose an order's carrier by destination province, weight, amount, shop or SKU.

Rules are tried in priority order (smaller first, then by id); the first active
rule whose conditions all hold chooses the carrier. A condition left empty holds
for every order. The default rule (at most one active) is tried after all others
whatever its priority, so "新疆/西藏 → EMS, everything else → 中通" is two rules.

Conditions:

* ``provinces``: destination provinces, separated by 、 , ， ; or spaces; a short
  name matches the full one (新疆 = 新疆维吾尔自治区, 浙江 = 浙江省);
* weight ``min_weight_kg`` ≤ w < ``max_weight_kg``: w is the sum over the lines of
  quantity × the SKU's 重量 (a bundle without its own weight weighs its components);
  a line without a SKU counts 0;
* amount ``min_amount`` ≤ 实付金额 < ``max_amount``;
* ``shop_id``: the order's shop;
* ``merchant_codes``: the order has a line with one of these 商家编码.

When: on 审单 (services/order_status.py calls :func:`on_audit`) for an order whose
carrier was not chosen by hand, and on demand (batch action 按规则选快递), which
re-chooses for any order not shipped and without a tracking number. The choice
is written through ``orders.update_fields`` (one 快递公司 event) and the rule is
stored on the order (``Order.carrier_rule_id``) and named in the event's note.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Optional, Sequence

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from app.extensions import db
from app.models import BundleComponent, Carrier, CarrierRule, Order, OrderEvent, Shop, Sku

from .errors import IllegalTransition, NotFound, ValidationError

_SPLIT = re.compile(r"[、,，;；\s/]+")
# Suffixes a province name may carry; the first two characters are enough for every
# province except 黑龙江 and 内蒙古 (three), which the prefix match handles as well.
_SUFFIXES = ("维吾尔自治区", "壮族自治区", "回族自治区", "特别行政区", "自治区", "省", "市")
FIELDS_ZH = {
    "name": "规则名称", "priority": "优先级", "carrier": "快递公司编码", "is_default": "默认规则",
    "provinces": "目的省份", "min_weight_kg": "重量起（kg）", "max_weight_kg": "重量止（kg）",
    "min_amount": "金额起", "max_amount": "金额止", "shop": "店铺", "merchant_codes": "商家编码",
    "active": "启用", "note": "备注",
}
CHANGEABLE = frozenset({"pending_payment", "to_audit", "to_ship"})


def short_province(name: Optional[str]) -> str:
    text = (name or "").strip()
    for suffix in _SUFFIXES:
        if text.endswith(suffix) and len(text) > len(suffix) + 1:
            return text[: -len(suffix)]
    return text


def split_list(text: Optional[str]) -> list[str]:
    return [p for p in _SPLIT.split(text or "") if p]


def province_matches(rule_provinces: Sequence[str], province: Optional[str]) -> bool:
    target = short_province(province)
    if not target:
        return False
    for p in rule_provinces:
        short = short_province(p)
        if short and (target.startswith(short) or short.startswith(target)):
            return True
    return False


# --- weight --------------------------------------------------------------------------
def order_weight(order: Order) -> Decimal:
    """Σ quantity × SKU weight (kg); a bundle without a weight of its own weighs its parts."""
    total = Decimal("0")
    bundle_ids = [ln.sku.id for ln in order.lines if ln.sku is not None and ln.sku.is_bundle
                  and not (ln.sku.weight_kg or 0)]
    parts: dict[int, Decimal] = {}
    if bundle_ids:
        rows = db.session.execute(
            select(BundleComponent.bundle_sku_id, BundleComponent.quantity, Sku.weight_kg)
            .join(Sku, Sku.id == BundleComponent.component_sku_id)
            .where(BundleComponent.bundle_sku_id.in_(bundle_ids))).all()
        for bundle_id, qty, weight in rows:
            parts[bundle_id] = parts.get(bundle_id, Decimal("0")) + Decimal(qty) * Decimal(weight or 0)
    for ln in order.lines:
        sku = ln.sku
        if sku is None:
            continue
        each = Decimal(sku.weight_kg or 0) or parts.get(sku.id, Decimal("0"))
        total += each * ln.quantity
    return total


# --- matching ------------------------------------------------------------------------
@dataclass(frozen=True)
class Choice:
    rule: CarrierRule
    carrier: Carrier
    reason: str  # zh: why this rule matched


_RULES_KEY = "oms_active_carrier_rules"


def active_rules() -> list[CarrierRule]:
    """The active rules in matching order, read once per transaction (批量审单 asks per
    order); a change of any rule in this session forgets them."""
    cached = db.session.info.get(_RULES_KEY)
    if cached is not None:
        return cached
    rules = db.session.scalars(select(CarrierRule).where(CarrierRule.active.is_(True))
                               .order_by(CarrierRule.priority, CarrierRule.id)).all()
    # The default rule comes last whatever its priority.
    out = [r for r in rules if not r.is_default] + [r for r in rules if r.is_default]
    db.session.info[_RULES_KEY] = out
    return out


@event.listens_for(Session, "after_transaction_end")
def _forget_rules(session, transaction) -> None:
    if transaction.parent is None:
        session.info.pop(_RULES_KEY, None)


@event.listens_for(Session, "after_flush")
def _rules_changed(session, _flush_context) -> None:
    if any(isinstance(o, CarrierRule) for coll in (session.new, session.dirty, session.deleted) for o in coll):
        session.info.pop(_RULES_KEY, None)


def matches(rule: CarrierRule, order: Order, weight: Optional[Decimal] = None) -> Optional[str]:
    """None when the rule does not apply; else a short zh reason (for the event note)."""
    reasons = []
    provinces = split_list(rule.provinces)
    if provinces:
        if not province_matches(provinces, order.receiver_province):
            return None
        reasons.append(f"目的地 {short_province(order.receiver_province)}")
    if rule.min_weight_kg is not None or rule.max_weight_kg is not None:
        w = order_weight(order) if weight is None else weight
        if rule.min_weight_kg is not None and w < Decimal(rule.min_weight_kg):
            return None
        if rule.max_weight_kg is not None and w >= Decimal(rule.max_weight_kg):
            return None
        reasons.append(f"重量 {w.normalize():f} kg")
    amount = Decimal(order.paid_amount or 0)
    if rule.min_amount is not None and amount < rule.min_amount:
        return None
    if rule.max_amount is not None and amount >= rule.max_amount:
        return None
    if rule.min_amount is not None or rule.max_amount is not None:
        reasons.append(f"金额 {amount:.2f}")
    if rule.shop_id is not None:
        if order.shop_id != rule.shop_id:
            return None
        reasons.append("店铺")
    codes = set(split_list(rule.merchant_codes))
    if codes:
        hit = sorted({ln.merchant_code for ln in order.lines if ln.merchant_code in codes})
        if not hit:
            return None
        reasons.append("商家编码 " + "、".join(hit))
    if rule.is_default and not reasons:
        reasons.append("默认")
    return "，".join(reasons) or "无条件"


def choose(order: Order, rules: Optional[list[CarrierRule]] = None) -> Optional[Choice]:
    """The first matching rule (the default last), or None when no rule matches."""
    weight = None
    for rule in (active_rules() if rules is None else rules):
        if (rule.min_weight_kg is not None or rule.max_weight_kg is not None) and weight is None:
            weight = order_weight(order)
        reason = matches(rule, order, weight)
        if reason is not None and rule.carrier is not None and rule.carrier.active:
            return Choice(rule, rule.carrier, reason)
    return None


RULE_NOTE = "快递规则「"


@event.listens_for(Session, "before_flush")
def _forget_rule_on_manual_change(session, flush_context, instances) -> None:
    """A carrier changed by anything but a rule (a person, an import, a batch) is no longer
    the rule's choice: the order forgets the rule (and 审单 will not override it)."""
    for ev in list(session.new):
        if (isinstance(ev, OrderEvent) and ev.action == "edit" and ev.field == "carrier_id"
                and RULE_NOTE not in (ev.note or "") and ev.order is not None):
            ev.order.carrier_rule_id = None


def apply_choice(order: Order, choice: Choice, *, source: str, user_id: Optional[int],
                 note_prefix: str = "") -> bool:
    """Set the carrier (through update_fields) and remember the rule; True if anything changed."""
    from . import orders as order_service

    changed = order_service.update_fields(order, {"carrier_id": choice.carrier.id}, source=source,
                                          user_id=user_id)
    rule_changed = order.carrier_rule_id != choice.rule.id
    order.carrier_rule_id = choice.rule.id
    note = f"{note_prefix}{RULE_NOTE}{choice.rule.name}」（{choice.reason}）"
    for obj in db.session.new:
        if isinstance(obj, OrderEvent) and obj.order is order and obj.field == "carrier_id" and not obj.note:
            obj.note = note
    return bool(changed) or rule_changed


def on_audit(order: Order, *, source: str, user_id: Optional[int]) -> None:
    """审单 hook: choose by rule unless a person chose the carrier (carrier set, no rule)
    or a tracking number is already there. No matching rule: the carrier stays."""
    if (order.tracking_number or "").strip():
        return
    if order.carrier_id is not None and order.carrier_rule_id is None:
        return
    choice = choose(order)
    if choice is not None:
        apply_choice(order, choice, source="rule" if source == "user" else source, user_id=user_id,
                     note_prefix="审单时按")


def rechoose(order: Order, *, source: str, user_id: Optional[int]) -> bool:
    """批量 按规则选快递 for one order: True when changed; raises when it cannot."""
    pid = order.platform_order_id
    if order.status not in CHANGEABLE:
        from .order_status import STATUS_ZH

        raise IllegalTransition(f"订单 {pid} 当前为「{STATUS_ZH.get(order.status, order.status)}」，不能按规则选快递")
    if (order.tracking_number or "").strip():
        raise IllegalTransition(f"订单 {pid} 已有快递单号 {order.tracking_number}，请先回收单号再改快递公司")
    choice = choose(order)
    if choice is None:
        raise ValidationError(f"订单 {pid} 没有匹配的快递规则（也没有启用的默认规则）", "carrier_rule")
    return apply_choice(order, choice, source=source, user_id=user_id, note_prefix="按")


# --- saving rules (admin UI, import) ----------------------------------------------------
def carrier_by_code(code, where: str = "") -> Carrier:
    text = str(code or "").strip()
    if not text:
        raise ValidationError(f"{where}「快递公司编码」不能为空", "carrier")
    carrier = db.session.scalar(select(Carrier).where(Carrier.code == text.upper()))
    if carrier is None:
        known = "、".join(db.session.scalars(select(Carrier.code).order_by(Carrier.code)))
        raise ValidationError(f"{where}「快递公司编码」未知：{text}（可用：{known}）", "carrier")
    if not carrier.active:
        raise ValidationError(f"{where}快递公司「{carrier.name}」已停用", "carrier")
    return carrier


def _decimal(value, field: str, where: str, places: str) -> Optional[Decimal]:
    if value is None or str(value).strip() == "":
        return None
    try:
        d = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValidationError(f"{where}「{FIELDS_ZH[field]}」不是有效的数字：{value}", field) from None
    if not d.is_finite() or d < 0:
        raise ValidationError(f"{where}「{FIELDS_ZH[field]}」不能为负数：{value}", field)
    return d.quantize(Decimal(places))


def _bool(value, default: bool) -> bool:
    if value is None or str(value).strip() == "":
        return default
    return str(value).strip().lower() in ("1", "true", "yes", "y", "是", "启用", "默认", "on")


def validate_rule(rule: CarrierRule, where: str = "") -> None:
    """Check a rule built by a form or an import; normalise its lists. zh errors name the field."""
    rule.name = (rule.name or "").strip()
    if not rule.name:
        raise ValidationError(f"{where}「规则名称」不能为空", "name")
    if len(rule.name) > 100:
        raise ValidationError(f"{where}「规则名称」过长，最多 100 个字符", "name")
    if rule.carrier is None and rule.carrier_id is None:
        raise ValidationError(f"{where}请选择快递公司", "carrier")
    carrier = rule.carrier or db.session.get(Carrier, rule.carrier_id)
    if carrier is not None and not carrier.active and rule.active:
        raise ValidationError(f"{where}快递公司「{carrier.name}」已停用", "carrier")
    if rule.priority is None:
        rule.priority = 100
    for lo, hi in (("min_weight_kg", "max_weight_kg"), ("min_amount", "max_amount")):
        a, b = getattr(rule, lo), getattr(rule, hi)
        for f, v in ((lo, a), (hi, b)):
            if v is not None and Decimal(v) < 0:
                raise ValidationError(f"{where}「{FIELDS_ZH[f]}」不能为负数：{v}", f)
        if a is not None and b is not None and Decimal(a) >= Decimal(b):
            raise ValidationError(f"{where}「{FIELDS_ZH[lo]}」（{a}）必须小于「{FIELDS_ZH[hi]}」（{b}）", lo)
    provinces = split_list(rule.provinces)
    rule.provinces = "、".join(provinces) or None
    codes = split_list(rule.merchant_codes)
    rule.merchant_codes = "、".join(codes) or None
    if rule.is_default:
        if provinces or codes or rule.shop_id is not None or rule.shop is not None or any(
                getattr(rule, f) is not None for f in ("min_weight_kg", "max_weight_kg", "min_amount", "max_amount")):
            raise ValidationError(f"{where}默认规则不能带条件（它匹配所有其他规则都不匹配的订单）", "is_default")
        if rule.active:
            others = select(CarrierRule.name).where(CarrierRule.is_default.is_(True), CarrierRule.active.is_(True))
            if rule.id is not None:
                others = others.where(CarrierRule.id != rule.id)
            clash = db.session.scalar(others)
            if clash:
                raise ValidationError(f"{where}已有启用的默认规则「{clash}」，只能有一条", "is_default")


IMPORT_COLUMNS = ["规则名称", "优先级", "快递公司编码", "目的省份", "重量起（kg）", "重量止（kg）", "金额起", "金额止",
                  "店铺", "商家编码", "默认规则", "启用", "备注"]


def import_rules(text: str) -> dict:
    """Rules from CSV text with the header IMPORT_COLUMNS (a rule with an existing name
    is replaced). All rows are checked first: one bad row and nothing is saved; the zh
    error names the row and the column."""
    reader = csv.DictReader(io.StringIO((text or "").lstrip("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in ("规则名称", "快递公司编码") if c not in header]
    if missing:
        raise ValidationError("表头缺少列：" + "、".join(missing) + f"（应为：{','.join(IMPORT_COLUMNS)}）", "file")
    shops = {s.name: s for s in db.session.scalars(select(Shop))}
    built: list[CarrierRule] = []
    seen: set[str] = set()
    try:
        for n, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k}
            if not any(row.values()):
                continue
            where = f"第 {n} 行"
            name = row.get("规则名称", "")
            if name in seen:
                raise ValidationError(f"{where}「规则名称」重复：{name}", "name")
            seen.add(name)
            carrier = carrier_by_code(row.get("快递公司编码"), where)
            shop = None
            if row.get("店铺"):
                shop = shops.get(row["店铺"])
                if shop is None:
                    raise ValidationError(f"{where}「店铺」不存在：{row['店铺']}", "shop")
            try:
                priority = int(row.get("优先级") or 100)
            except ValueError:
                raise ValidationError(f"{where}「优先级」必须是整数：{row.get('优先级')}", "priority") from None
            rule = db.session.scalar(select(CarrierRule).where(CarrierRule.name == name)) or CarrierRule(name=name)
            with db.session.no_autoflush:
                rule.priority = priority
                rule.carrier = carrier
                rule.provinces = row.get("目的省份") or None
                rule.min_weight_kg = _decimal(row.get("重量起（kg）"), "min_weight_kg", where, "0.001")
                rule.max_weight_kg = _decimal(row.get("重量止（kg）"), "max_weight_kg", where, "0.001")
                rule.min_amount = _decimal(row.get("金额起"), "min_amount", where, "0.01")
                rule.max_amount = _decimal(row.get("金额止"), "max_amount", where, "0.01")
                rule.shop = shop
                rule.shop_id = shop.id if shop else None
                rule.merchant_codes = row.get("商家编码") or None
                rule.is_default = _bool(row.get("默认规则"), False)
                rule.active = _bool(row.get("启用"), True)
                rule.note = (row.get("备注") or None)
                validate_rule(rule, where)
            db.session.add(rule)
            db.session.flush()
            built.append(rule)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return {"saved": len(built), "names": [r.name for r in built]}


def get_rule(rule_id: int) -> CarrierRule:
    rule = db.session.get(CarrierRule, rule_id)
    if rule is None:
        raise NotFound(f"快递规则不存在：{rule_id}")
    return rule

