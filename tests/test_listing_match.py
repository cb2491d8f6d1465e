"""商品匹配 when an order is created (issue #5 item 1): a line whose merchant code is not a
SKU's but is the code of the shop's listings mapped to one SKU (many listings → one SKU)
is linked to that SKU at once — by ``orders.create_order``, the platform sync (bulk and
per order) and the order import (bulk and per order) — with its cost price and no
未匹配商品 hold. The same code in another shop, or listings of the shop that disagree,
stay unmatched. (Re-matching held orders when the mapping changes: test_sku_rematch.py.)"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy import select

from app.extensions import db
from app.models import BundleComponent, Order, Product, Shop, ShopListing, Sku
from app.services import orders, sku_mapping, sync
from tests.test_imports_bulk import run_import_admin, sheet_rows, write_xlsx
from tests.test_sync_sandbox import TWINS, sandbox, shops  # noqa: F401  (fixtures)

UTC = dt.timezone.utc
ALIAS = "TB-XYZ"  # shop A's listing code, mapped to our SKU ABC
AMBIGUOUS = "TB-AMB"  # two listings of shop A with this code, mapped to different SKUs


def _sku(code: str, cost: str, *, bundle: bool = False) -> Sku:
    product = db.session.scalars(select(Product)).first()
    sku = Sku(product=product, merchant_code=code, name=f"商品{code}", cost_price=Decimal(cost),
              sale_price=Decimal("99"), is_bundle=bundle)
    db.session.add(sku)
    db.session.flush()
    return sku


def _listing(shop_id: int, code: str, sku: Sku, item: str) -> None:
    db.session.add(ShopListing(shop_id=shop_id, merchant_code=code, platform_item_id=item, platform_sku_id="1",
                               sku_id=sku.id))


def _mapping(shop_a: int) -> dict:
    """SKU ABC; shop A: TB-XYZ → ABC, TB-AMB → ABC and → TS-BLK-L (ambiguous), and a
    listing TS-WHT-M → ABC (the code is a SKU's own: that SKU wins)."""
    abc = _sku("ABC", "12.50")
    blk = db.session.scalars(select(Sku).where(Sku.merchant_code == "TS-BLK-L")).one()
    _listing(shop_a, ALIAS, abc, "1001")
    _listing(shop_a, ALIAS, abc, "1002")  # many listings → one SKU: they agree
    _listing(shop_a, AMBIGUOUS, abc, "2001")
    _listing(shop_a, AMBIGUOUS, blk, "2002")
    _listing(shop_a, "TS-WHT-M", abc, "3001")
    db.session.commit()
    return {"ABC": abc.id, "TS-BLK-L": blk.id,
            "TS-WHT-M": db.session.scalars(select(Sku.id).where(Sku.merchant_code == "TS-WHT-M")).one()}


def _lines(order: Order) -> dict:
    return {ln.merchant_code: ln for ln in order.lines}


def _hold_note(order: Order):
    return next((h.note for h in order.holds if h.reason == "unmatched_sku" and h.released_at is None), None)


def _payload(pid: str, codes: list[tuple[str, int]]) -> dict:
    paid = dt.datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
    return {"platform_order_id": pid, "status": "to_audit", "receiver_name": "测试", "receiver_phone": "13700009999",
            "receiver_province": "浙江省", "receiver_city": "杭州市", "receiver_district": "西湖区",
            "receiver_address": "文三路1号", "paid_at": paid, "platform_created_at": paid, "paid_amount": "10.00",
            "lines": [{"platform_line_id": str(i), "merchant_code": code, "title": code, "quantity": qty,
                       "price": "5.00", "paid_amount": "5.00"} for i, (code, qty) in enumerate(codes, 1)]}


# --- the catalogue ----------------------------------------------------------------------------------
def test_catalogue_applies_the_rule_per_shop_in_two_queries_also_across_chunks(ctx, ids, monkeypatch):
    sku_ids = _mapping(ids["shops"]["A"])
    codes = [ALIAS, AMBIGUOUS, "TS-WHT-M", "TS-BLK-L", "NOPE"]
    seen = []

    def count(conn, cursor, statement, *rest):
        seen.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        cat = sku_mapping.SkuCatalogue.load(codes, shop_ids=[ids["shops"]["A"], ids["shops"]["B"]])
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)
    assert len(seen) == 2, seen
    monkeypatch.setattr(sku_mapping, "LOOKUP_CHUNK", 1)  # one code per IN (…): the same answer
    for c in (cat, sku_mapping.SkuCatalogue.load(codes, shop_ids=[ids["shops"]["A"], ids["shops"]["B"]]),
              sku_mapping.SkuCatalogue.load(orm=False)):
        a, b = c.for_shop(ids["shops"]["A"]), c.for_shop(ids["shops"]["B"])
        assert a[ALIAS].id == sku_ids["ABC"] and a[ALIAS].cost_price == Decimal("12.50")
        assert AMBIGUOUS not in a and "NOPE" not in a
        assert a["TS-WHT-M"].id == sku_ids["TS-WHT-M"]  # the SKU's own code first
        assert a["TS-BLK-L"].id == sku_ids["TS-BLK-L"]
        assert ALIAS not in b and b["TS-WHT-M"].id == sku_ids["TS-WHT-M"]
    # resolve (re-matching) is the same rule
    assert {k: v.id for k, v in sku_mapping.resolve(ids["shops"]["A"], codes).items()} == {
        ALIAS: sku_ids["ABC"], "TS-WHT-M": sku_ids["TS-WHT-M"], "TS-BLK-L": sku_ids["TS-BLK-L"]}
    assert set(sku_mapping.resolve(ids["shops"]["B"], codes)) == {"TS-WHT-M", "TS-BLK-L"}


# --- create_order -----------------------------------------------------------------------------------
def test_create_order_links_a_code_known_only_through_the_shops_listing(ctx, ids):
    sku_ids = _mapping(ids["shops"]["A"])
    shop_a, shop_b = db.session.get(Shop, ids["shops"]["A"]), db.session.get(Shop, ids["shops"]["B"])
    a = orders.create_order(shop_a, _payload("LM-A", [(ALIAS, 2), ("TS-WHT-M", 1)]))
    b = orders.create_order(shop_b, _payload("LM-B", [(ALIAS, 2)]))
    amb = orders.create_order(shop_a, _payload("LM-AMB", [(AMBIGUOUS, 1)]))
    db.session.commit()
    line = _lines(a)[ALIAS]
    assert line.sku_id == sku_ids["ABC"] and line.cost_price == Decimal("12.50")
    assert _lines(a)["TS-WHT-M"].sku_id == sku_ids["TS-WHT-M"]
    assert a.cost_amount == Decimal("49.00")  # 2 × 12.50 + 24
    assert not a.is_held and a.active_hold_reasons == []
    assert b.lines[0].sku_id is None and b.active_hold_reasons == ["unmatched_sku"]
    assert _hold_note(b) == f"商家编码未匹配：{ALIAS}"
    assert amb.lines[0].sku_id is None and _hold_note(amb) == f"商家编码未匹配：{AMBIGUOUS}"


def test_a_bundle_matched_through_a_listing_is_linked_as_by_its_own_code(ctx, ids):
    shop_a = db.session.get(Shop, ids["shops"]["A"])
    bundle = _sku("SET-LM", "60.00", bundle=True)
    blk = db.session.scalars(select(Sku).where(Sku.merchant_code == "TS-BLK-L")).one()
    db.session.add(BundleComponent(bundle_sku_id=bundle.id, component_sku_id=blk.id, quantity=2))
    _listing(shop_a.id, "TB-SET", bundle, "4001")
    db.session.commit()
    by_listing = orders.create_order(shop_a, _payload("LM-SET-1", [("TB-SET", 1)]))
    by_code = orders.create_order(shop_a, _payload("LM-SET-2", [("SET-LM", 1)]))
    db.session.commit()
    for order in (by_listing, by_code):
        ln = order.lines[0]
        assert (ln.sku_id, ln.cost_price, order.cost_amount, order.active_hold_reasons) == (
            bundle.id, Decimal("60.00"), Decimal("60.00"), [])
        orders.transition(order.id, "audit")  # reserves the components' stock
        assert db.session.get(Order, order.id).status == "to_ship"


# --- the platform sync ------------------------------------------------------------------------------
def _seed(state, platform: str, pid: str, codes: list[tuple[str, int]]) -> None:
    created = int((dt.datetime.now(UTC) - dt.timedelta(minutes=20)).timestamp())
    state.create_order(TWINS[platform].app_key, {"order_id": pid, "created": created,
                                                 "lines": [{"merchant_code": c, "num": n} for c, n in codes]})


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "per_order"])
def test_sync_from_the_sandbox_links_lines_through_the_listing(sandbox, shops, bulk):  # noqa: F811
    _base, state = sandbox
    shop_a, shop_b = shops["taobao"], shops["jd"]
    sku_ids = _mapping(shop_a)
    _seed(state, "taobao", "9100000000000001", [(ALIAS, 2), ("TS-WHT-M", 1)])
    _seed(state, "taobao", "9100000000000002", [(AMBIGUOUS, 1)])
    _seed(state, "jd", "9100000000000003", [(ALIAS, 1)])
    for shop_id in (shop_a, shop_b):
        run = sync.sync_shop(shop_id, trigger="manual", bulk=bulk)
        assert run.status == "success", run.error
    db.session.expire_all()
    found = {o.platform_order_id: o for o in db.session.scalars(select(Order).where(Order.platform_order_id.in_(
        ["9100000000000001", "9100000000000002", "9100000000000003"])))}
    a = found["9100000000000001"]
    assert a.status == "to_audit"
    assert (_lines(a)[ALIAS].sku_id, _lines(a)[ALIAS].cost_price) == (sku_ids["ABC"], Decimal("12.50"))
    assert _lines(a)["TS-WHT-M"].sku_id == sku_ids["TS-WHT-M"]
    assert a.cost_amount == Decimal("49.00") and a.active_hold_reasons == [] and not a.is_held
    amb = found["9100000000000002"]
    assert amb.lines[0].sku_id is None and _hold_note(amb) == f"商家编码未匹配：{AMBIGUOUS}"
    b = found["9100000000000003"]
    assert b.shop_id == shop_b and b.lines[0].sku_id is None and _hold_note(b) == f"商家编码未匹配：{ALIAS}"


# --- the order import ---------------------------------------------------------------------------------
def _sheet(codes_by_order: list[tuple[str, str, list[str]]]) -> list:
    """Rows for these (shop, order id, codes) orders, each 待审核."""
    template = sheet_rows(1)[1]
    rows = sheet_rows(0)
    for shop, pid, codes in codes_by_order:
        for j, code in enumerate(codes):
            row = list(template)
            row[0], row[1], row[2] = shop, pid, "待审核"
            if j:
                row[3:22] = [None] * 19
            row[22], row[23], row[24], row[26], row[27] = f"{pid}-{j + 1}", code, None, 2, "39.90"
            rows.append(row)
    return rows


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "per_order"])
def test_import_links_lines_through_the_listing(ctx, ids, tmp_path, bulk):
    sku_ids = _mapping(ids["shops"]["A"])
    rows = _sheet([("A店-淘宝", "LMI-A", [ALIAS, "TS-WHT-M"]), ("A店-淘宝", "LMI-AMB", [AMBIGUOUS]),
                   ("B店-拼多多", "LMI-B", [ALIAS])])
    r = run_import_admin([write_xlsx(tmp_path / "o.xlsx", rows)], bulk=bulk)
    assert r.ok and r.created == 3, r.issues
    db.session.expire_all()
    found = {o.platform_order_id: o for o in db.session.scalars(select(Order).where(
        Order.platform_order_id.in_(["LMI-A", "LMI-AMB", "LMI-B"])))}
    a = found["LMI-A"]
    line = _lines(a)[ALIAS]
    assert (line.sku_id, line.cost_price) == (sku_ids["ABC"], Decimal("12.50"))
    assert a.cost_amount == Decimal("73.00")  # 2 × 12.50 + 2 × 24
    assert a.active_hold_reasons == [] and not a.is_held
    assert found["LMI-AMB"].lines[0].sku_id is None
    assert _hold_note(found["LMI-AMB"]) == f"商家编码未匹配：{AMBIGUOUS}"
    b = found["LMI-B"]
    assert b.lines[0].sku_id is None and _hold_note(b) == f"商家编码未匹配：{ALIAS}"
    # a changed order re-imported with a new line: that line too is linked through the listing
    rows = _sheet([("A店-淘宝", "LMI-C", ["TS-BLK-L"])])
    assert run_import_admin([write_xlsx(tmp_path / "c1.xlsx", rows)], bulk=bulk).created == 1
    rows = _sheet([("A店-淘宝", "LMI-C", ["TS-BLK-L", ALIAS])])
    r = run_import_admin([write_xlsx(tmp_path / "c2.xlsx", rows)], bulk=bulk)
    assert r.ok and r.updated == 1, r.issues
    db.session.expire_all()
    c = db.session.scalars(select(Order).where(Order.platform_order_id == "LMI-C")).one()
    assert _lines(c)[ALIAS].sku_id == sku_ids["ABC"] and c.active_hold_reasons == []
    assert c.cost_amount == Decimal("75.00")  # 2 × 25 + 2 × 12.50
