"""The import, end to end: read → detect the profile → convert and validate every
row → apply (all or nothing, or valid rows only) → report.

Called by the CLI, the RQ job and the page's preview; each passes paths, ids and
plain values. Runs in the current row scope, or in ``user_id``'s when given: a
user limited to shop A cannot import into shop B (the shop is simply not found).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import gc
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.models import Shop
from app.services import bulk_orders
from app.services.errors import DomainError
from app.services.scope import as_user

from . import order_import, other_import, profiles, readers, report
from .errors import CellIssue, ImportFileError
from .parse import ParsedSheet, SheetParser

Progress = Optional[Callable[[int, int, str], None]]


@dataclass
class ImportResult:
    entity: str
    profiles: list[str]  # zh titles of the detected profiles
    profile_names: list[str]
    records: int = 0  # orders / SKUs / rows found in the file(s)
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0  # records not imported
    rows: int = 0  # data rows read
    failed_rows: int = 0
    applied: bool = False  # True when the database was written
    valid_only: bool = False
    issues: list = field(default_factory=list)
    report_path: Optional[str] = None
    diffs: list = field(default_factory=list)  # stocktake: (warehouse id, StocktakeLine)

    @property
    def ok(self) -> bool:
        return not self.issues

    @property
    def summary(self) -> str:
        unit = {"orders": "订单", "order_items": "订单", "skus": "SKU", "stocktake": "盘点行",
                "tracking": "快递单号", "inbound": "入库行", "carrier_bill": "账单行"}.get(self.entity, "记录")
        head = (f"{'、'.join(self.profiles)}：共 {self.records} 个{unit}（{self.rows} 行），"
                f"新增 {self.created}，更新 {self.updated}，未变 {self.unchanged}，失败 {self.failed}")
        if self.issues and not self.applied:
            return head + f"；有 {self.failed_rows} 行错误，未导入任何数据（全部成功才导入）"
        if self.issues:
            return head + f"；{self.failed_rows} 行有错误未导入"
        return head

    def to_dict(self) -> dict:
        return {"entity": self.entity, "profiles": self.profiles, "records": self.records,
                "created": self.created, "updated": self.updated, "unchanged": self.unchanged,
                "failed": self.failed, "rows": self.rows, "failed_rows": self.failed_rows,
                "applied": self.applied, "valid_only": self.valid_only, "summary": self.summary,
                "report_path": self.report_path, "errors": [i.message for i in self.issues[:200]],
                "error_count": len(self.issues)}


def _limits() -> readers.Limits:
    return readers.Limits.from_config(current_app.config)


def _as_files(files) -> list[tuple[Path, str]]:
    out = []
    for f in files:
        if isinstance(f, (tuple, list)):
            out.append((Path(f[0]), f[1] or Path(f[0]).name))
        else:
            out.append((Path(f), Path(f).name))
    return out


def _opt(seq, i):
    return seq[i] if seq and i < len(seq) else None


def open_sheets(files, *, profile_names: Optional[Sequence] = None,
                mappings: Optional[Sequence] = None) -> list[SheetParser]:
    """Read and detect each file (no database access); the rows are converted later
    (:meth:`SheetParser.parse`, or a chunk at a time by the order import)."""
    files = _as_files(files)
    if not files:
        raise ImportFileError("请选择要导入的文件")
    if len(files) > 2:
        raise ImportFileError("一次最多导入两个文件（订单报表和宝贝报表）")
    limits = _limits()
    out = []
    for i, (path, label) in enumerate(files):
        sheet = readers.read(path, label, limits)
        detection = profiles.detect(sheet.rows, profile_name=_opt(profile_names, i), file_label=label)
        out.append(SheetParser(i, sheet, detection, _opt(mappings, i)))
    entities = {("orders" if p.parsed.profile.entity == "order_items" else p.parsed.profile.entity) for p in out}
    if len(entities) > 1:
        raise ImportFileError("两个文件的类型不同，不能一起导入：" + "、".join(
            f"「{p.parsed.sheet.label}」是{p.parsed.profile.title}" for p in out))
    return out


def load(files, *, profile_names: Optional[Sequence] = None,
         mappings: Optional[Sequence] = None) -> list[ParsedSheet]:
    """Read, detect and convert each file (no database access)."""
    return [p.parse() for p in open_sheets(files, profile_names=profile_names, mappings=mappings)]


def detect_only(files, *, profile_names=None, preview_rows: int = 10) -> list[dict]:
    """For the page's preview: per file the detected profile, its headers and mapping and
    the first rows as text. Reads the file but converts nothing."""
    out = []
    limits = _limits()
    for i, (path, label) in enumerate(_as_files(files)):
        sheet = readers.read(path, label, limits)
        d = profiles.detect(sheet.rows, profile_name=_opt(profile_names, i), file_label=label)
        from .parse import default_mapping

        mapping = default_mapping(d.profile, d.headers)
        first = [["" if v is None else str(v) for v in row]
                 for row in sheet.rows[d.header_row + 1:d.header_row + 1 + preview_rows]]
        out.append({"label": label, "profile": d.profile.name, "title": d.profile.title,
                    "entity": d.profile.entity, "platform": d.profile.platform, "header_row": d.header_row + 1,
                    "headers": d.headers, "mapping": mapping, "rows": first,
                    "row_count": len(sheet.rows) - d.header_row - 1,
                    "fields": [(f.name, f.zh) for f in d.profile.fields.values()],
                    "needs_shop": d.profile.entity in ("orders", "order_items")
                    and "shop_name" not in mapping})
    return out


def _shop_lookup(create: Optional[str], platform: str) -> Callable:
    cache: dict = {}

    def lookup(name: str):
        if name not in cache:
            shop = db.session.execute(select(Shop).where(Shop.name == name)).scalar_one_or_none()
            if shop is None and create and name == create:
                shop = Shop(name=name, platform=platform or "manual", sync_enabled=False)
                db.session.add(shop)
                db.session.flush()
            cache[name] = shop
        return cache[name]

    return lookup


def run_import(files, *, profile_names: Optional[Sequence] = None, mappings: Optional[Sequence] = None,
               shop: Optional[str] = None, valid_only: bool = False, user_id: Optional[int] = None,
               create_shop: bool = False, progress: Progress = None, report_dir: Optional[Path] = None,
               bulk: Optional[bool] = None) -> ImportResult:
    """Import one file (or Taobao's two). All or nothing unless ``valid_only``.

    ``shop``: the shop for every row (else the sheet's 店铺 column). ``create_shop``
    (CLI ``--shop``): a shop of that name that does not exist yet is created on the
    profile's platform. Raises ImportFileError for a file that cannot be imported at
    all; row errors are in the result (and its report)."""
    with _gc_paused():
        return _run_import(files, profile_names=profile_names, mappings=mappings, shop=shop,
                           valid_only=valid_only, user_id=user_id, create_shop=create_shop, progress=progress,
                           report_dir=report_dir, bulk=bulk)


@contextlib.contextmanager
def _gc_paused():
    """The cyclic garbage collector off while an import runs: a 100,000-row sheet keeps
    millions of small objects alive (cells, rows, drafts) that every collection would
    walk again, for nothing: this halves the time spent reading and converting. The
    import creates almost no reference cycles; the collector runs again afterwards."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# An import that meets a row another transaction committed meanwhile (a sync or another
# import bringing the same new buyer: oms_customer's unique phone hash) is rolled back whole
# and run again from the files; the second run finds that row. The import is idempotent,
# so a retry never duplicates anything.
CONFLICT_RETRIES = 2


def _run_import(files, *, profile_names, mappings, shop, valid_only, user_id, create_shop, progress, report_dir,
                bulk) -> ImportResult:
    for attempt in range(CONFLICT_RETRIES + 1):
        parsers = open_sheets(files, profile_names=profile_names, mappings=mappings)
        sheets = [p.parsed for p in parsers]
        with as_user(user_id) if user_id is not None else contextlib.nullcontext():
            try:
                result = _run(parsers, shop=(shop or "").strip() or None, valid_only=valid_only, user_id=user_id,
                              create_shop=create_shop, progress=progress, bulk=bulk)
                break
            except BaseException as exc:
                db.session.rollback()
                conflict = bulk_orders.is_unique_conflict(exc)  # through SQLAlchemy or a raw COPY
                if conflict and attempt < CONFLICT_RETRIES:
                    time.sleep(0.2 * (attempt + 1))
                    continue
                if conflict or isinstance(exc, IntegrityError):
                    raise ImportFileError("另一个导入正在写入相同的数据，本次未导入任何数据，请稍后重试") from None
                raise
    if result.issues:
        directory = Path(report_dir or Path(current_app.config["OMS_INSTANCE_DIR"]) / "imports")
        name = f"导入错误报告-{dt.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}.xlsx"
        result.report_path = str(report.write(directory / name, sheets, result.issues))
    return result


def _run(parsers: list[SheetParser], *, shop, valid_only, user_id, create_shop, progress, bulk) -> ImportResult:
    head = parsers[0].parsed.profile
    entity = "orders" if head.entity == "order_items" else head.entity
    heads = [p.parsed.profile for p in parsers]
    result = ImportResult(entity, [h.title for h in heads], [h.name for h in heads], valid_only=valid_only)
    if entity == "orders" and len(parsers) == 1 and bulk is not False:
        # one sheet: converted and written a chunk at a time (the first orders are written
        # while the later rows are still being converted)
        if progress:
            progress(0, max(1, parsers[0].stop - parsers[0].start), "正在校验")
        ps = parsers[0].parsed
        _orders_stream(parsers[0], result, shop=shop, valid_only=valid_only, user_id=user_id,
                       create_shop=create_shop, progress=progress)
        result.rows = parsers[0].converted
        result.issues = list(ps.issues)
        result.failed_rows = len({(i.file_index, i.row) for i in result.issues})
        if progress:
            progress(result.rows, max(1, result.rows), result.summary)
        return result
    sheets = [p.parse() for p in parsers]
    result.rows = sum(len(ps.rows) for ps in sheets)
    if progress:
        progress(0, max(1, result.rows), "正在校验")
    if entity == "orders":
        _orders(sheets, result, shop=shop, valid_only=valid_only, user_id=user_id, create_shop=create_shop,
                progress=progress, bulk=bulk)
    elif entity == "skus":
        _rows(sheets[0], result, valid_only, other_import.validate_skus,
              lambda ps, rows: other_import.apply_skus(ps, rows, progress=progress))
    elif entity == "stocktake":
        resolved = {}

        def validate(ps):
            resolved.update(other_import.validate_stocktake(ps))

        def apply(ps, rows):
            counts, diffs = other_import.apply_stocktake(resolved, rows, user_id=user_id,
                                                         source_ref=f"盘点导入 {ps.sheet.label}"[:100])
            result.diffs = diffs
            return counts

        _rows(sheets[0], result, valid_only, validate, apply)
    elif entity == "inbound":  # 入库 (services/stock_documents.py)
        from app.services import stock_documents

        resolved = {}

        def validate(ps):
            resolved.update(stock_documents.validate_inbound_import(ps))

        def apply(ps, rows):
            return stock_documents.apply_inbound_import(resolved, rows, user_id=user_id,
                                                        source_ref=f"入库导入 {ps.sheet.label}"[:100])

        _rows(sheets[0], result, valid_only, validate, apply)
        if result.applied:  # held 缺货 orders get the new stock, first paid first served
            stock_documents.imported_inbound_committed(user_id)
    elif entity == "tracking":
        resolved = {}

        def validate(ps):
            resolved.update(other_import.validate_tracking(ps, shop))

        def apply(ps, rows):
            def issue(row, message):
                ps.issue(row.index, None, message)
                row.bad = True

            return other_import.apply_tracking(resolved, rows, user_id=user_id, issue=issue, valid_only=valid_only)

        _rows(sheets[0], result, valid_only, validate, apply)
    elif entity == "carrier_bill":  # 快递账单 (services/carrier_scorecard.py)
        from app.services import carrier_scorecard

        resolved = {}

        def validate(ps):
            resolved.update(carrier_scorecard.validate_bill(ps))

        def apply(ps, rows):
            return carrier_scorecard.apply_bill(resolved, rows, user_id=user_id,
                                                source=f"快递账单 {ps.sheet.label}")

        _rows(sheets[0], result, valid_only, validate, apply)
    result.issues = [i for ps in sheets for i in ps.issues]
    result.failed_rows = len({(i.file_index, i.row) for i in result.issues})
    if progress:
        progress(result.rows, max(1, result.rows), result.summary)
    return result


def _finish_tx(result: ImportResult, counts, failed_now: bool) -> None:
    if failed_now:
        db.session.rollback()
        result.applied = False
        result.created = result.updated = result.unchanged = 0
        return
    db.session.commit()
    result.applied = True
    result.created, result.updated, result.unchanged = counts.created, counts.updated, counts.unchanged


def _rows(ps: ParsedSheet, result: ImportResult, valid_only: bool, validate: Callable, apply: Callable) -> None:
    validate(ps)
    result.records = len(ps.rows)
    good = [r for r in ps.rows if not r.bad]
    result.failed = len(ps.rows) - len(good)
    if ps.issues and not valid_only:
        result.failed = len(ps.rows)
        return
    try:
        counts = apply(ps, good)
    except DomainError as exc:
        ps.issue(good[0].index if good else ps.header_row, None, exc.message)
        _finish_tx(result, None, True)
        result.failed = len(ps.rows)
        return
    result.failed += counts.failed
    _finish_tx(result, counts, bool(counts.failed) and not valid_only)


def _issue(draft, message, field=None):
    """A draft's issue, on its first row; the order is not imported."""
    ps, row = draft.first()
    ps.issue(row.index, field, message)
    row.bad = True
    draft.bad = True


def _orders_stream(parser: SheetParser, result, *, shop, valid_only, user_id, create_shop, progress) -> None:
    """One order sheet, a chunk of orders at a time (order_import.stream + StreamApply): the
    rules and the result of :func:`_orders` with the bulk path."""
    ps = parser.parsed
    order_import.pair([ps])  # an order sheet without lines, or lines without an order sheet
    log = order_import.IssueLog(ps)
    keys = order_import.keys_of(parser, shop)
    platform = ps.profile.platform or ""
    total = len({k for k in keys if k is not None})
    writer = order_import.StreamApply(lookup=_shop_lookup(shop if create_shop else None, platform),
                                      profile_platform=platform, user_id=user_id, valid_only=valid_only,
                                      issue=_issue, log=log, progress=progress, total=total)
    # The writer thread (PostgreSQL) waits for the GIL whenever the database has taken its
    # data: the sync's shortened switch interval (0.5 ms, shared, restored by the last user).
    try:
        with bulk_orders.short_switch:
            writer.prefetch(keys, parser)
            for drafts in order_import.stream(parser, shop, keys, log, chunk_orders=order_import.BATCH_SIZE):
                writer.add(drafts)
            counts = writer.finish()
    finally:
        writer.close()
        log.close()
    result.records = writer.records
    if writer.broken:
        db.session.rollback()  # what was written, and a shop created for this import
        result.failed = result.records
        return
    result.failed = writer.bad + counts.failed
    _finish_tx(result, counts, bool(counts.failed) and not valid_only)
    if not result.applied:
        result.failed = result.records


def _orders(sheets, result, *, shop, valid_only, user_id, create_shop, progress, bulk) -> None:
    drafts = order_import.build(sheets, shop)
    result.records = len(drafts)
    issue = _issue
    platform = next((ps.profile.platform for ps in sheets if ps.profile.platform), "")
    shops = order_import.resolve_shops(drafts, profile_platform=platform,
                                       lookup=_shop_lookup(shop if create_shop else None, platform), issue=issue)
    bad = [d for d in drafts if d.bad]
    result.failed = len(bad)
    if bad and not valid_only:
        db.session.rollback()  # a shop created for this import is not kept either
        result.failed = len(drafts)
        return
    for d in bad:  # valid rows only: say why the order's other rows were skipped too
        for ps, row in d.refs:
            if not row.bad:
                ps.issue(row.index, None, "同一订单的其他行有错误，整单未导入")
                row.bad = True
    good = [d for d in drafts if not d.bad]
    counts = order_import.apply(good, shops, user_id=user_id, valid_only=valid_only, issue=issue,
                                progress=progress, bulk=bulk)
    result.failed += counts.failed
    _finish_tx(result, counts, bool(counts.failed) and not valid_only)
    if not result.applied:
        result.failed = len(drafts)
