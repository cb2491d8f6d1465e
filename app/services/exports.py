"""Excel/CSV export of any grid: its current filter, sort and columns (issue #4 item 4).

One path for the browser, jobs and the CLI: :func:`write_export` streams the rows of
``grid.stream_raw`` (row scope, column scope and PII masking applied there, so a
column the user cannot read is never written) into a writer:

* **xlsx** by XlsxWriter in ``constant_memory`` mode (rows go to a temporary file
  as they are written, memory stays flat). It beat openpyxl ``write_only`` (with
  lxml) on the same typed cells: 11 s against 18 s of CPU for 100,000 rows × 30
  columns (bench/export_bench.py, bench/RESULTS.md).
  Cells are typed: money is a number with a ``0.00`` format, times are real Excel
  datetimes (naive, Asia/Shanghai), choice columns carry their zh label, booleans
  是/否, and text columns (order numbers, tracking numbers) are always text cells,
  so Excel never shows 3.91234567890123E+18.
* **csv**: UTF-8 with a BOM (Excel recognises it as UTF-8), the same values as text.
* **csv_gbk**: GBK for older Excel and tools. Characters GBK cannot encode (emoji,
  rare characters) are replaced by ``?`` (the codec's ``errors="replace"``): the
  export never fails on them; use ``csv`` or ``xlsx`` to keep them.

Formula injection: every text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab
or a carriage return gets a leading ``'`` in xlsx and CSV, so Excel shows the text
instead of evaluating it. Numeric cells (money, numbers) are never text, so a
negative amount stays a number. In xlsx a text starting with ``'`` gets one more
``'`` as well, so the round trip (services/roundtrip.py) can undo the prefix exactly.

Round-trip metadata (xlsx only): the first column is 系统编号 (the row id) and a
``veryHidden`` sheet ``_oms`` holds ``A1 = "oms-export/1"``, ``A2`` = the resource
name and row 3 = the column keys in sheet order (``id`` first), so the same file can
be imported back (services/roundtrip.py).

Large exports run as jobs (app/jobs/exports.py) and land in ``instance/exports/``
as ``<file_id>.<ext>`` beside ``<file_id>.json`` (owner, zh filename, rows); only
the owner or an admin may download them (:func:`export_file`), and
:func:`cleanup` deletes files older than ``OMS_EXPORT_KEEP_DAYS`` (7).
"""
from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterable, Mapping, Optional

from flask import current_app, has_app_context

from . import grid
from .display import SHANGHAI
from .errors import NotFound, ValidationError

FORMATS = {
    "xlsx": ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    "csv": ("csv", "text/csv; charset=utf-8"),
    "csv_gbk": ("csv", "text/csv; charset=gbk"),
}
MAGIC = "oms-export/1"
META_SHEET = "_oms"
ID_HEADER = "系统编号"
DANGEROUS = ("=", "+", "-", "@", "\t", "\r")
XLSX_MAX_ROWS = 1_048_575  # Excel's 1,048,576 rows less the header
MONEY_FORMAT = "0.00"
TIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
from .owned_files import FILE_ID as _FILE_ID  # noqa: E402
_UTC = dt.timezone.utc


def neutralise(text: str) -> str:
    """``'`` before a text that a spreadsheet would read as a formula."""
    return "'" + text if text.startswith(DANGEROUS) else text


def _neutralise_xlsx(text: str) -> str:
    return "'" + text if text.startswith(DANGEROUS) or text.startswith("'") else text


def unneutralise(text: str) -> str:
    """Undo :func:`_neutralise_xlsx` on a cell read back from an exported xlsx."""
    if len(text) > 1 and text[0] == "'" and (text[1] in DANGEROUS or text[1] == "'"):
        return text[1:]
    return text


def local_naive(value: dt.datetime) -> dt.datetime:
    """An aware (UTC) time as the naive Asia/Shanghai wall time Excel shows, to the
    second (what the grid shows; the round trip compares to the second)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=_UTC)
    return value.astimezone(SHANGHAI).replace(tzinfo=None, microsecond=0)


# --- requests -------------------------------------------------------------------
@dataclass
class ExportRequest:
    """What to export: a grid, its filters (the grid's JSON object), columns, sort, format."""

    resource: str
    filters: dict
    columns: Optional[list[str]] = None
    sort: Optional[str] = None
    fmt: str = "xlsx"

    @classmethod
    def parse(cls, resource: str, *, filters=None, columns=None, sort=None, fmt=None) -> "ExportRequest":
        fmt = (fmt or "xlsx").strip().lower()
        if fmt not in FORMATS:
            raise ValidationError(f"不支持的导出格式：{fmt}（可选 xlsx、csv、csv_gbk）", "format")
        if isinstance(columns, str):
            columns = [c.strip() for c in columns.split(",") if c.strip()]
        spec = grid.spec_for(resource)
        parsed = grid.parse_filters(filters)
        if columns:
            grid.readable_columns(spec, columns)  # unknown keys are refused now, not in a job
        grid.parse_sort(spec, sort)
        return cls(resource=resource, filters=parsed, columns=list(columns) if columns else None,
                   sort=sort or None, fmt=fmt)

    def to_dict(self) -> dict:
        return {"resource": self.resource, "filters": self.filters, "columns": self.columns,
                "sort": self.sort, "fmt": self.fmt}


def filename(req: ExportRequest, now: Optional[dt.datetime] = None) -> str:
    """The zh download name: ``订单工作台-20261130-153000.xlsx``."""
    spec = grid.spec_for(req.resource)
    now = (now or dt.datetime.now(_UTC)).astimezone(SHANGHAI)
    title = re.sub(r'[\\/:*?"<>|\r\n\t]+', "_", str(spec.title)).strip() or req.resource
    return f"{title}-{now:%Y%m%d-%H%M%S}.{FORMATS[req.fmt][0]}"


def count(req: ExportRequest, cap: int) -> tuple[int, bool]:
    return grid.count(grid.spec_for(req.resource), req.filters, cap=cap)


# --- cell conversion -----------------------------------------------------------------
def choice_labels(col: grid.GridColumn) -> dict[str, str]:
    """code → zh label of a choice column (labels are lazy strings in the spec)."""
    return {str(k): str(v) for k, v in (col.choices or {}).items()}


def _text_value(col: grid.GridColumn) -> Callable:
    """value → the text a CSV cell carries (None → "")."""
    if col.kind == "money":
        return lambda v: "" if v is None else f"{v:.2f}"
    if col.kind == "time":
        return lambda v: "" if v is None else local_naive(v).strftime("%Y-%m-%d %H:%M:%S")
    if col.kind == "bool":
        return lambda v: "" if v is None else ("是" if v else "否")
    if col.kind == "choice":
        labels = choice_labels(col)
        return lambda v: "" if v is None else labels.get(str(v), str(v))
    if col.kind in ("int", "decimal"):
        return lambda v: "" if v is None else str(v)
    return lambda v: "" if v is None else neutralise(str(v))


def _sheet_name(title: str) -> str:
    name = re.sub(r"[\[\]:*?/\\']", "_", title).strip() or "导出"
    return name[:31]


def _width(col: grid.GridColumn) -> float:
    if col.width:
        return max(8.0, col.width / 7.5)
    return {"time": 19.0, "money": 11.0, "bool": 6.0, "int": 8.0, "choice": 9.0}.get(col.kind, 16.0)


# --- writers ---------------------------------------------------------------------
ProgressFn = Callable[[int, Optional[int], Optional[str]], None]


def write_export(req: ExportRequest, out: IO[bytes] | str | os.PathLike, *,
                 progress: Optional[ProgressFn] = None, total: Optional[int] = None,
                 batch: int = 5000) -> int:
    """Write the export to ``out`` (a path or a binary stream); returns the row count.

    Runs in the caller's row scope and column grant (a request, or a job/CLI inside
    :func:`as_user`). ``progress(done, total, message)`` is called every ``batch`` rows."""
    spec = grid.spec_for(req.resource)
    cols, rows = grid.stream_raw(spec, req.filters, columns=req.columns, sort=req.sort, batch=batch)
    if req.fmt == "xlsx":
        return _write_xlsx(spec, cols, rows, out, progress=progress, total=total, batch=batch)
    return _write_csv(cols, rows, out, encoding="gbk" if req.fmt == "csv_gbk" else "utf-8-sig",
                      progress=progress, total=total, batch=batch)


def _write_csv(cols, rows, out, *, encoding: str, progress, total, batch) -> int:
    close = False
    if isinstance(out, (str, os.PathLike)):
        out, close = open(out, "wb"), True
    try:
        # Incremental encoder: a "utf-8-sig" BOM once at the start; GBK replaces what it lacks.
        text = io.TextIOWrapper(out, encoding=encoding, errors="replace", newline="", write_through=False)
        writer = csv.writer(text, lineterminator="\r\n")
        writer.writerow([ID_HEADER] + [str(c.label) for c in cols])
        convs = [_text_value(c) for c in cols]
        n = 0
        buffer = []
        for row in rows:
            buffer.append([row[0]] + [conv(v) for conv, v in zip(convs, row[1:])])
            n += 1
            if len(buffer) >= 1000:
                writer.writerows(buffer)
                buffer.clear()
                if progress and n % batch == 0:
                    progress(n, total, None)
        writer.writerows(buffer)
        text.flush()
        text.detach()
    finally:
        if close:
            out.close()
    return n


def _write_xlsx(spec, cols, rows, out, *, progress, total, batch) -> int:
    import xlsxwriter

    options = {"constant_memory": True, "strings_to_numbers": False, "strings_to_formulas": False,
               "strings_to_urls": False, "default_date_format": TIME_FORMAT}
    tmpdir = current_app.config.get("OMS_EXPORT_TMPDIR") if has_app_context() else None
    if tmpdir:
        options["tmpdir"] = tmpdir
    wb = xlsxwriter.Workbook(out, options)
    try:
        sheet = wb.add_worksheet(_sheet_name(str(spec.title)))
        meta = wb.add_worksheet(META_SHEET)
        header = wb.add_format({"bold": True, "bg_color": "#F2F2F2", "border": 1})
        money = wb.add_format({"num_format": MONEY_FORMAT})
        when = wb.add_format({"num_format": TIME_FORMAT})
        text_fmt = wb.add_format({"num_format": "@"})
        sheet.set_column(0, 0, 10)
        for i, c in enumerate(cols, start=1):
            sheet.set_column(i, i, _width(c), text_fmt if c.kind == "text" else None)
        sheet.freeze_panes(1, min(spec.frozen + 1, len(cols) + 1))
        sheet.write_string(0, 0, ID_HEADER, header)
        for i, c in enumerate(cols, start=1):
            sheet.write_string(0, i, str(c.label), header)

        meta.write_string(0, 0, MAGIC)
        meta.write_string(1, 0, spec.resource)
        meta.write_string(2, 0, "id")
        for i, c in enumerate(cols, start=1):
            meta.write_string(2, i, c.key)
        meta.very_hidden()
        sheet.activate()

        write_string = sheet.write_string
        write_number = sheet.write_number
        write_datetime = sheet.write_datetime

        def cell_writer(col: grid.GridColumn) -> Callable:
            if col.kind == "money":
                return lambda r, c, v: write_number(r, c, v, money)
            if col.kind in ("int", "decimal"):
                return write_number
            if col.kind == "time":
                return lambda r, c, v: write_datetime(r, c, local_naive(v), when)
            if col.kind == "bool":
                return lambda r, c, v: write_string(r, c, "是" if v else "否")
            if col.kind == "choice":
                labels = choice_labels(col)
                return lambda r, c, v: write_string(r, c, labels.get(str(v), str(v)))
            return lambda r, c, v: write_string(r, c, _neutralise_xlsx(v if isinstance(v, str) else str(v)))

        writers = [(i, cell_writer(c)) for i, c in enumerate(cols, start=1)]
        n = 0
        for row in rows:
            n += 1
            if n > XLSX_MAX_ROWS:
                raise ValidationError(f"xlsx 最多 {XLSX_MAX_ROWS} 行，请缩小筛选范围或导出 CSV", "filters")
            write_number(n, 0, row[0])
            for i, write in writers:
                v = row[i]
                if v is not None and v != "":
                    write(n, i, v)
            if progress and n % batch == 0:
                progress(n, total, None)
        if n:
            sheet.autofilter(0, 0, 0, len(cols))
    finally:
        wb.close()
    return n


def render(req: ExportRequest) -> bytes:
    """A small export in memory (the inline path of the endpoint)."""
    buf = io.BytesIO()
    write_export(req, buf)
    return buf.getvalue()


# --- files written by jobs ------------------------------------------------------------
def exports_dir() -> Path:
    path = Path(current_app.config["OMS_INSTANCE_DIR"]) / "exports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_file_id() -> str:
    return secrets.token_hex(16)


def download_url(resource: str, file_id: str) -> str:
    return f"/api/v1/{resource}/grid/export/download/{file_id}"


def write_file(req: ExportRequest, *, user_id: Optional[int], file_id: str, name: str,
               progress: Optional[ProgressFn] = None, total: Optional[int] = None) -> dict:
    """Write the export into ``instance/exports/<file_id>.<ext>`` (0600, renamed into place
    when complete) with its ``.json`` sidecar; returns what the job returns."""
    if not _FILE_ID.match(file_id):
        raise ValidationError("导出文件编号无效", "file_id")
    folder = exports_dir()
    ext = FORMATS[req.fmt][0]
    path = folder / f"{file_id}.{ext}"
    partial = folder / f"{file_id}.{ext}.part"
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            rows = write_export(req, fh, progress=progress, total=total)
        sidecar = {"user_id": user_id, "filename": name, "resource": req.resource, "fmt": req.fmt,
                   "rows": rows, "created_at": dt.datetime.now(_UTC).isoformat()}
        fd = os.open(folder / f"{file_id}.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(sidecar, fh, ensure_ascii=False)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return {"download_url": download_url(req.resource, file_id), "filename": name, "rows": rows}


@dataclass
class ExportFile:
    path: Path
    filename: str
    mimetype: str


def export_file(file_id: str, *, user_id: Optional[int], is_admin: bool,
                resource: Optional[str] = None) -> ExportFile:
    """A finished export file, for its owner or an admin; anything else is 404 (NotFound),
    so another user cannot even learn the file exists."""
    from .owned_files import owned_meta

    missing = NotFound("导出文件不存在或已过期")
    folder = exports_dir()
    meta = owned_meta(folder, file_id, user_id=user_id, is_admin=is_admin, missing=missing.message)
    if resource is not None and meta.get("resource") != resource:
        raise missing
    ext, mimetype = FORMATS.get(meta.get("fmt"), FORMATS["xlsx"])
    path = folder / f"{file_id}.{ext}"
    if not path.is_file():
        raise missing
    return ExportFile(path=path, filename=meta.get("filename") or path.name, mimetype=mimetype)


def cleanup(max_age_days: Optional[float] = None, now: Optional[float] = None) -> int:
    """Delete export files (and leftovers of crashed jobs) older than ``max_age_days``
    (default ``OMS_EXPORT_KEEP_DAYS``, 7); returns how many files were removed."""
    if max_age_days is None:
        max_age_days = float(current_app.config.get("OMS_EXPORT_KEEP_DAYS", 7))
    limit = (now if now is not None else time.time()) - max_age_days * 86400
    removed = 0
    for entry in exports_dir().iterdir():
        try:
            if entry.is_file() and entry.stat().st_mtime < limit:
                entry.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed


# --- running as a user (jobs and the CLI) -------------------------------------------------
class as_user:  # noqa: N801 (a context manager, used like scope.as_user)
    """The row scope *and* the column grant of ``user_id`` for a block outside a request
    (a job, the CLI). Outside a request services/columns.py would otherwise grant
    everything (the system's view), and an export would carry cost and PII columns."""

    def __init__(self, user_id: Optional[int]):
        self.user_id = user_id

    def __enter__(self):
        from app.extensions import db
        from app.models import OmsUser

        from . import columns, scope

        self._scope = scope.as_user(self.user_id)
        self._scope.__enter__()
        self._prev = columns._job_grant
        if self.user_id is not None:
            with scope.as_scope(None):
                user = db.session.get(OmsUser, self.user_id)
                grant = columns.grant_for_user(user) if user is not None else columns.ColumnGrant.nothing()
            columns._job_grant = grant
        return self

    def __exit__(self, *exc):
        from . import columns

        columns._job_grant = self._prev
        return self._scope.__exit__(*exc)


def start(req: ExportRequest, *, user_id: Optional[int], inline_max: int):
    """Decide inline or job: up to ``inline_max`` matching rows (a capped count) the file is
    rendered now and ``("inline", bytes, filename)`` returned; above, a job is queued and
    ``("job", job, filename)`` returned."""
    n, capped = count(req, inline_max)
    name = filename(req)
    if not capped:
        return "inline", render(req), name
    from app.jobs.exports import queue_export

    return "job", queue_export(req, user_id=user_id, filename=name), name


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII fallback and the zh name as RFC 5987 ``filename*``."""
    from urllib.parse import quote

    ascii_name = name.encode("ascii", "replace").decode("ascii").replace("?", "_").replace('"', "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def apply_filters_kv(pairs: Iterable[str]) -> dict:
    """``KEY=VALUE`` strings (the CLI's ``--filter``) → the grid's filter object. A VALUE
    that parses as JSON is used as such (``[1,2]``, ``{"from": "2026-11-01"}``); a JSON
    number is kept as text unless the key is an id-like filter, so order numbers stay exact."""
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValidationError(f"筛选条件应为 键=值：{pair}", "filter")
        parsed = value
        try:
            candidate = json.loads(value)
        except ValueError:
            candidate = None
        if isinstance(candidate, (list, dict, bool)):
            parsed = candidate
        elif isinstance(candidate, (int, float)) and (key == "id" or key.endswith("_id")):
            parsed = candidate
        out[key] = parsed
    return out


def loads_request(data: Mapping) -> ExportRequest:
    """An :class:`ExportRequest` from its :meth:`~ExportRequest.to_dict` (job arguments)."""
    return ExportRequest(resource=data["resource"], filters=dict(data.get("filters") or {}),
                         columns=list(data["columns"]) if data.get("columns") else None,
                         sort=data.get("sort"), fmt=data.get("fmt") or "xlsx")
