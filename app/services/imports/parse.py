"""Sheet rows → converted field values per row, with a zh issue per bad cell."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .convert import CellError
from .errors import CellIssue, ImportFileError
from .fields import CONVERTERS, IGNORE
from .profiles import Detection, Profile, norm
from .readers import Sheet


@dataclass
class Row:
    index: int  # 0-based sheet row (Excel row = index + 1)
    values: dict  # field → value (None when empty)
    bad: bool = False


@dataclass
class ParsedSheet:
    file_index: int
    sheet: Sheet
    profile: Profile
    header_row: int
    headers: list[str]  # effective header per column
    mapping: list[str]  # field per column ("" = not imported)
    rows: list[Row] = field(default_factory=list)
    issues: list[CellIssue] = field(default_factory=list)

    def col_of(self, field_name: str) -> Optional[int]:
        for c, f in enumerate(self.mapping):
            if f == field_name:
                return c
        if field_name.startswith("receiver_"):  # split out of the one-string address
            return self.col_of("receiver_full_address") if field_name != "receiver_full_address" else None
        return None

    def issue(self, row: int, field_name: Optional[str], message: str) -> CellIssue:
        col = self.col_of(field_name) if field_name else None
        header = self.headers[col] if col is not None and col < len(self.headers) else None
        where = f"第 {row + 1} 行「{header}」" if header else f"第 {row + 1} 行"
        issue = CellIssue(self.file_index, row, col, f"{where}：{message}")
        self.issues.append(issue)
        return issue


def default_mapping(profile: Profile, headers: list[str]) -> list[str]:
    by_header = {norm(h): f for h, f in profile.columns.items()}
    return [by_header.get(h, IGNORE) if h else IGNORE for h in headers]


class SheetParser:
    """Converts a sheet's data rows on demand: all at once (:func:`parse`), or a range of rows
    at a time (the order import streams: it writes the first orders while later rows are
    still being converted). ``parsed`` collects the rows' issues; its ``rows`` are only
    filled by :func:`parse`."""

    def __init__(self, file_index: int, sheet: Sheet, detection: Detection, mapping: Optional[dict] = None):
        profile = detection.profile
        headers = detection.headers
        cols = default_mapping(profile, headers)
        if mapping:
            fields = profile.fields
            for c, h in enumerate(headers):
                if h in mapping:
                    wanted = mapping[h] or IGNORE
                    if wanted and wanted not in fields:
                        raise ImportFileError(f"列「{h}」不能导入到未知字段「{wanted}」")
                    cols[c] = wanted
        self.parsed = ParsedSheet(file_index, sheet, profile, detection.header_row, headers, cols)
        plan = []
        for c, f in enumerate(cols):
            if not f:
                continue
            conv = CONVERTERS.get(profile.types.get(headers[c])) if profile.types.get(headers[c]) else None
            plan.append((c, f, conv or profile.fields[f].conv, headers[c]))
        self.plan = plan
        self.start = detection.header_row + 1  # the first data row (0-based sheet row)
        self.stop = len(sheet.rows)
        self.converted = 0  # data rows converted so far (blank rows not counted)

    def convert(self, start: int, stop: int) -> list[Row]:
        """Sheet rows ``start`` … ``stop - 1`` converted (blank rows left out); a zh issue per
        bad cell is added to ``parsed.issues``."""
        parsed = self.parsed
        file_index = parsed.file_index
        raw_rows = parsed.sheet.rows
        plan = self.plan
        names = [f for _, f, _, _ in plan]
        issues = parsed.issues
        out = []
        for i in range(start, stop):
            raw = raw_rows[i]
            n = len(raw)
            values = dict.fromkeys(names)
            empty = True
            bad = False
            for c, f, conv, header in plan:
                cell = raw[c] if c < n else None
                if cell is None or cell == "":
                    continue
                try:
                    value = conv(cell)
                except CellError as exc:
                    issues.append(CellIssue(file_index, i, c, f"第 {i + 1} 行「{header}」：{exc.message}"))
                    bad = True
                    empty = False
                    continue
                if value is None:
                    continue
                empty = False
                if values[f] is None:
                    values[f] = value
            if empty:
                continue  # a blank line or a line of empty cells: not data
            if "receiver_full_address" in values:
                parts = values.pop("receiver_full_address")
                if parts:
                    for k, v in parts.items():
                        if values.get(k) is None:
                            values[k] = v
            out.append(Row(i, values, bad))
        self.converted += len(out)
        return out

    def values_of(self, field_name: str) -> list:
        """The value :meth:`convert` gives ``field_name`` in each data row (None: empty, or the
        cell is bad), without recording issues: the keys the order import looks up before
        it converts the rows. Index ``k`` is sheet row ``start + k``."""
        cols = [(c, conv) for c, f, conv, _h in self.plan if f == field_name]
        raw_rows = self.parsed.sheet.rows
        out = [None] * (self.stop - self.start)
        if not cols:
            return out
        for k in range(self.stop - self.start):
            raw = raw_rows[self.start + k]
            n = len(raw)
            for c, conv in cols:
                cell = raw[c] if c < n else None
                if cell is None or cell == "":
                    continue
                try:
                    value = conv(cell)
                except CellError:
                    continue
                if value is not None:
                    out[k] = value
                    break
        return out

    def parse(self) -> ParsedSheet:
        """Every data row converted into ``parsed.rows``."""
        self.parsed.rows = self.convert(self.start, self.stop)
        return self.parsed


def parse(file_index: int, sheet: Sheet, detection: Detection,
          mapping: Optional[dict] = None) -> ParsedSheet:
    """Convert every data row. ``mapping`` (header → field) overrides the profile's."""
    return SheetParser(file_index, sheet, detection, mapping).parse()
