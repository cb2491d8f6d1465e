"""快递考核 (issue #6 item 7): a generated history with known answers, on SQLite and
PostgreSQL; the rate card and the carrier bill (bill beats rate card); the
recommendation and its evidence where a carrier is chosen; row scope; bad bill input."""
from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal

import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select

from app.extensions import db
from app.models import Carrier, Shop
from app.models.scorecard import CarrierBillLine, CarrierRate
from app.models.tracking import LogisticsException, Parcel
from app.models.types import utcnow
from app.services import carrier_scorecard as sc
from app.services import orders
from app.services.scope import as_scope
from tests.logistics_helpers import user_id

UTC = dt.timezone.utc
RULES = sc.Rules(min_parcels=10, max_exception_rate=10.0)

# (carrier, province, shop, [hours to sign, None = not signed], parcels with an exception, SKU quantities)
HISTORY = [
    ("ZTO", "浙江省", "A", [20, 22, 24, 26, 28, 30, 32, 34, 36, 38], 1, None),
    ("YTO", "浙江省", "A", [10, 12, 14, 16, 18, 20, 22, 24, 26, 28], 2, None),
    ("SF", "浙江省", "A", [8, 9, 10, 11, 12, 13, 14, 15, None, None], 0, None),
    ("ZTO", "新疆维吾尔自治区", "A", [60, 70, 80], 0, [1, 4, 10]),
    ("YTO", "新疆", "A", [50, 52, 54, 56, 58, 60, 62, 64, 66, 68], 0, None),
    ("SF", "新疆维吾尔自治区", "A", [40, 42, 44, 46, 48, 50, 52, 54, 56, 58], 0, None),
    ("JD", "浙江省", "B", [5, 5, 5, 5], 0, None),  # shop B: not seen by shop A's 客服
]
SHOP_NAMES = {"A": "A店-淘宝", "B": "B店-拼多多"}


def _carrier(code):
    return db.session.scalar(select(Carrier).where(Carrier.code == code))


def build_history(now=None) -> dict:
    """Orders + parcels (+ 物流异常) as listed in HISTORY, shipped 1–5 days ago; the rate
    card; an old parcel outside the 30 days. Returns {carrier code: [tracking numbers]}."""
    now = now or utcnow()
    shops = {k: db.session.scalar(select(Shop).where(Shop.name == v)) for k, v in SHOP_NAMES.items()}
    numbers: dict = {}
    seq = 0
    for code, province, shop, hours, exceptions, qtys in HISTORY:
        carrier = _carrier(code)
        for i, h in enumerate(hours):
            seq += 1
            qty = qtys[i] if qtys else 1
            order = orders.create_order(shops[shop], {
                "platform_order_id": f"SC-{seq:04d}", "status": "pending_payment", "receiver_name": "测试",
                "receiver_phone": "13700000000", "receiver_province": province, "receiver_city": "某市",
                "receiver_address": "某路1号", "paid_amount": "79.00",
                "lines": [{"platform_line_id": "1", "merchant_code": "TS-BLK-L", "title": "纯棉T恤", "quantity": qty,
                           "price": "79.00", "paid_amount": "79.00"}],
            }, source="import")
            db.session.flush()
            shipped = now - dt.timedelta(days=5) + dt.timedelta(minutes=seq)
            number = f"{code}{seq:08d}"
            parcel = Parcel(order_id=order.id, carrier_id=carrier.id, tracking_number=number,
                            state="signed" if h is not None else "in_transit", shipped_at=shipped,
                            signed_at=shipped + dt.timedelta(hours=h) if h is not None else None)
            db.session.add(parcel)
            db.session.flush()
            if i < exceptions:
                for reason in ("stalled", "problem"):  # two entries: still one parcel with an exception
                    db.session.add(LogisticsException(parcel_id=parcel.id, order_id=order.id, reason=reason,
                                                      status="resolved", detected_at=shipped))
            numbers.setdefault(code, []).append(number)
    # outside the period: must not count
    old = orders.create_order(shops["A"], {
        "platform_order_id": "SC-OLD", "status": "pending_payment", "receiver_province": "浙江省",
        "receiver_name": "测试", "receiver_phone": "13700000000", "paid_amount": "1.00",
        "lines": [{"platform_line_id": "1", "merchant_code": "TS-BLK-L", "title": "T", "quantity": 1,
                   "price": "1.00", "paid_amount": "1.00"}]}, source="import")
    db.session.flush()
    shipped = now - dt.timedelta(days=40)
    db.session.add(Parcel(order_id=old.id, carrier_id=_carrier("ZTO").id, tracking_number="ZTO-OLD", state="signed",
                          shipped_at=shipped, signed_at=shipped + dt.timedelta(hours=500)))
    # 运费价目: ZTO 浙江 5 + 2/kg, ZTO elsewhere 8 + 3/kg, YTO flat 4 everywhere, SF 浙江 12 flat-ish
    db.session.add_all([
        CarrierRate(carrier_id=_carrier("ZTO").id, province="浙江", first_weight_kg=Decimal("1"),
                    first_price=Decimal("5.00"), additional_price=Decimal("2.00")),
        CarrierRate(carrier_id=_carrier("ZTO").id, province="", first_weight_kg=Decimal("1"),
                    first_price=Decimal("8.00"), additional_price=Decimal("3.00")),
        CarrierRate(carrier_id=_carrier("YTO").id, province="", flat_price=Decimal("4.00"),
                    first_weight_kg=Decimal("1"), additional_price=Decimal("0")),
        CarrierRate(carrier_id=_carrier("SF").id, province="浙江", first_weight_kg=Decimal("1"),
                    first_price=Decimal("12.00"), additional_price=Decimal("6.00")),
    ])
    db.session.commit()
    return numbers


def _rows(rows):
    return {(r.carrier_short, r.province): r for r in rows}


def _bill_csv(tmp_path, lines, name="bill.csv"):
    path = tmp_path / name
    path.write_text("快递公司,快递单号,重量(kg),金额\n" + "\n".join(",".join(x) for x in lines) + "\n",
                    encoding="utf-8")
    return path


def check_known_answers(rows):
    got = _rows(rows)
    zto, yto, sf = got[("中通", "浙江")], got[("圆通", "浙江")], got[("顺丰", "浙江")]
    assert (zto.parcels, zto.signed, zto.avg_hours, zto.p90_hours) == (10, 10, pytest.approx(29), pytest.approx(36))
    assert zto.exception_parcels == 1 and zto.exception_rate == pytest.approx(0.1)
    assert zto.cost_per_parcel == Decimal("5.00")  # 0.3 kg: first weight only
    assert (yto.avg_hours, yto.p90_hours, yto.exception_rate) == (pytest.approx(19), pytest.approx(26),
                                                                  pytest.approx(0.2))
    assert yto.cost_per_parcel == Decimal("4.00")  # flat, from the rate without province
    # SF: 8 of 10 signed; the unsigned ones count as parcels but not in the times
    assert (sf.parcels, sf.signed, sf.avg_hours) == (10, 8, pytest.approx(11.5))
    assert sf.p90_hours == pytest.approx(15)  # ⌈0.9·8⌉ = 8th of 8
    assert sf.cost_per_parcel == Decimal("12.00")
    xz_zto = got[("中通", "新疆")]
    assert xz_zto.parcels == 3 and xz_zto.avg_hours == pytest.approx(70) and xz_zto.p90_hours == pytest.approx(80)
    # 0.3 kg → 8; 1.2 kg → 8 + 3; 3.0 kg → 8 + 2 × 3 (the rate without province)
    assert xz_zto.cost_per_parcel == Decimal("11.00")
    assert got[("圆通", "新疆")].avg_hours == pytest.approx(59)  # "新疆" and "新疆维吾尔自治区" are one province
    assert got[("圆通", "新疆")].p90_hours == pytest.approx(66)
    assert got[("顺丰", "新疆")].cost_per_parcel is None and got[("顺丰", "新疆")].cost_parcels == 0


def test_known_answers_and_recommendation(ctx):
    build_history()
    period = sc.last_days(30)
    with as_scope(None):
        rows = sc.scorecard(period, shop_ids=[db.session.scalar(select(Shop.id).where(Shop.name == "A店-淘宝"))])
    check_known_answers(rows)
    assert ("京东", "浙江") not in _rows(rows)  # shop filter
    recs = sc.recommend(rows, period, RULES)
    # 浙江: YTO is faster but 20% exceptions; SF fastest but 12.00 > median 5.00; ZTO it is.
    assert recs["浙江"].carrier_name == "中通快递"
    assert recs["浙江"].evidence == "近30天 浙江: 中通 均时 29h, 异常 10.0%"
    assert recs["浙江"].cost_limit == Decimal("5.00")
    # 新疆: ZTO has too few parcels, SF no known cost (median of known = 4.00): YTO.
    assert recs["新疆"].evidence == "近30天 新疆: 圆通 均时 59h, 异常 0.0%"
    # a fixed cost limit instead of the median: SF (12.00) within 15 → the fastest in 浙江
    recs = sc.recommend(rows, period, sc.Rules(min_parcels=10, max_exception_rate=10.0, max_cost=Decimal("15")))
    assert recs["浙江"].evidence == "近30天 浙江: 顺丰 均时 12h, 异常 0.0%"  # 11.5 rounds half up
    assert "新疆" in recs and recs["新疆"].carrier_name == "圆通速递"  # SF has no cost in 新疆: excluded
    # stricter exception limit: nobody in 浙江 qualifies except SF (cost over the median)
    recs = sc.recommend(rows, period, sc.Rules(min_parcels=10, max_exception_rate=5.0))
    assert "浙江" not in recs


def test_rate_price():
    rate = CarrierRate(first_weight_kg=Decimal("1"), first_price=Decimal("5.00"), additional_price=Decimal("2.00"))
    assert [sc.rate_price(rate, g) for g in (0, 1000, 1001, 2300, 3000)] == [
        Decimal("5.00"), Decimal("5.00"), Decimal("7.00"), Decimal("9.00"), Decimal("9.00")]
    flat = CarrierRate(flat_price=Decimal("3.50"), first_weight_kg=Decimal("1"), additional_price=Decimal("9"))
    assert sc.rate_price(flat, 50_000) == Decimal("3.50")
    assert sc.carrier_short("中通快递") == "中通" and sc.carrier_short("顺丰速运") == "顺丰"
    assert sc.carrier_short("EMS") == "EMS" and sc.carrier_short("邮政快递包裹") == "邮政"
    assert sc.province_key("黑龙江省") == "黑龙江" and sc.province_key("内蒙古自治区") == "内蒙古"


def test_bill_overrides_rate_card(ctx, tmp_path):
    numbers = build_history()
    sf = numbers["SF"][:5]  # five of SF's 浙江 parcels billed at 20.00
    path = _bill_csv(tmp_path, [("顺丰速运", n, "0.5", "20.00") for n in sf])
    result = sc.import_bill(path, "bill.csv", user_id=user_id("admin"))
    assert result["applied"] and result["created"] == 5 and not result["error_count"], result
    with as_scope(None):
        rows = _rows(sc.scorecard(sc.last_days(30)))
    assert rows[("顺丰", "浙江")].billed_parcels == 5
    assert rows[("顺丰", "浙江")].cost_per_parcel == Decimal("16.00")  # (5 × 20 + 5 × 12) / 10
    # a later bill replaces the line (no carrier column: the parcel's carrier)
    path = tmp_path / "bill2.csv"
    path.write_text("快递单号,金额\n" + f"{sf[0]},30.00\n", encoding="utf-8")
    result = sc.import_bill(path, "bill2.csv", user_id=user_id("admin"))
    assert result["applied"] and result["updated"] == 1
    line = db.session.scalar(select(CarrierBillLine).where(CarrierBillLine.tracking_number == sf[0]))
    assert line.amount == Decimal("30.00") and line.weight_kg is None
    with as_scope(None):
        rows = _rows(sc.scorecard(sc.last_days(30)))
    assert rows[("顺丰", "浙江")].cost_per_parcel == Decimal("17.00")


def test_bad_bill_input_applies_nothing(ctx, tmp_path):
    numbers = build_history()
    good = numbers["SF"][0]
    path = _bill_csv(tmp_path, [
        ("顺丰速运", good, "0.5", "20.00"),        # row 2: fine
        ("顺丰速运", "NOPE123", "0.5", "20.00"),   # row 3: unknown number
        ("顺丰速运", numbers["SF"][1], "0.5", "abc"),  # row 4: bad amount
        ("顺丰速运", numbers["SF"][2], "0.5", "-3"),   # row 5: negative
        ("中通快递", numbers["SF"][3], "0.5", "3"),   # row 6: another carrier's parcel
        ("顺丰速运", good, "0.5", "21.00"),        # row 7: duplicate
        ("顺丰速运", numbers["SF"][4], "", ""),     # row 8: no amount
    ])
    result = sc.import_bill(path, "bill.csv", user_id=user_id("admin"))
    assert not result["applied"]
    errors = "\n".join(result["errors"])
    assert "第 3 行「快递单号」：快递单号不存在或无权访问：NOPE123" in errors
    assert "第 4 行「金额」：不是数字：abc" in errors
    assert "第 5 行「金额」：金额不能为负数" in errors
    assert "第 6 行「快递公司」" in errors and "顺丰速运" in errors
    assert "第 7 行「快递单号」" in errors and "与第 2 行重复" in errors
    assert "第 8 行「金额」：金额不能为空" in errors
    assert "未导入任何数据" in result["summary"]
    assert db.session.scalar(select(func.count(CarrierBillLine.id))) == 0


def test_bill_import_is_scoped(app, tmp_path):
    """A user limited to shop A cannot bill shop B's parcels: the number is not found."""
    with app.app_context():
        numbers = build_history()
        path = _bill_csv(tmp_path, [("京东快递", numbers["JD"][0], "1", "9.00")])
        result = sc.import_bill(path, "bill.csv", user_id=user_id("ops_a"))
        assert not result["applied"] and "快递单号不存在或无权访问" in result["errors"][0]
        assert db.session.scalar(select(func.count(CarrierBillLine.id))) == 0


@pytest.fixture
def rec_config(app, monkeypatch):
    monkeypatch.setitem(app.config, "OMS_RECOMMEND_MIN_PARCELS", 10)
    monkeypatch.setitem(app.config, "OMS_RECOMMEND_MAX_EXCEPTION_RATE", 10.0)
    return app


def test_page_scope_and_export(rec_config, login):
    app = rec_config
    with app.app_context():
        build_history()
    admin = login("admin")
    page = admin.get("/carrier-scorecard/").get_data(as_text=True)
    assert "京东快递" in page and "中通快递" in page and "<th>每件费用（元）</th>" in page
    assert "近30天 浙江: 中通 均时 29h, 异常 10.0%" in page
    cs = login("cs")  # 客服 of shop A
    resp = cs.get("/carrier-scorecard/")
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    assert "中通快递" in page and "京东快递" not in page  # shop B's parcels are not theirs
    assert "<th>每件费用（元）</th>" not in page  # no finance columns for 客服
    resp = cs.get("/carrier-scorecard/export")
    assert resp.status_code == 200
    ws = load_workbook(io.BytesIO(resp.data)).active
    values = [tuple(row) for row in ws.iter_rows(values_only=True)]
    assert values[1][:3] == ("快递公司", "目的省份", "包裹数")
    assert "每件费用（元）" not in values[1]
    body = [v for v in values[2:] if v[0]]
    assert ("中通快递", "浙江", 10) in [tuple(v[:3]) for v in body]
    assert not any(v[0] == "京东快递" for v in body)
    resp = admin.get("/carrier-scorecard/export?shop=&from=2000-01-01&to=2000-01-31")
    assert resp.status_code == 200 and load_workbook(io.BytesIO(resp.data)).active.max_row == 2  # title + header
    # bad filter: a zh error, no traceback
    page = admin.get("/carrier-scorecard/?from=2026-13-01").get_data(as_text=True)
    assert "不是有效的日期" in page
    # the warehouse role may read it, without costs; cs_b sees only shop B (JD)
    page = login("cs_b").get("/carrier-scorecard/").get_data(as_text=True)
    assert "京东快递" in page and "中通快递" not in page


def test_recommendation_where_a_carrier_is_chosen(rec_config, login):
    app = rec_config
    with app.app_context():
        build_history()
        zj_order = db.session.scalar(select(Parcel.order_id).where(Parcel.tracking_number.like("ZTO%"))
                                     .order_by(Parcel.id))
    admin = login("admin")
    evidence = "近30天 浙江: 中通 均时 29h, 异常 10.0%"
    # the order page
    page = admin.get(f"/orderview/show/{zj_order}").get_data(as_text=True)
    assert "推荐快递" in page and evidence in page
    # the order edit page, where the carrier is chosen
    page = admin.get(f"/orderview/edit/{zj_order}").get_data(as_text=True)
    assert "推荐快递" in page and evidence in page
    # the grid's carrier editor: hints per province
    meta = admin.get("/api/v1/order/grid/meta").get_json()
    carrier_col = next(c for c in meta["columns"] if c["key"] == "carrier.name")
    assert carrier_col["recommend_by"] == "receiver_province"
    assert carrier_col["recommendations"]["浙江"]["evidence"] == evidence
    assert carrier_col["recommendations"]["浙江"]["carrier_id"] == next(
        o["value"] for o in carrier_col["edit_options"] if o["label"] == "中通快递")
    # the carrier rule form
    for url in ("/carrierruleview/add", "/carrierruleview/list/"):
        resp = admin.get(url)
        assert resp.status_code == 200
    page = admin.get("/carrierruleview/add").get_data(as_text=True)
    assert "各省推荐快递" in page and evidence in page and "近30天 新疆: 圆通 均时 59h, 异常 0.0%" in page


def test_rate_card_and_bill_pages(app, login, tmp_path):
    with app.app_context():
        numbers = build_history()
        zto = _carrier("ZTO").id
    admin = login("admin")
    resp = admin.post("/carrierrateview/add", data={"carrier": str(zto), "province": "浙江省", "first_weight_kg": "1",
                                                    "first_price": "6", "additional_price": "1"},
                      follow_redirects=True)
    assert "已有运费价目" in resp.get_data(as_text=True)  # ZTO 浙江 exists (浙江省 → 浙江)
    resp = admin.post("/carrierrateview/add", data={"carrier": str(zto), "province": "火星",
                                                    "first_price": "6", "additional_price": "1",
                                                    "first_weight_kg": "1"}, follow_redirects=True)
    assert "无法识别" in resp.get_data(as_text=True)
    resp = admin.post("/carrierrateview/add", data={"carrier": str(zto), "province": "西藏自治区",
                                                    "first_weight_kg": "1", "additional_price": "1"},
                      follow_redirects=True)
    assert "请填写「一口价」" in resp.get_data(as_text=True)
    admin.post("/carrierrateview/add", data={"carrier": str(zto), "province": "西藏自治区", "flat_price": "15",
                                             "first_weight_kg": "1", "additional_price": "0"})
    with app.app_context():
        assert db.session.scalar(select(CarrierRate.flat_price).where(CarrierRate.province == "西藏")) == Decimal("15")
    # the bill page: upload, errors shown in zh, nothing written; then a good one
    bad = _bill_csv(tmp_path, [("顺丰速运", "NOPE1", "1", "3")])
    with open(bad, "rb") as fh:
        page = admin.post("/carrierbilllineview/import/", data={"file": (fh, "账单.csv")},
                          content_type="multipart/form-data").get_data(as_text=True)
    assert "快递单号不存在或无权访问：NOPE1" in page
    good = _bill_csv(tmp_path, [("顺丰速运", numbers["SF"][0], "1", "3")], "good.csv")
    with open(good, "rb") as fh:
        page = admin.post("/carrierbilllineview/import/", data={"file": (fh, "账单.csv")},
                          content_type="multipart/form-data").get_data(as_text=True)
    assert "新增 1" in page
    page = admin.get("/carrierbilllineview/list/").get_data(as_text=True)
    assert numbers["SF"][0] in page
    # finance imports bills; 客服 may not
    assert login("finance").get("/carrierbilllineview/import/").status_code == 200
    assert login("cs").get("/carrierbilllineview/import/").status_code in (302, 403)


def test_postgresql_same_answers(pg_url, tmp_path):
    from flask_migrate import upgrade

    from app.services import setup
    from tests import world
    from tests.conftest import make_app

    app = make_app(tmp_path / "x.db", SQLALCHEMY_DATABASE_URI=pg_url)
    with app.app_context():
        upgrade()
        setup.initialise(admin_password=world.ADMIN_PASSWORD)
        world.build()
        build_history()
        period = sc.last_days(30)
        with as_scope(None):
            shop_a = db.session.scalar(select(Shop.id).where(Shop.name == "A店-淘宝"))
            rows = sc.scorecard(period, shop_ids=[shop_a])
        check_known_answers(rows)
        recs = sc.recommend(rows, period, RULES)
        assert recs["浙江"].evidence == "近30天 浙江: 中通 均时 29h, 异常 10.0%"
        assert recs["新疆"].evidence == "近30天 新疆: 圆通 均时 59h, 异常 0.0%"
        with as_scope([shop_a]):  # a shop-A user: shop B's JD parcels are not counted
            assert ("京东", "浙江") not in _rows(sc.scorecard(period))
        with as_scope(None):
            assert _rows(sc.scorecard(period))[("京东", "浙江")].parcels == 4
        db.session.remove()
        db.engine.dispose()
