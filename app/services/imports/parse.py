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


def parse(file_index: int, sheet: Sheet, detection: Detection,
          mapping: Optional[dict] = None) -> ParsedSheet:
    """Convert every data row. ``mapping`` (header → field) overrides the profile's."""
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
    parsed = ParsedSheet(file_index, sheet, profile, detection.header_row, headers, cols)
    plan = []
    for c, f in enumerate(cols):
        if not f:
            continue
        conv = CONVERTERS.get(profile.types.get(headers[c])) if profile.types.get(headers[c]) else None
        plan.append((c, f, conv or profile.fields[f].conv, headers[c]))
    names = [f for _, f, _, _ in plan]
    issues = parsed.issues
    for i in range(detection.header_row + 1, len(sheet.rows)):
        raw = sheet.rows[i]
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
        parsed.rows.append(Row(i, values, bad))
    return parsed
