"""Grid export benchmark (issue #4, item 4). Not a test: it prints, never asserts.

    .venv/bin/python bench/export_bench.py [--orders 100000] [--keep] [--reuse DB]

On a scratch PostgreSQL database (``oms_bench_export_<random>``, migrated with
Alembic, filled by bench/grid_bench.py's INSERT … SELECT generator, dropped at the
end unless ``--keep``) it exports ``--orders`` orders × 30 columns (系统编号 + 29
order columns: text, long order numbers, zh choice labels, 是/否, money, times, the
three masked PII columns, shop/carrier/warehouse names) as admin, each phase in its
own child process so that its peak RSS is its own:

  (a) **export xlsx**: ``services/exports.write_export`` to a file, the real path
      (grid.stream_raw: the scoped query streamed with a server-side cursor, PII
      decrypted and masked, then XlsxWriter constant_memory);
  (b) **bare write**, the physical limit: the same cells, fetched and converted
      beforehand (untimed), written by XlsxWriter constant_memory with the same
      formats: only the writer's time;
  (c) the same bare write by openpyxl write_only (lxml), the writer not chosen
      (``--skip-openpyxl`` to skip);
  (d) **fetch only**: the rows of (a) from grid.stream_raw, converted to cell values
      but not written: what the export costs besides the writer;
  (e) **export csv** (UTF-8 with BOM) and (f) csv_gbk through ``write_export``.

Targets (issue #4): xlsx ≤ 30 s and ≤ 1.5 × (b), peak RSS < 300 MB; CSV ≤ 10 s.
Peak RSS is the child's VmHWM during the phase (reset before it through
/proc/self/clear_refs): the app and its imports plus what the phase adds; the RSS
before the phase is printed beside it. For the bare writes the cells are held in
memory before the reset, so their peak includes them.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform as py_platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (str(ROOT), str(ROOT / "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)

import grid_bench  # noqa: E402  (the 1M-order generator, reused)

DEFAULT_PG = grid_bench.DEFAULT_PG
DEFAULT_REDIS = grid_bench.DEFAULT_REDIS
TARGET_XLSX_S = 30.0
TARGET_RATIO = 1.5
TARGET_RSS_MB = 300.0
TARGET_CSV_S = 10.0
RESOURCE = "order_bench30"
COLUMNS = [  # 29 order columns; with 系统编号, 30 per row
    "platform_order_id", "shop.name", "platform", "status", "is_held", "flag", "buyer_nick",
    "receiver_name", "receiver_phone", "receiver_province", "receiver_city", "receiver_district",
    "receiver_address", "goods_amount", "discount_amount", "post_fee", "paid_amount", "cost_amount",
    "paid_at", "platform_created_at", "shipped_at", "carrier.name", "tracking_number", "warehouse.name",
    "seller_memo", "close_reason", "is_returning_customer", "writeback_status", "updated_at",
]


def create_database(pg_url: str) -> tuple[str, str]:
    return grid_bench.common.create_database(pg_url, "oms_bench_export_")


def register_bench_grid():
    """The order grid with 29 columns (the shipped one has 23), as an API class would define it."""
    from app.services import grid
    from app.views.orders import OrderApi

    class BenchOrderApi(OrderApi):
        resource_name = RESOURCE
        grid_columns = COLUMNS

    grid.register_api(BenchOrderApi)
    return grid.spec_for(RESOURCE)


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def reset_peak() -> None:
    """Reset this process's peak RSS (VmHWM), so a phase's peak is its own (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --- the child: one phase ---------------------------------------------------------------------
def _cells(spec, cols, rows):
    """Rows → cell values exactly as the export writes them (typed), for the bare writes."""
    from app.services import exports

    kinds = []
    for c in cols:
        if c.kind == "choice":
            labels = exports.choice_labels(c)
            kinds.append(("s", lambda v, labels=labels: labels.get(str(v), str(v))))
        elif c.kind == "bool":
            kinds.append(("s", lambda v: "是" if v else "否"))
        elif c.kind == "money":
            kinds.append(("m", lambda v: v))
        elif c.kind in ("int", "decimal"):
            kinds.append(("n", lambda v: v))
        elif c.kind == "time":
            kinds.append(("t", exports.local_naive))
        else:
            kinds.append(("s", lambda v: exports._neutralise_xlsx(v if isinstance(v, str) else str(v))))
    out = []
    for row in rows:
        out.append([row[0]] + [None if v is None or v == "" else conv(v)
                               for (_k, conv), v in zip(kinds, row[1:])])
    return [k for k, _ in kinds], out


def bare_xlsxwriter(path, header, kinds, data) -> None:
    import xlsxwriter

    wb = xlsxwriter.Workbook(path, {"constant_memory": True, "strings_to_numbers": False,
                                    "strings_to_formulas": False, "strings_to_urls": False})
    ws = wb.add_worksheet("订单")
    money = wb.add_format({"num_format": "0.00"})
    when = wb.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
    for i, h in enumerate(header):
        ws.write_string(0, i, h)
    ws_s, ws_n, ws_d = ws.write_string, ws.write_number, ws.write_datetime
    for r, row in enumerate(data, start=1):
        ws_n(r, 0, row[0])
        for c in range(1, len(row)):
            v = row[c]
            if v is None:
                continue
            k = kinds[c - 1]
            if k == "s":
                ws_s(r, c, v)
            elif k == "m":
                ws_n(r, c, v, money)
            elif k == "n":
                ws_n(r, c, v)
            else:
                ws_d(r, c, v, when)
    wb.close()


def bare_openpyxl(path, header, kinds, data) -> None:
    import openpyxl
    from openpyxl.cell import WriteOnlyCell

    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("订单")
    ws.append(header)
    for row in data:
        out = [row[0]]
        for c in range(1, len(row)):
            v, k = row[c], kinds[c - 1]
            if v is not None and k in ("m", "t"):
                cell = WriteOnlyCell(ws, v)
                cell.number_format = "0.00" if k == "m" else "yyyy-mm-dd hh:mm:ss"
                out.append(cell)
            else:
                out.append(v)
        ws.append(out)
    wb.save(path)


def child(args) -> dict:
    app = grid_bench.build_app(args.db, args.redis_url)
    out_dir = Path(args.out_dir)
    with app.app_context():
        from app.extensions import appbuilder, db
        from app.services import exports, grid

        spec = register_bench_grid()
        admin = appbuilder.sm.find_user(username="admin")
        req = exports.ExportRequest(resource=RESOURCE, filters={}, columns=None, sort=None, fmt="xlsx")
        res: dict = {"phase": args.child}
        with exports.as_user(admin.id):
            db.session.execute(db.text("SELECT 1"))
            res["rss_before_mb"] = rss_mb()
            reset_peak()
            phase = args.child
            if phase in ("xlsx", "csv", "csv_gbk"):
                req.fmt = phase
                path = out_dir / f"export.{ 'xlsx' if phase == 'xlsx' else phase + '.csv'}"
                c0, t0 = cpu_s(), time.perf_counter()
                res["rows"] = exports.write_export(req, str(path))
                res["wall_s"], res["cpu_s"] = time.perf_counter() - t0, cpu_s() - c0
                res["bytes"] = path.stat().st_size
            elif phase == "fetch":
                c0, t0 = cpu_s(), time.perf_counter()
                cols, rows = grid.stream_raw(spec, {}, batch=5000)
                kinds, data = _cells(spec, cols, rows)
                res["rows"] = len(data)
                res["wall_s"], res["cpu_s"] = time.perf_counter() - t0, cpu_s() - c0
                # the query and the ORM/psycopg decoding alone (PII decrypted and masked)
                t1 = time.perf_counter()
                cols, rows = grid.stream_raw(spec, {}, batch=5000)
                n = sum(1 for _ in rows)
                res["query_only_s"] = time.perf_counter() - t1
                assert n == res["rows"]
            elif phase in ("bare_xlsxwriter", "bare_openpyxl"):
                cols, rows = grid.stream_raw(spec, {}, batch=5000)
                kinds, data = _cells(spec, cols, rows)
                res["rss_before_mb"] = rss_mb()  # the cells are held in memory: not the writer's
                reset_peak()
                header = [exports.ID_HEADER] + [str(c.label) for c in cols]
                res["rows"], res["columns"] = len(data), len(header)
                path = out_dir / f"{phase}.xlsx"
                writer = bare_xlsxwriter if phase == "bare_xlsxwriter" else bare_openpyxl
                c0, t0 = cpu_s(), time.perf_counter()
                writer(str(path), header, kinds, data)
                res["wall_s"], res["cpu_s"] = time.perf_counter() - t0, cpu_s() - c0
                res["bytes"] = path.stat().st_size
        res["peak_rss_mb"] = peak_mb()
        db.session.remove()
    return res


def run_child(phase: str, args, out_dir: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", phase, "--db", args.db, "--redis-url", args.redis_url,
           "--out-dir", str(out_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"phase {phase} failed")
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def verify(out_dir: Path, orders: int) -> str:
    """Read the export back (python-calamine): row count, a money cell, a time cell, an order number."""
    from python_calamine import CalamineWorkbook

    wb = CalamineWorkbook.from_path(str(out_dir / "export.xlsx"))
    rows = wb.get_sheet_by_index(0).to_python()
    meta = wb.get_sheet_by_name("_oms").to_python()
    head = rows[0]
    keys = meta[2]

    def first(key):
        i = keys.index(key)
        return next(r[i] for r in rows[1:] if r[i] != "")

    money, when, pid = first("paid_amount"), first("paid_at"), first("platform_order_id")
    ok = (len(rows) - 1 == orders and len(head) == 30 and isinstance(money, float)
          and isinstance(when, dt.datetime) and isinstance(pid, str))
    return (f"read back: {len(rows) - 1:,} rows × {len(head)} columns, paid_amount {money!r}, "
            f"paid_at {when}, order number {pid!r}: {'OK' if ok else 'UNEXPECTED'}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=100_000)
    ap.add_argument("--shops", type=int, default=12)
    ap.add_argument("--pg-url", default=DEFAULT_PG)
    ap.add_argument("--redis-url", default=DEFAULT_REDIS)
    ap.add_argument("--reuse", metavar="DB", help="an existing database made by --keep (skip generation)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--skip-openpyxl", action="store_true")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="S")
    ap.add_argument("--json")
    # internal: one phase in a child process
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return 0

    print(f"export_bench: {args.orders:,} orders × 30 columns; code {grid_bench.code_state()}; "
          f"python {py_platform.python_version()}, {os.cpu_count()} cores")
    if args.reuse:
        name = args.reuse
        args.db = grid_bench.common.database_url(args.pg_url, name)
    else:
        name, args.db = create_database(args.pg_url)
    print(f"database {name}")
    out_dir = ROOT / "bench" / "out" / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    res: dict = {"orders": args.orders, "database": name, "code": grid_bench.code_state()}
    try:
        if not args.reuse:
            app = grid_bench.build_app(args.db, args.redis_url)
            world = grid_bench.prepare(app, args.shops)
            t = time.perf_counter()
            gen = grid_bench.generate(args.db, world, args.orders)
            print(f"generated {args.orders:,} orders in {time.perf_counter() - t:.1f} s")
            res["generate"] = gen
        phases = ["bare_xlsxwriter", "xlsx", "fetch", "csv", "csv_gbk"]
        if not args.skip_openpyxl:
            phases.insert(1, "bare_openpyxl")
        for phase in phases:
            if args.wait_idle:
                grid_bench.wait_idle(args.wait_idle)
            b0 = grid_bench._busy()
            r = run_child(phase, args, out_dir)
            r["machine_busy_s"] = (grid_bench._busy() - b0) if b0 is not None else None
            res[phase] = r
            print(f"  {phase:<16} {r.get('wall_s', 0):6.1f} s wall, {r.get('cpu_s', 0):6.1f} s cpu, "
                  f"rss {r['rss_before_mb']:.0f} → peak {r['peak_rss_mb']:.0f} MB", flush=True)
        res["verify"] = verify(out_dir, args.orders)
        report(res)
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    finally:
        if not args.keep and not args.reuse:
            grid_bench.drop_database(args.pg_url, name)
        elif args.keep:
            print(f"kept database {name}")
    return 0


def report(res: dict) -> None:
    bare = res["bare_xlsxwriter"]["wall_s"]
    x = res["xlsx"]
    f = res["fetch"]
    print()
    print(f"{'phase':<34} {'wall s':>7} {'cpu s':>7} {'vs bare':>8} {'peak RSS MB':>12} {'file MB':>8}")
    rows = [("(a) export xlsx (real path)", x), ("(b) bare write XlsxWriter", res["bare_xlsxwriter"])]
    if "bare_openpyxl" in res:
        rows.append(("(c) bare write openpyxl write_only", res["bare_openpyxl"]))
    rows += [("(d) fetch + convert, no write", f), ("(e) export csv (UTF-8 BOM)", res["csv"]),
             ("(f) export csv_gbk", res["csv_gbk"])]
    for label, r in rows:
        size = f"{r['bytes'] / 1e6:8.1f}" if "bytes" in r else f"{'':>8}"
        print(f"{label:<34} {r['wall_s']:7.1f} {r['cpu_s']:7.1f} {r['wall_s'] / bare:7.2f}× "
              f"{r['peak_rss_mb']:12.0f} {size}")
    print(f"(d) of which query + decode + decrypt/mask only: {f['query_only_s']:.1f} s")
    print(res["verify"])
    print()

    def verdict(ok):
        return "PASS" if ok else "FAIL"

    print(f"{verdict(x['wall_s'] <= TARGET_XLSX_S)} xlsx export {x['wall_s']:.1f} s (target ≤ {TARGET_XLSX_S:.0f} s)")
    ratio = x["wall_s"] / bare
    print(f"{verdict(ratio <= TARGET_RATIO)} xlsx export / bare write {ratio:.2f}× (target ≤ {TARGET_RATIO}×)")
    print(f"{verdict(x['peak_rss_mb'] < TARGET_RSS_MB)} xlsx export peak RSS {x['peak_rss_mb']:.0f} MB "
          f"(target < {TARGET_RSS_MB:.0f} MB; {x['rss_before_mb']:.0f} MB before the export)")
    for key in ("csv", "csv_gbk"):
        r = res[key]
        print(f"{verdict(r['wall_s'] <= TARGET_CSV_S)} {key} export {r['wall_s']:.1f} s (target ≤ {TARGET_CSV_S:.0f} s)")


if __name__ == "__main__":
    raise SystemExit(main())
