"""Read an uploaded file into rows of cell values, whatever it really is.

* xlsx / xls: python-calamine (Rust; about 14× faster than openpyxl's read-only
  mode). An xlsx is a zip: its members are inspected first (total uncompressed
  size, compression ratio) so a zip bomb is refused before anything is inflated.
* CSV: the encoding is sniffed — a BOM means UTF-8 (utf-8-sig); otherwise strict
  UTF-8, then GB18030 (a superset of GBK, which 千牛 and 京东 export).
* The type comes from the file's first bytes, not its name: a PNG or a text file
  renamed to .xlsx gets a clear zh message, never a traceback.
"""
from __future__ import annotations

import csv
import io
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .errors import ImportFileError

XLSX_MAGIC = b"PK\x03\x04"
XLS_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
EXCEL_EXTS = {".xlsx", ".xlsm", ".xls", ".et"}
KNOWN_BINARY = {b"\x89PNG": "PNG 图片", b"\xff\xd8\xff": "JPEG 图片", b"%PDF": "PDF 文件",
                b"GIF8": "GIF 图片", b"Rar!": "RAR 压缩包", b"\x1f\x8b": "gzip 压缩包"}


@dataclass
class Limits:
    max_bytes: int = 50 * 1024 * 1024
    max_rows: int = 200_000
    max_unzipped_bytes: int = 1024 * 1024 * 1024
    max_zip_ratio: int = 200

    @classmethod
    def from_config(cls, config) -> "Limits":
        return cls(
            max_bytes=int(config.get("OMS_IMPORT_MAX_BYTES", cls.max_bytes)),
            max_rows=int(config.get("OMS_IMPORT_MAX_ROWS", cls.max_rows)),
            max_unzipped_bytes=int(config.get("OMS_IMPORT_MAX_UNZIPPED_BYTES", cls.max_unzipped_bytes)),
            max_zip_ratio=int(config.get("OMS_IMPORT_MAX_ZIP_RATIO", cls.max_zip_ratio)),
        )


@dataclass
class Sheet:
    label: str  # the file name the user knows
    kind: str  # "xlsx", "xls" or "csv"
    rows: list = field(default_factory=list)  # list of lists of cell values
    encoding: Optional[str] = None  # CSV only
    sheet_name: Optional[str] = None


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB"


def check_zip(path: Path, label: str, limits: Limits) -> None:
    """Refuse a zip bomb before parsing: total uncompressed size and per-member ratio."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except zipfile.BadZipFile:
        raise ImportFileError(f"「{label}」已损坏，不是有效的 Excel 文件，请重新导出") from None
    total = sum(i.file_size for i in infos)
    if total > limits.max_unzipped_bytes:
        raise ImportFileError(f"「{label}」解压后有 {_mb(total)}，超过上限 {_mb(limits.max_unzipped_bytes)}，"
                              "疑似压缩炸弹，已拒绝")
    for info in infos:
        if info.file_size > 1024 * 1024 and info.file_size > limits.max_zip_ratio * max(1, info.compress_size):
            raise ImportFileError(
                f"「{label}」中的 {info.filename} 压缩比为 {info.file_size // max(1, info.compress_size)}:1，"
                f"超过上限 {limits.max_zip_ratio}:1，疑似压缩炸弹，已拒绝")
    if not any(i.filename.startswith("xl/") for i in infos):
        raise ImportFileError(f"「{label}」是 zip 压缩包，不是 Excel 表格，请上传 .xlsx、.xls 或 .csv 文件")


def _check_rows(n: int, label: str, limits: Limits) -> None:
    if n > limits.max_rows:
        raise ImportFileError(f"「{label}」有 {n} 行，超过单次导入上限 {limits.max_rows} 行，请拆分后导入")


def _read_excel(path: Path, label: str, kind: str, limits: Limits) -> Sheet:
    from python_calamine import CalamineWorkbook

    try:
        wb = CalamineWorkbook.from_path(str(path))
    except Exception as exc:  # calamine raises its own error types for corrupt files
        raise ImportFileError(f"「{label}」无法作为 Excel 文件读取（{type(exc).__name__}），"
                              "请用 Excel 另存为 .xlsx 后重试") from None
    try:
        chosen = None
        for name in wb.sheet_names:  # the first sheet with data
            sheet = wb.get_sheet_by_name(name)
            if sheet.height > 0:
                chosen = sheet
                break
        if chosen is None:
            raise ImportFileError(f"「{label}」是空表格：没有任何数据")
        # total_height counts the rows the sheet declares: refuse before converting them.
        _check_rows(max(0, chosen.total_height - 1), label, limits)
        rows = chosen.to_python(skip_empty_area=False)
        merged = []
        if kind == "xlsx":
            try:
                merged = chosen.merged_cell_ranges() or []
            except Exception:  # not available for this sheet type: nothing to fill
                merged = []
        _fill_merged_header(rows, merged)
        return Sheet(label, kind, rows, sheet_name=chosen.name)
    finally:
        wb.close()


def _fill_merged_header(rows: list, merged) -> None:
    """A merged header cell keeps its value in the top-left cell only: copy it over the
    range, within the first rows where headers live."""
    for rng in merged:
        try:
            (r0, c0), (r1, c1) = rng
        except (TypeError, ValueError):
            continue
        if r0 >= 10 or r0 >= len(rows) or c0 >= len(rows[r0]):
            continue
        value = rows[r0][c0]
        for r in range(r0, min(r1, 9, len(rows) - 1) + 1):
            for c in range(c0, min(c1, len(rows[r]) - 1) + 1):
                if rows[r][c] in ("", None):
                    rows[r][c] = value


def decode_csv(raw: bytes, label: str) -> tuple[str, str]:
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw.decode("utf-8-sig"), "utf-8-sig"
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16"), "utf-16"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("gb18030"), "gb18030"
    except UnicodeDecodeError:
        raise ImportFileError(f"「{label}」的编码无法识别：既不是 UTF-8 也不是 GBK/GB18030，"
                              "请用 Excel 另存为 CSV（UTF-8）后重试") from None


def _read_csv(path: Path, label: str, limits: Limits) -> Sheet:
    raw = path.read_bytes()
    if b"\x00" in raw[:4096] and not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ImportFileError(f"「{label}」不是文本 CSV 文件，也不是 Excel 表格，请上传 .xlsx、.xls 或 .csv 文件")
    content, encoding = decode_csv(raw, label)
    if not content.strip():
        raise ImportFileError(f"「{label}」是空文件：没有任何数据")
    first = content[:4096].split("\n", 1)[0]
    delimiter = max([",", "\t", ";"], key=first.count)
    rows = []
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
    try:
        for row in reader:
            rows.append(row)
            if len(rows) > limits.max_rows + 1:
                _check_rows(len(rows) - 1 + sum(1 for _ in reader), label, limits)
    except csv.Error as exc:
        raise ImportFileError(f"「{label}」第 {reader.line_num} 行不是有效的 CSV：{exc}") from None
    return Sheet(label, "csv", rows, encoding=encoding)


def read(path, label: Optional[str] = None, limits: Optional[Limits] = None) -> Sheet:
    """Read ``path`` (shown to users as ``label``) into a :class:`Sheet`, or raise ImportFileError."""
    path = Path(path)
    label = label or path.name
    limits = limits or Limits()
    try:
        size = path.stat().st_size
    except OSError:
        raise ImportFileError(f"找不到文件「{label}」") from None
    if size == 0:
        raise ImportFileError(f"「{label}」是空文件：没有任何数据")
    if size > limits.max_bytes:
        raise ImportFileError(f"「{label}」有 {_mb(size)}，超过单个文件上限 {_mb(limits.max_bytes)}，请拆分后导入")
    with path.open("rb") as fh:
        head = fh.read(8)
    ext = os.path.splitext(label)[1].lower()
    if head.startswith(XLSX_MAGIC):
        check_zip(path, label, limits)
        sheet = _read_excel(path, label, "xlsx", limits)
    elif head.startswith(XLS_MAGIC):
        sheet = _read_excel(path, label, "xls", limits)
    else:
        for magic, what in KNOWN_BINARY.items():
            if head.startswith(magic):
                raise ImportFileError(f"「{label}」实际上是{what}，不是 Excel 或 CSV 表格，请上传 .xlsx、.xls 或 .csv 文件")
        if ext in EXCEL_EXTS:
            raise ImportFileError(f"「{label}」的扩展名是 {ext}，但内容不是 Excel 表格（可能是改了扩展名的文件），"
                                  "请用 Excel 打开后另存为 .xlsx 再导入")
        sheet = _read_csv(path, label, limits)
    # Trailing empty rows (Excel keeps formatted blank rows) are not data.
    rows = sheet.rows
    while rows and all(v is None or (isinstance(v, str) and not v.strip()) for v in rows[-1]):
        rows.pop()
    if not rows:
        raise ImportFileError(f"「{label}」是空表格：没有任何数据")
    _check_rows(len(rows) - 1, label, limits)
    return sheet
