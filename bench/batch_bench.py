"""Batch-audit benchmark (issue #4, 批量操作). Not a test: it prints, never asserts.

    .venv/bin/python bench/batch_bench.py [--orders 5000] [--chunk 200] [--append]

On a scratch PostgreSQL database (created here, dropped at the end): migrate, seed
roles, one shop, 20 SKUs with stock in one warehouse, ``--orders`` paid orders
(待审核, one or two lines each). Then, for the same orders:

  (a) raw limit  what an audit must write, as plain SQL in one transaction (rolled
                 back): per order one conditional stock UPDATE per line, one movement
                 row per line, the status UPDATE and one event row, sent with
                 executemany; no ORM, no checks, no savepoints;
  (b) batch      ``services/batch_actions.run("audit", ids)``: per-order savepoints,
                 the state machine (guards, reservation through the stock ledger,
                 events), commits every ``--chunk`` orders.

Prints wall time, orders/s and the ratio (b)/(a); ``--append`` adds a line to
bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_PG = os.environ.get("OMS_BENCH_PG_URL", os.environ.get("OMS_TEST_PG_URL",
                                                              "postgresql://postgres@127.0.0.1:5432/test"))
DEFAULT_REDIS = os.environ.get("OMS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def _engine(url: str, **kw):
    import sqlalchemy as sa

    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"), **kw)


def seed(n_orders: int) -> list[int]:
    from decimal import Decimal

    from app.extensions import db
    from app.models import Product, Shop, Sku, Warehouse
    from app.services import order_status, orders, stock

    shop = Shop(name="基准店", platform="taobao", sync_interval_seconds=60, backfill_days=3)
    product = Product(code="BP", name="基准商品")
    skus = [Sku(product=product, merchant_code=f"B-{i:03d}", name=f"基准 {i}", cost_price=Decimal("10.00"),
                sale_price=Decimal("30.00")) for i in range(20)]
    wh = Warehouse(code="BW", name="基准仓", priority=1)
    db.session.add_all([shop, product, wh, *skus])
    db.session.commit()
    for sku in skus:
        stock.inbound(wh.id, sku.id, 10 * n_orders, source_ref="期初")
    db.session.commit()
    by_code = {s.merchant_code: s for s in skus}
    paid = dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc)
    ids = []
    for i in range(n_orders):
        lines = [{"platform_line_id": str(k + 1), "merchant_code": f"B-{(i + k) % 20:03d}", "title": "基准商品",
                  "quantity": 1 + k, "price": "30.00", "paid_amount": "30.00"} for k in range(1 + i % 2)]
        order = orders.create_order(shop, {
            "platform_order_id": f"B{i:08d}", "status": "pending_payment", "paid_at": paid,
            "receiver_phone": f"138{i:08d}", "receiver_name": "测试", "paid_amount": "30.00", "lines": lines,
        }, skus_by_code=by_code)
        db.session.flush()
        order_status.apply(order, "pay", source="sync")
        ids.append(order.id)
        if i % 500 == 499:
            db.session.commit()
    db.session.commit()
    return ids


def raw_limit(url: str, ids: list[int]) -> float:
    """The writes of an audit as plain SQL, in one transaction, rolled back."""
    import psycopg

    with psycopg.connect(url) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT l.order_id, l.sku_id, l.quantity, s.warehouse_id FROM oms_order_line l "
                        "JOIN oms_stock s ON s.sku_id = l.sku_id WHERE l.order_id = ANY(%s)", (ids,))
            lines = cur.fetchall()
        start = time.perf_counter()
        with conn.cursor() as cur:
            cur.executemany(
                "UPDATE oms_stock SET reserved = reserved + %s, updated_at = now() WHERE warehouse_id = %s "
                "AND sku_id = %s AND reserved + %s <= on_hand",
                [(q, wh, sku, q) for _o, sku, q, wh in lines])
            cur.executemany(
                "INSERT INTO oms_stock_movement (warehouse_id, sku_id, movement_type, on_hand_delta, "
                "reserved_delta, order_id, created_at) VALUES (%s, %s, 'reserve', 0, %s, %s, now())",
                [(wh, sku, q, o) for o, sku, q, wh in lines])
            cur.executemany("UPDATE oms_order SET status = 'to_ship', audited_at = now(), warehouse_id = %s "
                            "WHERE id = %s AND status = 'to_audit'",
                            [(lines[0][3], o) for o in ids])
            cur.executemany(
                "INSERT INTO oms_order_event (order_id, created_at, source, action, field, old_value, new_value, "
                "note) VALUES (%s, now(), 'user', 'audit', 'status', 'to_audit', 'to_ship', '批量操作')",
                [(o,) for o in ids])
        elapsed = time.perf_counter() - start
        conn.rollback()
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=5000)
    ap.add_argument("--chunk", type=int, default=200)
    ap.add_argument("--pg-url", default=DEFAULT_PG)
    ap.add_argument("--redis-url", default=DEFAULT_REDIS)
    ap.add_argument("--append", action="store_true", help="append the result to bench/RESULTS.md")
    args = ap.parse_args()

    import sqlalchemy as sa

    name = "oms_bench_" + uuid.uuid4().hex[:8]
    admin = _engine(args.pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = re.sub(r"/[^/]+$", f"/{name}", args.pg_url)
    try:
        import config
        from app import create_app

        app = create_app(config.Config, SQLALCHEMY_DATABASE_URI=url.replace("postgresql://", "postgresql+psycopg://"),
                         REDIS_URL=args.redis_url, RATELIMIT_ENABLED=False, OMS_BATCH_CHUNK=args.chunk)
        with app.app_context():
            from flask_migrate import upgrade

            from app.extensions import db
            from app.services import batch_actions, setup

            upgrade()
            setup.initialise(admin_password="Bench-pass-123")
            t0 = time.perf_counter()
            ids = seed(args.orders)
            print(f"seeded {len(ids)} orders in {time.perf_counter() - t0:.1f} s")
            db.session.execute(sa.text("ANALYZE"))
            db.session.commit()
            raw = raw_limit(url, ids)
            db.session.remove()
            t0 = time.perf_counter()
            result = batch_actions.run("audit", ids, {}, user_id=None, chunk_size=args.chunk)
            batch = time.perf_counter() - t0
            ok = len(result["ok"])
        print(f"(a) raw limit : {raw:7.2f} s  {args.orders / raw:8.0f} orders/s")
        print(f"(b) batch     : {batch:7.2f} s  {args.orders / batch:8.0f} orders/s  "
              f"({batch / raw:.1f}× raw; ok {ok}, failed {len(result['failed'])}, chunk {args.chunk})")
        if args.append:
            line = (f"| {dt.date.today()} | batch audit | {args.orders:,} orders, chunk {args.chunk}, "
                    f"PostgreSQL, {platform.machine()} {os.cpu_count()} cores | raw limit {raw:.2f} s "
                    f"({args.orders / raw:,.0f}/s) | batch {batch:.2f} s ({args.orders / batch:,.0f}/s), "
                    f"{batch / raw:.1f}× raw |\n")
            with open(ROOT / "bench" / "RESULTS.md", "a") as fh:
                fh.write(line)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
