"""Our own templates besides orders: SKUs (upsert by merchant code), stock counts
(盘点, through the stock ledger) and tracking numbers (through ``orders.update_fields``)."""
from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Callable, Optional

from sqlalchemy import select

from app.extensions import db
from app.models import Order, Product, Shop, Sku
from app.services import orders, stock

from .order_import import Counts, resolve_carriers
from .parse import ParsedSheet

SKU_UPDATABLE = ("name", "spec", "barcode", "cost_price", "sale_price", "weight_kg", "low_stock_threshold",
                 "active")


def _dupes(ps: ParsedSheet, key: Callable, label: str, field: str) -> None:
    seen = {}
    for row in ps.rows:
        k = key(row.values)
        if k is None or row.bad:
            continue
        if k in seen:
            ps.issue(row.index, field, f"{label}与第 {seen[k] + 1} 行重复")
            row.bad = True
        else:
            seen[k] = row.index


def _required(ps: ParsedSheet, names: dict) -> None:
    for row in ps.rows:
        for name, zh in names.items():
            if row.values.get(name) is None and not row.bad:
                ps.issue(row.index, name, f"{zh}不能为空")
                row.bad = True


# --- SKUs -------------------------------------------------------------------------------
def validate_skus(ps: ParsedSheet) -> None:
    _required(ps, {"merchant_code": "商家编码", "name": "名称"})
    _dupes(ps, lambda v: v.get("merchant_code"), "商家编码", "merchant_code")
    for row in ps.rows:
        w = row.values.get("weight_kg")
        if w is not None and (w < 0 or w > Decimal("9999999")):
            ps.issue(row.index, "weight_kg", f"重量无效：{w}")
            row.bad = True


def apply_skus(ps: ParsedSheet, rows: list, *, progress=None) -> Counts:
    counts = Counts()
    codes = [r.values["merchant_code"] for r in rows]
    existing = {s.merchant_code: s for s in db.session.scalars(select(Sku).where(Sku.merchant_code.in_(codes)))}
    pcodes = {r.values.get("product_code") or r.values["merchant_code"] for r in rows}
    products = {p.code: p for p in db.session.scalars(select(Product).where(Product.code.in_(pcodes)))}
    for i, row in enumerate(rows, start=1):
        v = row.values
        values = {k: v.get(k) for k in SKU_UPDATABLE if v.get(k) is not None}
        if "weight_kg" in values:
            values["weight_kg"] = values["weight_kg"].quantize(Decimal("0.001"))
        sku = existing.get(v["merchant_code"])
        if sku is None:
            pcode = v.get("product_code") or v["merchant_code"]
            product = products.get(pcode)
            if product is None:
                product = products[pcode] = Product(code=pcode, name=v.get("product_name") or v["name"],
                                                    category=v.get("category"))
                db.session.add(product)
            sku = Sku(product=product, merchant_code=v["merchant_code"], **values)
            db.session.add(sku)
            existing[sku.merchant_code] = sku
            counts.created += 1
        else:
            changed = False
            for k, value in values.items():
                if getattr(sku, k) != value:
                    setattr(sku, k, value)
                    changed = True
            if changed:
                counts.updated += 1
            else:
                counts.unchanged += 1
        if progress and i % 500 == 0:
            progress(i, len(rows), f"已写入 {i}/{len(rows)} 个 SKU")
    db.session.flush()
    return counts


# --- 盘点 ----------------------------------------------------------------------------------
def validate_stocktake(ps: ParsedSheet) -> dict:
    """Resolve warehouses and SKUs; returns {row index: (warehouse_id, sku_id)}."""
    _required(ps, {"warehouse": "仓库", "merchant_code": "商家编码", "counted": "实盘数量"})
    from app.services.stock_documents import lookup_sheet, resolve_row

    whs, skus = lookup_sheet(ps)
    out = {}
    for row in ps.rows:
        if row.bad:
            continue
        v = row.values
        found = resolve_row(ps, row, whs, skus)
        if found is None:
            continue
        wh, sku = found
        if sku.is_bundle:
            ps.issue(row.index, "merchant_code", f"{sku.merchant_code} 是组合装，没有自己的库存，请盘点组成商品")
            row.bad = True
            continue
        out[row.index] = (wh.id, sku.id)
    _dupes(ps, lambda v: (v.get("warehouse"), v.get("merchant_code")), "仓库 + 商家编码", "merchant_code")
    return {k: ids for k, ids in out.items() if not next(r for r in ps.rows if r.index == k).bad}


def preview_stocktake(resolved: dict, rows: list) -> list:
    by_wh = defaultdict(dict)
    for row in rows:
        wh, sku = resolved[row.index]
        by_wh[wh][sku] = row.values["counted"]
    out = []
    for wh, counts in by_wh.items():
        out += [(wh, line) for line in stock.stocktake_preview(wh, counts)]
    return out


def apply_stocktake(resolved: dict, rows: list, *, user_id: Optional[int], source_ref: str) -> tuple[Counts, list]:
    counts = Counts()
    by_wh = defaultdict(dict)
    for row in rows:
        wh, sku = resolved[row.index]
        by_wh[wh][sku] = row.values["counted"]
    diffs = []
    for wh in sorted(by_wh):
        lines = stock.stocktake(wh, by_wh[wh], user_id=user_id, source_ref=source_ref)
        for line in lines:
            diffs.append((wh, line))
            if line.delta:
                counts.updated += 1
            else:
                counts.unchanged += 1
    return counts, diffs


# --- 快递单号 --------------------------------------------------------------------------------
def validate_tracking(ps: ParsedSheet, default_shop: Optional[str]) -> dict:
    """Resolve each row's order (within the user's row scope) and carrier: {row index: (order_id, carrier_id)}."""
    _required(ps, {"platform_order_id": "订单号", "carrier_name": "快递公司", "tracking_number": "快递单号"})
    carriers = resolve_carriers({r.values.get("carrier_name") for r in ps.rows} - {None})
    pids = {r.values.get("platform_order_id") for r in ps.rows} - {None}
    found = defaultdict(list)
    if pids:
        for oid, pid, shop_name in db.session.execute(
                select(Order.id, Order.platform_order_id, Shop.name).join(Shop, Shop.id == Order.shop_id)
                .where(Order.platform_order_id.in_(pids))):
            found[pid].append((oid, shop_name))
    _dupes(ps, lambda v: (v.get("shop_name") or default_shop, v.get("platform_order_id")), "订单号",
           "platform_order_id")
    out = {}
    for row in ps.rows:
        if row.bad:
            continue
        v = row.values
        shop = v.get("shop_name") or default_shop
        hits = [(oid, s) for oid, s in found.get(v["platform_order_id"], []) if shop is None or s == shop]
        if not hits:
            where = f"店铺「{shop}」中" if shop else ""
            ps.issue(row.index, "platform_order_id", f"{where}订单不存在或无权访问：{v['platform_order_id']}")
            row.bad = True
            continue
        if len(hits) > 1:
            ps.issue(row.index, "platform_order_id", f"订单号 {v['platform_order_id']} 在多个店铺中都有"
                     f"（{'、'.join(s for _, s in hits)}），请填写「店铺」列")
            row.bad = True
            continue
        carrier_id = carriers.get(v["carrier_name"])
        if carrier_id is None:
            ps.issue(row.index, "carrier_name", f"快递公司不存在：{v['carrier_name']}")
            row.bad = True
            continue
        out[row.index] = (hits[0][0], carrier_id)
    return out


def apply_tracking(resolved: dict, rows: list, *, user_id: Optional[int], issue: Callable,
                   valid_only: bool) -> Counts:
    from app.services.errors import DomainError

    counts = Counts()
    for row in rows:
        order_id, carrier_id = resolved[row.index]
        order = db.session.get(Order, order_id)
        try:
            with db.session.begin_nested():
                changed = orders.update_fields(order, {"carrier_id": carrier_id,
                                                       "tracking_number": row.values["tracking_number"]},
                                               source="import", user_id=user_id)
        except DomainError as exc:
            issue(row, exc.message)
            counts.failed += 1
            if not valid_only:
                return counts
            continue
        if changed:
            counts.updated += 1
        else:
            counts.unchanged += 1
    db.session.flush()
    return counts
