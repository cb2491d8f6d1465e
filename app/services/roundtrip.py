"""Round trip (issue #4 item 6): a grid exported to xlsx, edited in Excel and imported
back applies only the cells that changed, after a diff preview.

``preview(file, resource=..., can_write=...)`` reads an xlsx written by
services/exports.py: its very hidden ``_oms`` sheet names the resource and the column
key of each column (the first column, 系统编号, is the row id). Every row is compared
with the row as this user sees it now (row scope, column scope, masked PII), and
only the user's editable grid columns (``grid.editable_keys``) may change:

* a changed editable cell → a change ``{id, row, key, label, old, new}``;
* a changed cell of any other column (a masked phone, an amount, the status) → an
  error "「X」不能通过导入修改", never applied;
* a row the user cannot see (another shop's, deleted) → an error for that row;
* columns the user may not read are ignored (a file exported by someone who could).

Values come back from Excel typed, so both sides are normalised first and an
untouched cell is never a change: 12.3 and "12.30" are the same amount, an order
number stays text, an empty cell equals None, a time is compared to the second in
Asia/Shanghai, a choice column is compared by its code (its zh label in the file),
是/否 are booleans, and the ``'`` the export put before formula-like text is removed.

``stage(preview, user_id)`` keeps the changes in Redis (``OMS_ROUNDTRIP_TTL``, one
hour) under a random token bound to the user; ``apply(token, ...)`` re-reads each
row, skips rows whose previewed cells changed in the database since the preview
(reported as conflicts), and applies the rest through the grid's per-row editor
(``grid_ui.apply_edits`` with the API class's ``grid_save_row``: one savepoint and,
for orders, one OrderEvent per changed field). A token is used once.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import os
import secrets
import zipfile
from decimal import Decimal, InvalidOperation, ROUND_HALF_UP
from typing import IO, Any, Callable, Iterable, Optional

from flask import current_app

from . import exports, grid, grid_ui
from .errors import NotFound, ValidationError

MAX_ROWS = 100_000
MAX_UNZIPPED = 400 * 1024 * 1024  # a zip that inflates beyond this is refused (zip bomb)
CHUNK = 1000
_KEY = "oms:roundtrip:{}"
_CENT = Decimal("0.01")
_NOT_OURS = "这个文件不是本系统导出的表格（缺少 _oms 工作表），不能按原表导回；请先在表格里导出 xlsx，修改后再导入"


# --- reading the workbook --------------------------------------------------------------
def _read_bytes(source, max_bytes: int) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as fh:
            data = fh.read(max_bytes + 1)
    else:
        data = source.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValidationError(f"文件太大：最多 {max_bytes // (1024 * 1024)} MB", "file")
    if not data:
        raise ValidationError("文件是空的", "file")
    return data


def _check_zip(data: bytes) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            total = sum(info.file_size for info in zf.infolist())
    except zipfile.BadZipFile:
        raise ValidationError("不是 xlsx 文件：请上传从本系统导出并在 Excel 中修改的 .xlsx", "file") from None
    if total > MAX_UNZIPPED:
        raise ValidationError("文件解压后过大，已拒绝（可能是压缩炸弹）", "file")


def _sheets(data: bytes) -> tuple[list[list], list[list]]:
    """(rows of the first visible data sheet, rows of ``_oms``) as lists of typed values.

    python-calamine when it is installed (fast); openpyxl read_only otherwise."""
    try:
        from python_calamine import CalamineWorkbook
    except ImportError:  # pragma: no cover - calamine is the normal path
        return _sheets_openpyxl(data)
    try:
        wb = CalamineWorkbook.from_filelike(io.BytesIO(data))
    except Exception:
        raise ValidationError("无法读取这个 xlsx 文件（文件损坏或不是 Excel 表格）", "file") from None
    names = list(wb.sheet_names)
    if exports.META_SHEET not in names:
        raise ValidationError(_NOT_OURS, "file")
    meta = wb.get_sheet_by_name(exports.META_SHEET).to_python(skip_empty_area=False)
    data_name = next((n for n in names if n != exports.META_SHEET), None)
    if data_name is None:
        raise ValidationError("文件里没有数据工作表", "file")
    rows = wb.get_sheet_by_name(data_name).to_python(skip_empty_area=False)
    return rows, meta


def _sheets_openpyxl(data: bytes):  # pragma: no cover - fallback
    import openpyxl

    wb = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        if exports.META_SHEET not in wb.sheetnames:
            raise ValidationError(_NOT_OURS, "file")
        meta = [list(r) for r in wb[exports.META_SHEET].iter_rows(values_only=True)]
        data_name = next((n for n in wb.sheetnames if n != exports.META_SHEET), None)
        rows = [list(r) for r in wb[data_name].iter_rows(values_only=True)]
    finally:
        wb.close()
    return rows, meta


def _blank(v) -> bool:
    return v is None or (isinstance(v, str) and v.strip() == "")


# --- normalising values --------------------------------------------------------------------
class _Bad(Exception):
    """A file value that cannot be read for its column."""


def _text_of(v) -> Optional[str]:
    """Any cell value as the text a text column holds (Excel may have turned text into numbers)."""
    if _blank(v):
        return None
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    if isinstance(v, dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, dt.date):
        return v.isoformat()
    return str(v)


def _parse_time(text: str) -> dt.datetime:
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y-%m-%d",
                "%Y/%m/%d"):
        try:
            return dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise _Bad(f"无法识别的时间：{text}")


def _round_second(value: dt.datetime) -> dt.datetime:
    """Excel keeps times as fractions of a day: 10:00:00 may come back as 09:59:59.999999."""
    if value.microsecond >= 500_000:
        value += dt.timedelta(seconds=1)
    return value.replace(microsecond=0)


def canon_db(col: grid.GridColumn, v) -> Any:
    """The comparable form of a value as the database (stream_raw) gives it."""
    if v is None or (isinstance(v, str) and v.strip() == ""):
        return None
    kind = col.kind
    if kind == "money":
        return Decimal(v).quantize(_CENT, ROUND_HALF_UP)
    if kind == "decimal":
        return Decimal(v).normalize()
    if kind == "int":
        return int(v)
    if kind == "time":
        return exports.local_naive(v).replace(microsecond=0)
    if kind == "bool":
        return bool(v)
    if kind == "choice":
        return str(v)
    return str(v).strip()


def canon_file(col: grid.GridColumn, v) -> Any:
    """The comparable form of a cell read from the file (raises _Bad with a zh reason)."""
    if _blank(v):
        return None
    kind = col.kind
    if kind in ("money", "decimal", "int"):
        if isinstance(v, bool):
            raise _Bad(f"「{col.label}」应为数字：{v}")
        if isinstance(v, (int, float)):
            number = Decimal(repr(v)) if isinstance(v, float) else Decimal(v)
        else:
            text = str(v).strip().replace(",", "").replace("¥", "").replace("￥", "")
            try:
                number = Decimal(text)
            except InvalidOperation:
                raise _Bad(f"「{col.label}」应为数字：{v}") from None
        if kind == "money":
            return number.quantize(_CENT, ROUND_HALF_UP)
        if kind == "int":
            if number != number.to_integral_value():
                raise _Bad(f"「{col.label}」应为整数：{v}")
            return int(number)
        return number.normalize()
    if kind == "time":
        if isinstance(v, dt.datetime):
            return _round_second(v.replace(tzinfo=None))
        if isinstance(v, dt.date):
            return dt.datetime.combine(v, dt.time())
        return _parse_time(exports.unneutralise(str(v).strip()))
    if kind == "bool":
        if isinstance(v, bool):
            return v
        text = str(v).strip().upper()
        if text in ("是", "TRUE", "1", "Y", "YES"):
            return True
        if text in ("否", "FALSE", "0", "N", "NO"):
            return False
        raise _Bad(f"「{col.label}」应为 是 或 否：{v}")
    if kind == "choice":
        text = _text_of(v).strip()
        choices = exports.choice_labels(col)
        if text in choices:
            return text
        by_label = {label: code for code, label in choices.items()}
        if text in by_label:
            return by_label[text]
        raise _Bad(f"「{col.label}」没有这个选项：{text}")
    text = exports.unneutralise(_text_of(v)).strip()
    return text or None


def display(col: grid.GridColumn, value) -> Optional[str]:
    """A canonical value as the grid shows it (the preview's old → new)."""
    if value is None:
        return None
    if col.kind == "money":
        return f"{value:.2f}"
    if col.kind == "time":
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if col.kind == "bool":
        return "是" if value else "否"
    if col.kind == "choice":
        return exports.choice_labels(col).get(value, value)
    return str(value)


def _stored(value) -> Any:
    """A canonical value in JSON (kept in Redis between preview and apply)."""
    if isinstance(value, Decimal):
        return {"d": str(value)}
    if isinstance(value, dt.datetime):
        return {"t": value.isoformat()}
    return value


def _edit_value(col: grid.GridColumn, value, relation_ids: dict) -> Any:
    """What the grid editor takes for a canonical file value (a choice code, a carrier id)."""
    if value is None:
        return None
    if col.edit_choices:
        ids = relation_ids.get(col.key, {})
        if value not in ids:
            raise _Bad(f"「{col.label}」没有「{value}」这个选项")
        return ids[value]
    if col.kind == "choice":
        return grid_ui._typed(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=exports.SHANGHAI).isoformat()
    return value


def _relation_ids(cols: Iterable[grid.GridColumn]) -> dict:
    """For editable relation columns (快递公司, 仓库): name → id of the rows offered in the grid."""
    out = {}
    for c in cols:
        source = grid_ui.EDIT_OPTION_SOURCES.get(c.edit_choices or "")
        if source:
            out[c.key] = {str(o["label"]): o["value"] for o in grid_ui.OPTION_SOURCES[source]()}
    return out


def _current(spec: grid.GridSpec, keys: list[str], ids: list[int]) -> dict[int, tuple]:
    """Rows as this user sees them now (scoped, masked), by id."""
    out: dict[int, tuple] = {}
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        _cols, rows = grid.stream_raw(spec, {"id": chunk}, columns=keys, sort="id:asc")
        for row in rows:
            out[row[0]] = row
    return out


# --- preview ---------------------------------------------------------------------------
def preview(source: bytes | str | os.PathLike | IO[bytes], *, resource: str, can_write: bool,
            max_bytes: Optional[int] = None) -> dict:
    """Compare an exported-and-edited xlsx with the database; nothing is written.

    Returns ``{resource, title, changes: [{id, row, key, label, old, new}], errors:
    [{row, column, message}], unchanged_rows, rows}`` (``row`` = the Excel row number)."""
    spec = grid.spec_for(resource)
    if max_bytes is None:
        max_bytes = int(current_app.config.get("OMS_ROUNDTRIP_MAX_BYTES", 20 * 1024 * 1024))
    data = _read_bytes(source, max_bytes)
    _check_zip(data)
    rows, meta = _sheets(data)
    if not meta or not meta[0] or meta[0][0] != exports.MAGIC:
        raise ValidationError(_NOT_OURS, "file")
    file_resource = str(meta[1][0]).strip() if len(meta) > 1 and meta[1] else ""
    if file_resource != resource:
        try:
            other = str(grid.spec_for(file_resource).title)
        except Exception:
            other = file_resource or "未知表格"
        raise ValidationError(f"这个文件是「{other}」的导出，不能导入到「{spec.title}」", "file")
    keys = [str(k).strip() for k in (meta[2] if len(meta) > 2 else []) if not _blank(k)]
    if not keys or keys[0] != "id":
        raise ValidationError(_NOT_OURS, "file")
    if not rows:
        raise ValidationError("文件里没有数据", "file")
    header = [("" if _blank(h) else str(h).strip()) for h in rows[0]]

    errors: list[dict] = []
    readable = {c.key for c in grid.readable_columns(spec)}
    editable = grid.editable_keys(spec, can_write)
    positions: list[tuple[int, grid.GridColumn]] = []
    for pos, key in enumerate(keys):
        expected = exports.ID_HEADER if key == "id" else (str(spec.column(key).label) if spec.column(key) else key)
        found = header[pos] if pos < len(header) else ""
        if found != expected:
            raise ValidationError(
                f"第 {pos + 1} 列的表头是「{found}」，导出时是「{expected}」：请不要增删或移动列", "file")
        if key == "id":
            continue
        col = spec.column(key)
        if col is None:
            errors.append({"row": 1, "column": found, "message": f"「{found}」已不是表格的列，已忽略"})
        elif key in readable:
            positions.append((pos, col))
    extra = [h for h in header[len(keys):] if h]
    if extra:
        errors.append({"row": 1, "column": extra[0],
                       "message": f"导出后新增的列不会导入：{'、'.join(extra[:5])}"})

    parsed: list[tuple[int, int, list]] = []
    seen: dict[int, int] = {}
    for index, cells in enumerate(rows[1:], start=2):
        if all(_blank(v) for v in cells):
            continue
        raw_id = cells[0] if cells else None
        try:
            if isinstance(raw_id, float) and not raw_id.is_integer():
                raise ValueError
            pk = int(raw_id if not isinstance(raw_id, str) else raw_id.strip())
        except (TypeError, ValueError):
            errors.append({"row": index, "column": exports.ID_HEADER,
                           "message": f"系统编号无效：{_text_of(raw_id) or '（空）'}，这一行未导入"})
            continue
        if pk in seen:
            errors.append({"row": index, "column": exports.ID_HEADER,
                           "message": f"系统编号 {pk} 与第 {seen[pk]} 行重复，这一行未导入"})
            continue
        seen[pk] = index
        parsed.append((index, pk, cells))
        if len(parsed) > MAX_ROWS:
            raise ValidationError(f"一次最多导入 {MAX_ROWS} 行", "file")

    current = _current(spec, [c.key for _, c in positions], [pk for _, pk, _ in parsed])
    relation_ids = _relation_ids(c for _, c in positions if c.key in editable)
    changes: list[dict] = []
    unchanged = 0
    for index, pk, cells in parsed:
        now = current.get(pk)
        if now is None:
            errors.append({"row": index, "column": exports.ID_HEADER,
                           "message": f"系统编号 {pk} 的记录不存在或无权访问，这一行未导入"})
            continue
        row_changed = row_error = False
        for i, (pos, col) in enumerate(positions, start=1):
            cell = cells[pos] if pos < len(cells) else None
            old = canon_db(col, now[i])
            try:
                new = canon_file(col, cell)
            except _Bad as exc:
                if col.key in editable:
                    errors.append({"row": index, "column": str(col.label), "message": str(exc)})
                else:
                    errors.append({"row": index, "column": str(col.label), "message": f"「{col.label}」不能通过导入修改"})
                row_error = True
                continue
            if new == old:
                continue
            if col.key not in editable:
                errors.append({"row": index, "column": str(col.label), "message": f"「{col.label}」不能通过导入修改"})
                row_error = True
                continue
            try:
                value = _edit_value(col, new, relation_ids)
            except _Bad as exc:
                errors.append({"row": index, "column": str(col.label), "message": str(exc)})
                row_error = True
                continue
            changes.append({"id": pk, "row": index, "key": col.key, "label": str(col.label),
                            "old": display(col, old), "new": display(col, new),
                            "value": value, "expect": _stored(old)})
            row_changed = True
        if not row_changed and not row_error:
            unchanged += 1
    return {"resource": resource, "title": str(spec.title), "changes": changes, "errors": errors,
            "unchanged_rows": unchanged, "rows": len(parsed)}


# --- staging and applying ---------------------------------------------------------------
def _redis():
    from app.jobs.queue import redis_conn

    return redis_conn()


def stage(result: dict, *, user_id: int, ttl: Optional[int] = None) -> str:
    """Keep a preview's changes server-side for ``apply``; returns the token."""
    if ttl is None:
        ttl = int(current_app.config.get("OMS_ROUNDTRIP_TTL", 3600))
    token = secrets.token_urlsafe(24)
    body = {"user_id": user_id, "resource": result["resource"], "changes": result["changes"]}
    _redis().set(_KEY.format(token), json.dumps(body, ensure_ascii=False), ex=ttl)
    return token


def public(result: dict) -> dict:
    """The preview as the API returns it (without the internal ``value``/``expect``)."""
    out = dict(result)
    out["changes"] = [{k: v for k, v in ch.items() if k not in ("value", "expect")} for ch in result["changes"]]
    return out


def _take(token: str, *, user_id: int, resource: str) -> list[dict]:
    if not isinstance(token, str) or not token:
        raise ValidationError("缺少预览编号（token）", "token")
    key = _KEY.format(token)
    conn = _redis()
    raw = conn.get(key)
    body = json.loads(raw) if raw else None
    if body is None or body.get("user_id") != user_id or body.get("resource") != resource:
        raise NotFound("导入预览不存在或已过期，请重新上传文件")
    if not conn.delete(key):  # applied by a concurrent request in the meantime
        raise NotFound("导入预览不存在或已过期，请重新上传文件")
    return body["changes"]


def apply(token: str, *, resource: str, user_id: int, can_write: bool,
          editor: Callable[[int, dict], None]) -> dict:
    """Apply a staged preview: ``{results: [{id, ok, message?, conflict?}], applied, failed,
    conflicts}``. A row whose previewed cells no longer hold the previewed old value is
    skipped as a conflict; every other row is saved on its own (grid_ui.apply_edits)."""
    spec = grid.spec_for(resource)
    changes = _take(token, user_id=user_id, resource=resource)
    by_row: dict[int, list[dict]] = {}
    for ch in changes:
        by_row.setdefault(int(ch["id"]), []).append(ch)
    keys = list(dict.fromkeys(ch["key"] for ch in changes))
    results: list[dict] = []
    ready: list[list[dict]] = []
    if keys:
        cols = grid.readable_columns(spec, keys)
        index = {c.key: i for i, c in enumerate(cols, start=1)}
        current = _current(spec, [c.key for c in cols], list(by_row))
        for pk, row_changes in by_row.items():
            now = current.get(pk)
            if now is None:
                results.append({"id": pk, "ok": False, "message": f"系统编号 {pk} 的记录不存在或无权访问"})
                continue
            moved = []
            for ch in row_changes:
                col = spec.column(ch["key"])
                if ch["key"] not in index or _stored(canon_db(col, now[index[ch["key"]]])) != ch["expect"]:
                    now_value = display(col, canon_db(col, now[index[ch["key"]]])) if ch["key"] in index else None
                    moved.append(f"「{ch['label']}」现为「{now_value or '空'}」")
            if moved:
                results.append({"id": pk, "ok": False, "conflict": True,
                                "message": "预览后这一行已被修改（" + "，".join(moved) + "），未导入，请重新导出后再改"})
                continue
            ready.append(row_changes)
    batch: list[dict] = []
    for row_changes in ready:
        if batch and len(batch) + len(row_changes) > grid_ui.MAX_EDITS:
            results += grid_ui.apply_edits(spec, batch, editor=editor, can_write=can_write)
            batch = []
        batch += [{"id": ch["id"], "key": ch["key"], "value": ch["value"]} for ch in row_changes]
    if batch:
        results += grid_ui.apply_edits(spec, batch, editor=editor, can_write=can_write)
    for r in results:
        r.pop("row", None)
    applied = sum(1 for r in results if r["ok"])
    conflicts = sum(1 for r in results if r.get("conflict"))
    return {"results": results, "applied": applied, "failed": len(results) - applied - conflicts,
            "conflicts": conflicts}
