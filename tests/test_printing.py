"""Printing (issue #6): labels and packing lists as one PDF, checked the way a
person would: the Chinese text extracts, the embedded font is the CJK one (not
xhtml2pdf's silent Helvetica), and the barcodes scan (zbar on pdftoppm pages)."""
from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from pypdf import PdfReader
from sqlalchemy import func, select

from app.extensions import db
from app.models import Carrier, OmsUser, Order, OrderEvent, PiiAccessLog, Shop, Warehouse
from app.services import order_status, orders, printing
from app.services.errors import NotFound, ValidationError
from app.services.scope import as_user

NAMES = [s + g for s in "赵钱孙李周吴郑王冯陈" for g in ("子涵", "浩然", "雨桐", "欣怡", "梓轩")]
CARRIER_CODES = ("SF", "YTO", "ZTO")
MM = 72 / 25.4


def user_id(username: str) -> int:
    return db.session.scalar(select(OmsUser.id).where(OmsUser.username == username))


def make_orders(ids: dict, count: int, *, start: int = 0, shops: str = "ABC") -> list[dict]:
    """``count`` orders to ship, spread over the world's shops, each with a carrier and
    a tracking number of its own; returned as plain values."""
    shop_rows = [db.session.get(Shop, ids["shops"][k]) for k in shops]
    carriers = {c.code: c for c in db.session.scalars(select(Carrier))}
    wh = db.session.scalar(select(Warehouse))
    wh.contact, wh.phone, wh.address = "王仓管", "0571-88886666", "余杭区良睦路1号"
    made = []
    for i in range(start, start + count):
        code = CARRIER_CODES[i % len(CARRIER_CODES)]
        order = orders.create_order(shop_rows[i % len(shop_rows)], {
            "platform_order_id": f"41000000{i:011d}", "status": "pending_payment",
            "receiver_name": NAMES[i % len(NAMES)], "receiver_phone": f"139{i:08d}",
            "receiver_province": "浙江省", "receiver_city": "杭州市", "receiver_district": "西湖区",
            "receiver_address": f"文三路{i + 1}号", "buyer_nick": f"buyer{i}",
            "buyer_message": "请发顺丰" if i % 2 else None, "seller_memo": f"备注{i}",
            "paid_amount": "158.00",
            "lines": [
                {"platform_line_id": "1", "merchant_code": "TS-BLK-L", "title": "纯棉T恤",
                 "spec": "黑色 L", "quantity": 2, "price": "79.00", "paid_amount": "158.00"},
                {"platform_line_id": "2", "merchant_code": "TS-WHT-M", "title": "纯棉T恤",
                 "spec": "白色 M", "quantity": 1, "price": "79.00", "paid_amount": "79.00"},
            ],
        }, source="import")
        db.session.flush()
        order_status.apply(order, "pay", source="sync")
        order_status.apply(order, "audit", source="user")
        order.carrier_id = carriers[code].id
        order.tracking_number = f"{code}{7_000_000_000_000 + i}"
        order.warehouse_id = wh.id
        made.append(order)
    db.session.commit()
    return [{"id": o.id, "number": o.platform_order_id, "tracking": o.tracking_number,
             "name": o.receiver_name} for o in made]


def print_rows(order_ids) -> tuple[int, int]:
    logs = db.session.scalar(select(func.count()).select_from(PiiAccessLog)
                             .where(PiiAccessLog.entity_id.in_(order_ids), PiiAccessLog.purpose == "print"))
    events = db.session.scalar(select(func.count()).select_from(OrderEvent)
                               .where(OrderEvent.order_id.in_(order_ids), OrderEvent.action == "print"))
    return logs, events


def decode_barcodes(pdf: bytes, page: int, tmp_path: Path, half: str | None = None) -> list[str]:
    """Code128 values on one page (1-based), or on its top or bottom half: pdftoppm
    renders it, zbar reads it (zbar reports equal symbols on one image only once)."""
    from PIL import Image
    from pyzbar.pyzbar import ZBarSymbol, decode

    src = tmp_path / "print.pdf"
    if not src.exists():
        src.write_bytes(pdf)
    out = tmp_path / f"page{page}"
    subprocess.run(["pdftoppm", "-r", "300", "-f", str(page), "-l", str(page), "-png", "-singlefile",
                    str(src), str(out)], check=True)
    image = Image.open(f"{out}.png")
    if half is not None:
        w, h = image.size
        image = image.crop((0, 0, w, h // 2) if half == "top" else (0, h // 2, w, h))
    found = decode(image, symbols=[ZBarSymbol.CODE128])
    return [d.data.decode("ascii") for d in found]


def page_texts(reader: PdfReader, fonts: set[str]) -> list[str]:
    """Each page's text, adding to ``fonts`` the fonts its non-blank text is drawn in."""
    def visit(text, cm, tm, font_dict, size):
        if text.strip():
            fonts.add(str((font_dict or {}).get("/BaseFont")))

    return [page.extract_text(visitor_text=visit) for page in reader.pages]


def text_fonts(reader: PdfReader) -> set[str]:
    """The fonts that non-blank text is actually drawn in, over all pages."""
    used: set[str] = set()
    page_texts(reader, used)
    return used


def test_fifty_orders_print_as_one_pdf_with_chinese_text_cjk_font_and_barcodes(ctx, ids, tmp_path):
    batch = make_orders(ids, 50)
    admin = user_id("admin")
    pdf = printing.render_orders([o["id"] for o in batch], user_id=admin)

    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 100  # per order: its label, then its packing list
    used_fonts: set[str] = set()
    texts = page_texts(reader, used_fonts)
    for i, order in enumerate(batch):
        label, packing = reader.pages[2 * i], reader.pages[2 * i + 1]
        assert (round(float(label.mediabox.width) / MM), round(float(label.mediabox.height) / MM)) == (100, 180)
        assert (round(float(packing.mediabox.width) / MM), round(float(packing.mediabox.height) / MM)) == (148, 210)
        label_text, packing_text = texts[2 * i], texts[2 * i + 1]
        assert order["name"] in label_text and order["tracking"] in label_text
        assert order["number"] in label_text and "收" in label_text and "杭州仓" in label_text
        assert f"139{i:08d}" in label_text  # the full phone: PII is unmasked into the PDF only
        assert order["number"] in packing_text and "发货单" in packing_text
        assert "TS-WHT-M" in packing_text and f"备注{i}" in packing_text

    # The font: embedded wqy-microhei, and every piece of text drawn in it (no Helvetica fallback).
    fonts = printing.pdf_fonts(pdf)
    assert any("WenQuanYi" in f for f in fonts), fonts
    assert all("WenQuanYi" in f for f in used_fonts), used_fonts

    # The barcodes scan: the tracking number on a label and again on its stub (the bottom
    # half), the order number on a packing list.
    for i in (0, 1, 49):
        for half in ("top", "bottom"):
            assert decode_barcodes(pdf, 2 * i + 1, tmp_path, half) == [batch[i]["tracking"]]
        assert decode_barcodes(pdf, 2 * i + 2, tmp_path) == [batch[i]["number"]]

    # Every print is logged: one PII access row and one order event per order.
    batch_ids = [o["id"] for o in batch]
    assert print_rows(batch_ids) == (50, 50)
    log = db.session.scalars(select(PiiAccessLog).where(PiiAccessLog.entity_id == batch[0]["id"])).one()
    assert (log.user_id, log.entity, log.purpose) == (admin, "order", "print")
    assert log.fields == "receiver_address,receiver_name,receiver_phone"
    event = db.session.scalars(select(OrderEvent).where(
        OrderEvent.order_id == batch[0]["id"], OrderEvent.action == "print")).one()
    assert (event.source, event.user_id, event.note) == ("user", admin, "第 1 次打印")


def test_reprint_is_counted_and_marked(ctx, ids):
    [order] = make_orders(ids, 1)
    admin = user_id("admin")
    printing.render_orders([order["id"]], user_id=admin)
    pdf = printing.render_orders([order["id"]], user_id=admin, documents=("label",))
    assert printing.page_count(pdf) == 1
    assert "补打 第 2 次" in PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    notes = db.session.scalars(select(OrderEvent.note).where(
        OrderEvent.order_id == order["id"], OrderEvent.action == "print").order_by(OrderEvent.id)).all()
    assert notes == ["第 1 次打印", "第 2 次打印（补打）"]
    assert print_rows([order["id"]]) == (2, 2)


def test_duplicate_tracking_number_is_refused_naming_both_orders_and_nothing_is_logged(ctx, ids):
    first, second, third = make_orders(ids, 3)
    db.session.get(Order, second["id"]).tracking_number = first["tracking"]
    db.session.commit()
    with pytest.raises(ValidationError) as err:
        printing.render_orders([first["id"], second["id"]], user_id=user_id("admin"))
    assert first["tracking"] in err.value.message
    assert first["number"] in err.value.message and second["number"] in err.value.message
    # The same number on an order outside the batch is a clash as well.
    with pytest.raises(ValidationError) as err:
        printing.render_orders([first["id"], third["id"]], user_id=user_id("admin"))
    assert f"快递单号 {first['tracking']} 同时用于 订单 {first['number']} 和 订单 {second['number']}" \
        in err.value.message
    assert print_rows([first["id"], second["id"], third["id"]]) == (0, 0)


def test_unknown_carrier_code_is_refused_in_chinese(ctx, ids):
    [order] = make_orders(ids, 1)
    carrier = Carrier(code="XYZ", name="某某快递", active=True)
    db.session.add(carrier)
    db.session.flush()
    db.session.get(Order, order["id"]).carrier_id = carrier.id
    db.session.commit()
    with pytest.raises(ValidationError) as err:
        printing.render_orders([order["id"]], user_id=user_id("admin"))
    assert err.value.message == f"不能打印：订单 {order['number']} 快递公司「某某快递」的编码「XYZ」未知，没有它的面单"
    assert print_rows([order["id"]]) == (0, 0)


def test_orders_not_ready_to_print_are_refused_with_every_reason(ctx, ids, tmp_path):
    ready, held = make_orders(ids, 2)
    order_status.hold(db.session.get(Order, held["id"]), "refunding", source="sync")
    db.session.commit()
    to_audit = ids["orders"]["3000000000000000001"]
    no_carrier = ids["orders"]["3000000000000000002"]
    with pytest.raises(ValidationError) as err:
        printing.render_orders([ready["id"], to_audit, no_carrier, held["id"]], user_id=user_id("admin"))
    message = err.value.message
    assert f"订单 {held['number']} 处于挂起状态（退款中）" in message
    assert "订单 3000000000000000001 状态为「待审核」（只能打印待发货或已发货的订单）" in message
    assert "订单 3000000000000000002 未指定快递公司，没有快递单号" in message
    assert ready["number"] not in message
    assert print_rows([ready["id"], held["id"]]) == (0, 0)
    # A packing list alone needs no carrier; a Pinduoduo order number scans as well.
    pdd_order = ids["orders"]["261120-000000000000002"]
    pdf = printing.render_orders([no_carrier, pdd_order], documents=("packing_list",),
                                 user_id=user_id("admin"))
    assert "李四" in PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert decode_barcodes(pdf, 2, tmp_path) == ["261120-000000000000002"]


@pytest.mark.parametrize("source, expected", [
    ("{% macro page(o) %}{{ o.number }{% endmacro %}", "模板错误：label.html 第 1 行"),
    ("{% macro page(o) %}{{ o.no_such_field }}{% endmacro %}", "模板错误：label.html 第 1 行：UndefinedError"),
    ("{% macro page(o) %}{{ o.__class__.__mro__ }}{% endmacro %}", "模板错误："),
    ("<p>no macro</p>", "模板错误：label.html 没有定义 page(o) 宏"),
    ('{% macro page(o) %}<img src="/etc/passwd">{% endmacro %}', "模板错误：不允许引用外部文件或网址：/etc/passwd"),
])
def test_template_errors_are_refused_in_chinese_and_nothing_is_logged(ctx, ids, source, expected):
    [order] = make_orders(ids, 1)
    with pytest.raises(ValidationError) as err:
        printing.render_orders([order["id"]], user_id=user_id("admin"), templates={"label": source})
    assert err.value.message.startswith(expected), err.value.message
    assert print_rows([order["id"]]) == (0, 0)


def test_template_values_are_escaped(ctx, ids):
    [order] = make_orders(ids, 1)
    db.session.get(Order, order["id"]).seller_memo = "<b>加急</b> & 小心轻放"
    db.session.commit()
    pdf = printing.render_orders([order["id"]], documents=("packing_list",), user_id=user_id("admin"))
    assert "<b>加急</b> & 小心轻放" in PdfReader(io.BytesIO(pdf)).pages[0].extract_text()


def test_a_label_running_onto_a_second_page_is_refused(ctx, ids):
    first, second = make_orders(ids, 2)
    long_label = "{% macro page(o) %}{% for i in range(80) %}<p>{{ o.number }}</p>{% endfor %}{% endmacro %}"
    with pytest.raises(ValidationError) as err:
        printing.render_orders([first["id"], second["id"]], user_id=user_id("admin"),
                               templates={"label": long_label})
    assert err.value.message == (f"不能打印：订单 {first['number']}、订单 {second['number']} 的面单内容超出一页"
                                 f"（地址或商品信息过长），请检查模板")
    assert print_rows([first["id"], second["id"]]) == (0, 0)


def test_characters_the_font_lacks_print_as_boxes_in_the_cjk_font(ctx, ids):
    [order] = make_orders(ids, 1)
    db.session.get(Order, order["id"]).buyer_message = "谢谢😊 吉\x00祥"
    db.session.commit()
    pdf = printing.render_orders([order["id"]], documents=("packing_list",), user_id=user_id("admin"))
    reader = PdfReader(io.BytesIO(pdf))
    assert "买家留言：谢谢□ 吉 祥" in reader.pages[0].extract_text()
    assert all("WenQuanYi" in f for f in text_fonts(reader))


def test_user_of_shop_a_cannot_print_an_order_of_shop_b(ctx, ids):
    [order_b] = make_orders(ids, 1, shops="B")
    ops_a = user_id("ops_a")
    with as_user(ops_a), pytest.raises(NotFound) as err:
        printing.render_orders([order_b["id"]], user_id=ops_a)
    assert err.value.message == f"订单不存在或无权访问：{order_b['id']}"
    assert print_rows([order_b["id"]]) == (0, 0)


def test_a_pdf_without_the_cjk_font_fails_loudly(ctx):
    # What xhtml2pdf produces, reporting success, when the font cannot be loaded: Latin
    # text in Helvetica and every Chinese character as a ZapfDingbats box.
    for html, drawn_in in (("<p>收件人 张三</p>", "ZapfDingbats"), ("<p>SF7000000000000</p>", "Helvetica")):
        pdf = printing.html_to_pdf(f"<html><body>{html}</body></html>", printing.font_path())
        with pytest.raises(printing.PrintSetupError) as err:
            printing.check_cjk_font(pdf)
        assert err.value.message.startswith("PDF 没有使用中文字体 WenQuanYi") and drawn_in in err.value.message
    ctx.config["OMS_CJK_FONT"] = "/nonexistent/wqy-microhei.ttc"
    try:
        with pytest.raises(printing.PrintSetupError) as err:
            printing.font_path()
        assert "make setup" in err.value.message
    finally:
        del ctx.config["OMS_CJK_FONT"]


def test_cli_prints_orders_to_ship_into_one_pdf(app, ids, tmp_path):
    with app.app_context():
        batch = make_orders(ids, 4, shops="A")
    runner = app.test_cli_runner()
    out = tmp_path / "labels.pdf"

    # The world's order 3000000000000000002 in shop A is to ship but has no carrier:
    # the whole print is refused, with the reason, and no file is written.
    result = runner.invoke(args=["oms", "print", "--status", "to_ship", "--shop", "A店-淘宝",
                                 "--out", str(out)])
    assert result.exit_code != 0
    assert "订单 3000000000000000002 未指定快递公司" in result.output
    assert not out.exists() and not Path(str(out) + ".part").exists()

    with app.app_context():
        world_order = db.session.scalar(select(Order).where(Order.platform_order_id == "3000000000000000002"))
        world_order.carrier_id = db.session.scalar(select(Carrier.id).where(Carrier.code == "SF"))
        world_order.tracking_number = "SF9990000000001"
        db.session.commit()
    result = runner.invoke(args=["oms", "print", "--status", "to_ship", "--shop", "A店-淘宝",
                                 "--limit", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "已打印 3 个订单，共 6 页" in result.output
    reader = PdfReader(str(out))
    assert len(reader.pages) == 6
    text = "".join(p.extract_text() for p in reader.pages)
    assert "李四" in text and batch[0]["name"] in text
    assert all("WenQuanYi" in f for f in text_fonts(reader))

    result = runner.invoke(args=["oms", "print", "--shop", "没有这个店", "--out", str(out)])
    assert result.exit_code != 0 and "店铺不存在或无权访问：没有这个店" in result.output


def test_small_batches_print_inline_and_larger_ones_run_as_a_job(app, ids, tmp_path, monkeypatch):
    import redis
    from rq import Queue

    from app.jobs import printing as print_jobs
    from app.jobs.worker import AppWorker
    from tests.conftest import TEST_REDIS_URL

    monkeypatch.setitem(app.config, "OMS_INSTANCE_DIR", str(tmp_path))
    monkeypatch.setattr(print_jobs, "INLINE_LIMIT", 2)
    conn = redis.Redis.from_url(TEST_REDIS_URL)
    Queue(print_jobs.QUEUE, connection=conn).empty()
    with app.app_context():
        batch = make_orders(ids, 3)
        ops = user_id("ops")
        inline = print_jobs.print_orders([b["id"] for b in batch[:2]], user_id=ops)
        assert inline.job is None and printing.page_count(inline.pdf) == 4

        # A bad batch is refused before anything is queued.
        with pytest.raises(ValidationError):
            print_jobs.print_orders([b["id"] for b in batch] + [ids["orders"]["3000000000000000001"]],
                                    user_id=ops)
        queued = print_jobs.print_orders([b["id"] for b in batch], user_id=ops, out_name="../晚班.pdf")
        assert queued.pdf is None and queued.out_name == "晚班.pdf"
        AppWorker.flask_app = app
        AppWorker([print_jobs.QUEUE], connection=conn).work(burst=True)
        job = queued.job
        job.refresh()
        assert job.get_status() == "finished", job.latest_result().exc_string if job.latest_result() else ""
        assert job.meta["progress"] == 100 and job.meta["done"] == 3
        path = tmp_path / "prints" / "晚班.pdf"
        assert job.return_value()["path"] == str(path)
        assert printing.page_count(path.read_bytes()) == 6
        db.session.expire_all()
        sources = db.session.scalars(select(OrderEvent.source).where(
            OrderEvent.order_id == batch[2]["id"], OrderEvent.action == "print")).all()
        assert sources == ["job"]
        assert db.session.scalars(select(PiiAccessLog.user_id).where(
            PiiAccessLog.entity_id == batch[2]["id"])).all() == [ops]

