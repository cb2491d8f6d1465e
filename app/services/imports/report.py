"""The error report: the input rows copied into an xlsx, each bad cell filled red with a
comment carrying its zh message, and a last column 导入结果 with the row's messages.

Written in openpyxl's write-only mode (streaming, flat memory); a value that starts
with ``=`` is written as text, never as a formula.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.comments import Comment
from openpyxl.styles import Font, PatternFill

RED = PatternFill("solid", start_color="FFC7CE", end_color="FFC7CE")
ROW_RED = PatternFill("solid", start_color="FFEB9C", end_color="FFEB9C")
BOLD = Font(bold=True)
RESULT_HEADER = "导入结果"


def _value(cell):
    if isinstance(cell, dt.datetime) and cell.tzinfo is not None:
        return cell.replace(tzinfo=None)
    if isinstance(cell, (dt.time,)):
        return cell.isoformat()
    return cell


def _cell(ws, value, **style) -> WriteOnlyCell:
    c = WriteOnlyCell(ws, value=_value(value))
    if isinstance(value, str) and value.startswith("="):
        c.data_type = "s"  # keep ="123" as the text it was, not a formula
    for k, v in style.items():
        setattr(c, k, v)
    return c


def write(path: Path, sheets: list, issues: list) -> Path:
    """``sheets``: ParsedSheet (or objects with ``sheet``, ``header_row``, ``file_index``);
    ``issues``: CellIssue list. Returns ``path``."""
    by_cell = defaultdict(list)
    by_row = defaultdict(list)
    for issue in issues:
        by_row[(issue.file_index, issue.row)].append(issue.message)
        if issue.col is not None:
            by_cell[(issue.file_index, issue.row, issue.col)].append(issue.message)
    wb = Workbook(write_only=True)
    for ps in sheets:
        title = (ps.sheet.label.rsplit(".", 1)[0] or "Sheet")[:28]
        for bad in '[]:*?/\\':
            title = title.replace(bad, "_")
        ws = wb.create_sheet(title=f"{ps.file_index + 1}-{title}")
        width = max((len(r) for r in ps.sheet.rows), default=0)
        for i, raw in enumerate(ps.sheet.rows):
            header = i <= ps.header_row
            cells = []
            for c in range(width):
                value = raw[c] if c < len(raw) else None
                cell = _cell(ws, value)
                if header:
                    cell.font = BOLD
                msgs = by_cell.get((ps.file_index, i, c))
                if msgs:
                    cell.fill = RED
                    cell.comment = Comment("\n".join(msgs), "导入")
                cells.append(cell)
            if i == ps.header_row:
                cells.append(_cell(ws, RESULT_HEADER, font=BOLD))
            elif not header:
                msgs = by_row.get((ps.file_index, i))
                if msgs:
                    cells.append(_cell(ws, "；".join(dict.fromkeys(msgs)), fill=ROW_RED))
            ws.append(cells)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    return path
