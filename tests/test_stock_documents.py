"""入库, 调整, 盘点 (issue #5 item 7): documents through the stock ledger with user and
source document, held 缺货 orders reserved first paid first served afterwards, bad
input refused with a zh error naming the row and field and nothing partly applied,
the stocktake preview and its stale-book check, the pages, and Excel import."""
from __future__ import annotations

import datetime as dt
import re

import openpyxl
import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import Order, Product, Shop, Sku, Stock, StockMovement, Warehouse
from app.services import orders, stock, stock_documents as docs
from app.services.errors import ValidationError
from tests.world import OPENING_STOCK as N

UTC = dt.timezone.utc
L = docs.Line


def _sku(code: str) -> Sku:
    return db.session.scalars(select(Sku).where(Sku.merchant_code == code)).one()


def _hz() -> Warehouse:
    return db.session.scalars(select(Warehouse).where(Warehouse.code == "HZ")).one()


def _stock(code: str, wh: str = "HZ") -> tuple[int, int]:
    db.session.expire_all()
    w = db.session.scalars(select(Warehouse).where(Warehouse.code == wh)).one()
    row = db.session.execute(select(Stock.on_hand, Stock.reserved)
                             .where(Stock.warehouse_id == w.id, Stock.sku_id == _sku(code).id)).one_or_none()
    return tuple(row) if row else (0, 0)


def _movements() -> int:
    return db.session.scalar(select(func.count()).select_from(StockMovement))


def _held_order(pid: str, code: str, qty: int, paid: dt.datetime) -> int:
    shop = db.session.scalars(select(Shop).where(Shop.name == "A店-淘宝")).one()
    order = orders.create_order(shop, {
        "platform_order_id": pid, "status": "to_audit", "receiver_name": "测试",
        "receiver_phone": "13700009999", "receiver_province": "浙江省", "receiver_city": "杭州市",
        "receiver_address": "文三路1号", "paid_at": paid, "platform_created_at": paid,
        "lines": [{"platform_line_id": "1", "merchant_code": code, "title": code, "quantity": qty,
                   "price": "5.00", "paid_amount": "5.00"}]}, source="import")
    db.session.commit()
    with pytest.raises(stock.OutOfStock):
        orders.transition(order.id, "audit")
    assert db.session.get(Order, order.id).active_hold_reasons == ["out_of_stock"]
    return order.id


# --- inbound ----------------------------------------------------------------------------------------
def test_inbound_writes_movements_with_user_and_source_and_serves_held_orders_first_paid_first(ctx, ids):
    from app.models import OmsUser

    user_id = db.session.scalars(select(OmsUser.id).where(OmsUser.username == "warehouse")).one()
    docs.adjust("HZ", [L(1, "TS-WHT-M", -N, "盘亏清零")], user_id=user_id)
    late = _held_order("D-LATE", "TS-WHT-M", 3, dt.datetime(2026, 11, 22, tzinfo=UTC))
    early = _held_order("D-EARLY", "TS-WHT-M", 3, dt.datetime(2026, 11, 21, tzinfo=UTC))
    result = docs.inbound(str(_hz().id), [L(1, "TS-WHT-M", "4"), L(2, "TS-BLK-L", 10)],
                          source_ref="CG-001", note="供应商到货", user_id=user_id)
    assert result.source_ref == "CG-001" and result.lines == 2 and result.units == 14
    assert result.reallocated == [early]
    assert "1 个缺货订单已分配到库存" in result.summary
    early_o, late_o = db.session.get(Order, early), db.session.get(Order, late)
    assert early_o.status == "to_ship" and not early_o.is_held
    assert late_o.status == "to_audit" and late_o.active_hold_reasons == ["out_of_stock"]
    assert _stock("TS-WHT-M") == (4, 3) and _stock("TS-BLK-L") == (N + 10, 4)
    mv = db.session.scalars(select(StockMovement).where(StockMovement.source_ref == "CG-001")
                            .order_by(StockMovement.id)).all()
    assert [(m.movement_type, m.on_hand_delta, m.user_id, m.note) for m in mv] == [
        ("inbound", 4, user_id, "供应商到货"), ("inbound", 10, user_id, "供应商到货")]
    assert stock.check_ledger() == []


def test_a_document_marks_its_listings_once_after_every_stock_row_is_locked(ctx, monkeypatch):
    """Listings (库存同步) are locked after the stock rows, by every writer: a two-line document
    that marked per line would lock a listing between its two stock rows and could deadlock
    with a reservation of the second row."""
    events = []
    real_move, real_mark = stock.move, stock._mark

    def move(*a, **kw):
        events.append(("move", a[1]))
        return real_move(*a, **kw)

    def mark(sku_ids):
        sku_ids = list(sku_ids)
        events.append(("mark", sorted(sku_ids)))
        return real_mark(sku_ids)

    monkeypatch.setattr(stock, "move", move)
    monkeypatch.setattr(stock, "_mark", mark)
    blk, wht = _sku("TS-BLK-L"), _sku("TS-WHT-M")
    docs.inbound(_hz(), [L(2, "TS-BLK-L", 3), L(3, "TS-WHT-M", 4)])
    moves = [e for e in events if e[0] == "move"]
    assert [e[1] for e in moves] == [blk.id, wht.id]
    assert events[len(moves):] == [("mark", sorted([blk.id, wht.id]))]  # once, after both moves
    assert _stock("TS-BLK-L")[0] == N + 3 and _stock("TS-WHT-M")[0] == N + 4

    events.clear()  # a refused document marks nothing
    with pytest.raises(ValidationError):
        docs.adjust(_hz(), [L(2, "TS-BLK-L", 1, "盘盈"),
                            L(3, "TS-WHT-M", -(N + 5), "报损")])
    assert not [e for e in events if e[0] == "mark"]


def test_inbound_without_a_source_document_gets_a_number(ctx):
    result = docs.inbound("杭州仓", [L(1, "TS-BLK-L", 1)])
    assert re.fullmatch(r"RK-\d{14,17}", result.source_ref)
    assert db.session.scalar(select(StockMovement.source_ref).order_by(StockMovement.id.desc())) == result.source_ref


@pytest.mark.parametrize("qty,message", [
    ("-3", "第 2 行「数量」必须是正整数：-3"),
    ("1.5", "第 2 行「数量」必须是正整数：1.5"),
    ("0", "第 2 行「数量」必须是正整数：0"),
    ("三", "第 2 行「数量」必须是正整数：三"),
    ("", "第 2 行「数量」不能为空"),
])
def test_inbound_bad_quantity_names_the_row_and_writes_nothing(ctx, qty, message):
    before = _movements()
    with pytest.raises(docs.DocumentInvalid) as err:
        docs.inbound("HZ", [L(1, "TS-BLK-L", 5), L(2, "TS-WHT-M", qty)])
    assert message in err.value.message and "未写入任何库存" in err.value.message
    assert _movements() == before and _stock("TS-BLK-L") == (N, 4)


def test_unknown_sku_and_warehouse_are_named(ctx):
    before = _movements()
    with pytest.raises(docs.DocumentInvalid) as err:
        docs.inbound("HZ", [L(1, "TS-BLK-L", 5), L(2, "NOPE-1", 1), L(3, "", 1), L(4, "NOPE-2", "x")])
    msg = err.value.message
    assert "第 2 行「商家编码」：SKU 不存在：NOPE-1" in msg and "第 3 行「商家编码」不能为空" in msg
    assert "第 4 行「商家编码」：SKU 不存在：NOPE-2" in msg  # every problem at once
    assert err.value.issues and len(err.value.issues) == 3
    with pytest.raises(ValidationError, match="「仓库」不存在：上海仓"):
        docs.inbound("上海仓", [L(1, "TS-BLK-L", 5)])
    with pytest.raises(ValidationError, match="「仓库」不能为空"):
        docs.adjust("", [L(1, "TS-BLK-L", 5, "x")])
    assert _movements() == before


# --- adjustment -------------------------------------------------------------------------------------
def test_adjust_needs_a_reason_and_a_nonzero_integer(ctx):
    with pytest.raises(docs.DocumentInvalid, match="第 1 行「原因」不能为空"):
        docs.adjust("HZ", [L(1, "TS-BLK-L", -1, " ")])
    with pytest.raises(docs.DocumentInvalid, match="第 1 行「调整数量」必须是非零整数"):
        docs.adjust("HZ", [L(1, "TS-BLK-L", "0", "破损")])
    with pytest.raises(docs.DocumentInvalid, match="第 1 行「调整数量」必须是非零整数.*-1.5"):
        docs.adjust("HZ", [L(1, "TS-BLK-L", "-1.5", "破损")])
    result = docs.adjust("HZ", [L(1, "TS-BLK-L", "-2", "破损"), L(2, "TS-WHT-M", "+3", "赠品退回")])
    assert _stock("TS-BLK-L") == (N - 2, 4) and _stock("TS-WHT-M") == (N + 3, 0)
    notes = db.session.scalars(select(StockMovement.note).where(StockMovement.source_ref == result.source_ref)
                               .order_by(StockMovement.id)).all()
    assert notes == ["破损", "赠品退回"]


def test_adjust_refused_by_the_ledger_rolls_back_the_whole_document(ctx):
    before = _movements()
    # line 1 is fine, line 2 would take reserved stock (4 of TS-BLK-L are reserved)
    with pytest.raises(ValidationError) as err:
        docs.adjust("HZ", [L(1, "TS-WHT-M", -5, "破损"), L(2, "TS-BLK-L", -(N - 3), "盘亏")])
    assert err.value.message.startswith("第 2 行（TS-BLK-L）：库存不足") and "未写入任何库存" in err.value.message
    assert _movements() == before and _stock("TS-WHT-M") == (N, 0)


def test_a_bundle_is_received_as_its_components_but_cannot_be_adjusted(ctx):
    product = db.session.scalars(select(Product)).first()
    bundle = Sku(product=product, merchant_code="SET-D", name="套装", is_bundle=True)
    db.session.add(bundle)
    db.session.flush()
    from app.models import BundleComponent

    db.session.add(BundleComponent(bundle_sku_id=bundle.id, component_sku_id=_sku("TS-BLK-L").id, quantity=2))
    db.session.commit()
    docs.inbound("HZ", [L(1, "SET-D", 5)])
    assert _stock("TS-BLK-L") == (N + 10, 4)
    with pytest.raises(docs.DocumentInvalid, match="第 1 行「商家编码」：SET-D 是组合装"):
        docs.adjust("HZ", [L(1, "SET-D", 1, "x")])


# --- stocktake --------------------------------------------------------------------------------------------
def test_stocktake_preview_shows_book_count_and_difference_then_applies(ctx):
    before = _movements()
    wh, rows = docs.stocktake_preview("HZ", [L(1, "TS-BLK-L", "990"), L(2, "TS-WHT-M", N)])
    assert _movements() == before  # a preview writes nothing
    assert [(r.merchant_code, r.book, r.reserved, r.counted, r.delta) for r in rows] == [
        ("TS-BLK-L", N, 4, 990, 990 - N), ("TS-WHT-M", N, 0, N, 0)]
    result = docs.stocktake_apply("HZ", [L(1, "TS-BLK-L", "990"), L(2, "TS-WHT-M", N)],
                                  expected_book={"TS-BLK-L": N, "TS-WHT-M": N}, source_ref="PD-1")
    assert _stock("TS-BLK-L") == (990, 4)
    assert [(d.merchant_code, d.delta) for d in result.diffs] == [("TS-BLK-L", 990 - N), ("TS-WHT-M", 0)]
    mv = db.session.scalars(select(StockMovement).where(StockMovement.source_ref == "PD-1")).all()
    assert [(m.movement_type, m.on_hand_delta) for m in mv] == [("stocktake", 990 - N)]
    assert stock.check_ledger() == []


def test_stocktake_with_duplicate_rows_is_refused_naming_both_rows(ctx):
    before = _movements()
    with pytest.raises(docs.DocumentInvalid) as err:
        docs.stocktake_preview("HZ", [L(2, "TS-BLK-L", 5), L(3, "TS-WHT-M", 1), L(4, "TS-BLK-L", 7)])
    assert "第 4 行「商家编码」：TS-BLK-L 与第 2 行重复" in err.value.message
    with pytest.raises(docs.DocumentInvalid):
        docs.stocktake_apply("HZ", [L(2, "TS-BLK-L", 5), L(4, "TS-BLK-L", 7)])
    assert _movements() == before


@pytest.mark.parametrize("qty", ["-1", "2.5", "abc"])
def test_stocktake_bad_count(ctx, qty):
    with pytest.raises(docs.DocumentInvalid, match=f"第 1 行「实盘数量」必须是非负整数：{re.escape(qty)}"):
        docs.stocktake_preview("HZ", [L(1, "TS-BLK-L", qty)])


def test_stocktake_refused_when_the_book_changed_after_the_preview(ctx):
    _wh, rows = docs.stocktake_preview("HZ", [L(1, "TS-BLK-L", 900)])
    expected = {r.merchant_code: r.book for r in rows}
    docs.inbound("HZ", [L(1, "TS-BLK-L", 5)])  # someone received goods meanwhile
    before = _movements()
    with pytest.raises(docs.StocktakeChanged, match=f"TS-BLK-L 账面 {N} → {N + 5}"):
        docs.stocktake_apply("HZ", [L(1, "TS-BLK-L", 900)], expected_book=expected)
    assert _movements() == before and _stock("TS-BLK-L") == (N + 5, 4)


def test_stocktake_below_reserved_is_refused_and_nothing_applies(ctx):
    before = _movements()
    with pytest.raises(ValidationError, match="未写入任何库存"):
        docs.stocktake_apply("HZ", [L(1, "TS-WHT-M", 5), L(2, "TS-BLK-L", 1)])  # 4 reserved
    assert _movements() == before and _stock("TS-WHT-M") == (N, 0)


def test_stocktake_file_with_duplicate_rows_and_bad_cells(ctx, tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["仓库", "商家编码", "实盘数量"])
    ws.append(["杭州仓", "TS-BLK-L", 990])
    ws.append(["杭州仓", "TS-BLK-L", 991])
    path = tmp_path / "pd.xlsx"
    wb.save(path)
    lines = docs.lines_from_file(path, "pd.xlsx", "stocktake")
    with pytest.raises(docs.DocumentInvalid, match="第 3 行「商家编码」：TS-BLK-L 与第 2 行重复"):
        docs.stocktake_preview("HZ", lines)
    ws.append(["杭州仓", "TS-WHT-M", -2])
    ws.append(["杭州仓", "TS-WHT-M", 1.5])
    wb.save(path)
    with pytest.raises(docs.DocumentInvalid) as err:
        docs.lines_from_file(path, "pd.xlsx", "stocktake")
    assert "第 4 行「实盘数量」" in err.value.message and "第 5 行「实盘数量」" in err.value.message


def test_stocktake_file_of_another_warehouse_is_refused(ctx, tmp_path):
    db.session.add(Warehouse(code="SH", name="上海仓", priority=2))
    db.session.commit()
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["仓库", "商家编码", "实盘数量"])
    ws.append(["上海仓", "TS-BLK-L", 990])
    wb.save(tmp_path / "pd.xlsx")
    lines = docs.lines_from_file(tmp_path / "pd.xlsx", "pd.xlsx", "stocktake")
    with pytest.raises(docs.DocumentInvalid, match="第 2 行「仓库」：上海仓 不是本单的仓库 杭州仓"):
        docs.stocktake_preview("HZ", lines)


# --- the importer's 入库 template -----------------------------------------------------------------------
def test_inbound_import_template_all_or_nothing(ctx, tmp_path):
    from app.services.imports import run_import

    docs.adjust("HZ", [L(1, "TS-WHT-M", -N, "清零")])
    held = _held_order("D-IMP", "TS-WHT-M", 2, dt.datetime(2026, 11, 21, tzinfo=UTC))
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["仓库", "商家编码", "数量", "来源单号", "备注"])
    ws.append(["杭州仓", "TS-WHT-M", 5, "CG-9", "到货"])
    ws.append(["杭州仓", "TS-BLK-L", 1.5, "CG-9", ""])
    ws.append(["北京仓", "TS-BLK-L", 1, "CG-9", ""])
    ws.append(["HZ", "NOPE", 1, "CG-9", ""])
    path = tmp_path / "rk.xlsx"
    wb.save(path)
    before = _movements()
    result = run_import([path])
    assert not result.applied and _movements() == before
    text = "；".join(i.message for i in result.issues)
    assert "第 3 行「数量」" in text and "第 4 行「仓库」：仓库不存在：北京仓" in text
    assert "第 5 行「商家编码」：商家编码不存在：NOPE" in text
    for _ in range(3):
        ws.delete_rows(3)
    wb.save(path)
    result = run_import([path])
    assert result.applied and result.created == 1, result.summary
    assert _stock("TS-WHT-M") == (5, 2)  # received, then reserved by the held order
    assert db.session.get(Order, held).status == "to_ship"


def test_inbound_template_can_be_downloaded(app, login):
    resp = login("warehouse").get("/imports/template/oms_inbound")
    assert resp.status_code == 200
    import io

    ws = openpyxl.load_workbook(io.BytesIO(resp.data)).active
    assert [c.value for c in ws[1]][:3] == ["仓库", "商家编码", "数量"]


# --- the pages ----------------------------------------------------------------------------------------------
def test_inbound_page_writes_and_reports(app, login):
    wh = login("warehouse")
    assert wh.get("/stock/inbound/").status_code == 200
    with app.app_context():
        hz = _hz().id
    resp = wh.post("/stock/inbound/", data={"warehouse": str(hz), "source_ref": "CG-P1", "note": "",
                                            "lines": "商家编码 数量\nTS-BLK-L\t7\nTS-WHT-M, 3\n"})
    assert resp.status_code == 302
    page = wh.get("/stock/inbound/").get_data(as_text=True)
    assert "入库单 CG-P1：2 行已写入库存流水" in page
    with app.app_context():
        assert _stock("TS-BLK-L") == (N + 7, 4)
        mv = db.session.scalars(select(StockMovement).where(StockMovement.source_ref == "CG-P1")).all()
        assert {m.user.username for m in mv} == {"warehouse"}


def test_inbound_page_bad_input_shows_the_row_and_keeps_the_form(app, login):
    wh = login("warehouse")
    with app.app_context():
        hz = _hz().id
    resp = wh.post("/stock/inbound/", data={"warehouse": str(hz), "lines": "TS-BLK-L 5\nTS-WHT-M 2.5"})
    assert resp.status_code == 422
    page = resp.get_data(as_text=True)
    assert "第 2 行「数量」必须是正整数：2.5" in page and "TS-WHT-M 2.5" in page
    with app.app_context():
        assert _stock("TS-BLK-L") == (N, 4)


def test_adjust_page(app, login):
    wh = login("warehouse")
    with app.app_context():
        hz = _hz().id
    resp = wh.post("/stock/adjust/", data={"warehouse": str(hz), "lines": "TS-BLK-L -3 外箱破损"})
    assert resp.status_code == 302
    with app.app_context():
        assert _stock("TS-BLK-L") == (N - 3, 4)
        assert db.session.scalar(select(StockMovement.note).order_by(StockMovement.id.desc())) == "外箱破损"


def test_stocktake_page_preview_then_apply(app, login):
    wh = login("warehouse")
    with app.app_context():
        hz = _hz().id
    resp = wh.post("/stock/stocktake/", data={"warehouse": str(hz), "lines": "TS-BLK-L 995\nTS-WHT-M 1000"})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "oms-stocktake-diff" in page and "-5" in page
    with app.app_context():
        assert _stock("TS-BLK-L") == (N, 4)  # not yet
    form = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page))
    import html

    form = {k: html.unescape(v) for k, v in form.items()}
    resp = wh.post("/stock/stocktake/apply", data=form)
    assert resp.status_code == 302
    assert "1 个有差异已调整" in wh.get("/stock/stocktake/").get_data(as_text=True)
    with app.app_context():
        assert _stock("TS-BLK-L") == (995, 4)


def test_stocktake_page_upload_with_duplicates_is_refused(app, login, tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["仓库", "商家编码", "实盘数量"])
    ws.append(["杭州仓", "TS-BLK-L", 990])
    ws.append(["杭州仓", "TS-BLK-L", 990])
    path = tmp_path / "pd.xlsx"
    wb.save(path)
    wh = login("warehouse")
    with app.app_context():
        hz = _hz().id
    with open(path, "rb") as fh:
        resp = wh.post("/stock/stocktake/", data={"warehouse": str(hz), "file": (fh, "盘点.xlsx")},
                       content_type="multipart/form-data")
    assert resp.status_code == 422
    assert "第 3 行「商家编码」：TS-BLK-L 与第 2 行重复" in resp.get_data(as_text=True)


@pytest.mark.parametrize("user", ["cs", "finance", "ops"])
def test_roles_without_stock_documents_cannot_post(app, login, user):
    client = login(user)
    with app.app_context():
        hz = _hz().id
    resp = client.post("/stock/inbound/", data={"warehouse": str(hz), "lines": "TS-BLK-L 5"})
    assert resp.status_code in (302, 403) and "/login" in resp.headers.get("Location", "/login")
    with app.app_context():
        assert _stock("TS-BLK-L") == (N, 4)

