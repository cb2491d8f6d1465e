"""订单工作台 in a real browser: Debian's Chromium driven by Playwright against the app
served by gunicorn, with a real RQ worker, on a copy of the test database.

It filters to 待审核 + one shop, edits a memo inline, pastes 20 tracking numbers
into 20 rows, selects everything matching and batch-audits it (a job: the page
shows the progress bar and the result), exports, and checks the database after
each step, not just the page.
"""
from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import world
from tests.conftest import make_app

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Chromium is installed by `make test` (make browser)")
REDIS_URL = os.environ.get("OMS_TEST_BROWSER_REDIS_URL", "redis://127.0.0.1:6379/14")
VENV_BIN = Path(sys.executable).parent
N_ORDERS = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _add_orders(db_path) -> list[int]:
    """30 paid orders of shop A waiting for audit, with stock for all of them."""
    from app.extensions import db
    from app.models import Shop
    from app.services import order_status, orders

    app = make_app(db_path)
    with app.app_context():
        shop = db.session.query(Shop).filter_by(name="A店-淘宝").one()
        paid = dt.datetime(2026, 11, 21, 2, 0, tzinfo=dt.timezone.utc)
        ids = []
        for i in range(N_ORDERS):
            order = orders.create_order(shop, {
                "platform_order_id": f"39000000000000{i:05d}", "status": "pending_payment",
                "receiver_name": "测试", "receiver_phone": f"1380000{i:04d}", "receiver_province": "浙江省",
                "receiver_city": "杭州市", "receiver_district": "西湖区", "receiver_address": "文三路1号",
                "paid_at": paid + dt.timedelta(minutes=i), "paid_amount": "79.00",
                "lines": [{"platform_line_id": "1", "merchant_code": "TS-BLK-L", "title": "纯棉T恤",
                           "quantity": 1, "price": "79.00", "paid_amount": "79.00"}],
            }, source="import")
            db.session.flush()
            order_status.apply(order, "pay", source="sync")
            ids.append(order.id)
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    return ids


@pytest.fixture
def live(db_path, tmp_path):
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    ids = _add_orders(db_path)
    port = _free_port()
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{db_path}", REDIS_URL=REDIS_URL, FLASK_APP="run.py",
               RATELIMIT_ENABLED="0", OMS_BATCH_INLINE_MAX="5", OMS_EXPORT_INLINE_MAX="1000",
               OMS_SAFE_REDIRECT_HOSTS=f"127.0.0.1:{port},127.0.0.1,localhost")
    root = Path(__file__).resolve().parent.parent
    log = open(tmp_path / "server.log", "w")
    procs = [
        subprocess.Popen([str(VENV_BIN / "gunicorn"), "--workers", "1", "--threads", "4", "--bind",
                          f"127.0.0.1:{port}", "run:app"], cwd=root, env=env, stdout=log, stderr=log),
        subprocess.Popen([str(VENV_BIN / "flask"), "oms", "worker"], cwd=root, env=env, stdout=log, stderr=log),
    ]
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        raise RuntimeError((tmp_path / "server.log").read_text())
    try:
        yield {"url": f"http://127.0.0.1:{port}", "ids": ids, "db_path": db_path, "log": tmp_path / "server.log"}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()


@pytest.fixture
def browser_page(live, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        context = browser.new_context(accept_downloads=True, viewport={"width": 1600, "height": 1000},
                                      locale="zh-CN")
        page = context.new_page()
        page.set_default_timeout(15000)
        try:
            yield page
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"))
            raise
        finally:
            context.close()
            browser.close()


def _shot(page, name: str) -> None:
    """Screenshots for a human, when OMS_SCREENSHOT_DIR is set."""
    folder = os.environ.get("OMS_SCREENSHOT_DIR")
    if folder:
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def _db(live):
    """A short-lived app on the same database file, to assert what the browser did."""
    return make_app(live["db_path"])


def _cell(page, order_no: str, field: str):
    row = page.locator(".tabulator-row", has=page.locator(f'.tabulator-cell[tabulator-field="platform_order_id"]',
                                                          has_text=order_no))
    return row.locator(f'.tabulator-cell[tabulator-field="{field}"]')


def test_workbench_filter_edit_paste_batch_audit_export(live, browser_page):
    page = browser_page
    url = live["url"]
    page.goto(url + "/login/")
    page.fill("#username", "ops")
    page.fill("#password", world.PASSWORD)
    page.click("input[type=submit], button[type=submit]")
    page.goto(url + "/grid/order/")
    page.wait_for_selector(".tabulator-row")
    assert "订单工作台" in page.inner_text("h3")

    # filter: 待审核 + shop A
    page.click('[data-role="tabs"] li[data-tab="to_audit"] a')
    page.select_option('select[name="shop_id"]', label="A店-淘宝")
    page.click('[data-role="filters"] button[type=submit]')
    page.wait_for_function("document.querySelector('[data-role=status]').textContent.includes('31')")
    # 30 new orders + the world's one to_audit order of shop A
    rows = page.locator(".tabulator-row")
    shops = set(page.locator('.tabulator-cell[tabulator-field="shop.name"]').all_inner_texts())
    assert shops == {"A店-淘宝"}
    statuses = set(page.locator('.tabulator-cell[tabulator-field="status"]').all_inner_texts())
    assert statuses == {"待审核"}
    assert rows.count() >= 20

    # inline edit of a memo
    memo = _cell(page, "3900000000000000029", "seller_memo")
    memo.dblclick()
    page.keyboard.type("加急，顺丰")
    page.keyboard.press("Enter")
    page.wait_for_selector('[data-role=message].alert-success')

    # paste 20 tracking numbers into 20 rows, starting at the first row's cell
    numbers = [f"SF{7000000000 + i}" for i in range(20)]
    first = page.locator('.tabulator-row').first.locator('.tabulator-cell[tabulator-field="tracking_number"]')
    first.click()
    page.evaluate("""(text) => {
        const dt = new DataTransfer();
        dt.setData('text/plain', text);
        const target = document.activeElement && document.activeElement.closest('.tabulator') ?
            document.activeElement : document.querySelector('.tabulator-tableholder');
        target.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true, cancelable: true}));
    }""", "\n".join(numbers))
    page.wait_for_function("document.querySelector('[data-role=message]').textContent.includes('粘贴：已保存 20 行')")

    _shot(page, "workbench-after-paste")
    # select everything matching and batch-audit it as a job with progress
    page.click('[data-role="select-page"]')
    page.click('[data-role="select-all-matching"]')
    assert "全部符合条件" in page.inner_text('[data-role="selection"]')
    page.click('[data-action="audit"]')
    page.click('[data-role="action-dialog"] [data-role="confirm"]')
    page.wait_for_selector('[data-role="progress"]:not([hidden])')
    page.wait_for_selector('[data-role="result"]:not([hidden])', timeout=60000)
    _shot(page, "workbench-batch-result")
    assert page.inner_text('[data-role="ok-count"]') == "成功 31 条"
    assert page.inner_text('[data-role="failed-count"]') == "失败 0 条"

    # export what the grid shows now (待审核 + shop A is empty after the audit: show 待发货)
    page.click('[data-role="tabs"] li[data-tab="to_ship"] a')
    page.wait_for_selector(".tabulator-row")
    page.click('[data-role="export-menu-group"] .dropdown-toggle')
    with page.expect_download() as dl:
        page.click('text=Excel（xlsx）')
    assert dl.value.suggested_filename.endswith(".xlsx")
    import openpyxl

    wb = openpyxl.load_workbook(io.BytesIO(Path(dl.value.path()).read_bytes()), read_only=True)
    ws = wb.worksheets[0]
    header = [c.value for c in next(ws.iter_rows(max_row=1))]
    assert "订单号" in header and "快递单号" in header
    body = [[c.value for c in r] for r in ws.iter_rows(min_row=2)]
    exported_numbers = {r[header.index("快递单号")] for r in body}
    assert set(numbers) <= exported_numbers

    # the database, not just the page
    from sqlalchemy import select

    from app.extensions import db
    from app.models import Order, OrderEvent

    app = _db(live)
    with app.app_context():
        orders = {o.platform_order_id: o for o in db.session.scalars(select(Order).where(Order.id.in_(live["ids"])))}
        assert orders["3900000000000000029"].seller_memo == "加急，顺丰"
        with_numbers = [o for o in orders.values() if o.tracking_number]
        assert sorted(o.tracking_number for o in with_numbers) == sorted(numbers)
        assert all(o.status == "to_ship" for o in orders.values())
        audits = db.session.scalars(select(OrderEvent).where(
            OrderEvent.order_id.in_(live["ids"]), OrderEvent.action == "audit")).all()
        assert len(audits) == N_ORDERS
        db.session.remove()
        db.engine.dispose()


SAMPLES = Path(__file__).resolve().parent / "samples"  # copies of ../shared/samples


def _samples_dir() -> Path:
    return SAMPLES


def _import(page, url, files, shop):
    page.goto(url + "/imports/")
    page.set_input_files("#files", [str(f) for f in files])
    page.select_option("#shop", value=shop)
    page.click('form[enctype="multipart/form-data"] button[type=submit]')
    page.wait_for_selector("text=开始导入")
    page.click("text=开始导入")
    page.wait_for_selector("#result:visible", timeout=60000)
    return {k: page.inner_text(f"#{k}") for k in ("created", "updated", "failed")}


def test_import_taobao_gbk_csv_and_pdd_xlsx_from_the_browser(live, browser_page):
    import json

    samples = _samples_dir()
    expected = json.loads((samples / "expected.json").read_text())
    page = browser_page
    url = live["url"]
    page.goto(url + "/login/")
    page.fill("#username", "ops")
    page.fill("#password", world.PASSWORD)
    page.click("input[type=submit], button[type=submit]")

    taobao = _import(page, url, [samples / "taobao_orders.csv", samples / "taobao_items.csv"], "A店-淘宝")
    assert taobao["created"] == str(expected["taobao"]["orders"]) and taobao["failed"] == "0"
    pdd = _import(page, url, [samples / "pdd_orders.xlsx"], "B店-拼多多")
    assert pdd["created"] == str(expected["pdd"]["orders"]) and pdd["failed"] == "0"

    from decimal import Decimal

    from sqlalchemy import func, select

    from app.extensions import db
    from app.models import Order, OrderLine, Shop

    app = _db(live)
    with app.app_context():
        shop_a = db.session.scalar(select(Shop.id).where(Shop.name == "A店-淘宝"))
        shop_b = db.session.scalar(select(Shop.id).where(Shop.name == "B店-拼多多"))
        tb = select(Order).where(Order.shop_id == shop_a, Order.id.not_in(live["ids"]),
                                 Order.platform_order_id.not_in(["3000000000000000001", "3000000000000000002",
                                                                 "3000000000000000003"]))
        tb_orders = db.session.scalars(tb).all()
        assert len(tb_orders) == expected["taobao"]["orders"]
        assert sum((o.paid_amount for o in tb_orders), Decimal("0")) == Decimal(expected["taobao"]["paid_total"])
        assert expected["taobao"]["first_id"] in {o.platform_order_id for o in tb_orders}
        units = db.session.scalar(select(func.sum(OrderLine.quantity)).where(
            OrderLine.order_id.in_([o.id for o in tb_orders])))
        assert units == expected["taobao"]["units"]
        pdd_orders = db.session.scalars(select(Order).where(
            Order.shop_id == shop_b,
            Order.platform_order_id.not_in(["261120-000000000000001", "261120-000000000000002"]))).all()
        assert len(pdd_orders) == expected["pdd"]["orders"]
        assert sum((o.paid_amount for o in pdd_orders), Decimal("0")) == Decimal(expected["pdd"]["paid_total"])
        db.session.remove()
        db.engine.dispose()
