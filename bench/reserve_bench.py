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


def setup(db_url: str, n_orders: int, stock_qty: int) -> dict:
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
                          sale_price=Decimal("9")) for code in ("HOT-SVC", "HOT-AUD", "HOT-RAW")}
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
        ids: dict[str, list[int]] = {"service": [], "audit": []}
        for run, code in (("service", "HOT-SVC"), ("audit", "HOT-AUD")):
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


def app_worker(url, order_ids, mode, barrier, q):
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
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = ap.parse_args()
    name, url = create_database(PG, "oms_bench_reserve_")
    try:
        t = time.perf_counter()
        world = setup(url, args.orders, args.stock)
        print(f"setup: {args.orders} paid orders × 2 runs, stock {args.stock} per hot SKU "
              f"({time.perf_counter() - t:.1f} s)")
        W = args.workers
        hz = world["hz"]

        sku = world["skus"]["HOT-RAW"]
        per = [args.orders // W + (1 if w < args.orders % W else 0) for w in range(W)]
        raw_t, raw_ok, raw_no = race(raw_worker, lambda w: (url, world["stock_ids"]["HOT-RAW"], hz, sku, per[w]), W)
        raw = check(url, sku, hz)
        raw_rate = (raw_ok + raw_no) / raw_t
        print(f"raw (UPDATE + ledger INSERT, 1 tx): {raw_ok + raw_no} attempts in {raw_t:.2f} s = "
              f"{raw_rate:,.0f}/s; reserved {raw['reserved']}/{raw['on_hand']}, oversold {raw['oversold']}")

        rows = []
        for mode, code in (("service", "HOT-SVC"), ("audit", "HOT-AUD")):
            ids = world["ids"][mode]
            el, ok, no = race(app_worker, lambda w: (url, ids[w::W], mode), W)
            res = check(url, world["skus"][code], hz, ids)
            rate = (ok + no) / el
            rows.append((mode, el, ok, no, rate, res))
            label = "stock.reserve_order" if mode == "service" else "审单 orders.transition(audit)"
            print(f"{label}: {ok + no} orders in {el:.2f} s = {rate:,.0f}/s ({rate / raw_rate:.0%} of raw); "
                  f"reserved {ok} (stock {res['reserved']}/{res['on_hand']}), 缺货 {no}, "
                  f"oversold {res['oversold']}, unaccounted {res['unaccounted']}, "
                  f"ledger {'OK' if res['ledger_ok'] else 'MISMATCH'}")
        svc = rows[0]
        ok_target = svc[4] >= 0.5 * raw_rate and all(r[5]["oversold"] == 0 and r[5]["ledger_ok"] for r in rows)
        print(f"target (0 oversell, service ≥ 50% of raw): {'met' if ok_target else 'MISSED'}")
        return 0 if ok_target else 1
    finally:
        if not args.keep:
            drop_database(PG, name)
        else:
            print(f"kept database {name}")


if __name__ == "__main__":
    sys.exit(main())
