"""Reservation benchmark (issue #5): reservations per second on ONE hot SKU, 8 worker
processes, PostgreSQL, through the real reservation service, beside the raw limit.

Three runs on the same scratch database, each with ``--workers`` processes racing
over ``--orders`` attempts for a SKU whose stock is ``--stock`` (< orders, so the
tail of every run is refused):

* **raw**: the limit — per attempt one transaction with the conditional UPDATE of the
  hot stock row and one ledger INSERT (psycopg, no ORM), on its own hot SKU;
* **service**: ``stock.reserve_order(order)`` + commit per paid order — the real path:
  warehouse choice (coverage, whole order, priority), SAVEPOINT, conditional UPDATE,
  ledger row, listing marks, the order's warehouse and reason, its trail, 缺货 holds;
* **audit**: ``orders.transition(order_id, "audit")`` — the same plus the state machine
  (status, counters, events), as a user's 审单 does it.

Printed: rate = successful+refused attempts / wall time from the start barrier to the
last worker, oversell (reserved > on hand, reserved orders ≠ stock), and the ledger check.

    .venv/bin/python bench/reserve_bench.py [--orders 3000] [--stock 2400] [--workers 8]
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import build_app, create_database, drop_database, psycopg_url  # noqa: E402

PG = os.environ.get("OMS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("OMS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
UTC = dt.timezone.utc
# The service runs, each on its own hot SKU: one order per transaction (reserve_order, 审单)
# and many per transaction (reserve_orders, 批量审单 through services/batch_actions.py).
CODES = {"service": "HOT-SVC", "audit": "HOT-AUD", "batch": "HOT-BAT", "batch_audit": "HOT-BAU"}
LABELS = {"service": "stock.reserve_order, 1 order/tx", "audit": "审单 orders.transition(audit), 1 order/tx",
          "batch": "stock.reserve_orders, {b} orders/tx", "batch_audit": "批量审单 batch_actions.run(audit), {b}/tx"}


def setup(db_url: str, n_orders: int, stock_qty: int, modes=tuple(CODES)) -> dict:
    from decimal import Decimal

    from flask_migrate import upgrade
    from sqlalchemy import select

    from app.extensions import db
    from app.models import Product, Shop, Sku, Warehouse
    from app.services import order_status, orders, setup as oms_setup, stock, warehouse_choice

    app = build_app(db_url, REDIS)
    with app.app_context():
        upgrade()
        oms_setup.initialise(admin_password="Bench-pass-123")
        shop = Shop(name="压测店", platform="taobao", sync_interval_seconds=60, backfill_days=3)
        product = Product(code="BENCH", name="压测商品")
        db.session.add_all([shop, product])
        skus = {code: Sku(product=product, merchant_code=code, name=code, cost_price=Decimal("1"),
                          sale_price=Decimal("9")) for code in ["HOT-RAW", "HOT-RAWB"] + list(CODES.values())}
        db.session.add_all(skus.values())
        hz = Warehouse(code="HZ", name="杭州仓", priority=1)
        gz = Warehouse(code="GZ", name="广州仓", priority=2)
        db.session.add_all([hz, gz])
        db.session.commit()
        warehouse_choice.set_coverage(hz.id, ["浙江", "江苏", "上海"])
        warehouse_choice.set_coverage(gz.id, ["广东"])  # does not cover 浙江: excluded by the rules
        for sku in skus.values():
            stock.inbound(hz.id, sku.id, stock_qty, source_ref="期初")
            stock.inbound(gz.id, sku.id, stock_qty, source_ref="期初")
        db.session.commit()
        paid = dt.datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
        ids: dict[str, list[int]] = {m: [] for m in CODES}
        for run, code in CODES.items():
            if run not in modes:
                continue
            for i in range(n_orders):
                order = orders.create_order(shop, {
                    "platform_order_id": f"{run}-{i}", "status": "pending_payment",
                    "receiver_name": "压测", "receiver_phone": "13700009999", "receiver_province": "浙江省",
                    "receiver_city": "杭州市", "receiver_district": "西湖区", "receiver_address": "文三路1号",
                    "paid_at": paid, "platform_created_at": paid, "paid_amount": "9.00", "post_fee": "0",
                    "lines": [{"platform_line_id": "1", "merchant_code": code, "title": code, "quantity": 1,
                               "price": "9.00", "paid_amount": "9.00"}],
                }, source="import")
                db.session.flush()
                order_status.apply(order, "pay", source="sync")
                ids[run].append(order.id)
                if i % 500 == 499:
                    db.session.commit()
            db.session.commit()
        from app.models import Stock

        stock_ids = {code: db.session.scalar(select(Stock.id).where(Stock.sku_id == sku.id,
                                                                    Stock.warehouse_id == hz.id))
                     for code, sku in skus.items()}
        out = {"ids": ids, "hz": hz.id, "skus": {c: s.id for c, s in skus.items()}, "stock_ids": stock_ids}
        db.session.remove()
        db.engine.dispose()
    return out


# --- workers --------------------------------------------------------------------------------
def raw_worker(url, stock_row_id, wh_id, sku_id, attempts, barrier, q):
    import psycopg

    conn = psycopg.connect(psycopg_url(url))
    ok = refused = 0
    barrier.wait(timeout=120)
    for i in range(attempts):
        with conn.transaction():
            cur = conn.execute(
                "UPDATE oms_stock SET reserved = reserved + 1, updated_at = now() "
                "WHERE id = %s AND reserved + 1 <= on_hand", (stock_row_id,))
            if cur.rowcount == 1:
                conn.execute(
                    "INSERT INTO oms_stock_movement (warehouse_id, sku_id, movement_type, on_hand_delta, "
                    "reserved_delta, source_ref, created_at) VALUES (%s, %s, 'reserve', 0, 1, %s, now())",
                    (wh_id, sku_id, f"RAW-{os.getpid()}-{i}"))
                ok += 1
            else:
                refused += 1
    q.put((time.perf_counter(), ok, refused))
    conn.close()


def raw_batch_worker(url, stock_row_id, wh_id, sku_id, attempts, batch, barrier, q):
    """The limit for a batch: per transaction one UPDATE granting min(batch, available) and
    one multi-row ledger INSERT (one movement per granted unit, as the service writes)."""
    import psycopg

    conn = psycopg.connect(psycopg_url(url))
    ok = refused = 0
    barrier.wait(timeout=120)
    done = 0
    while done < attempts:
        n = min(batch, attempts - done)
        with conn.transaction():
            got = conn.execute(
                "WITH cur AS (SELECT id, GREATEST(0, LEAST(%s, on_hand - reserved)) AS g FROM oms_stock "
                "WHERE id = %s FOR UPDATE) UPDATE oms_stock s SET reserved = s.reserved + cur.g, "
                "updated_at = now() FROM cur WHERE s.id = cur.id RETURNING cur.g", (n, stock_row_id)).fetchone()[0]
            if got:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO oms_stock_movement (warehouse_id, sku_id, movement_type, on_hand_delta, "
                        "reserved_delta, source_ref, created_at) VALUES (%s, %s, 'reserve', 0, 1, %s, now())",
                        [(wh_id, sku_id, f"RAWB-{os.getpid()}-{done + i}") for i in range(got)])
        ok += got
        refused += n - got
        done += n
    q.put((time.perf_counter(), ok, refused))
    conn.close()


def app_worker(url, order_ids, mode, batch, barrier, q):
    app = build_app(url, REDIS)
    with app.app_context():
        from sqlalchemy import text

        from app.extensions import db
        from app.models import Order
        from app.services import orders as order_service, stock

        db.session.execute(text("SELECT 1"))
        db.session.commit()
        ok = refused = 0
        barrier.wait(timeout=120)
        if mode in ("batch", "batch_audit"):
            from sqlalchemy import select
            from sqlalchemy.orm import selectinload

            from app.services import batch_actions

            for i in range(0, len(order_ids), batch):
                chunk = order_ids[i:i + batch]
                if mode == "batch":
                    found = db.session.scalars(select(Order).where(Order.id.in_(chunk))
                                               .options(selectinload(Order.lines), selectinload(Order.holds))).all()
                    res = stock.reserve_orders(found)
                    db.session.commit()
                    ok += sum(1 for v in res.values() if v)
                    refused += sum(1 for v in res.values() if not v)
                else:
                    res = batch_actions.run("audit", chunk, user_id=None, source="rule", chunk_size=batch)
                    ok += len(res["ok"])
                    refused += len(res["failed"])
            order_ids = []
        for oid in order_ids:
            if mode == "service":
                order = db.session.get(Order, oid)
                if stock.reserve_order(order):
                    ok += 1
                else:
                    refused += 1
                db.session.commit()
            else:
                try:
                    order_service.transition(oid, "audit")
                    ok += 1
                except stock.OutOfStock:
                    refused += 1
        q.put((time.perf_counter(), ok, refused))
        db.session.remove()
        db.engine.dispose()


def race(target, args_for, workers: int) -> tuple[float, int, int]:
    mp = multiprocessing.get_context("fork")
    barrier = mp.Barrier(workers + 1)
    q = mp.Queue()
    procs = [mp.Process(target=target, args=args_for(w) + (barrier, q)) for w in range(workers)]
    for p in procs:
        p.start()
    barrier.wait(timeout=180)
    t0 = time.perf_counter()
    results = [q.get(timeout=900) for _ in procs]
    for p in procs:
        p.join(60)
    end = max(r[0] for r in results)
    return end - t0, sum(r[1] for r in results), sum(r[2] for r in results)


def check(url, sku_id: int, wh_id: int, order_ids=None) -> dict:
    app = build_app(url, REDIS)
    with app.app_context():
        from sqlalchemy import func, select

        from app.extensions import db
        from app.models import Order, Stock
        from app.services import stock

        on_hand, reserved = db.session.execute(select(Stock.on_hand, Stock.reserved).where(
            Stock.sku_id == sku_id, Stock.warehouse_id == wh_id)).one()
        out = {"on_hand": on_hand, "reserved": reserved, "oversold": max(0, reserved - on_hand),
               "ledger_ok": stock.check_ledger() == []}
        if order_ids:
            reserved_orders = held = 0
            for oid in order_ids:
                o = db.session.get(Order, oid)
                if stock.reserved_by_order(oid):
                    reserved_orders += 1
                elif o.active_hold_reasons == ["out_of_stock"]:
                    held += 1
            out.update(reserved_orders=reserved_orders, held=held,
                       unaccounted=len(order_ids) - reserved_orders - held)
            out["oversold"] = max(out["oversold"], reserved_orders - on_hand)
        db.session.remove()
        db.engine.dispose()
    return out


def main() -> int:
    logging.disable(logging.WARNING)  # FAB's permission sync chatter on every app start
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=3000)
    ap.add_argument("--stock", type=int, default=2400)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=50, help="orders per transaction in the batch runs")
    ap.add_argument("--modes", default="service,audit,batch,batch_audit")
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = ap.parse_args()
    name, url = create_database(PG, "oms_bench_reserve_")
    try:
        t = time.perf_counter()
        world = setup(url, args.orders, args.stock, args.modes.split(","))
        print(f"setup: {args.orders} paid orders × 2 runs, stock {args.stock} per hot SKU "
              f"({time.perf_counter() - t:.1f} s)")
        W = args.workers
        hz = world["hz"]

        B = args.batch
        per = [args.orders // W + (1 if w < args.orders % W else 0) for w in range(W)]
        raws = {}
        for key, target, code, extra in (("raw", raw_worker, "HOT-RAW", ()),
                                         ("raw_batch", raw_batch_worker, "HOT-RAWB", (B,))):
            sku = world["skus"][code]
            el, ok, no = race(target, lambda w: (url, world["stock_ids"][code], hz, sku, per[w]) + extra, W)
            res = check(url, sku, hz)
            raws[key] = (ok + no) / el
            label = ("raw: conditional UPDATE + ledger INSERT, 1 per tx" if key == "raw" else
                     f"raw batch: one UPDATE + {B}-row ledger INSERT per tx")
            print(f"{label}: {ok + no} attempts in {el:.2f} s = {raws[key]:,.0f}/s; reserved "
                  f"{res['reserved']}/{res['on_hand']}, oversold {res['oversold']}")

        rows = {}
        for mode in args.modes.split(","):
            ids = world["ids"][mode]
            el, ok, no = race(app_worker, lambda w: (url, ids[w::W], mode, B), W)
            res = check(url, world["skus"][CODES[mode]], hz, ids)
            rate = (ok + no) / el
            rows[mode] = (rate, res)
            print(f"{LABELS[mode].format(b=B)}: {ok + no} orders in {el:.2f} s = {rate:,.0f}/s "
                  f"({rate / raws['raw']:.0%} of raw, {rate / raws['raw_batch']:.0%} of raw batch); "
                  f"reserved {ok} (stock {res['reserved']}/{res['on_hand']}), 缺货 {no}, "
                  f"oversold {res['oversold']}, unaccounted {res['unaccounted']}, "
                  f"ledger {'OK' if res['ledger_ok'] else 'MISMATCH'}")
        safe = all(r[1]["oversold"] == 0 and r[1]["ledger_ok"] and r[1]["unaccounted"] == 0 for r in rows.values())
        best = max(rows, key=lambda m: rows[m][0])
        met = safe and rows[best][0] >= 0.5 * raws["raw"]
        print(f"target (0 oversell, service ≥ 50% of the raw rate {raws['raw']:,.0f}/s): "
              f"{'met' if met else 'MISSED'} by {best} ({rows[best][0] / raws['raw']:.0%}); "
              f"0 oversell: {'met' if safe else 'MISSED'}")
        return 0 if met else 1
    finally:
        if not args.keep:
            drop_database(PG, name)
        else:
            print(f"kept database {name}")


if __name__ == "__main__":
    sys.exit(main())
