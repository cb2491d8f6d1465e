"""Excel/CSV export of any grid (services/exports.py): typed xlsx cells, zh headers,
formula injection neutralised, column and row scope and PII masking, CSV in UTF-8
with BOM and GBK, the job path with owner-only downloads, the CLI, cleanup."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import time
from decimal import Decimal
from urllib.parse import quote

import openpyxl
import pytest
import redis
from rq import Queue
from sqlalchemy import select

from app.extensions import db
from app.models import Order
from tests import world
from tests.conftest import TEST_REDIS_URL

ORDER_A1 = "3000000000000000001"
ORDER_A2 = "3000000000000000002"


def _export(client, resource="order", **params):
    for key in ("filters",):
        if key in params and not isinstance(params[key], str):
            params[key] = json.dumps(params[key])
    return client.get(f"/api/v1/{resource}/grid/export", query_string=params)


def _title(app, resource="order") -> str:
    """The grid's title as a zh request shows it (the export's file and sheet name)."""
    from app.services import grid

    with app.test_request_context():
        return str(grid.spec_for(resource).title)


def _labels(app, resource="order") -> dict:
    from app.services import grid

    with app.test_request_context():
        return {c.key: str(c.label) for c in grid.spec_for(resource).columns}


def _spec_columns(app, resource="order"):
    from app.services import grid

    with app.test_request_context():
        return grid.spec_for(resource).columns


def _keys(book) -> dict:
    """column key → position, from the export's _oms sheet (row 3)."""
    return {c.value: i for i, c in enumerate(book["_oms"][3])}


def _book(data: bytes):
    return openpyxl.load_workbook(io.BytesIO(data))


def _sheet_rows(ws) -> list[list]:
    return [[c.value for c in row] for row in ws.iter_rows()]


def _set(app, pid: str, **values):
    """Change an order directly (own app context: requests must not share its session)."""
    with app.app_context():
        order = db.session.scalar(select(Order).where(Order.platform_order_id == pid))
        for k, v in values.items():
            setattr(order, k, v)
        db.session.commit()
        return order.id


def test_xlsx_has_zh_headers_typed_cells_and_round_trip_metadata(app, login, ids):
    _set(app, ORDER_A1, seller_memo="=HYPERLINK(\"http://evil\",\"点我\")", buyer_message="-2+3",
         tracking_number="@SUM(A1)", flag=1)
    resp = _export(login("admin"), format="xlsx", sort="id:asc")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.mimetype.endswith("spreadsheetml.sheet")
    disposition = resp.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    title = _title(app)
    assert "filename*=UTF-8''" + quote(title + "-") in disposition

    book = _book(resp.data)
    ws = book.worksheets[0]
    assert ws.title == title[:31]
    rows = _sheet_rows(ws)
    header = rows[0]
    labels = _labels(app)
    col = _keys(book)
    assert header == ["系统编号"] + [labels[k] for k in list(col)[1:]]
    assert header[:2] == ["系统编号", "订单号"] and "收货人手机" in header
    assert "cost_amount" in col and "paid_amount" in col and "paid_at" in col
    sheet_rows = list(ws.iter_rows())
    by_pid = {r[col["platform_order_id"]]: (r, list(sheet_rows[i])) for i, r in enumerate(rows) if i}
    assert len(by_pid) == 6

    values, cells = by_pid[ORDER_A1]
    assert values[0] == ids["orders"][ORDER_A1]
    # long order numbers are text cells, never 3E+18
    assert cells[col["platform_order_id"]].data_type == "s" and values[col["platform_order_id"]] == ORDER_A1
    # money: a number with the 0.00 format
    paid = cells[col["paid_amount"]]
    assert paid.data_type == "n" and paid.value == 158 and paid.number_format == "0.00"
    # times: real datetimes in Asia/Shanghai (02:00 UTC → 10:00)
    when = cells[col["paid_at"]]
    assert when.is_date and when.value == dt.datetime(2026, 11, 20, 10, 0, 0)
    # choice columns and booleans in zh
    assert values[col["status"]] == "待审核" and values[col["platform"]] == "淘宝"
    assert values[col["is_held"]] == "否" and values[col["flag"]] == "红旗"
    # formula injection: the text is kept, with a leading ', and is a string cell
    assert values[col["seller_memo"]] == "'=HYPERLINK(\"http://evil\",\"点我\")"
    assert values[col["buyer_message"]] == "'-2+3"
    assert values[col["tracking_number"]] == "'@SUM(A1)"
    assert all(c.data_type != "f" for row in ws.iter_rows() for c in row)
    assert by_pid[ORDER_A2][0][col["tracking_number"]] is None

    meta = book["_oms"]
    assert meta.sheet_state == "veryHidden"
    assert meta["A1"].value == "oms-export/1" and meta["A2"].value == "order"
    keys = [c.value for c in meta[3]]
    assert keys[0] == "id" and keys[1:3] == ["platform_order_id", "shop.name"]
    assert len(keys) == len(header)


def test_negative_amounts_stay_numbers_and_only_text_is_neutralised(ctx, tmp_path):
    """The world has no negative amounts (the schema forbids them): the writer itself."""
    from app.services import exports, grid

    spec = grid.spec_for("order")
    cols = [grid.GridColumn(key="paid_amount", label="金额", kind="money"),
            grid.GridColumn(key="flag", label="数量", kind="int"),
            grid.GridColumn(key="seller_memo", label="备注", kind="text")]
    rows = iter([(1, Decimal("-12.30"), -3, "-12.30"), (2, Decimal("0.50"), 7, "\tx"),
                 (3, None, None, "\rcr"), (4, Decimal("1"), 0, "'quoted")])
    path = tmp_path / "n.xlsx"
    assert exports._write_xlsx(spec, cols, rows, str(path), progress=None, total=None, batch=10) == 4
    ws = openpyxl.load_workbook(path).worksheets[0]
    assert ws["B2"].value == -12.3 and ws["B2"].data_type == "n" and ws["B2"].number_format == "0.00"
    assert ws["C2"].value == -3 and ws["C2"].data_type == "n"
    assert ws["D2"].value == "'-12.30"
    assert ws["D3"].value == "'\tx"
    assert ws["B4"].value is None  # empty stays empty
    assert ws["D5"].value == "''quoted"  # so the round trip can undo the prefix exactly
    from python_calamine import CalamineWorkbook  # decodes the _x000D_ escape as Excel does

    cells = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).to_python()
    assert [r[3] for r in cells[1:]] == ["'-12.30", "'\tx", "'\rcr", "''quoted"]
    assert [exports.unneutralise(r[3]) for r in cells[1:]] == ["-12.30", "\tx", "\rcr", "'quoted"]


def test_cs_role_export_has_no_cost_column_only_masked_phones_and_only_shop_a(app, login, ids):
    client = login("cs")
    book = _book(_export(client, format="xlsx").data)
    rows = _sheet_rows(book.worksheets[0])
    header = rows[0]
    cost = _labels(app)["cost_amount"]
    assert cost not in header
    col = _keys(book)
    assert "cost_amount" not in col
    assert {r[col["shop.name"]] for r in rows[1:]} == {"A店-淘宝"} and len(rows) == 4
    phones = [r[col["receiver_phone"]] for r in rows[1:]]
    assert all("****" in p for p in phones)
    assert world.PHONE_A1 not in json.dumps(rows, ensure_ascii=False, default=str)
    assert "张**" in [r[col["receiver_name"]] for r in rows[1:]]

    # asking for the cost column by name does not bring it back
    book = _book(_export(client, format="xlsx", columns="platform_order_id,cost_amount,receiver_phone").data)
    assert list(_keys(book)) == ["id", "platform_order_id", "receiver_phone"]
    text = _export(client, format="csv").data.decode("utf-8-sig")
    assert cost not in text.splitlines()[0] and world.PHONE_A1 not in text
    assert "B店-拼多多" not in text and "C店-京东" not in text

    # finance sees money but no buyers
    keys = _keys(_book(_export(login("finance"), format="xlsx").data))
    assert "cost_amount" in keys and "receiver_phone" not in keys and "receiver_name" not in keys


def test_csv_utf8_bom_and_gbk_decode_with_zh_headers_and_neutralised_cells(app, login, ids):
    _set(app, ORDER_A1, seller_memo="=1+2 发货😀", buyer_message="+86 留言")
    client = login("admin")
    filters = {"shop_id": [ids["shops"]["A"]]}

    utf8 = _export(client, format="csv", filters=filters, sort="id:asc")
    assert utf8.status_code == 200 and utf8.mimetype == "text/csv"
    assert utf8.data.startswith(b"\xef\xbb\xbf")
    assert ".csv" in utf8.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(utf8.data.decode("utf-8-sig"))))
    header = rows[0]
    labels = _labels(app)
    keys = [c.key for c in _spec_columns(app)]
    assert header == ["系统编号"] + [labels[k] for k in keys]
    assert header[:2] == ["系统编号", "订单号"] and "收货人手机" in header
    col = {key: i for i, key in enumerate(["id"] + keys)}
    a1 = next(r for r in rows[1:] if r[col["platform_order_id"]] == ORDER_A1)
    assert a1[col["seller_memo"]] == "'=1+2 发货😀"
    assert a1[col["buyer_message"]] == "'+86 留言"
    assert a1[col["paid_amount"]] == "158.00" and a1[col["paid_at"]] == "2026-11-20 10:00:00"
    assert a1[col["status"]] == "待审核" and a1[col["is_held"]] == "否"
    assert a1[col["receiver_phone"]] == "138****1234"
    assert len(rows) == 4

    gbk = _export(client, format="csv_gbk", filters=filters, sort="id:asc")
    assert gbk.status_code == 200 and "gbk" in gbk.headers["Content-Type"].lower()
    assert not gbk.data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(gbk.data.decode("gbk"))))
    assert rows[0] == header
    a1 = next(r for r in rows[1:] if r[col["platform_order_id"]] == ORDER_A1)
    assert a1[col["seller_memo"]] == "'=1+2 发货?"  # the emoji has no GBK code: replaced, not fatal

    bad = _export(client, format="pdf")
    assert bad.status_code == 422 and "不支持的导出格式" in bad.json["message"]
    bad = _export(client, format="csv", columns="no_such_column")
    assert bad.status_code == 422 and "没有这一列" in bad.json["message"]


def test_export_follows_the_grid_filters_sort_and_columns(login, ids):
    client = login("admin")
    resp = _export(client, format="csv", filters={"tab": "to_audit"}, sort="id:desc",
                   columns="platform_order_id,status")
    rows = list(csv.reader(io.StringIO(resp.data.decode("utf-8-sig"))))
    assert rows[0] == ["系统编号", "订单号", "状态"]
    expected = sorted((ids["orders"][p] for p in (ORDER_A1, "261120-000000000000001", "300000000001")),
                      reverse=True)
    assert [int(r[0]) for r in rows[1:]] == expected
    assert {r[2] for r in rows[1:]} == {"待审核"}
    # other entities export the same way
    sku = _export(client, resource="sku", format="xlsx")
    assert sku.status_code == 200
    book = _book(sku.data)
    assert book["_oms"]["A2"].value == "sku" and len(_sheet_rows(book.worksheets[0])) == 3


def _run_export_worker(app):
    from app.jobs.worker import AppWorker

    AppWorker.flask_app = app
    AppWorker(["export"], connection=redis.Redis.from_url(TEST_REDIS_URL)).work(burst=True)


def test_large_export_runs_as_a_job_and_only_its_owner_or_an_admin_downloads_it(app, login, ids, tmp_path,
                                                                                 monkeypatch):
    from rq.job import Job

    monkeypatch.setitem(app.config, "OMS_INSTANCE_DIR", str(tmp_path))
    monkeypatch.setitem(app.config, "OMS_EXPORT_INLINE_MAX", 2)
    conn = redis.Redis.from_url(TEST_REDIS_URL)
    Queue("export", connection=conn).empty()
    cs = login("cs")
    # two rows: still inline
    small = _export(cs, format="csv", filters={"status": ["to_audit", "to_ship"]})
    assert small.status_code == 200
    resp = _export(cs, format="xlsx")
    assert resp.status_code == 202, resp.get_data(as_text=True)
    job_id = resp.json["job_id"]
    assert resp.json["filename"].startswith(_title(app) + "-")
    _run_export_worker(app)
    job = Job.fetch(job_id, connection=conn)
    assert job.get_status() == "finished", job.latest_result().exc_string if job.latest_result() else ""
    result = job.return_value()
    assert result["rows"] == 3 and result["filename"] == resp.json["filename"]
    assert job.meta["progress"] == 100
    url = result["download_url"]
    assert url.startswith("/api/v1/order/grid/export/download/")
    files = list((tmp_path / "exports").iterdir())
    assert all(oct(f.stat().st_mode & 0o777) == "0o600" for f in files)

    got = cs.get(url)
    assert got.status_code == 200
    assert "filename*=UTF-8''" + quote(result["filename"]) in got.headers["Content-Disposition"]
    # the job ran with cs's row scope and column grant
    book = _book(got.data)
    rows, col = _sheet_rows(book.worksheets[0]), _keys(book)
    assert "cost_amount" not in col and len(rows) == 4
    assert all("****" in r[col["receiver_phone"]] for r in rows[1:])
    assert {r[col["shop.name"]] for r in rows[1:]} == {"A店-淘宝"}

    assert login("cs_b").get(url).status_code == 404
    assert login("ops").get(url).status_code == 404
    assert login("admin").get(url).status_code == 200
    assert cs.get("/api/v1/order/grid/export/download/" + "0" * 32).status_code == 404
    assert cs.get("/api/v1/order/grid/export/download/..%2F..%2Fsecret_key").status_code == 404
    # the same file id under another grid is not served either
    assert cs.get(url.replace("/order/", "/customer/")).status_code in (403, 404)


def test_cleanup_removes_exports_older_than_seven_days(app, tmp_path, monkeypatch):
    from app.jobs.exports import cleanup_exports
    from app.services import exports

    monkeypatch.setitem(app.config, "OMS_INSTANCE_DIR", str(tmp_path))
    with app.app_context():
        folder = exports.exports_dir()
        old, new = folder / ("a" * 32 + ".xlsx"), folder / ("b" * 32 + ".xlsx")
        for f in (old, new, folder / ("a" * 32 + ".json")):
            f.write_bytes(b"x")
        eight_days = time.time() - 8 * 86400
        os.utime(old, (eight_days, eight_days))
        os.utime(folder / ("a" * 32 + ".json"), (eight_days, eight_days))
        assert cleanup_exports() == 2
        assert sorted(p.name for p in folder.iterdir()) == [new.name]


def test_cli_exports_as_a_user_with_filters_and_columns(app, ids, tmp_path):
    runner = app.test_cli_runner()
    out = tmp_path / "orders.xlsx"
    result = runner.invoke(args=["oms", "export", "order", "--out", str(out), "--user", "cs"])
    assert result.exit_code == 0, result.output
    assert "已导出 3 行" in result.output
    book = openpyxl.load_workbook(out)
    rows, col = _sheet_rows(book.worksheets[0]), _keys(book)
    assert "cost_amount" not in col and len(rows) == 4
    assert all("****" in r[col["receiver_phone"]] for r in rows[1:])

    out = tmp_path / "audit.csv"
    result = runner.invoke(args=["oms", "export", "order", "--out", str(out), "--filter", "tab=to_audit",
                                 "--filter", f"shop_id=[{ids['shops']['A']},{ids['shops']['C']}]",
                                 "--columns", "platform_order_id,cost_amount"])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(out.read_bytes().decode("utf-8-sig"))))
    labels = _labels(app)
    assert rows[0] == ["系统编号", "订单号", labels["cost_amount"]]  # admin (the default) sees the cost
    assert sorted(r[1] for r in rows[1:]) == sorted([ORDER_A1, "300000000001"])

    out = tmp_path / "gbk.csv"
    result = runner.invoke(args=["oms", "export", "order", "--out", str(out), "--format", "csv_gbk",
                                 "--filter", f"platform_order_id={ORDER_A1}"])
    assert result.exit_code == 0, result.output
    text = out.read_bytes().decode("gbk")
    assert text.startswith("系统编号,订单号") and ORDER_A1 in text and "已导出 1 行" in result.output

    result = runner.invoke(args=["oms", "export", "order", "--out", str(tmp_path / "x.xlsx"),
                                 "--filter", "cost_amount=1", "--user", "cs"])
    assert result.exit_code != 0 and "不能按「cost_amount」筛选" in result.output
    assert not (tmp_path / "x.xlsx").exists() and not (tmp_path / "x.xlsx.part").exists()
    result = runner.invoke(args=["oms", "export", "order", "--out", str(tmp_path / "y.xlsx"), "--user", "nobody"])
    assert result.exit_code != 0 and "用户不存在：nobody" in result.output


def test_export_needs_read_permission(app, login, ids):
    # warehouse cannot read customers? every role reads orders; an anonymous client cannot
    anon = app.test_client()
    assert anon.get("/api/v1/order/grid/export").status_code == 401
