"""Round trip (services/roundtrip.py): a grid exported to xlsx, edited in Excel (here
openpyxl, which keeps the cells typed as Excel does) and imported back applies only
the changed cells, after a diff preview; non-editable and masked columns, rows of
other shops and rows changed since the preview are reported, never applied."""
from __future__ import annotations

import io
import json

import openpyxl
from sqlalchemy import func, select

from app.extensions import db
from app.models import Carrier, Order, OrderEvent

ORDER_A1 = "3000000000000000001"
ORDER_A2 = "3000000000000000002"
ORDER_B1 = "261120-000000000000001"


def _export(client, resource="order", **params) -> bytes:
    if "filters" in params:
        params["filters"] = json.dumps(params["filters"])
    resp = client.get(f"/api/v1/{resource}/grid/export", query_string=dict(params, format="xlsx"))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.data


class Sheet:
    """An exported workbook opened for editing, cells addressed by (row id, column key)."""

    def __init__(self, data: bytes):
        self.book = openpyxl.load_workbook(io.BytesIO(data))
        self.ws = self.book.worksheets[0]
        self.keys = {c.value: i + 1 for i, c in enumerate(self.book["_oms"][3])}
        self.rows = {self.ws.cell(r, 1).value: r for r in range(2, self.ws.max_row + 1)}

    def cell(self, pk: int, key: str):
        return self.ws.cell(self.rows[pk], self.keys[key])

    def set(self, pk: int, key: str, value) -> None:
        self.cell(pk, key).value = value

    def save(self) -> bytes:
        buf = io.BytesIO()
        self.book.save(buf)
        return buf.getvalue()


def _preview(client, data: bytes, resource="order", name="订单.xlsx"):
    return client.post(f"/api/v1/{resource}/grid/roundtrip/preview",
                       data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data")


def _apply(client, token, resource="order"):
    return client.post(f"/api/v1/{resource}/grid/roundtrip/apply", json={"token": token})


def _labels(app) -> dict:
    from app.services import grid

    with app.test_request_context():
        return {c.key: str(c.label) for c in grid.spec_for("order").columns}


def _orders(app) -> dict:
    with app.app_context():
        return {o.platform_order_id: {"memo": o.seller_memo, "tracking": o.tracking_number, "flag": o.flag,
                                      "carrier_id": o.carrier_id, "paid": o.paid_amount,
                                      "phone": o.receiver_phone, "updated": o.updated_at}
                for o in db.session.scalars(select(Order))}


def _edit_events(app) -> list[tuple]:
    with app.app_context():
        rows = db.session.execute(select(Order.platform_order_id, OrderEvent.field, OrderEvent.old_value,
                                         OrderEvent.new_value, OrderEvent.user_id)
                                  .join(Order, Order.id == OrderEvent.order_id)
                                  .where(OrderEvent.action == "edit").order_by(OrderEvent.id)).all()
        return [tuple(r) for r in rows]


def test_untouched_export_previews_no_change(app, login):
    client = login("ops")
    resp = _preview(client, _export(client))
    assert resp.status_code == 200, resp.json
    body = resp.json
    assert body["changes"] == [] and body["errors"] == []
    assert body["unchanged_rows"] == 6 and body["rows"] == 6 and body["resource"] == "order"
    # saved again by a spreadsheet program (typed numbers and dates come back): still nothing
    resp = _preview(client, Sheet(_export(client)).save())
    assert resp.json["changes"] == [] and resp.json["errors"] == [] and resp.json["unchanged_rows"] == 6


def test_two_edited_cells_preview_old_to_new_and_apply_only_those(app, login, ids):
    client = login("ops")
    a1, a2 = ids["orders"][ORDER_A1], ids["orders"][ORDER_A2]
    before = _orders(app)
    sheet = Sheet(_export(client))
    sheet.set(a1, "seller_memo", "请发顺丰")
    sheet.set(a2, "tracking_number", "SF1234567890123")
    resp = _preview(client, sheet.save())
    assert resp.status_code == 200, resp.json
    body = resp.json
    labels = _labels(app)
    changes = sorted(((c["id"], c["key"], c["label"], c["old"], c["new"]) for c in body["changes"]))
    assert changes == sorted([
        (a1, "seller_memo", labels["seller_memo"], None, "请发顺丰"),
        (a2, "tracking_number", labels["tracking_number"], None, "SF1234567890123"),
    ])
    assert body["errors"] == [] and body["unchanged_rows"] == 4
    # nothing is written by the preview
    assert _orders(app) == before and _edit_events(app) == []

    resp = _apply(client, body["token"])
    assert resp.status_code == 200, resp.json
    out = resp.json
    assert out["applied"] == 2 and out["failed"] == 0 and out["conflicts"] == 0
    assert sorted(r["id"] for r in out["results"]) == sorted([a1, a2]) and all(r["ok"] for r in out["results"])

    after = _orders(app)
    assert after[ORDER_A1]["memo"] == "请发顺丰" and after[ORDER_A2]["tracking"] == "SF1234567890123"
    for pid in before:
        if pid not in (ORDER_A1, ORDER_A2):
            assert after[pid] == before[pid], pid
    assert {k: v for k, v in after[ORDER_A1].items() if k not in ("memo", "updated")} == \
        {k: v for k, v in before[ORDER_A1].items() if k not in ("memo", "updated")}
    with app.app_context():
        ops_id = db.session.scalar(select(func.min(OrderEvent.user_id)).where(OrderEvent.action == "edit"))
    assert _edit_events(app) == [(ORDER_A1, "seller_memo", None, "请发顺丰", ops_id),
                                 (ORDER_A2, "tracking_number", None, "SF1234567890123", ops_id)] or \
        sorted(_edit_events(app)) == sorted([(ORDER_A1, "seller_memo", None, "请发顺丰", ops_id),
                                             (ORDER_A2, "tracking_number", None, "SF1234567890123", ops_id)])
    # a token is used once
    assert _apply(client, body["token"]).status_code == 404


def test_non_editable_and_masked_cells_are_reported_not_applied(app, login, ids):
    client = login("ops")
    a1, a2 = ids["orders"][ORDER_A1], ids["orders"][ORDER_A2]
    before = _orders(app)
    labels = _labels(app)
    sheet = Sheet(_export(client))
    sheet.set(a1, "paid_amount", 1.5)            # money: not editable
    sheet.set(a1, "receiver_phone", "13900000000")  # masked PII: never through an import
    sheet.set(a1, "status", "已完成")             # status moves only through actions
    sheet.set(a2, "carrier.name", "顺丰速运")       # a relation, by name
    sheet.set(a2, "flag", "红旗")                  # a choice, by its zh label
    sheet.set(a2, "tracking_number", 123456789012)  # typed as a number in Excel
    resp = _preview(client, sheet.save())
    body = resp.json
    errors = {(e["column"], e["message"]) for e in body["errors"]}
    assert errors == {(labels[k], f"「{labels[k]}」不能通过导入修改")
                      for k in ("paid_amount", "receiver_phone", "status")}
    assert all(e["row"] == sheet.rows[a1] for e in body["errors"])
    changes = {(c["id"], c["key"]): (c["old"], c["new"]) for c in body["changes"]}
    assert changes == {(a2, "carrier.name"): (None, "顺丰速运"), (a2, "flag"): ("无旗帜", "红旗"),
                       (a2, "tracking_number"): (None, "123456789012")}

    out = _apply(client, body["token"]).json
    assert out["applied"] == 1 and out["results"] == [{"id": a2, "ok": True}]
    after = _orders(app)
    assert after[ORDER_A1] == before[ORDER_A1]
    with app.app_context():
        sf = db.session.scalar(select(Carrier.id).where(Carrier.code == "SF"))
    assert (after[ORDER_A2]["carrier_id"], after[ORDER_A2]["flag"], after[ORDER_A2]["tracking"]) == \
        (sf, 1, "123456789012")

    # an unknown carrier name is an error of that cell
    sheet = Sheet(_export(client))
    sheet.set(a1, "carrier.name", "不存在的快递")
    body = _preview(client, sheet.save()).json
    assert body["changes"] == []
    assert body["errors"] == [{"row": sheet.rows[a1], "column": labels["carrier.name"],
                               "message": f"「{labels['carrier.name']}」没有「不存在的快递」这个选项"}]


def test_a_cell_changed_in_the_database_since_the_preview_is_not_overwritten(app, login, ids):
    client = login("ops")
    a1, a2 = ids["orders"][ORDER_A1], ids["orders"][ORDER_A2]
    sheet = Sheet(_export(client))
    sheet.set(a1, "seller_memo", "导入的备注")
    sheet.set(a2, "seller_memo", "另一单的备注")
    body = _preview(client, sheet.save()).json
    assert len(body["changes"]) == 2
    # meanwhile a colleague edits A1 in the grid
    other = login("admin")
    assert other.post("/api/v1/order/grid/edit", json={"changes": [
        {"id": a1, "key": "seller_memo", "value": "同事刚改的"}]}).json["results"][0]["ok"]

    out = _apply(client, body["token"]).json
    results = {r["id"]: r for r in out["results"]}
    assert out["applied"] == 1 and out["conflicts"] == 1
    assert results[a2]["ok"] is True
    assert results[a1]["ok"] is False and results[a1]["conflict"] is True
    assert "同事刚改的" in results[a1]["message"]
    after = _orders(app)
    assert after[ORDER_A1]["memo"] == "同事刚改的" and after[ORDER_A2]["memo"] == "另一单的备注"


def test_rows_of_other_shops_are_refused_row_by_row_and_hidden_columns_ignored(app, login, ids):
    admin_file = Sheet(_export(login("admin")))
    a1, b1 = ids["orders"][ORDER_A1], ids["orders"][ORDER_B1]
    admin_file.set(a1, "seller_memo", "客服改的")
    admin_file.set(a1, "cost_amount", 999)  # cs cannot read the cost: not compared, not applied
    admin_file.set(b1, "seller_memo", "别的店")
    cs = login("cs")
    body = _preview(cs, admin_file.save()).json
    assert [(c["id"], c["key"], c["new"]) for c in body["changes"]] == [(a1, "seller_memo", "客服改的")]
    refused = {e["row"]: e["message"] for e in body["errors"]}
    other_rows = {pk for pid, pk in ids["orders"].items() if not pid.startswith("3000000000000")}
    assert set(refused) == {admin_file.rows[pk] for pk in other_rows}
    assert refused[admin_file.rows[b1]] == f"系统编号 {b1} 的记录不存在或无权访问，这一行未导入"
    out = _apply(cs, body["token"]).json
    assert out["applied"] == 1
    after = _orders(app)
    assert after[ORDER_A1]["memo"] == "客服改的" and after[ORDER_B1]["memo"] is None


def test_preview_token_belongs_to_its_user(app, login, ids):
    cs = login("cs")
    sheet = Sheet(_export(cs))
    sheet.set(ids["orders"][ORDER_A1], "seller_memo", "x")
    token = _preview(cs, sheet.save()).json["token"]
    assert _apply(login("cs_b"), token).status_code == 404
    assert _apply(cs, token, resource="customer").status_code in (403, 404)
    assert _apply(cs, token).json["applied"] == 1
    assert _apply(cs, "nope").status_code == 404
    # finance may read but not edit orders
    assert _preview(login("finance"), sheet.save()).status_code in (401, 403)


def test_files_that_are_not_this_grids_export_are_refused_in_chinese(app, login):
    client = login("admin")
    plain = openpyxl.Workbook()
    plain.active.append(["订单号", "卖家备注"])
    plain.active.append(["3000000000000000001", "x"])
    buf = io.BytesIO()
    plain.save(buf)
    resp = _preview(client, buf.getvalue())
    assert resp.status_code == 422 and "缺少 _oms 工作表" in resp.json["message"]

    resp = _preview(client, _export(client, resource="sku"))
    assert resp.status_code == 422 and "不能导入到" in resp.json["message"]

    resp = _preview(client, "订单号,备注\n1,x\n".encode("gbk"), name="订单.csv")
    assert resp.status_code == 422 and "不是 xlsx 文件" in resp.json["message"]

    sheet = Sheet(_export(client))
    sheet.ws.delete_cols(3)
    resp = _preview(client, sheet.save())
    assert resp.status_code == 422 and "请不要增删或移动列" in resp.json["message"]

    resp = client.post("/api/v1/order/grid/roundtrip/preview", data={}, content_type="multipart/form-data")
    assert resp.status_code == 422 and resp.json["message"] == "请选择要导入的 xlsx 文件"


def test_round_trip_service_normalises_excel_values(ctx):
    """Excel's typed values equal the stored ones: 12.3 vs 12.30, ints as floats, empty vs None."""
    import datetime as dt
    from decimal import Decimal

    from app.services import grid, roundtrip

    money = grid.GridColumn(key="paid_amount", label="金额", kind="money")
    text = grid.GridColumn(key="tracking_number", label="单号", kind="text")
    when = grid.GridColumn(key="paid_at", label="时间", kind="time")
    yes = grid.GridColumn(key="is_held", label="挂起", kind="bool")
    assert roundtrip.canon_file(money, 12.3) == roundtrip.canon_db(money, Decimal("12.30"))
    assert roundtrip.canon_file(money, "¥1,234.5") == Decimal("1234.50")
    assert roundtrip.canon_file(money, -0.5) == roundtrip.canon_db(money, Decimal("-0.50"))
    assert roundtrip.canon_file(text, "") is None and roundtrip.canon_db(text, None) is None
    assert roundtrip.canon_file(text, 3000000000001.0) == "3000000000001"
    assert roundtrip.canon_file(text, "'=1+2") == "=1+2"
    utc = dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.timezone.utc)
    assert roundtrip.canon_file(when, dt.datetime(2026, 11, 20, 9, 59, 59, 999_600)) == \
        roundtrip.canon_db(when, utc)
    assert roundtrip.canon_file(when, "2026-11-20 10:00:00") == roundtrip.canon_db(when, utc)
    assert roundtrip.canon_file(yes, "否") is False and roundtrip.canon_file(yes, True) is True
