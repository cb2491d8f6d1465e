"""Printing from the browser (issue #6): templates stored in the database and edited with
a live preview (a Jinja error is a zh message with its line and nothing is saved or
printed), batch print from the 订单工作台 (one PDF, inline or as a job with progress,
offered for download to its owner only), every print and reprint in the print log, and
row scope."""
from __future__ import annotations

import io

import pytest
import redis
from pypdf import PdfReader
from rq import Queue
from sqlalchemy import func, select

from app.extensions import db
from app.models import Order, PrintRecord, PrintTemplate
from app.services import printing
from app.services.errors import ValidationError
from tests.conftest import TEST_REDIS_URL
from tests.test_printing import make_orders, print_rows, text_fonts, user_id

LABEL_EXTRA = "定制面单·请轻放"


def custom_label() -> str:
    source = printing.default_source("label")
    foot = '<td colspan="3" class="lb-foot">'
    return source.replace(foot, f"{foot}<div>{LABEL_EXTRA}</div>", 1)


def run_worker(app, queue="default"):
    from app.jobs.worker import AppWorker

    AppWorker.flask_app = app
    AppWorker([queue], connection=redis.Redis.from_url(TEST_REDIS_URL)).work(burst=True)


# --- template editor ---------------------------------------------------------------------------
def test_preview_renders_the_sample_order_in_the_cjk_font_and_saves_only_a_good_template(app, login):
    admin = login("admin")
    page = admin.get("/print-templates/label/")
    assert page.status_code == 200 and "编辑面单模板" in page.get_data(as_text=True)

    resp = admin.post("/print-templates/label/preview", json={"source": custom_label()})
    assert resp.status_code == 200 and resp.mimetype == "application/pdf"
    reader = PdfReader(io.BytesIO(resp.data))
    assert len(reader.pages) == 1
    text = reader.pages[0].extract_text()
    assert "张三" in text and LABEL_EXTRA in text
    assert all("WenQuanYi" in f for f in text_fonts(reader))

    broken = custom_label().replace("{{ o.receiver.name }}", "{{ o.receiver.name }", 1)
    resp = admin.post("/print-templates/label/preview", json={"source": broken})
    assert resp.status_code == 422
    assert resp.json["message"].startswith("模板错误：label.html 第 ") and "意外的「}」" in resp.json["message"]
    resp = admin.post("/print-templates/label/save", data={"source": broken})
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert "模板错误：label.html 第 " in html and "（未保存）" in html
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(PrintTemplate)) == 0

    resp = admin.post("/print-templates/label/save", data={"source": custom_label()})
    assert resp.status_code == 302
    with app.app_context():
        assert printing.current_source("label") == (custom_label(), True)


def test_a_saved_template_is_what_prints_and_a_broken_one_never_prints(ctx, ids):
    [o] = make_orders(ids, 1)
    admin = user_id("admin")
    printing.save_template("label", custom_label(), user_id=admin)
    pdf = printing.render_orders([o["id"]], documents=("label",), user_id=admin)
    assert LABEL_EXTRA in PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    with pytest.raises(ValidationError) as err:
        printing.save_template("label", "{% macro page(o) %}{% for x in o.lines %}{% endmacro %}", user_id=admin)
    assert err.value.message.startswith("模板错误：label.html 第 1 行：")
    assert printing.current_source("label") == (custom_label(), True)  # the good one stays
    # a template that fails only on real data is refused at print time, nothing logged
    db.session.execute(PrintTemplate.__table__.update().values(
        source="{% macro page(o) %}{{ o.receiver.name|no_such_filter }}{% endmacro %}"))
    db.session.commit()
    with pytest.raises(ValidationError) as err:
        printing.render_orders([o["id"]], documents=("label",), user_id=admin)
    assert "没有名为「no_such_filter」的过滤器" in err.value.message
    assert print_rows([o["id"]]) == (1, 1)  # only the first, good print
    assert printing.reset_template("label") is True
    assert printing.current_source("label")[1] is False


def test_only_admins_edit_templates(app, login):
    for user in ("cs", "ops", "warehouse"):
        assert login(user).get("/print-templates/label/").status_code in (302, 403)
        assert login(user).post("/print-templates/label/save", data={"source": "x"}).status_code in (302, 403)


# --- batch print from the grid --------------------------------------------------------------------
def test_grid_print_gives_one_pdf_for_its_owner_and_logs_every_print(app, login, ids):
    with app.app_context():
        batch = make_orders(ids, 3, shops="A")
    cs = login("cs")
    resp = cs.post("/api/v1/order/batch", json={"action": "print", "ids": [b["id"] for b in batch]})
    assert resp.status_code == 200, resp.json
    result = resp.json["result"]
    assert result["action"] == "print" and result["ok"] == [b["id"] for b in batch]
    assert result["pages"] == 6 and result["reprints"] == 0
    assert result["download_url"].startswith("/printing/download/") and result["filename"].endswith("-3单.pdf")
    pdf = cs.get(result["download_url"])
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    reader = PdfReader(io.BytesIO(pdf.data))
    assert len(reader.pages) == 6 and batch[0]["name"] in reader.pages[0].extract_text()
    # someone else cannot fetch it; an admin can
    assert login("ops").get(result["download_url"]).status_code == 302
    assert login("admin").get(result["download_url"]).status_code == 200

    # printed again: a reprint, in the log and on the order's trail
    result = cs.post("/api/v1/order/batch", json={"action": "print_labels",
                                                  "ids": [batch[0]["id"]]}).json["result"]
    assert result["reprints"] == 1 and result["pages"] == 1
    with app.app_context():
        rows = db.session.scalars(select(PrintRecord).where(PrintRecord.order_id == batch[0]["id"])
                                  .order_by(PrintRecord.id)).all()
        assert [(r.print_no, r.is_reprint, r.documents, r.batch_size) for r in rows] == [
            (1, False, "label,packing_list", 3), (2, True, "label", 1)]
        assert rows[0].user_id == user_id("cs") and rows[0].batch != rows[1].batch
    log = login("cs").get("/printrecordview/list/").get_data(as_text=True)
    assert batch[0]["number"] in log


def test_a_bad_selection_prints_nothing_and_says_why(app, login, ids):
    with app.app_context():
        [good] = make_orders(ids, 1, shops="A")
    resp = login("cs").post("/api/v1/order/batch",
                            json={"action": "print", "ids": [good["id"], ids["orders"]["3000000000000000001"]]})
    assert resp.status_code == 422
    assert "订单 3000000000000000001 状态为「待审核」" in resp.json["message"]
    with app.app_context():
        assert print_rows([good["id"]]) == (0, 0)
        assert db.session.scalar(select(func.count()).select_from(PrintRecord)) == 0


def test_cs_of_shop_a_cannot_print_shop_bs_orders(app, login, ids):
    with app.app_context():
        [order_b] = make_orders(ids, 1, shops="B")
    resp = login("cs").post("/api/v1/order/batch", json={"action": "print", "ids": [order_b["id"]]})
    assert resp.status_code == 404
    assert resp.json["message"] == f"订单不存在或无权访问：{order_b['id']}"
    assert login("finance").post("/api/v1/order/batch",
                                 json={"action": "print", "ids": [order_b["id"]]}).status_code == 403
    with app.app_context():
        assert print_rows([order_b["id"]]) == (0, 0)


def test_a_large_grid_print_runs_as_a_job_with_progress_and_offers_the_pdf(app, login, ids, monkeypatch):
    monkeypatch.setitem(app.config, "OMS_BATCH_INLINE_MAX", 20)
    monkeypatch.setitem(app.config, "OMS_PRINT_PROCESSES", 2)
    Queue("default", connection=redis.Redis.from_url(TEST_REDIS_URL)).empty()
    with app.app_context():
        batch = make_orders(ids, 60)
        printing.render_orders([batch[5]["id"]], documents=("label",), user_id=user_id("ops"))  # printed once
    ops = login("ops")
    resp = ops.post("/api/v1/order/batch", json={"action": "print_labels", "ids": [b["id"] for b in batch]})
    assert resp.status_code == 202, resp.json
    run_worker(app)
    body = ops.get(f"/api/v1/job/{resp.json['job_id']}").json
    assert body["state"] == "finished", body
    assert body["progress"] == 100 and body["done"] == body["total"] == 60
    result = body["result"]
    assert result["pages"] == 60 and result["reprints"] == 1
    pdf = ops.get(result["download_url"])
    reader = PdfReader(io.BytesIO(pdf.data))
    # two chunks rendered in two processes, joined in the order selected
    for i in (0, 49, 50, 59):
        assert batch[i]["tracking"] in reader.pages[i].extract_text()
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(PrintRecord).where(
            PrintRecord.is_reprint.is_(True))) == 1
        assert db.session.scalar(select(PrintRecord.source).where(
            PrintRecord.order_id == batch[0]["id"])) == "job"
    # the 后台任务 page offers the file as well
    assert result["download_url"] in ops.get("/jobs/").get_data(as_text=True)


def test_worker_processes_render_the_same_pdf_as_one_process(ctx, ids):
    batch = make_orders(ids, 55)
    orders_ = [db.session.get(Order, b["id"]) for b in batch]
    font = printing.font_path()
    contexts = [printing.drawable(printing.order_context(o, 1, "2026-11-30 12:00"), font) for o in orders_]
    numbers = [o.platform_order_id for o in orders_]
    one = printing.render_contexts(contexts, numbers, ("label",), {}, font, "2026-11-30 12:00", processes=1)
    two = printing.render_contexts(contexts, numbers, ("label",), {}, font, "2026-11-30 12:00", processes=2)
    texts = lambda pdf: [p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages]  # noqa: E731
    assert texts(one) == texts(two) and len(texts(two)) == 55
