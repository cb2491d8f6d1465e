"""导入模板 (import profiles): one TOML file per sheet layout in ``imports/``.

A profile names the layout (``name``, zh ``title``), its ``platform`` (taobao, pdd,
jd, or empty for our own templates), the ``entity`` it imports, the headers that
must all be present for it to be chosen (``required``), other headers of the
layout (``headers``, used for scoring only), the column → field mapping
(``[columns]``; a value "" ignores the column, a table ``{field=…, type=…}`` sets
the converter) and value maps (``[status_map]``, ``[refund_map]``, ``[hold_map]``).
Two-file layouts (Taobao's order sheet + item sheet) share a ``family`` and have
``part = "orders"`` / ``"items"``.

Detection: the header row is searched in the first rows of the sheet (title rows
and merged, two-row headers are common); the profile whose required headers are
all present with the most known headers wins.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Optional

from .errors import ImportFileError
from .fields import CONVERTERS, FIELDS_BY_ENTITY, IGNORE

PROFILE_DIR = Path(__file__).resolve().parents[3] / "imports"
HEADER_SEARCH_ROWS = 10


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    platform: str
    entity: str
    required: tuple[str, ...]
    columns: dict  # header → field name ("" = ignored)
    types: dict  # header → converter name (overrides the field's)
    headers: frozenset  # every header of the layout
    status_map: dict = field(default_factory=dict)
    refund_map: dict = field(default_factory=dict)
    hold_map: dict = field(default_factory=dict)
    family: str = ""
    part: str = ""
    standalone: bool = False
    template: bool = False
    example: dict = field(default_factory=dict)

    @property
    def fields(self) -> dict:
        return FIELDS_BY_ENTITY[self.entity]

    @property
    def template_headers(self) -> list[str]:
        return list(self.columns)


def norm(header) -> str:
    """A header as compared: no spaces or line breaks, full-width brackets as ASCII."""
    if header is None:
        return ""
    s = str(header)
    s = re.sub(r"\s+", "", s)
    return s.replace("（", "(").replace("）", ")").replace("\ufeff", "")


def _load(path: Path) -> Profile:
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    entity = data.get("entity", "")
    if entity not in FIELDS_BY_ENTITY:
        raise ValueError(f"{path.name}: unknown entity {entity!r}")
    fields = FIELDS_BY_ENTITY[entity]
    columns, types = {}, {}
    for header, spec in data.get("columns", {}).items():
        if isinstance(spec, dict):
            name, conv = spec.get("field", IGNORE), spec.get("type")
            if conv and conv not in CONVERTERS:
                raise ValueError(f"{path.name}: unknown type {conv!r} for {header}")
            if conv:
                types[norm(header)] = conv
        else:
            name = spec
        if name and name not in fields:
            raise ValueError(f"{path.name}: unknown field {name!r} for {header}")
        columns[header] = name
    required = tuple(data.get("required", []))
    return Profile(
        name=data["name"], title=data["title"], platform=data.get("platform", ""), entity=entity,
        required=required, columns=columns, types=types,
        headers=frozenset(norm(h) for h in list(columns) + list(data.get("headers", [])) + list(required)),
        status_map={norm(k): v for k, v in data.get("status_map", {}).items()},
        refund_map={norm(k): v for k, v in data.get("refund_map", {}).items()},
        hold_map={norm(k): v for k, v in data.get("hold_map", {}).items()},
        family=data.get("family", ""), part=data.get("part", ""),
        standalone=bool(data.get("standalone", False)), template=bool(data.get("template", False)),
        example=data.get("example", {}),
    )


@lru_cache(maxsize=4)
def _all(directory: str) -> tuple[Profile, ...]:
    return tuple(_load(p) for p in sorted(Path(directory).glob("*.toml")))


def all_profiles(directory: Optional[Path] = None) -> tuple[Profile, ...]:
    return _all(str(directory or PROFILE_DIR))


def get(name: str) -> Profile:
    for p in all_profiles():
        if p.name == name:
            return p
    names = "、".join(p.name for p in all_profiles())
    raise ImportFileError(f"没有名为「{name}」的导入模板（可用：{names}）")


@dataclass
class Detection:
    profile: Profile
    header_row: int  # 0-based index of the (last) header row
    headers: list[str]  # the effective header of each column (merged rows combined)
    score: int


def _effective_headers(rows: list[list], i: int) -> list[str]:
    """The header of each column at row ``i``: a cell left empty by a vertical merge
    (a header spanning two rows) takes the value of the row above."""
    row = rows[i]
    above = rows[i - 1] if i > 0 else []
    out = []
    for c, cell in enumerate(row):
        value = norm(cell)
        if not value and c < len(above):
            value = norm(above[c])
        out.append(value)
    return out


def _score(profile: Profile, present: set[str]) -> tuple[bool, int, float]:
    missing = [h for h in profile.required if norm(h) not in present]
    known = len(profile.headers & present)
    return (not missing, known, known / max(1, len(profile.headers)))


def detect(rows: list[list], *, profile_name: Optional[str] = None, file_label: str = "") -> Detection:
    """Find the header row and the best profile (or check ``profile_name``'s headers)."""
    candidates = [get(profile_name)] if profile_name else list(all_profiles())
    best: Optional[Detection] = None
    best_key = None
    closest = None  # (known, profile, present) for the error message
    for i in range(min(HEADER_SEARCH_ROWS, len(rows))):
        headers = _effective_headers(rows, i)
        present = {h for h in headers if h}
        if not present:
            continue
        for profile in candidates:
            ok, known, ratio = _score(profile, present)
            if ok:
                key = (known, ratio, -i)
                if best_key is None or key > best_key:
                    best_key = key
                    best = Detection(profile, i, headers, known)
            else:
                hit = sum(1 for h in profile.required if norm(h) in present)
                if closest is None or (hit, known) > closest[0]:
                    closest = ((hit, known), profile, present)
    if best is not None:
        return best
    where = f"「{file_label}」" if file_label else ""
    if closest is None:
        raise ImportFileError(f"{where}没有找到表头：前 {HEADER_SEARCH_ROWS} 行都是空的")
    _, profile, present = closest
    missing = [h for h in profile.required if norm(h) not in present]
    if profile_name:
        raise ImportFileError(f"{where}与导入模板「{profile.title}」不符：缺少表头 {'、'.join(missing)}")
    titles = "；".join(f"{p.title}：{'、'.join(p.required)}" for p in candidates)
    raise ImportFileError(
        f"{where}无法识别表格格式：表头与任何导入模板都不匹配。最接近的是「{profile.title}」，"
        f"缺少表头 {'、'.join(missing)}。各模板必需的表头为——{titles}")
