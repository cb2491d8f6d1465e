"""Excel/CSV import: every profile with its quirks, bad input, all-or-nothing,
valid rows only, idempotent re-import, row scope, the error report."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import zipfile
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import (
    Customer, Order, OrderEvent, OrderHold, OrderLine, Product, Shop, Sku, Stock, StockMovement,
)
from app.services.imports import ImportFileError, run_import
from app.services.imports import convert

SAMPLES = Path(__file__).resolve().parent / "samples"  # copies of ../shared/samples
EXPECTED = json.loads((SAMPLES / "expected.json").read_text())
UTC = dt.timezone.utc


# --- helpers ------------------------------------------------------------------------------
def write_xlsx(path: Path, rows: list[list], *, merged: list[str] = ()) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    for row in rows:
        ws.append(row)
    for rng in merged:
        ws.merge_cells(rng)
    wb.save(path)
    return path


def write_csv(path: Path, rows: list[list], encoding: str) -> Path:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    path.write_bytes(buf.getvalue().encode(encoding))
    return path


def count(model, *where) -> int:
    return db.session.execute(select(func.count()).select_from(model).where(*where)).scalar()


def db_state() -> tuple:
    return tuple(count(m) for m in (Order, OrderLine, OrderEvent, OrderHold, Customer, Shop, Sku, StockMovement))


def make_shop(name="示例旗舰店", platform="taobao") -> Shop:
    shop = Shop(name=name, platform=platform)
    db.session.add(shop)
    db.session.commit()
    return shop


def sample_skus(n=40):
    product = Product(code="P-SAMPLE", name="纯棉T恤")
    db.session.add(product)
    for i in range(1, n + 1):
        db.session.add(Sku(product=product, merchant_code=f"SKU-{i:04d}", name=f"纯棉T恤 款{i}",
                           cost_price=Decimal("10.00"), sale_price=Decimal("50.00")))
    db.session.commit()


def orders_of(shop_id):
    return db.session.scalars(select(Order).where(Order.shop_id == shop_id).order_by(Order.id)).all()


def totals(shop_id):
    os_ = orders_of(shop_id)
    lines = [ln for o in os_ for ln in o.lines]
    return (len(os_), len(lines), sum(ln.quantity for ln in lines),
            sum((o.paid_amount for o in os_), Decimal("0.00")))


TAOBAO = [SAMPLES / "taobao_orders.csv", SAMPLES / "taobao_items.csv"]


# --- converters ---------------------------------------------------------------------------
def test_converters_handle_export_quirks():
    assert convert.identifier('="3912345678901234821"') == "3912345678901234821"
    assert convert.phone("'15319487574") == "15319487574"
    assert convert.phone("180****3195") is None  # a mask is not a phone
    assert convert.money("¥1,234.5") == Decimal("1234.50")
    assert convert.money(35.72) == Decimal("35.72")
    with pytest.raises(convert.CellError, match="15 位"):
        convert.identifier(3912345678901234821.0)
    cn = dt.timezone(dt.timedelta(hours=8))
    want = dt.datetime(2026, 11, 5, 10, 3, tzinfo=cn).astimezone(UTC)
    assert convert.datetime("2026/11/5 10:03") == want
    assert convert.datetime("2026-11-05 10:03:00") == want
    assert convert.datetime(dt.datetime(2026, 11, 5, 10, 3)) == want
    assert convert.datetime(46331 + (10 * 60 + 3) / 1440) == want  # Excel serial
    assert convert.datetime(dt.date(2026, 11, 5)) == dt.datetime(2026, 11, 4, 16, 0, tzinfo=UTC)
    with pytest.raises(convert.CellError, match="无法识别的日期 2026-13-45"):
        convert.datetime("2026-13-45")
    parts = convert.split_address("广东省 深圳市 南山区 东莞街f座(761318)")
    assert parts == {"receiver_province": "广东省", "receiver_city": "深圳市", "receiver_district": "南山区",
                     "receiver_address": "东莞街f座", "receiver_zip": "761318"}
    parts = convert.split_address("新疆维吾尔自治区乌鲁木齐市天山区刘路N座")
    assert (parts["receiver_province"], parts["receiver_city"], parts["receiver_district"],
            parts["receiver_address"]) == ("新疆维吾尔自治区", "乌鲁木齐市", "天山区", "刘路N座")
    parts = convert.split_address("上海市浦东新区张江路1号")
    assert (parts["receiver_province"], parts["receiver_city"], parts["receiver_district"]) == (
        "上海市", "上海市", "浦东新区")


# --- platform samples ---------------------------------------------------------------------
def test_taobao_order_and_item_sheets_import_with_expected_totals(ctx, ids):
    shop = make_shop()
    result = run_import(TAOBAO)
    assert result.ok, result.issues
    exp = EXPECTED["taobao"]
    assert totals(shop.id) == (exp["orders"], exp["lines"], exp["units"], Decimal(exp["paid_total"]))
    by_province = dict(db.session.execute(select(Order.receiver_province, func.count()).where(
        Order.shop_id == shop.id).group_by(Order.receiver_province)).all())
    assert by_province == exp["by_province"]
    first = orders_of(shop.id)[0]
    assert first.platform_order_id == exp["first_id"]  # 19 digits, never through float
    assert first.receiver_phone == "15319487574" and first.receiver_zip == "761318"
    assert first.receiver_address == "东莞街f座" and first.receiver_city == "深圳市"
    assert [ln.platform_line_id for ln in first.lines] == ["0", "1", "2"]
    statuses = dict(db.session.execute(select(Order.status, func.count()).where(
        Order.shop_id == shop.id).group_by(Order.status)).all())
    assert statuses["pending_payment"] == 2 and statuses["closed"] == 2 and statuses["completed"] == 3
    # no SKU of the sample exists: every open order is held 未匹配商品, nothing dropped
    held = db.session.scalars(select(Order).where(Order.shop_id == shop.id, Order.is_held.is_(True))).all()
    assert held and all(o.status in ("to_audit", "to_ship") for o in held)
    assert all("unmatched_sku" in o.active_hold_reasons for o in held)
    assert result.created == 20 and result.report_path is None


def test_taobao_with_known_skus_and_customers(ctx, ids):
    sample_skus()
    shop = make_shop()
    run_import(TAOBAO)
    first = orders_of(shop.id)[0]
    assert not first.is_held and all(ln.sku_id for ln in first.lines)
    assert first.cost_amount == Decimal("80.00")  # 8 units × 10.00
    assert first.customer is not None and first.customer.order_count == 1
    ev = db.session.scalars(select(OrderEvent).where(OrderEvent.order_id == first.id)).all()
    assert [(e.action, e.source) for e in ev] == [("create", "import")]


def test_pdd_xlsx_import(ctx, ids):
    result = run_import([SAMPLES / "pdd_orders.xlsx"], shop="B店-拼多多")
    assert result.ok, result.issues
    exp = EXPECTED["pdd"]
    n, _lines, units, paid = totals(ids["shops"]["B"])
    assert (n - 2, units - 4, paid - Decimal("316.00")) == (exp["orders"], exp["units"], Decimal(exp["paid_total"]))
    o = db.session.scalar(select(Order).where(Order.platform_order_id == "261115-400000000000007"))
    assert o.status == "to_audit" and o.discount_amount == Decimal("2.00") and o.receiver_province == "上海市"
    assert o.lines[0].merchant_code == "SKU-0004" and o.lines[0].spec == "白色,M"
    shipped = db.session.scalar(select(Order).where(Order.platform_order_id == "261103-400000000022000"))
    assert shipped.status == "shipped"


def test_jd_gbk_csv_import(ctx, ids):
    result = run_import([SAMPLES / "jd_orders.csv"], shop="C店-京东")
    assert result.ok, result.issues
    exp = EXPECTED["jd"]
    n, lines, units, paid = totals(ids["shops"]["C"])
    assert (n - 1, lines - 1, units - 2, paid - Decimal("158.00")) == (
        exp["orders"], exp["lines"], exp["units"], Decimal(exp["paid_total"]))
    o = db.session.scalar(select(Order).where(Order.platform_order_id == "280000000007"))
    assert (o.receiver_province, o.receiver_city, o.receiver_district) == ("四川省", "成都市", "武侯区")
    assert o.receiver_phone is None  # 180****3195 is a mask
    assert sorted(ln.platform_line_id for ln in o.lines) == ["100000001", "100000023", "100000028"]


def test_reimport_is_idempotent_and_updates(ctx, ids, tmp_path):
    shop = make_shop()
    run_import(TAOBAO)
    before = db_state()
    again = run_import(TAOBAO)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 20)
    assert db_state() == before
    # change one order's status on the sheet: it moves forward, one more event, no duplicate
    text = (SAMPLES / "taobao_orders.csv").read_bytes().decode("gb18030")
    first_line = text.splitlines()[1]
    changed = text.replace(first_line, first_line.replace("买家已付款，等待卖家发货", "卖家已发货，等待买家确认", 1))
    path = tmp_path / "taobao_orders.csv"
    path.write_bytes(changed.encode("gbk"))
    res = run_import([path, SAMPLES / "taobao_items.csv"])
    assert (res.created, res.updated, res.unchanged) == (0, 1, 19)
    o = db.session.scalar(select(Order).where(Order.platform_order_id == EXPECTED["taobao"]["first_id"]))
    assert o.status == "shipped" and count(Order, Order.shop_id == shop.id) == 20
    ev = db.session.scalars(select(OrderEvent).where(OrderEvent.order_id == o.id,
                                                     OrderEvent.action == "ship_on_platform")).all()
    assert len(ev) == 1 and ev[0].source == "import"
    # never backwards: re-importing the older sheet leaves it shipped
    run_import(TAOBAO)
    db.session.expire_all()
    assert db.session.get(Order, o.id).status == "shipped"


# --- bad input --------------------------------------------------------------------------
def test_wrong_headers_say_what_was_expected(ctx, tmp_path):
    path = write_xlsx(tmp_path / "x.xlsx", [["日期", "金额", "备注"], ["2026-11-01", "10", "x"]])
    with pytest.raises(ImportFileError) as exc:
        run_import([path])
    assert "无法识别表格格式" in exc.value.message and "订单号" in exc.value.message


def test_empty_and_renamed_and_huge_files(ctx, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ImportFileError, match="空文件"):
        run_import([empty])
    png = tmp_path / "orders.xlsx"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(ImportFileError, match="PNG 图片"):
        run_import([png])
    txt = tmp_path / "report.xlsx"
    txt.write_text("订单号,状态\n1,待审核\n", encoding="utf-8")
    with pytest.raises(ImportFileError, match="扩展名是 .xlsx"):
        run_import([txt])
    ctx.config["OMS_IMPORT_MAX_BYTES"] = 1000
    try:
        big = tmp_path / "big.csv"
        big.write_text("订单号,状态\n" + "1,待审核\n" * 500, encoding="utf-8")
        with pytest.raises(ImportFileError, match="超过单个文件上限"):
            run_import([big])
    finally:
        ctx.config.pop("OMS_IMPORT_MAX_BYTES")
    ctx.config["OMS_IMPORT_MAX_ROWS"] = 10
    try:
        many = tmp_path / "many.csv"
        many.write_text("订单号,状态\n" + "1,待审核\n" * 50, encoding="utf-8")
        with pytest.raises(ImportFileError, match="超过单次导入上限 10 行"):
            run_import([many])
    finally:
        ctx.config.pop("OMS_IMPORT_MAX_ROWS")


def test_zip_bomb_is_refused_before_parsing(ctx, tmp_path):
    path = tmp_path / "bomb.xlsx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("xl/worksheets/sheet1.xml", b"\x00" * (20 * 1024 * 1024))
    with pytest.raises(ImportFileError, match="压缩炸弹"):
        run_import([path])


OMS_HEADER = ["店铺", "订单号", "状态", "付款时间", "收货人", "收货人手机", "省", "市", "区", "详细地址",
              "实付金额", "商家编码", "数量", "单价"]


def oms_row(pid, *, shop="A店-淘宝", status="待审核", paid="2026-11-05 10:03:04", qty=1, code="TS-BLK-L",
            phone="13800138000"):
    return [shop, pid, status, paid, "张三", phone, "浙江省", "杭州市", "西湖区", "文三路1号", "79.00", code, qty,
            "79.00"]


def test_bad_rows_all_or_nothing_leaves_database_unchanged(ctx, ids, tmp_path):
    path = write_xlsx(tmp_path / "orders.xlsx", [
        OMS_HEADER,
        oms_row("T1"),
        oms_row("T2", paid="2026-13-45"),
        oms_row("T3", qty=-2),
        oms_row("T4", shop="不存在的店"),
    ])
    before = db_state()
    result = run_import([path])
    assert not result.applied and db_state() == before
    messages = [i.message for i in result.issues]
    assert "第 3 行「付款时间」：无法识别的日期 2026-13-45" in messages
    assert any(m.startswith("第 4 行「数量」") and "负数" in m for m in messages)
    assert any(m.startswith("第 5 行「店铺」") and "不存在的店" in m for m in messages)
    # the report copies the rows, fills the bad cells red and comments them
    wb = openpyxl.load_workbook(result.report_path)
    ws = wb.worksheets[0]
    bad = ws.cell(row=3, column=4)
    assert bad.value == "2026-13-45" and bad.fill.start_color.rgb.endswith("FFC7CE")
    assert "无法识别的日期" in bad.comment.text
    assert ws.cell(row=2, column=4).comment is None
    assert ws.cell(row=1, column=len(OMS_HEADER) + 1).value == "导入结果"
    assert "负数" in ws.cell(row=4, column=len(OMS_HEADER) + 1).value


def test_valid_only_imports_the_good_rows(ctx, ids, tmp_path):
    path = write_xlsx(tmp_path / "orders.xlsx", [
        OMS_HEADER,
        oms_row("T1"),
        oms_row("T2", paid="2026-13-45"),
        oms_row("T1", code="TS-WHT-M"),  # second line of T1
        oms_row("T5", code="NOPE-1"),
    ])
    result = run_import([path], valid_only=True)
    assert result.applied and result.created == 2 and result.failed == 1
    t1 = db.session.scalar(select(Order).where(Order.platform_order_id == "T1"))
    assert [ln.merchant_code for ln in t1.lines] == ["TS-BLK-L", "TS-WHT-M"]
    assert t1.shop_id == ids["shops"]["A"] and t1.status == "to_audit" and not t1.is_held
    assert db.session.scalar(select(Order).where(Order.platform_order_id == "T2")) is None
    t5 = db.session.scalar(select(Order).where(Order.platform_order_id == "T5"))
    assert t5.active_hold_reasons == ["unmatched_sku"]


def test_scope_cs_cannot_import_into_another_shop(ctx, ids, tmp_path):
    from app.extensions import appbuilder

    cs = appbuilder.sm.find_user(username="cs")  # shop A only
    path = write_xlsx(tmp_path / "orders.xlsx", [OMS_HEADER, oms_row("S1", shop="B店-拼多多")])
    before = db_state()
    result = run_import([path], user_id=cs.id)
    assert not result.applied and db_state() == before
    assert "店铺不存在或无权访问：B店-拼多多" in result.issues[0].message
    ok = write_xlsx(tmp_path / "ok.xlsx", [OMS_HEADER, oms_row("S2", shop="A店-淘宝")])
    assert run_import([ok], user_id=cs.id).created == 1


def test_csv_encodings_and_merged_header(ctx, ids, tmp_path):
    rows = [OMS_HEADER, oms_row("E1"), oms_row("E2", paid="2026/11/5 10:03")]
    for i, enc in enumerate(("gbk", "gb18030", "utf-8-sig", "utf-8")):
        rows_i = [OMS_HEADER] + [[c if j != 1 else f"{c}-{enc}" for j, c in enumerate(r)] for r in rows[1:]]
        res = run_import([write_csv(tmp_path / f"o{i}.csv", rows_i, enc)])
        assert res.ok and res.created == 2, (enc, res.issues)
    # a title row and a two-row header with merged cells
    title = ["订单导出"] + [None] * (len(OMS_HEADER) - 1)
    group = [None, None, None, None, "收货信息", None, None, None, None, None, None, "商品", None, None]
    second = [h if i not in (0, 1, 2, 3) else None for i, h in enumerate(OMS_HEADER)]
    top = [h if i in (0, 1, 2, 3) else g for i, (h, g) in enumerate(zip(OMS_HEADER, group))]
    path = write_xlsx(tmp_path / "merged.xlsx", [title, top, second, oms_row("M1")],
                      merged=["A1:N1", "A2:A3", "B2:B3", "C2:C3", "D2:D3", "E2:J2", "L2:N2"])
    res = run_import([path])
    assert res.ok and res.created == 1, res.issues


# --- our templates: SKUs, stocktake, tracking ---------------------------------------------------
def test_sku_template_creates_then_updates_by_merchant_code(ctx, tmp_path):
    from app.services.imports.templates import write_template

    name, data = write_template("oms_skus")
    tpl = tmp_path / name
    tpl.write_bytes(data)
    wb = openpyxl.load_workbook(tpl)
    header = [c.value for c in wb.active[1]]
    assert header[:3] == ["商家编码", "名称", "规格"] and "预警值" in header
    path = write_xlsx(tmp_path / "skus.xlsx", [header[:9] + ["预警值"],
                                              ["SKU-NEW-1", "新品 1", "红", "P-NEW", "新品", None, None, "12.50",
                                               "¥39.00", 5],
                                              ["TS-BLK-L", "纯棉T恤 黑 L", None, None, None, None, None, "26.00",
                                               "79.00", None]])
    res = run_import([path])
    assert res.ok and (res.created, res.updated) == (1, 1), res.issues
    new = db.session.scalar(select(Sku).where(Sku.merchant_code == "SKU-NEW-1"))
    assert new.product.code == "P-NEW" and new.sale_price == Decimal("39.00") and new.low_stock_threshold == 5
    assert db.session.scalar(select(Sku).where(Sku.merchant_code == "TS-BLK-L")).cost_price == Decimal("26.00")
    again = run_import([path])
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2)


def test_stocktake_writes_the_difference_to_the_ledger(ctx, ids, tmp_path):
    from app.services import stock

    path = write_xlsx(tmp_path / "count.xlsx", [["仓库", "商家编码", "实盘数量"],
                                                ["杭州仓", "TS-BLK-L", 990], ["HZ", "TS-WHT-M", 1000]])
    res = run_import([path])
    assert res.ok and (res.updated, res.unchanged) == (1, 1), res.issues
    blk = db.session.scalar(select(Sku).where(Sku.merchant_code == "TS-BLK-L"))
    row = db.session.scalar(select(Stock).where(Stock.sku_id == blk.id))
    assert row.on_hand == 990
    mv = db.session.scalars(select(StockMovement).where(StockMovement.movement_type == "stocktake")).all()
    assert [(m.sku_id, m.on_hand_delta) for m in mv] == [(blk.id, -10)]
    assert stock.check_ledger() == []
    assert run_import([path]).unchanged == 2  # counted again: nothing moves
    bad = write_xlsx(tmp_path / "bad.xlsx", [["仓库", "商家编码", "实盘数量"], ["杭州仓", "TS-BLK-L", -1],
                                             ["北京仓", "TS-BLK-L", 3], ["杭州仓", "NOPE", 3]])
    res = run_import([bad])
    msgs = [i.message for i in res.issues]
    assert not res.applied and len(msgs) == 3 and "仓库不存在：北京仓" in msgs[1]


def test_tracking_template_sets_carrier_and_number_with_events(ctx, ids, tmp_path):
    path = write_xlsx(tmp_path / "t.xlsx", [["订单号", "快递公司", "快递单号"],
                                            ["3000000000000000002", "顺丰", "SF100200300"],
                                            ["261120-000000000000002", "YTO", "YT900800700"]])
    res = run_import([path])
    assert res.ok and res.updated == 2, res.issues
    o = db.session.get(Order, ids["orders"]["3000000000000000002"])
    assert o.tracking_number == "SF100200300" and o.carrier_id == ids["carrier"]
    ev = db.session.scalars(select(OrderEvent).where(OrderEvent.order_id == o.id, OrderEvent.action == "edit")).all()
    assert sorted(e.field for e in ev) == ["carrier_id", "tracking_number"] and all(e.source == "import" for e in ev)
    assert run_import([path]).unchanged == 2
    missing = write_xlsx(tmp_path / "m.xlsx", [["订单号", "快递公司", "快递单号"], ["NOPE-1", "顺丰", "SF1"]])
    assert "订单不存在或无权访问" in run_import([missing]).issues[0].message


# --- CLI ------------------------------------------------------------------------------------------
def test_cli_import_creates_the_shop_and_reports(app, tmp_path):
    runner = app.test_cli_runner()
    res = runner.invoke(args=["oms", "import", *map(str, TAOBAO), "--shop", "新淘宝店"])
    assert res.exit_code == 0, res.output
    assert "新增 20" in res.output
    with app.app_context():
        shop = db.session.scalar(select(Shop).where(Shop.name == "新淘宝店"))
        assert shop.platform == "taobao" and count(Order, Order.shop_id == shop.id) == 20
    res = runner.invoke(args=["oms", "import", *map(str, TAOBAO), "--shop", "新淘宝店"])
    assert res.exit_code == 0 and "未变 20" in res.output
    bad = write_xlsx(tmp_path / "bad.xlsx", [OMS_HEADER, oms_row("C1", paid="2026-13-45")])
    res = runner.invoke(args=["oms", "import", str(bad)])
    assert res.exit_code == 1
    assert "无法识别的日期" in res.output and "错误报告：" in res.output
    report = res.output.split("错误报告：")[1].strip().splitlines()[0]
    assert Path(report).exists()
    res = runner.invoke(args=["oms", "import", str(bad), "--shop", "x", "--profile", "jd_orders"])
    assert res.exit_code == 1 and "缺少表头" in res.output


def test_unknown_shop_is_an_error_outside_the_cli(ctx, ids):
    res = run_import(TAOBAO)  # 示例旗舰店 does not exist
    assert not res.applied and "店铺不存在或无权访问：示例旗舰店" in res.issues[0].message
    res = run_import(TAOBAO, shop="B店-拼多多")
    assert "是拼多多店铺，不能导入淘宝/天猫订单" in res.issues[0].message


# --- the page and the job ---------------------------------------------------------------------------
def run_worker(app):
    import redis

    from app.jobs.worker import AppWorker
    from tests.conftest import TEST_REDIS_URL

    AppWorker.flask_app = app
    with app.app_context():
        AppWorker(["default"], connection=redis.Redis.from_url(TEST_REDIS_URL)).work(burst=True)


def test_page_upload_preview_remap_job_and_result(app, login, tmp_path):
    import re

    import redis

    from tests.conftest import TEST_REDIS_URL

    redis.Redis.from_url(TEST_REDIS_URL).flushdb()
    ops = login("ops")
    page = ops.get("/imports/").get_data(as_text=True)
    assert "导入" in page and "订单导入模板" in page and 'name="csrf_token"' in page
    tpl = ops.get("/imports/template/oms_tracking")
    assert tpl.status_code == 200 and openpyxl.load_workbook(io.BytesIO(tpl.data)).active["A1"].value == "店铺"
    header = OMS_HEADER + ["备用"]
    path = write_xlsx(tmp_path / "web.xlsx", [header, oms_row("W1") + ["卖家备注写在这里"],
                                              oms_row("W2", paid="2026-13-45") + [""]])
    with path.open("rb") as fh:
        resp = ops.post("/imports/preview", data={"files": (fh, "web.xlsx"), "mode": "valid", "shop": ""},
                        content_type="multipart/form-data")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "订单导入模板" in html and "W1" in html
    token = re.search(r"/imports/start/([0-9a-f]{32})", html).group(1)
    # the user maps the unknown column 备用 to 卖家备注
    resp = ops.post(f"/imports/start/{token}", data={"map-0-备用": "seller_memo"})
    assert resp.status_code == 302
    job_url = resp.headers["Location"]
    assert "/imports/job/" in job_url
    assert "progress-bar" in ops.get(job_url).get_data(as_text=True)
    run_worker(app)
    status = ops.get(job_url + "/status").json
    assert status["state"] == "finished" and status["progress"] == 100
    result = status["result"]
    assert (result["created"], result["failed"]) == (1, 1) and result["applied"]
    with app.app_context():
        o = db.session.scalar(select(Order).where(Order.platform_order_id == "W1"))
        assert o.seller_memo == "卖家备注写在这里"
    report = ops.get(result["report_url"])
    assert report.status_code == 200
    ws = openpyxl.load_workbook(io.BytesIO(report.data)).active
    assert "无法识别的日期" in ws.cell(row=3, column=4).comment.text
    # the job is the user's own: another user gets 404
    assert login("warehouse").get(job_url + "/status").status_code == 404
    # running the same job twice is safe: everything is unchanged the second time
    with app.app_context():
        from rq.job import Job

        from app.jobs.queue import redis_conn

        from app.jobs.queue import get_queue

        job = Job.fetch(job_url.rsplit("/", 1)[1], connection=redis_conn())
        get_queue(job.origin).enqueue_job(job)
    run_worker(app)
    with app.app_context():
        assert count(Order, Order.platform_order_id == "W1") == 1


def test_page_permissions(login):
    assert login("cs").get("/imports/").status_code in (302, 403)
    assert login("warehouse").get("/imports/").status_code == 200
    assert login("finance").get("/imports/").status_code in (302, 403)
