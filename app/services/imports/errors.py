"""Errors of the importer: a whole file refused (wrong headers, too big, not a
spreadsheet) is an :class:`ImportFileError`; bad cells are collected per row and
column (:class:`CellIssue`) and reported together, never one at a time."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from app.services.errors import ValidationError


class ImportFileError(ValidationError):
    """The file cannot be imported at all; ``message`` is zh and says why."""

    def __init__(self, message: str, field: str | None = "file"):
        super().__init__(message, field)


@dataclass
class CellIssue:
    file_index: int  # which uploaded file (0, 1)
    row: int  # 0-based row index in the sheet (Excel row = row + 1)
    col: Optional[int]  # 0-based column index, None: the whole row
    message: str  # zh, complete: "第 12 行「订单付款时间」：无法识别的日期 2026-13-45"
