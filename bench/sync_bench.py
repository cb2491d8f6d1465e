"""Platform-sync throughput benchmark (issue #3). Not a test: it prints, never asserts.

    .venv/bin/python bench/sync_bench.py [--orders 10000] [--shops 10] [--profile]

On a scratch PostgreSQL database (created here, dropped at the end) with the
sandbox in a separate process on the same machine, it measures, for the same
seeded orders:

  (d) parse only   fetching every window/page from the sandbox through the real
                   clients (signing, HTTP, JSON, parsing), applying nothing;
  (a) raw limit    the parsed rows upserted with psycopg 3 COPY into temp staging
                   tables + INSERT ... ON CONFLICT ... WHERE ... IS DISTINCT FROM,
                   into copies of oms_order / oms_order_line in a scratch schema
                   (first load, then a no-change re-run);
  (b) first sync   ``sync.sync_shop`` for every shop, one after the other;
  (c) re-sync      the same after resetting every ``sync_checkpoint`` to None, so
                   the same windows are read again and nothing has changed;
  (e) freshness    one new order per shop, one more incremental sync each.

For every phase: wall time, orders/s, the ratio to the raw limit, and CPU seconds
of this process (OMS + clients), of the sandbox process and of PostgreSQL (all
``postgres`` processes, read from /proc), so the reader sees where time goes.
``--profile`` also runs (b) under cProfile and prints the top functions.
See bench/README.md.
"""
from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import math
import os
import platform
import pstats
import re
import secrets
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402  (scratch database, the app)
from common import build_app, drop_database, psycopg_url  # noqa: E402,F401  (also used by other benches)

# Targets from issue #3.
TARGET_FIRST = 5000.0       # orders/s, first sync
TARGET_FIRST_RATIO = 3.0    # first sync within 3x of the raw COPY path
TARGET_RESYNC = 10000.0     # orders/s, no-change re-sync
TARGET_FRESH_S = 60.0       # a new order visible within 60 s with the default schedule

def _default_schedule() -> tuple[int, int]:
    """(dispatcher period, shop interval) of the default schedule: the interval the
    sync dispatcher is registered with in app/jobs/schedule.py and the default of
    Shop.sync_interval_seconds (read from the code, so the estimate follows it)."""
    dispatch, shop = 15, 60
    try:
        text = (ROOT / "app" / "jobs" / "schedule.py").read_text()
        m = re.search(r"register\(\s*dispatch_due_syncs[^)]*?interval\s*=\s*(\d+)", text, re.S)
        if m:
            dispatch = int(m.group(1))
        m = re.search(r"sync_interval_seconds\s*=\s*Column\([^)]*?default\s*=\s*(\d+)",
                      (ROOT / "app" / "models" / "shop.py").read_text(), re.S)
        if m:
            shop = int(m.group(1))
    except OSError:
        pass
    return dispatch, shop


DISPATCH_INTERVAL_S, SHOP_INTERVAL_S = _default_schedule()


def _schedule_slack() -> int:
    """services/sync.SCHEDULE_SLACK_S (a shop is due that long before its interval), read from the code."""
    m = re.search(r"^SCHEDULE_SLACK_S\s*=\s*(\d+)", (ROOT / "app" / "services" / "sync.py").read_text(), re.M)
    return int(m.group(1)) if m else 0


SCHEDULE_SLACK_S = _schedule_slack()

DEFAULT_PG = os.environ.get("OMS_BENCH_PG_URL", os.environ.get("OMS_TEST_PG_URL",
                                                              "postgresql://postgres@127.0.0.1:5432/test"))
DEFAULT_REDIS = os.environ.get("OMS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
SETTLED_S = 6 * 60  # seeded orders are modified at least this long ago (PDD serves nothing newer than 3 min)


# =====================================================================================
# CPU accounting (Linux /proc): this process, the sandbox process, PostgreSQL
# =====================================================================================
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0.0


def _postgres_cpu() -> float | None:
    """CPU seconds of every process named postgres (backends + background), or None."""
    total, seen = 0.0, False
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/comm", "rb") as fh:
                if fh.read().strip() != b"postgres":
                    continue
        except OSError:
            continue
        seen = True
        total += _proc_cpu(int(name))
    return total if seen else None


def _all_procs_cpu() -> dict:
    """pid -> (command, CPU seconds) for every process (to name the other workloads)."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as fh:
                    cmd = fh.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()[:60]
            except OSError:
                continue
            out[int(name)] = (cmd, _proc_cpu(int(name)))
    return out


def _system_busy_cpu() -> float | None:
    """CPU seconds all processes on the machine spent busy (first line of /proc/stat)."""
    try:
        with open("/proc/stat") as fh:
            parts = fh.readline().split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[1:9])
        return (user + nice + system + irq + softirq + steal) / _TICK
    except (OSError, ValueError):
        return None


def wait_idle(limit_s: float, share: float = 0.15, sample_s: float = 5.0) -> float:
    """Wait (at most ``limit_s``) until the machine is less than ``share`` busy for
    ``sample_s``; returns the seconds waited. The benchmark itself is idle meanwhile."""
    waited = 0.0
    cores = os.cpu_count() or 1
    while waited < limit_s:
        b0 = _system_busy_cpu()
        time.sleep(sample_s)
        waited += sample_s
        b1 = _system_busy_cpu()
        if b0 is None or b1 is None or (b1 - b0) / (sample_s * cores) < share:
            break
    return waited


class Meter:
    """Wall clock and CPU of a phase: this process, the sandbox child, PostgreSQL, and
    everything else on the machine (other busy CPU: noise from other workloads)."""

    def __init__(self, sandbox_pid: int | None, wait_idle_s: float = 0.0):
        self.sandbox_pid = sandbox_pid
        self.wait_idle_s = wait_idle_s

    def snap(self):
        return (time.perf_counter(), time.process_time(),
                _proc_cpu(self.sandbox_pid) if self.sandbox_pid else None, _postgres_cpu(), _system_busy_cpu())

    def measure(self, fn, *a, profile=None, **kw):
        if self.wait_idle_s:
            waited = wait_idle(self.wait_idle_s)
            if waited > 5:
                print(f"    (waited {waited:.0f} s for the machine to be idle)", flush=True)
        procs = _all_procs_cpu()
        before = self.snap()
        if profile is not None:
            profile.enable()
        try:
            result = fn(*a, **kw)
        finally:
            if profile is not None:
                profile.disable()
        after = self.snap()
        procs_after = _all_procs_cpu()
        cost = {"wall": after[0] - before[0], "cpu_oms": after[1] - before[1],
                "cpu_sandbox": None if before[2] is None else after[2] - before[2],
                "cpu_pg": None if before[3] is None or after[3] is None else after[3] - before[3]}
        cost["cpu_other"] = None
        if before[4] is not None and after[4] is not None:
            known = cost["cpu_oms"] + (cost["cpu_sandbox"] or 0) + (cost["cpu_pg"] or 0)
            cost["cpu_other"] = max(0.0, after[4] - before[4] - known)
        mine = {os.getpid(), self.sandbox_pid}
        others = []
        for pid, (cmd, cpu) in procs_after.items():
            if pid in mine or "postgres" in cmd[:40]:
                continue
            delta = cpu - procs.get(pid, (cmd, 0.0))[1]
            if delta >= 0.5:
                others.append((round(delta, 1), cmd))
        cost["other_procs"] = sorted(others, reverse=True)[:3]
        return result, cost


# =====================================================================================
# The sandbox child process
# =====================================================================================
def bench_sandbox_shops(n: int):
    from app.sandbox.state import DEMO_SHOPS, SandboxShop

    shops = []
    for i in range(n):
        base = DEMO_SHOPS[i % len(DEMO_SHOPS)]
        k = i // len(DEMO_SHOPS)
        if k == 0:
            shops.append(base)
        else:
            shops.append(SandboxShop(platform=base.platform, name=f"{base.name}{k + 1}号店",
                                     app_key=f"{base.app_key}-b{k}", app_secret=base.app_secret + f"-b{k}",
                                     access_token=base.access_token + f"-b{k}", seller_nick=base.seller_nick,
                                     categories=base.categories))
    return shops


def make_state_class():
    from app.sandbox.state import SandboxState

    class BenchSandboxState(SandboxState):
        """The sandbox with ~2 lines per order (issue #3: 100,000 orders = 200,000 lines)
        instead of its own 1.31: 30% one line, 40% two, 30% three (mean 2.0), distinct
        listings, 1% unknown merchant codes as in the sandbox. Everything else (buyers,
        amounts, statuses, ids, wire formats) is the sandbox's own."""

        two_lines = True

        def _build(self, book, created, *, lines=None, buyer=None, key=None):
            if lines is None and self.two_lines:
                rnd = self.rng.random
                x = rnd()
                n = 1 if x < 0.30 else (2 if x < 0.70 else 3)
                known, unknown, share = book.known, book.unknown, self.UNKNOWN_CODE_SHARE
                lines = []
                for _ in range(n):
                    for _attempt in range(8):
                        x = rnd()
                        if x < share:
                            lst = unknown[int(x / share * len(unknown))]
                        else:
                            lst = known[int((x - share) / (1 - share) * len(known))]
                        if not any(lst is have for have, _n in lines):
                            break
                    else:
                        continue
                    x = rnd()
                    lines.append((lst, 1 if x < 0.8 else (2 if x < 0.93 else 3)))
            return super()._build(book, created, lines=lines, buyer=buyer, key=key)

    return BenchSandboxState


def sandbox_child(args) -> None:
    """Seed the sandbox, serve it, print one JSON line, serve until stdin closes."""
    from app.sandbox.server import serve_in_thread
    from app.sandbox.state import visible

    state_cls = make_state_class()
    state_cls.two_lines = not args.sandbox_lines
    shops = bench_sandbox_shops(args.shops)
    state = state_cls(shops=shops, seed=args.seed, rate_per_minute=0)
    now = int(time.time())
    lo, hi = now - int(args.days * 86400), now - SETTLED_S
    per = [args.orders // len(shops) + (1 if i < args.orders % len(shops) else 0) for i in range(len(shops))]
    t0 = time.perf_counter()
    for shop, n in zip(shops, per):
        if n:
            state.seed_orders(shop, n, lo, hi)
    seed_s = time.perf_counter() - t0
    counts = {"orders": 0, "lines": 0, "visible_orders": 0, "visible_lines": 0}
    for shop in shops:
        book = state.book(shop)
        for o in book.orders.values():
            counts["orders"] += 1
            counts["lines"] += len(o.lines)
            if visible(shop.protocol, o):
                counts["visible_orders"] += 1
                counts["visible_lines"] += len(o.lines)
    base, stop = serve_in_thread(state)
    print(json.dumps({"base": base, "seed_seconds": seed_s, "window": [lo, hi], **counts}), flush=True)
    try:
        sys.stdin.read()  # the parent closes stdin (or dies) when it is done
    finally:
        stop()


def start_sandbox(args):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_sandbox-child", "--orders", str(args.orders),
           "--shops", str(args.shops), "--seed", str(args.seed), "--days", str(args.days)]
    if args.sandbox_lines:
        cmd.append("--sandbox-lines")
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=10)
        raise SystemExit(f"sandbox child failed (exit {proc.returncode})")
    return proc, json.loads(line)


def stop_child(proc) -> None:
    """Ends a child (the sandbox, a worker) that runs until its stdin closes."""
    try:
        proc.stdin.close()
        proc.wait(timeout=15)
    except Exception:
        proc.kill()  # only our own child, by its handle
        proc.wait(timeout=5)


# =====================================================================================
# Scratch database and the app
# =====================================================================================
def create_database(pg_url: str) -> tuple[str, str]:
    return common.create_database(pg_url, "oms_bench_")


def prepare_world(base: str, shops, days: float) -> list[int]:
    """Migrate, initialise, one SKU per sandbox CATALOGUE code, one OMS shop per twin."""
    from flask_migrate import upgrade

    from app.extensions import db
    from app.models import Product, Shop, Sku
    from app.sandbox.data import CATALOGUE, CODE_INFO, CATEGORIES
    from app.services import setup

    upgrade()
    setup.initialise(admin_password=secrets.token_urlsafe(12))
    products = {}
    for code, title, spec, price in CATALOGUE:
        cat, pcode = CODE_INFO[code]
        prod = products.get(pcode)
        if prod is None:
            prod = products[pcode] = Product(code="P-" + pcode, name=title, category=CATEGORIES[cat][0])
            db.session.add(prod)
        db.session.add(Sku(product=prod, merchant_code=code, name=title, spec=spec, sale_price=price,
                           cost_price=(price * Decimal("0.55")).quantize(Decimal("0.01"))))
    ids = []
    for twin in shops:
        shop = Shop(name=f"沙箱-{twin.name}", platform=twin.platform, app_key=twin.app_key,
                    app_secret=twin.app_secret, access_token=twin.access_token,
                    gateway_url=base + twin.gateway_path, backfill_days=min(90, math.ceil(days) + 1),
                    sync_interval_seconds=SHOP_INTERVAL_S)
        db.session.add(shop)
        db.session.flush()
        ids.append(shop.id)
    db.session.commit()
    return ids


def clear_locks(shop_ids) -> None:
    from app.jobs.queue import redis_conn

    redis_conn().delete(*[f"oms:sync:shop:{i}" for i in shop_ids])


# =====================================================================================
# (d) parse only: the engine's windows and pages, nothing applied
# =====================================================================================
def fetch_all(shop_ids) -> dict:
    from app.extensions import db
    from app.models import Shop
    from app.models.types import utcnow
    from app.platforms import client_for
    from app.services.sync import _first_start

    from app.platforms.http import FormTransport

    class CountingTransport(FormTransport):
        calls = 0

        def post(self, *a, **kw):
            CountingTransport.calls += 1
            return super().post(*a, **kw)

    out = {"orders": {}, "calls": 0, "windows": 0, "pages": 0, "fetched": 0}
    for sid in shop_ids:
        shop = db.session.get(Shop, sid)
        client = client_for(shop, http=CountingTransport())
        now = utcnow()
        start, end_limit = _first_start(shop, now), now - client.safety_lag
        while start < end_limit:  # as sync._sync_locked walks a first sync
            end = min(start + client.max_window, end_limit)
            for page in client.fetch_changed(start, end):
                out["pages"] += 1
                for po in page.orders:
                    out["fetched"] += 1
                    out["orders"][(sid, po.platform_order_id)] = po
            out["windows"] += 1
            start = end
    db.session.remove()
    out["calls"] = CountingTransport.calls
    return out


# =====================================================================================
# (a) the physical limit: COPY + INSERT ... ON CONFLICT ... IS DISTINCT FROM
# =====================================================================================
ORDER_COLS = ["shop_id", "platform", "platform_order_id", "status", "platform_status", "is_held",
              "goods_amount", "discount_amount", "post_fee", "paid_amount", "cost_amount", "buyer_nick",
              "receiver_name", "receiver_phone", "receiver_province", "receiver_city", "receiver_district",
              "receiver_address", "receiver_zip", "buyer_message", "seller_memo", "flag",
              "platform_created_at", "paid_at", "platform_modified_at", "shipped_at", "tracking_number",
              "is_returning_customer"]
ORDER_UPDATE = [c for c in ORDER_COLS if c not in ("shop_id", "platform", "platform_order_id", "is_held",
                                                   "is_returning_customer")]
LINE_STAGE_COLS = ["shop_id", "platform_order_id", "platform_line_id", "merchant_code", "title", "spec",
                   "quantity", "price", "paid_amount", "refund_status"]
LINE_UPDATE = ["merchant_code", "sku_id", "title", "spec", "quantity", "price", "paid_amount", "cost_price",
               "refund_status"]


def raw_setup(conn, indexes: str = "all") -> None:
    """bench_raw.oms_order / oms_order_line: the app tables' columns, defaults, checks,
    unique keys and indexes (LIKE ... INCLUDING ALL), their own sequences, and the
    same foreign keys; plus the temp staging tables. ``indexes="keys"``: only the
    primary and upsert keys, none of the app's secondary indexes (to show their cost)."""
    conn.execute("CREATE SCHEMA bench_raw")
    for table in ("oms_order", "oms_order_line"):
        if indexes == "all":
            conn.execute(f"CREATE TABLE bench_raw.{table} (LIKE public.{table} INCLUDING ALL)")
        else:
            conn.execute(f"CREATE TABLE bench_raw.{table} (LIKE public.{table} INCLUDING ALL EXCLUDING INDEXES)")
            key = "shop_id, platform_order_id" if table == "oms_order" else "order_id, platform_line_id"
            conn.execute(f"ALTER TABLE bench_raw.{table} ADD PRIMARY KEY (id), ADD UNIQUE ({key})")
        conn.execute(f"CREATE SEQUENCE bench_raw.{table}_id_seq OWNED BY bench_raw.{table}.id")
        conn.execute(f"ALTER TABLE bench_raw.{table} ALTER COLUMN id SET DEFAULT "
                     f"nextval('bench_raw.{table}_id_seq')")
    conn.execute("ALTER TABLE bench_raw.oms_order ADD FOREIGN KEY (shop_id) REFERENCES public.oms_shop (id)")
    conn.execute("ALTER TABLE bench_raw.oms_order_line ADD FOREIGN KEY (order_id) "
                 "REFERENCES bench_raw.oms_order (id) ON DELETE CASCADE")
    conn.execute("ALTER TABLE bench_raw.oms_order_line ADD FOREIGN KEY (sku_id) REFERENCES public.oms_sku (id)")
    cols = ", ".join(ORDER_COLS)
    conn.execute(f"CREATE TEMP TABLE st_order AS SELECT {cols} FROM bench_raw.oms_order WITH NO DATA")
    conn.execute("CREATE TEMP TABLE st_line (shop_id int, platform_order_id varchar(64), "
                 "platform_line_id varchar(64), merchant_code varchar(64), title varchar(255), "
                 "spec varchar(255), quantity int, price numeric(12,2), paid_amount numeric(12,2), "
                 "refund_status varchar(32))")
    conn.commit()


def _order_row(sid: int, platform: str, po, cost: Decimal) -> tuple:
    return (sid, platform, po.platform_order_id, po.status, po.platform_status, False, po.goods_amount,
            po.discount_amount, po.post_fee, po.paid_amount, cost, po.buyer_nick, po.receiver_name,
            po.receiver_phone, po.receiver_province, po.receiver_city, po.receiver_district,
            po.receiver_address, po.receiver_zip, po.buyer_message, po.seller_memo, po.flag, po.created_at,
            po.paid_at, po.modified_at, po.shipped_at, po.tracking_number, False)


def raw_upsert(conn, batches: list, platforms: dict, costs: dict) -> dict:
    """One transaction per batch (a list of (shop_id, PlatformOrder)): COPY orders, upsert;
    COPY lines, upsert. Returns counts and the split of the time between building rows,
    COPY and the upserts."""
    set_o = ", ".join(f"{c} = EXCLUDED.{c}" for c in ORDER_UPDATE) + ", updated_at = now()"
    guard_o = "({}) IS DISTINCT FROM ({})".format(", ".join(f"t.{c}" for c in ORDER_UPDATE),
                                                  ", ".join(f"EXCLUDED.{c}" for c in ORDER_UPDATE))
    upsert_o = (f"INSERT INTO bench_raw.oms_order AS t ({', '.join(ORDER_COLS)}, created_at, updated_at) "
                f"SELECT {', '.join(ORDER_COLS)}, now(), now() FROM st_order "
                f"ON CONFLICT (shop_id, platform_order_id) DO UPDATE SET {set_o} WHERE {guard_o}")
    set_l = ", ".join(f"{c} = EXCLUDED.{c}" for c in LINE_UPDATE)
    guard_l = "({}) IS DISTINCT FROM ({})".format(", ".join(f"t.{c}" for c in LINE_UPDATE),
                                                  ", ".join(f"EXCLUDED.{c}" for c in LINE_UPDATE))
    upsert_l = ("INSERT INTO bench_raw.oms_order_line AS t (order_id, platform_line_id, merchant_code, sku_id, "
                "title, spec, quantity, price, paid_amount, cost_price, refund_status) "
                "SELECT o.id, l.platform_line_id, l.merchant_code, k.id, l.title, l.spec, l.quantity, l.price, "
                "l.paid_amount, COALESCE(k.cost_price, 0), l.refund_status FROM st_line l "
                "JOIN bench_raw.oms_order o ON o.shop_id = l.shop_id AND o.platform_order_id = l.platform_order_id "
                "LEFT JOIN public.oms_sku k ON k.merchant_code = l.merchant_code "
                f"ON CONFLICT (order_id, platform_line_id) DO UPDATE SET {set_l} WHERE {guard_l}")
    stats = {"orders_written": 0, "lines_written": 0, "rows_s": 0.0, "copy_s": 0.0, "upsert_orders_s": 0.0,
             "upsert_lines_s": 0.0, "commit_s": 0.0}
    for batch in batches:
        t0 = time.perf_counter()
        orows, lrows = [], []
        for sid, po in batch:
            plat = platforms[sid]
            cost = Decimal("0.00")
            for pl in po.lines:
                c = costs.get(pl.merchant_code)
                if c is not None:
                    cost += c * pl.quantity
                lrows.append((sid, po.platform_order_id, pl.platform_line_id, pl.merchant_code, pl.title[:255],
                              pl.spec, pl.quantity, pl.price, pl.paid_amount, pl.refund_status))
            orows.append(_order_row(sid, plat, po, cost))
        t1 = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute("TRUNCATE st_order, st_line")
            with cur.copy(f"COPY st_order ({', '.join(ORDER_COLS)}) FROM STDIN") as cp:
                for row in orows:
                    cp.write_row(row)
            with cur.copy(f"COPY st_line ({', '.join(LINE_STAGE_COLS)}) FROM STDIN") as cp:
                for row in lrows:
                    cp.write_row(row)
            cur.execute("ANALYZE st_order")
            cur.execute("ANALYZE st_line")
            t2 = time.perf_counter()
            cur.execute(upsert_o)
            stats["orders_written"] += cur.rowcount
            t3 = time.perf_counter()
            cur.execute(upsert_l)
            stats["lines_written"] += cur.rowcount
            t4 = time.perf_counter()
        conn.commit()
        t5 = time.perf_counter()
        stats["rows_s"] += t1 - t0
        stats["copy_s"] += t2 - t1
        stats["upsert_orders_s"] += t3 - t2
        stats["upsert_lines_s"] += t4 - t3
        stats["commit_s"] += t5 - t4
    return stats


# =====================================================================================
# (b) (c) (e) the OMS engine
# =====================================================================================
_SQL_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE)\s+\"?(\w+)", re.I)


class SqlCounter:
    """Round trips to PostgreSQL by kind ("INSERT oms_order_event"), and commits."""

    def __init__(self, engine):
        from collections import Counter

        from sqlalchemy import event

        self.engine, self.kinds, self.commits, self.event = engine, Counter(), 0, event

    def _on_sql(self, conn, cursor, statement, parameters, context, executemany):
        verb = statement.lstrip().split(None, 1)[0].upper()
        m = _SQL_TABLE.search(statement)
        self.kinds[f"{verb} {m.group(1) if m else ''}".strip()] += 1

    def _on_commit(self, conn):
        self.commits += 1

    def __enter__(self):
        self.event.listen(self.engine, "before_cursor_execute", self._on_sql)
        self.event.listen(self.engine, "commit", self._on_commit)
        return self

    def __exit__(self, *exc):
        self.event.remove(self.engine, "before_cursor_execute", self._on_sql)
        self.event.remove(self.engine, "commit", self._on_commit)

    def summary(self, per: int, top: int = 10) -> str:
        total = sum(self.kinds.values())
        head = ", ".join(f"{k} {v}" for k, v in self.kinds.most_common(top))
        return (f"{total} SQL statements ({total / max(1, per):.1f} per order) and {self.commits} commits; "
                f"most: {head}")


def sync_all(shop_ids, trigger: str = "manual") -> dict:
    from app.extensions import db

    totals = {"fetched": 0, "created": 0, "updated": 0, "unchanged": 0, "pages": 0, "retries": 0,
              "failed": [], "per_shop_s": []}
    counter = SqlCounter(db.engine)
    with counter:
        _sync_each(shop_ids, trigger, totals)
    totals["sql"] = counter.summary(totals["fetched"])
    totals["sql_kinds"] = dict(counter.kinds)
    totals["commits"] = counter.commits
    return totals


def _sync_each(shop_ids, trigger, totals) -> None:
    from app.extensions import db
    from app.services import sync

    for sid in shop_ids:
        t0 = time.perf_counter()
        run = sync.sync_shop(sid, trigger=trigger)
        totals["per_shop_s"].append(round(time.perf_counter() - t0, 2))
        for k in ("fetched", "created", "updated", "unchanged", "pages", "retries"):
            totals[k] += getattr(run, k) or 0
        if run.status != "success":
            totals["failed"].append((sid, run.error))
        db.session.remove()


# --- parallel shops: N worker processes, as production runs one sync job per shop on N RQ workers ---
def worker_child(args) -> None:
    """A worker process: build the app on the given database, say ready, then on each
    command line from the parent (a JSON list of shop ids) sync those shops one after the
    other and print one JSON line with the totals and this process's CPU seconds."""
    app = build_app(args.worker_db, args.redis_url)
    import logging

    from app.jobs.worker import settle_process

    for noisy in ("alembic", "flask_appbuilder"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    settle_process()  # as `flask oms worker` does before it takes jobs
    with app.app_context():
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            shop_ids = json.loads(line)
            if isinstance(shop_ids, dict) and "prepare" in shop_ids:  # the world, on this scratch database
                base, days, n = shop_ids["prepare"]
                ids = prepare_world(base, bench_sandbox_shops(n), days)
                clear_locks(ids)
                print(json.dumps({"shop_ids": ids}), flush=True)
                continue
            if isinstance(shop_ids, dict) and "reset" in shop_ids:
                reset_checkpoints()
                print(json.dumps({"ok": True}), flush=True)
                continue
            c0, w0 = time.process_time(), time.perf_counter()
            totals = {"fetched": 0, "created": 0, "updated": 0, "unchanged": 0, "pages": 0, "retries": 0,
                      "failed": [], "per_shop_s": []}
            _sync_each(shop_ids, "manual", totals)
            totals["cpu"] = time.process_time() - c0
            totals["wall"] = time.perf_counter() - w0
            totals["shop"] = shop_ids[0] if len(shop_ids) == 1 else shop_ids
            print(json.dumps(totals), flush=True)


class Workers:
    """N worker processes (``worker_child``), started before the measurement so their
    start-up is not timed; ``run(shop_ids)`` hands out one shop at a time and waits for all."""

    def __init__(self, n: int, db_url: str, redis_url: str):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", "--worker-db", db_url,
               "--redis-url", redis_url]
        self.procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
                      for _ in range(n)]
        for proc in self.procs:
            if not json.loads(proc.stdout.readline() or "{}").get("ready"):
                raise SystemExit("a bench worker failed to start")

    def ask(self, command) -> dict:
        """One command to the first worker (prepare the world, reset the checkpoints)."""
        proc = self.procs[0]
        proc.stdin.write(json.dumps(command) + "\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    def run(self, shop_ids: list) -> dict:
        """Every shop synced once: each worker takes the next shop as soon as it is free (as RQ
        workers take jobs from one queue); returns the totals and what each worker did."""
        import selectors

        queue = list(shop_ids)
        done = {proc.pid: [] for proc in self.procs}
        sel = selectors.DefaultSelector()
        busy = 0
        for proc in self.procs:
            sel.register(proc.stdout, selectors.EVENT_READ, proc)
            if queue:
                self._give(proc, queue.pop(0))
                busy += 1
        while busy:
            for key, _mask in sel.select():
                proc = key.data
                line = proc.stdout.readline()
                if not line:
                    raise SystemExit("a bench worker died")
                done[proc.pid].append(json.loads(line))
                busy -= 1
                if queue:
                    self._give(proc, queue.pop(0))
                    busy += 1
        sel.close()
        outs = [o for runs in done.values() for o in runs]
        totals = {k: sum(o[k] for o in outs) for k in ("fetched", "created", "updated", "unchanged", "pages",
                                                        "retries", "cpu")}
        totals["failed"] = [f for o in outs for f in o["failed"]]
        totals["per_worker"] = [{"shops": [o["shop"] for o in runs], "busy_s": round(sum(o["wall"] for o in runs), 2),
                                 "cpu": round(sum(o["cpu"] for o in runs), 2)} for runs in done.values()]
        return totals

    @staticmethod
    def _give(proc, shop_id: int) -> None:
        proc.stdin.write(json.dumps([shop_id]) + "\n")
        proc.stdin.flush()

    def close(self) -> None:
        for proc in self.procs:
            stop_child(proc)


def measure_parallel(meter, workers: "Workers", shop_ids: list):
    """(b)/(c) over the worker processes: wall from the moment all get their shops until the
    last is done; their CPU is the ``cpu oms`` column (and is taken out of ``cpu other``)."""
    result, cost = meter.measure(workers.run, shop_ids)
    cost["cpu_oms"] += result["cpu"]
    if cost.get("cpu_other") is not None:
        cost["cpu_other"] = max(0.0, cost["cpu_other"] - result["cpu"])
    return result, cost


def paired_round(meter, args, db_url: str, base: str, n: int, batches, platforms, costs) -> tuple:
    """One more (a) raw first load, on fresh copies of the tables, then at once one more (b2)
    first sync on a fresh scratch database with fresh workers (started untimed). Returns
    (raw orders/s, first sync orders/s)."""
    import psycopg

    with psycopg.connect(db_url) as conn:
        conn.execute("DROP SCHEMA bench_raw CASCADE")
        conn.commit()
        raw_setup(conn, args.raw_indexes)
        _raw, cost_raw = meter.measure(raw_upsert, conn, batches, platforms, costs)
    db_name, url = create_database(args.pg_url)
    workers = None
    try:
        workers = Workers(args.workers, url, args.redis_url)
        ids = workers.ask({"prepare": [base, args.days, args.shops]})["shop_ids"]
        clear_sandbox_cache(base)
        first, cost = measure_parallel(meter, workers, ids)
        if first["failed"] or first["created"] != n:
            print(f"    round: created {first['created']} of {n}, failed {first['failed'] or 'none'}")
    finally:
        if workers is not None:
            workers.close()
        drop_database(args.pg_url, db_name)
    return _rate(n, cost_raw["wall"]), _rate(first["created"], cost["wall"])


def clear_sandbox_cache(base: str) -> None:
    """The sandbox keeps each order's JSON while the order is unchanged; a first sync is
    measured with none kept (the parse-only phase before it has just serialized them all)."""
    import requests

    requests.post(f"{base}/_sandbox/fragments/clear", timeout=30).raise_for_status()


def reset_checkpoints() -> None:
    from sqlalchemy import update

    from app.extensions import db
    from app.models import Shop

    db.session.execute(update(Shop).values(sync_checkpoint=None))
    db.session.commit()
    db.session.remove()


def db_counts() -> dict:
    from sqlalchemy import text

    from app.extensions import db

    row = db.session.execute(text(
        "SELECT (SELECT count(*) FROM oms_order), (SELECT count(*) FROM oms_order_line), "
        "(SELECT count(*) FROM oms_order_event), (SELECT count(*) FROM oms_order_hold), "
        "(SELECT count(*) FROM oms_customer)")).one()
    db.session.remove()
    return dict(zip(("orders", "lines", "events", "holds", "customers"), row))


def freshness(base: str, shops, shop_ids) -> dict:
    """One new paid order per shop (modified now), then one incremental sync per shop."""
    import requests
    from sqlalchemy import select

    from app.extensions import db
    from app.models import Order
    from app.services import sync

    created = {}
    for twin, sid in zip(shops, shop_ids):
        r = requests.post(f"{base}/_sandbox/shops/{twin.app_key}/orders", json={"count": 1, "status": "paid"})
        r.raise_for_status()
        created[sid] = (twin, r.json()["orders"][0]["order_id"], time.time())
    time.sleep(1.1)  # the gateways speak whole seconds
    per_shop = []
    for twin, sid in zip(shops, shop_ids):
        t0 = time.perf_counter()
        run = sync.sync_shop(sid, trigger="schedule")
        took = time.perf_counter() - t0
        _t, pid, born = created[sid]
        seen = db.session.execute(select(Order.id).where(Order.shop_id == sid, Order.platform_order_id == pid)
                                  ).scalar() is not None
        per_shop.append({"platform": twin.platform, "sync_s": took, "pages": run.pages, "fetched": run.fetched,
                         "visible": seen, "after_s": time.time() - born})
        db.session.remove()
    return {"per_shop": per_shop}


# =====================================================================================
# Micro-costs that explain the engine's floor
# =====================================================================================
def micro_costs(pos: list) -> dict:
    from app.services import crypto
    from app.services.sync import payload_hash

    t0 = time.perf_counter()
    for po in pos:
        payload_hash(po)
    t1 = time.perf_counter()
    for po in pos:
        for v in (po.receiver_name, po.receiver_phone, po.receiver_address):
            if v:
                crypto.encrypt(v, "pii")
    t2 = time.perf_counter()
    return {"payload_hash_s": t1 - t0, "encrypt_s": t2 - t1}


# =====================================================================================
# Report
# =====================================================================================
def _rate(n, s):
    return n / s if s > 0 else float("inf")


def _fmt_cpu(v):
    return "n/a" if v is None else f"{v:.1f}"


def code_state() -> str:
    """The commit measured, and whether app/ or migrations/ had uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "app", "migrations", "config.py"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.split("\n")
        dirty = [line[3:] for line in dirty if line.strip()]
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (f" + uncommitted {', '.join(dirty[:6])}{' …' if len(dirty) > 6 else ''}" if dirty else "")


def machine_info() -> dict:
    info = {"nproc": os.cpu_count(), "cpu": "?", "ram_gb": "?", "python": platform.python_version()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                info["ram_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    return info


def print_table(rows, raw_rate, raw_rerun_rate=None):
    print()
    print(f"{'measurement':<44} {'orders':>8} {'wall s':>8} {'orders/s':>9} {'vs raw':>7} "
          f"{'cpu oms':>8} {'cpu sbx':>8} {'cpu pg':>7} {'cpu other':>9}")
    print("-" * 116)
    for name, n, cost in rows:
        rate = _rate(n, cost["wall"])
        ref = raw_rerun_rate if (raw_rerun_rate and ("re-sync" in name or "re-run" in name)) else raw_rate
        ratio = f"{ref / rate:.1f}x" if ref and rate else "-"
        print(f"{name:<44} {n:>8} {cost['wall']:>8.2f} {rate:>9.0f} {ratio:>7} {cost['cpu_oms']:>8.1f} "
              f"{_fmt_cpu(cost['cpu_sandbox']):>8} {_fmt_cpu(cost['cpu_pg']):>7} {_fmt_cpu(cost['cpu_other']):>9}")
    print("(vs raw: how many times slower than (a) raw first load; re-runs/re-syncs: than the raw re-run; cpu = CPU seconds of this process (OMS and"
          " clients), the sandbox process, all postgres processes, and everything else on the machine)")
    for name, _n, cost in rows:
        if cost.get("other_procs"):
            print(f"  other CPU during {name[:3]}: " + "; ".join(f"{c} s {cmd}" for c, cmd in cost["other_procs"]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=10000,
                    help="orders seeded in the sandbox, spread over the shops (default 10000; the issue asks "
                         "for 100000: a few minutes with the bulk engine)")
    ap.add_argument("--shops", type=int, default=10, help="shops (sandbox twins of the demo 店群; default 10)")
    ap.add_argument("--days", type=float, default=2.5, help="seeded modified times span this many days (2.5)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sandbox-lines", action="store_true",
                    help="keep the sandbox's own line count (~1.3 lines/order) instead of ~2")
    ap.add_argument("--raw-batch", choices=("shop", "all"), default="shop",
                    help="(a): one COPY+upsert transaction per shop (default) or one for everything")
    ap.add_argument("--raw-indexes", choices=("all", "keys"), default="all",
                    help="(a): the app's indexes (default) or only the primary and upsert keys")
    ap.add_argument("--pg-url", default=DEFAULT_PG, help="server where the scratch database is created")
    ap.add_argument("--redis-url", default=DEFAULT_REDIS, help="Redis for the per-shop sync locks (db 14)")
    ap.add_argument("--profile", action="store_true", help="run (b), (c) and (d) under cProfile; print the top functions")
    ap.add_argument("--profile-top", type=int, default=15)
    ap.add_argument("--skip-freshness", action="store_true", help="skip (e)")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                    help="before each phase wait up to S seconds for the machine to be <15%% busy (shared machines)")
    ap.add_argument("--skip-oms", action="store_true",
                    help="measure only (d) and (a): parse and the raw limit (quick at 100000 orders)")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    ap.add_argument("--rounds", type=int, default=1, metavar="N",
                    help="repeat (a) raw first load and (b2) first sync N times in turn, each (b2) on a fresh "
                         "scratch database, and print each round and the medians (the machine's speed drifts "
                         "between runs; paired rounds show the ratio apart from that drift)")
    ap.add_argument("--workers", type=int, default=2, metavar="N",
                    help="also run (b) and (c) with the shops spread over N worker processes, on a second "
                         "scratch database (production: one sync job per shop on N RQ workers); 0 = skip")
    ap.add_argument("--_sandbox-child", dest="sandbox_child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_worker", dest="worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker-db", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.sandbox_child:
        sandbox_child(args)
        return 0
    if args.worker:
        worker_child(args)
        return 0

    started = dt.datetime.now().astimezone()
    info = machine_info()
    info["code"] = code_state()
    print(f"sync benchmark  {started:%Y-%m-%d %H:%M %Z}  orders={args.orders} shops={args.shops} "
          f"days={args.days}  nproc={info['nproc']} cpu={info['cpu']} ram={info['ram_gb']} GB  "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"code: {info['code']}")
    db_name, db_url = create_database(args.pg_url)
    proc = None
    results: dict = {"args": {k: v for k, v in vars(args).items() if k != "sandbox_child"}, "machine": info,
                     "started": started.isoformat()}
    try:
        t0 = time.perf_counter()
        proc, sbx = start_sandbox(args)
        print(f"sandbox: pid {proc.pid} at {sbx['base']}; seeded {sbx['orders']} orders / {sbx['lines']} lines "
              f"in {sbx['seed_seconds']:.1f} s ({sbx['lines'] / max(1, sbx['orders']):.2f} lines/order); "
              f"visible to the APIs: {sbx['visible_orders']} orders / {sbx['visible_lines']} lines "
              f"(PDD and JD never list unpaid orders)")
        results["sandbox"] = sbx
        meter = Meter(proc.pid, args.wait_idle)
        app = build_app(db_url, args.redis_url)
        import logging

        from app.jobs.worker import settle_process

        settle_process()  # as the worker and `flask oms sync` do

        for noisy in ("alembic", "flask_appbuilder"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        shops = bench_sandbox_shops(args.shops)
        with app.app_context():
            import psycopg
            from sqlalchemy import select

            from app.extensions import db
            from app.models import Shop, Sku

            shop_ids = prepare_world(sbx["base"], shops, args.days)
            clear_locks(shop_ids)
            with db.engine.connect() as c:
                pg_version = c.exec_driver_sql("SHOW server_version").scalar()
            results["pg_version"] = pg_version
            print(f"scratch database {db_name} (PostgreSQL {pg_version}) migrated and initialised in "
                  f"{time.perf_counter() - t0:.1f} s; {len(shop_ids)} shops")

            # (d) parse only ------------------------------------------------------------
            prof_d = cProfile.Profile() if args.profile else None
            fetched, cost_d = meter.measure(fetch_all, shop_ids, profile=prof_d)
            pos = fetched["orders"]
            n = len(pos)
            n_lines = sum(len(po.lines) for po in pos.values())
            print(f"(d) parse only: {fetched['calls']} gateway calls, {fetched['windows']} windows, "
                  f"{fetched['pages']} pages, {fetched['fetched']} orders listed, {n} distinct, {n_lines} lines")
            results["parse"] = {**{k: v for k, v in fetched.items() if k != "orders"}, "distinct": n,
                                "lines": n_lines, **cost_d}

            # (a) raw limit -------------------------------------------------------------
            by_shop: dict = {}
            for (sid, _pid), po in pos.items():
                by_shop.setdefault(sid, []).append((sid, po))
            batches = list(by_shop.values()) if args.raw_batch == "shop" else [
                [x for b in by_shop.values() for x in b]]
            platforms = {s.id: s.platform for s in db.session.scalars(select(Shop))}
            costs = {s.merchant_code: s.cost_price for s in db.session.scalars(select(Sku))}
            db.session.remove()
            with psycopg.connect(db_url) as conn:
                raw_setup(conn, args.raw_indexes)
                raw1, cost_a1 = meter.measure(raw_upsert, conn, batches, platforms, costs)
                raw2, cost_a2 = meter.measure(raw_upsert, conn, batches, platforms, costs)
            print(f"(a) raw first load: wrote {raw1['orders_written']} orders, {raw1['lines_written']} lines; "
                  f"split rows {raw1['rows_s']:.2f} s, COPY {raw1['copy_s']:.2f} s, upsert orders "
                  f"{raw1['upsert_orders_s']:.2f} s, upsert lines {raw1['upsert_lines_s']:.2f} s, "
                  f"commit {raw1['commit_s']:.2f} s")
            print(f"(a) raw re-run:     wrote {raw2['orders_written']} orders, {raw2['lines_written']} lines; "
                  f"split rows {raw2['rows_s']:.2f} s, COPY {raw2['copy_s']:.2f} s, upsert orders "
                  f"{raw2['upsert_orders_s']:.2f} s, upsert lines {raw2['upsert_lines_s']:.2f} s")
            results["raw_first"] = {**raw1, **cost_a1}
            results["raw_rerun"] = {**raw2, **cost_a2}

            micro = micro_costs(list(pos.values()))
            results["micro"] = micro
            del pos, by_shop, fetched
            if args.rounds <= 1 or args.workers <= 1:
                del batches

            if args.skip_oms:
                raw_rate = _rate(n, cost_a1["wall"])
                print_table([("(a) raw COPY+upsert, first load", n, cost_a1),
                             ("(a) raw COPY+upsert, no-change re-run", n, cost_a2),
                             ("(d) parse only (fetch + parse, no apply)", n, cost_d)], raw_rate,
                            _rate(n, cost_a2["wall"]))
                print(f"python floor over {n} orders: payload_hash {micro['payload_hash_s']:.2f} s "
                      f"({_rate(n, micro['payload_hash_s']):.0f}/s), AES-GCM of 3 PII fields "
                      f"{micro['encrypt_s']:.2f} s ({_rate(n, micro['encrypt_s']):.0f}/s)")
                if args.json:
                    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                    Path(args.json).write_text(json.dumps(results, indent=1, default=str, ensure_ascii=False))
                return 0

            # (b) OMS first sync --------------------------------------------------------
            clear_sandbox_cache(sbx["base"])
            prof = cProfile.Profile() if args.profile else None
            first, cost_b = meter.measure(sync_all, shop_ids, profile=prof)
            counts_b = db_counts()
            print(f"(b) first sync: fetched {first['fetched']}, created {first['created']}, updated "
                  f"{first['updated']}, unchanged {first['unchanged']}, pages {first['pages']}, retries "
                  f"{first['retries']}, failed {first['failed'] or 'none'}; per shop s {first['per_shop_s']}")
            print(f"    {first['sql']}")
            print(f"    database now: {counts_b}")
            results["first_sync"] = {**first, **cost_b, "db": counts_b}

            # (c) OMS no-change re-sync -------------------------------------------------
            reset_checkpoints()
            prof_c = cProfile.Profile() if args.profile else None
            again, cost_c = meter.measure(sync_all, shop_ids, profile=prof_c)
            counts_c = db_counts()
            print(f"(c) re-sync: fetched {again['fetched']}, created {again['created']}, updated "
                  f"{again['updated']}, unchanged {again['unchanged']}, failed {again['failed'] or 'none'}; "
                  f"per shop s {again['per_shop_s']}")
            print(f"    {again['sql']}")
            print(f"    database now: {counts_c}")
            results["resync"] = {**again, **cost_c, "db": counts_c}

            # (b2) (c2) the same over worker processes, on a second scratch database --------
            par_first = par_again = None
            if args.workers > 1:
                db2_name, db2_url = create_database(args.pg_url)
                workers = None
                try:
                    workers = Workers(args.workers, db2_url, args.redis_url)
                    ids2 = workers.ask({"prepare": [sbx["base"], args.days, args.shops]})["shop_ids"]
                    clear_sandbox_cache(sbx["base"])
                    par_first, cost_b2 = measure_parallel(meter, workers, ids2)
                    print(f"(b2) first sync, {args.workers} worker processes: fetched {par_first['fetched']}, "
                          f"created {par_first['created']}, failed {par_first['failed'] or 'none'}; per worker "
                          f"{par_first['per_worker']}")
                    workers.ask({"reset": True})
                    par_again, cost_c2 = measure_parallel(meter, workers, ids2)
                    print(f"(c2) re-sync, {args.workers} worker processes: fetched {par_again['fetched']}, "
                          f"unchanged {par_again['unchanged']}, updated {par_again['updated']}, created "
                          f"{par_again['created']}, failed {par_again['failed'] or 'none'}; per worker "
                          f"{par_again['per_worker']}")
                    results["first_sync_parallel"] = {**par_first, **cost_b2, "workers": args.workers}
                    results["resync_parallel"] = {**par_again, **cost_c2, "workers": args.workers}
                finally:
                    if workers is not None:
                        workers.close()
                    drop_database(args.pg_url, db2_name)
                rounds = [(_rate(n, cost_a1["wall"]), _rate(par_first["created"], cost_b2["wall"]))]
                for r in range(2, args.rounds + 1):
                    rounds.append(paired_round(meter, args, db_url, sbx["base"], n, batches, platforms, costs))
                    print(f"round {r}: raw first load {rounds[-1][0]:.0f}/s, (b2) first sync {rounds[-1][1]:.0f}/s, "
                          f"{rounds[-1][0] / rounds[-1][1]:.2f}x")
                if len(rounds) > 1:
                    results["rounds"] = [{"raw_first": a, "first_sync_parallel": b} for a, b in rounds]

            # (e) freshness ---------------------------------------------------------------
            fresh = None
            if not args.skip_freshness:
                fresh, cost_e = meter.measure(freshness, sbx["base"], shops, shop_ids)
                results["freshness"] = {**fresh, **cost_e}

        # ---- report ----------------------------------------------------------------------
        raw_rate = _rate(n, cost_a1["wall"])
        rows = [
            ("(a) raw COPY+upsert, first load", n, cost_a1),
            ("(a) raw COPY+upsert, no-change re-run", n, cost_a2),
            ("(b) OMS first sync (sequential)", first["created"], cost_b),
            ("(c) OMS no-change re-sync (sequential)", again["unchanged"] + again["updated"] + again["created"],
             cost_c),
            ("(d) parse only (fetch + parse, no apply)", n, cost_d),
        ]
        if par_first:
            rows[4:4] = [(f"(b2) OMS first sync ({args.workers} worker processes)", par_first["created"], cost_b2),
                         (f"(c2) OMS no-change re-sync ({args.workers} worker processes)",
                          par_again["unchanged"] + par_again["updated"] + par_again["created"], cost_c2)]
        print_table(rows, raw_rate, _rate(n, cost_a2["wall"]))
        print(f"orders = distinct orders the APIs list ({n}, {n_lines} lines = "
              f"{n_lines / max(1, n):.2f}/order); sandbox seeded {sbx['orders']} (unpaid ones are invisible on "
              f"PDD/JD). Sequential: one shop after the other, one process; (b2)/(c2): worker processes taking the next shop from one queue as soon as they are free, as RQ workers do.")
        print(f"python floor over {n} orders: payload_hash {micro['payload_hash_s']:.2f} s "
              f"({_rate(n, micro['payload_hash_s']):.0f}/s), AES-GCM of 3 PII fields {micro['encrypt_s']:.2f} s "
              f"({_rate(n, micro['encrypt_s']):.0f}/s)")
        first_rate = _rate(first["created"], cost_b["wall"])
        resync_rate = _rate(again["unchanged"] + again["updated"] + again["created"], cost_c["wall"])
        verdicts = [
            (f"first sync >= {TARGET_FIRST:.0f} orders/s", first_rate >= TARGET_FIRST, f"{first_rate:.0f}/s"),
            (f"first sync within {TARGET_FIRST_RATIO:.0f}x of raw COPY", first_rate * TARGET_FIRST_RATIO >= raw_rate,
             f"{raw_rate / first_rate:.1f}x"),
            (f"no-change re-sync >= {TARGET_RESYNC:.0f} orders/s", resync_rate >= TARGET_RESYNC,
             f"{resync_rate:.0f}/s, rewrote {again['updated']}"),
        ]
        if par_first:
            w = args.workers
            p_first = _rate(par_first["created"], cost_b2["wall"])
            p_resync = _rate(par_again["unchanged"] + par_again["updated"] + par_again["created"], cost_c2["wall"])
            verdicts += [
                (f"first sync >= {TARGET_FIRST:.0f} orders/s, {w} workers", p_first >= TARGET_FIRST, f"{p_first:.0f}/s"),
                (f"first sync within {TARGET_FIRST_RATIO:.0f}x of raw COPY, {w} workers",
                 p_first * TARGET_FIRST_RATIO >= raw_rate, f"{raw_rate / p_first:.1f}x"),
                (f"no-change re-sync >= {TARGET_RESYNC:.0f} orders/s, {w} workers", p_resync >= TARGET_RESYNC,
                 f"{p_resync:.0f}/s, rewrote {par_again['updated']}"),
            ]
        if fresh:
            worst = {}
            for s in fresh["per_shop"]:
                worst[s["platform"]] = max(worst.get(s["platform"], 0.0), s["sync_s"])
            print("\n(e) freshness: one new paid order per shop, then one incremental sync per shop")
            for s in fresh["per_shop"]:
                print(f"    {s['platform']:<7} sync {s['sync_s']:.2f} s, {s['pages']} pages, fetched {s['fetched']}, "
                      f"new order visible: {'yes' if s['visible'] else 'NO'} ({s['after_s']:.1f} s after creation)")
            est, typical = {}, {}
            seen_now = {}
            for s in fresh["per_shop"]:
                seen_now[s["platform"]] = seen_now.get(s["platform"], True) and s["visible"]
            for plat, took in worst.items():
                # A new order seen by the first incremental sync waits for nothing more; one not
                # seen waits for the platform's safety lag (PDD: 3 minutes) to pass.
                lag = 0 if seen_now.get(plat) else (180 if plat == "pdd" else 0)
                gap = max(SHOP_INTERVAL_S - SCHEDULE_SLACK_S, SHOP_INTERVAL_S / 2)  # services/sync.due_shops
                est[plat] = lag + gap + DISPATCH_INTERVAL_S + took
                typical[plat] = lag + (gap + DISPATCH_INTERVAL_S) / 2 + took
            print(f"    worst case with the default schedule (interval {SHOP_INTERVAL_S} s less the due slack "
                  f"{SCHEDULE_SLACK_S} s + dispatcher {DISPATCH_INTERVAL_S} s + platform safety lag + one incremental"
                  f" sync; queue waits not included): " + ", ".join(f"{p} {v:.0f} s" for p, v in sorted(est.items())))
            print("    average (half the interval and dispatcher period): "
                  + ", ".join(f"{p} {v:.0f} s" for p, v in sorted(typical.items())))
            results["freshness"]["worst_case_s"] = est
            results["freshness"]["typical_s"] = typical
            ok = all(v <= TARGET_FRESH_S for v in est.values())
            verdicts.append((f"new order visible within {TARGET_FRESH_S:.0f} s", ok,
                             "worst " + ", ".join(f"{p} {v:.0f} s" for p, v in sorted(est.items()))))
        if results.get("rounds"):
            import statistics

            raws = [r["raw_first"] for r in results["rounds"]]
            syncs = [r["first_sync_parallel"] for r in results["rounds"]]
            ratios = [a / b for a, b in zip(raws, syncs)]
            print(f"\n{len(ratios)} paired rounds, (a) raw first load then (b2) first sync on {args.workers} workers:")
            for i, (a, b, q) in enumerate(zip(raws, syncs, ratios), start=1):
                print(f"    round {i}: raw {a:7.0f}/s   first sync {b:6.0f}/s   {q:.2f}x")
            med_sync, med_ratio = statistics.median(syncs), statistics.median(ratios)
            print(f"    median: raw {statistics.median(raws):.0f}/s, first sync {med_sync:.0f}/s, {med_ratio:.2f}x; "
                  f"first sync >= {TARGET_FIRST:.0f}/s in {sum(b >= TARGET_FIRST for b in syncs)} of {len(syncs)}, "
                  f"within {TARGET_FIRST_RATIO:.0f}x in {sum(q <= TARGET_FIRST_RATIO for q in ratios)} of {len(ratios)}")
            verdicts += [
                (f"first sync >= {TARGET_FIRST:.0f} orders/s, median of {len(syncs)}", med_sync >= TARGET_FIRST,
                 f"{med_sync:.0f}/s"),
                (f"first sync within {TARGET_FIRST_RATIO:.0f}x of raw, median of {len(ratios)}",
                 med_ratio <= TARGET_FIRST_RATIO, f"{med_ratio:.2f}x"),
            ]
        print("\ntargets (issue #3), printed not asserted:")
        for name, ok, detail in verdicts:
            print(f"  {'PASS' if ok else 'FAIL'}  {name:<42} {detail}")
        results["verdicts"] = [{"target": a, "pass": b, "value": c} for a, b, c in verdicts]
        results["rates"] = {"raw_first": raw_rate, "raw_rerun": _rate(n, cost_a2["wall"]), "first_sync": first_rate,
                            "resync": resync_rate, "parse": _rate(n, cost_d["wall"])}
        if par_first:
            results["rates"]["first_sync_parallel"] = _rate(par_first["created"], cost_b2["wall"])
            results["rates"]["resync_parallel"] = _rate(par_again["unchanged"] + par_again["updated"]
                                                        + par_again["created"], cost_c2["wall"])
        if prof:
            outdir = ROOT / "bench" / "out"
            outdir.mkdir(exist_ok=True)
            for label, p, fname in (("(b) first sync", prof, "first_sync.prof"),
                                    ("(c) no-change re-sync", prof_c, "resync.prof"),
                                    ("(d) parse only", prof_d, "parse.prof")):
                p.dump_stats(str(outdir / fname))
                views = [("cumulative", "all functions", ()), ("cumulative", "app/ functions only", ("/app/",))]
                if fname == "parse.prof":
                    views = [("tottime", "all functions", ())] + views[1:]
                for order, title, restrict in views:
                    out = io.StringIO()
                    stats = pstats.Stats(p, stream=out)
                    stats.sort_stats(order).print_stats(*restrict, args.profile_top)
                    text = out.getvalue()
                    text = text[text.index("   ncalls"):] if "   ncalls" in text else text
                    what = "cumulative time" if order == "cumulative" else "own time"
                    print(f"\ncProfile of {label}, top {args.profile_top} by {what}, {title}:")
                    print(re.sub(r"\S*/site-packages/", "", text.replace(str(ROOT) + "/", "")).rstrip())
                print(f"(full profile: .venv/bin/python -m pstats {outdir / fname})")
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results, indent=1, default=str, ensure_ascii=False))
    finally:
        if proc is not None:
            stop_child(proc)
        try:
            from app.extensions import db

            if "app" in locals():
                with app.app_context():
                    db.session.remove()
                    db.engine.dispose()
        except Exception:
            pass
        drop_database(args.pg_url, db_name)
        print(f"scratch database {db_name} dropped; load average now "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
