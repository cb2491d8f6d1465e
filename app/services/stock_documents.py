"""库存单据 (issue #5 item 7): 入库 (inbound), 调整 (adjustment) and 盘点 (stocktake), entered
in a form, pasted, or uploaded as Excel/CSV, always through the stock ledger
(services/stock.py) with the user and the source document.

Rules shared by every document:

* the warehouse is named by id, code or name; each line names its SKU by 商家编码;
* every line is checked before anything is written, and *all* problems are reported
  at once, each naming its row and field (:class:`DocumentInvalid`); a line the
  ledger refuses while applying (e.g. a loss larger than the unreserved stock)
  rolls the whole document back: nothing is partially applied;
* quantities are integers: 入库 > 0, 调整 ≠ 0 with a reason (原因), 实盘 ≥ 0; a
  fractional, negative (inbound/stocktake) or non-numeric quantity is refused;
* 盘点 refuses a SKU listed twice; bundles (组合装) can be received (their
  components are booked) but not adjusted or counted;
* a document without a source document number gets one (RK-/TZ-/PD- + time);
* after an inbound, or an adjustment that adds stock, the orders held 缺货 are
  reserved first paid first served (``stock.reallocate_held``) in every shop — the
  stock is shared — and their holds are released (a separate transaction after the
  document commits: a problem there never undoes the document).

The 盘点 page previews first (:func:`stocktake_preview`: SKU, 账面, 实盘, 差异) and
applies with the book quantities it showed (:func:`stocktake_apply`): if the book
changed in between, the count is refused and must be previewed again.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Optional, Sequence

from sqlalchemy import or_, select

from app.extensions import db
from app.models import Sku, Stock, Warehouse
from app.models.types import utcnow

from . import stock
from .errors import DomainError, IllegalTransition, ValidationError
from .scope import as_scope

log = logging.getLogger(__name__)

KINDS = {"inbound": ("入库", "RK"), "adjust": ("调整", "TZ"), "stocktake": ("盘点", "PD"),
         "return": ("退货入库", "TH")}  # return: services/stock_returns.py
MAX_LINES = 5000


class DocumentInvalid(ValidationError):
    """Bad input in a document: every problem, each naming its row and field."""

    def __init__(self, issues: list[str], field: Optional[str] = None):
        shown = issues[:20]
        more = f"（另有 {len(issues) - 20} 处错误）" if len(issues) > 20 else ""
        super().__init__("；".join(shown) + more + "。未写入任何库存。", field)
        self.issues = issues


class StocktakeChanged(IllegalTransition):
    """The book quantity changed after the preview was shown."""


@dataclass
class Line:
    row: int  # as the user sees it: form line number or sheet row
    merchant_code: Optional[str]
    quantity: object  # raw, checked by the document
    reason: Optional[str] = None
    warehouse: Optional[str] = None  # only from a file with a 仓库 column
    source_ref: Optional[str] = None


@dataclass
class DocumentResult:
    kind: str
    warehouse_id: int
    source_ref: str
    lines: int
    units: int  # Σ quantity (inbound), Σ |change| (adjust, stocktake)
    reallocated: list[int] = field(default_factory=list)  # orders that got their stock
    diffs: list = field(default_factory=list)  # stocktake: StocktakeRow

    @property
    def summary(self) -> str:
        zh = KINDS[self.kind][0]
        text = f"{zh}单 {self.source_ref}：{self.lines} 行已写入库存流水"
        if self.kind == "stocktake":
            changed = sum(1 for d in self.diffs if d.delta)
            text = f"{zh}单 {self.source_ref}：盘点 {self.lines} 个 SKU，{changed} 个有差异已调整"
        if self.reallocated:
            text += f"；{len(self.reallocated)} 个缺货订单已分配到库存并解除挂起"
        return text


@dataclass(frozen=True)
class StocktakeRow:
    row: int
    sku_id: int
    merchant_code: str
    name: str
    book: int  # 账面 (on hand before the count)
    reserved: int
    counted: int  # 实盘

    @property
    def delta(self) -> int:  # 差异
        return self.counted - self.book


# --- parsing ---------------------------------------------------------------------------------
_SPLIT = re.compile(r"[\t,，]+|\s+")


def parse_text(text: str, *, with_reason: bool = False) -> list[Line]:
    """Lines typed or pasted from a spreadsheet: ``商家编码 数量`` (and ``原因`` for an
    adjustment), separated by tabs, commas or spaces. Blank lines are skipped; a
    header line (商家编码 …) is ignored."""
    out = []
    for n, raw in enumerate((text or "").splitlines(), start=1):
        s = raw.strip()
        if not s:
            continue
        parts = [p for p in _SPLIT.split(s, maxsplit=2 if with_reason else 1) if p != ""]
        if n == 1 and parts and parts[0] in ("商家编码", "SKU", "编码"):
            continue
        code = parts[0] if parts else None
        qty = parts[1].strip() if len(parts) > 1 else None
        reason = parts[2].strip() if with_reason and len(parts) > 2 else None
        out.append(Line(n, code, qty, reason))
    return out


def _int(value) -> Optional[int]:
    """An integer from a cell or a form value; None when it is not one."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    text = str(value).strip().replace("，", "").replace(",", "")
    if text.startswith("+"):
        text = text[1:]
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    if not number.is_finite() or number != number.to_integral_value():
        return None
    return int(number)


def _qty_issue(kind: str, raw) -> Optional[str]:
    n = _int(raw)
    if raw is None or str(raw).strip() == "":
        return {"inbound": "「数量」不能为空", "adjust": "「调整数量」不能为空", "stocktake": "「实盘数量」不能为空"}[kind]
    if kind == "inbound" and (n is None or n <= 0):
        return f"「数量」必须是正整数：{raw}"
    if kind == "adjust" and (n is None or n == 0):
        return f"「调整数量」必须是非零整数（增加为正，减少为负）：{raw}"
    if kind == "stocktake" and (n is None or n < 0):
        return f"「实盘数量」必须是非负整数：{raw}"
    return None


def resolve_warehouse(value) -> Warehouse:
    """A warehouse by id, code or name."""
    text = str(value or "").strip()
    if not text:
        raise ValidationError("「仓库」不能为空", "warehouse")
    conds = [Warehouse.code == text, Warehouse.name == text]
    if text.isdigit():
        conds.append(Warehouse.id == int(text))
    wh = db.session.scalars(select(Warehouse).where(or_(*conds)).order_by(Warehouse.id)).first()
    if wh is None:
        raise ValidationError(f"「仓库」不存在：{text}", "warehouse")
    return wh


def _where(line: Line) -> str:
    return f"第 {line.row} 行"


def _check(kind: str, warehouse: Warehouse, lines: Sequence[Line]) -> list[tuple[Line, Sku, int]]:
    """Every problem of every line, or the lines with their SKU and integer quantity."""
    if not lines:
        raise DocumentInvalid(["没有任何明细行，请填写商家编码和数量"], "lines")
    if len(lines) > MAX_LINES:
        raise DocumentInvalid([f"一张单据最多 {MAX_LINES} 行，本次 {len(lines)} 行"], "lines")
    codes = {str(ln.merchant_code).strip() for ln in lines if ln.merchant_code not in (None, "")}
    skus = {s.merchant_code: s for s in db.session.scalars(select(Sku).where(Sku.merchant_code.in_(codes)))} \
        if codes else {}
    issues, out, seen = [], [], {}
    for ln in lines:
        where = _where(ln)
        if ln.warehouse not in (None, "") and str(ln.warehouse).strip() not in (warehouse.name, warehouse.code):
            issues.append(f"{where}「仓库」：{ln.warehouse} 不是本单的仓库 {warehouse.name}")
            continue
        code = str(ln.merchant_code).strip() if ln.merchant_code not in (None, "") else ""
        if not code:
            issues.append(f"{where}「商家编码」不能为空")
            continue
        sku = skus.get(code)
        if sku is None:
            issues.append(f"{where}「商家编码」：SKU 不存在：{code}")
            continue
        if sku.is_bundle and kind != "inbound":
            issues.append(f"{where}「商家编码」：{code} 是组合装，没有自己的库存，请{KINDS[kind][0]}组成商品")
            continue
        if kind == "stocktake":
            if code in seen:
                issues.append(f"{where}「商家编码」：{code} 与第 {seen[code]} 行重复")
                continue
            seen[code] = ln.row
        problem = _qty_issue(kind, ln.quantity)
        if problem:
            issues.append(f"{where}{problem}")
            continue
        if kind == "adjust" and not (ln.reason or "").strip():
            issues.append(f"{where}「原因」不能为空：调整库存必须说明原因")
            continue
        out.append((ln, sku, _int(ln.quantity)))
    if issues:
        raise DocumentInvalid(issues, "lines")
    return out


def _source_ref(kind: str, source_ref: Optional[str]) -> str:
    ref = (source_ref or "").strip()
    if len(ref) > 100:
        raise ValidationError(f"「来源单号」最多 100 个字符：{ref[:20]}…", "source_ref")
    if not ref:
        ref = f"{KINDS[kind][1]}-{utcnow().strftime('%Y%m%d%H%M%S%f')[:17]}"
    return ref


def _note(note: Optional[str]) -> Optional[str]:
    text = (note or "").strip()
    if len(text) > 500:
        raise ValidationError("「备注」最多 500 个字符", "note")
    return text or None


def _apply(fn) -> None:
    """Run the writes of one document; any refusal rolls all of it back."""
    try:
        fn()
    except DomainError:
        db.session.rollback()
        raise
    except BaseException:
        db.session.rollback()
        raise
    db.session.commit()


# --- documents -------------------------------------------------------------------------------------------
def inbound(warehouse, lines: Sequence[Line], *, source_ref: Optional[str] = None, note: Optional[str] = None,
            user_id: Optional[int] = None) -> DocumentResult:
    """入库: add every line to on hand in one transaction, then reserve held orders."""
    wh = resolve_warehouse(warehouse)
    ref, note = _source_ref("inbound", source_ref), _note(note)
    checked = _check("inbound", wh, lines)

    @stock.marks_after_stock_locks()
    def write():
        for ln, sku, qty in checked:
            try:
                stock.inbound(wh.id, sku.id, qty, source_ref=(ln.source_ref or ref)[:100], user_id=user_id,
                              note=note or ln.reason, reallocate=False)
            except DomainError as exc:
                raise ValidationError(f"{_where(ln)}（{sku.merchant_code}）：{exc.message}。未写入任何库存。",
                                      "quantity") from None

    _apply(write)
    result = DocumentResult("inbound", wh.id, ref, len(checked), sum(q for _l, _s, q in checked))
    result.reallocated = reallocate(user_id)
    return result


def adjust(warehouse, lines: Sequence[Line], *, source_ref: Optional[str] = None,
           user_id: Optional[int] = None) -> DocumentResult:
    """调整: a signed change of on hand per line, each with its reason."""
    wh = resolve_warehouse(warehouse)
    ref = _source_ref("adjust", source_ref)
    checked = _check("adjust", wh, lines)
    for ln, _sku, _q in checked:
        if len(ln.reason.strip()) > 500:
            raise DocumentInvalid([f"{_where(ln)}「原因」最多 500 个字符"], "reason")

    @stock.marks_after_stock_locks()
    def write():
        for ln, sku, qty in checked:
            try:
                stock.adjust(wh.id, sku.id, qty, source_ref=ref, user_id=user_id, note=ln.reason.strip(),
                             reallocate=False)
            except DomainError as exc:
                raise ValidationError(f"{_where(ln)}（{sku.merchant_code}）：{exc.message}。未写入任何库存。",
                                      "quantity") from None

    _apply(write)
    result = DocumentResult("adjust", wh.id, ref, len(checked), sum(abs(q) for _l, _s, q in checked))
    if any(q > 0 for _l, _s, q in checked):
        result.reallocated = reallocate(user_id)
    return result


def stocktake_preview(warehouse, lines: Sequence[Line]) -> tuple[Warehouse, list[StocktakeRow]]:
    """The diff of a count against the book: SKU, 账面, 实盘, 差异. Writes nothing."""
    wh = resolve_warehouse(warehouse)
    checked = _check("stocktake", wh, lines)
    book = {s: (oh, r) for s, oh, r in db.session.execute(
        select(Stock.sku_id, Stock.on_hand, Stock.reserved)
        .where(Stock.warehouse_id == wh.id, Stock.sku_id.in_([sku.id for _l, sku, _q in checked])))}
    rows = [StocktakeRow(ln.row, sku.id, sku.merchant_code, sku.name, *book.get(sku.id, (0, 0)), qty)
            for ln, sku, qty in checked]
    return wh, rows


def stocktake_apply(warehouse, lines: Sequence[Line], *, expected_book: Optional[dict[str, int]] = None,
                    source_ref: Optional[str] = None, note: Optional[str] = None,
                    user_id: Optional[int] = None) -> DocumentResult:
    """盘点: set on hand to the counted quantities (one ``stocktake`` movement per
    difference). ``expected_book`` (merchant code → 账面 shown in the preview): if a
    book quantity changed since, nothing is applied (:class:`StocktakeChanged`)."""
    wh, rows = stocktake_preview(warehouse, lines)
    ref, note = _source_ref("stocktake", source_ref), _note(note)
    counts = {r.sku_id: r.counted for r in rows}
    by_sku = {r.sku_id: r for r in rows}
    applied: list = []

    def write():
        # Lock the rows (PostgreSQL) and compare with what the user saw.
        for sku_id in sorted(counts):
            stock._ensure_row(wh.id, sku_id)
        now_book = {s: oh for s, oh in db.session.execute(
            select(Stock.sku_id, Stock.on_hand).where(Stock.warehouse_id == wh.id, Stock.sku_id.in_(list(counts)))
            .order_by(Stock.sku_id).with_for_update())}
        if expected_book is not None:
            changed = [f"{r.merchant_code} 账面 {expected_book.get(r.merchant_code)} → {now_book.get(r.sku_id, 0)}"
                       for r in rows if expected_book.get(r.merchant_code) != now_book.get(r.sku_id, 0)]
            if changed:
                raise StocktakeChanged("预览之后账面库存已变化，请重新预览再确认：" + "；".join(changed[:20]), "lines")
        try:
            lines_done = stock.stocktake(wh.id, counts, user_id=user_id, source_ref=ref, note=note)
        except DomainError as exc:
            raise ValidationError(f"{exc.message}。未写入任何库存。", "counted") from None
        applied.extend(StocktakeRow(by_sku[x.sku_id].row, x.sku_id, by_sku[x.sku_id].merchant_code,
                                    by_sku[x.sku_id].name, x.on_hand, x.reserved, x.counted) for x in lines_done)

    _apply(write)
    applied.sort(key=lambda r: r.row)
    result = DocumentResult("stocktake", wh.id, ref, len(applied), sum(abs(r.delta) for r in applied),
                            diffs=applied)
    if any(r.delta > 0 for r in applied):
        result.reallocated = reallocate(user_id)
    return result


def reallocate(user_id: Optional[int]) -> list[int]:
    """Held 缺货 orders of every shop get the new stock, first paid first served; commits.
    Runs after the document committed, so a failure here never undoes the document."""
    try:
        with as_scope(None):
            done = stock.reallocate_held(user_id=user_id)
            db.session.commit()
        return done
    except Exception:
        db.session.rollback()
        log.exception("到货后分配缺货订单失败")
        return []


# --- files: our templates (盘点 and 入库) --------------------------------------------------------------
def lines_from_file(path, label: str, kind: str) -> list[Line]:
    """Read an uploaded xlsx/xls/csv with the 盘点 or 入库 template; cell errors (a
    fractional or negative count, …) are reported with their row and column."""
    from .imports import load

    profile = {"stocktake": "oms_stocktake", "inbound": "oms_inbound"}[kind]
    sheets = load([(Path(path), label)], profile_names=[profile])
    ps = sheets[0]
    if ps.issues:
        raise DocumentInvalid([i.message for i in ps.issues], "file")
    qty_field = "counted" if kind == "stocktake" else "quantity"
    return [Line(row.index + 1, row.values.get("merchant_code"), row.values.get(qty_field),
                 row.values.get("note"), row.values.get("warehouse"), row.values.get("source_ref"))
            for row in ps.rows]


# --- the importer's 入库 template (imports/oms_inbound.toml) -----------------------------------------------
def lookup_sheet(ps) -> tuple[dict, dict]:
    """The warehouses (by name or code) and SKUs (by merchant code) a stock sheet's rows
    name, each looked up once: ({name or code: Warehouse}, {merchant code: Sku})."""
    names = {r.values.get("warehouse") for r in ps.rows} - {None}
    whs = {}
    if names:
        for w in db.session.scalars(select(Warehouse).where(or_(Warehouse.name.in_(names),
                                                                 Warehouse.code.in_(names)))):
            whs[w.name] = whs[w.code] = w
    codes = {r.values.get("merchant_code") for r in ps.rows} - {None}
    skus = {s.merchant_code: s for s in db.session.scalars(select(Sku).where(Sku.merchant_code.in_(codes)))} \
        if codes else {}
    return whs, skus


def resolve_row(ps, row, whs: dict, skus: dict):
    """(Warehouse, Sku) of one sheet row, or None after marking the row bad with a zh
    issue on the cell that names an unknown warehouse or merchant code."""
    v = row.values
    wh = whs.get(v["warehouse"])
    if wh is None:
        ps.issue(row.index, "warehouse", f"仓库不存在：{v['warehouse']}")
        row.bad = True
        return None
    sku = skus.get(v["merchant_code"])
    if sku is None:
        ps.issue(row.index, "merchant_code", f"商家编码不存在：{v['merchant_code']}")
        row.bad = True
        return None
    return wh, sku


def validate_inbound_import(ps) -> dict:
    """For services/imports: resolve each row's warehouse and SKU and check its quantity;
    problems become cell issues. Returns {row index: (warehouse id, sku id)}."""
    whs, skus = lookup_sheet(ps)
    out = {}
    for row in ps.rows:
        if row.bad:
            continue
        v = row.values
        for name, zh in (("warehouse", "仓库"), ("merchant_code", "商家编码"), ("quantity", "数量")):
            if v.get(name) is None:
                ps.issue(row.index, name, f"{zh}不能为空")
                row.bad = True
                break
        if row.bad:
            continue
        found = resolve_row(ps, row, whs, skus)
        if found is None:
            continue
        wh, sku = found
        out[row.index] = (wh.id, sku.id)
    return out


def apply_inbound_import(resolved: dict, rows: list, *, user_id: Optional[int], source_ref: str):
    """Write the validated rows (the importer commits, or rolls back on failure)."""
    from .imports.order_import import Counts

    counts = Counts()
    for row in rows:
        wh, sku = resolved[row.index]
        v = row.values
        stock.inbound(wh, sku, v["quantity"], source_ref=(v.get("source_ref") or source_ref)[:100],
                      user_id=user_id, note=v.get("note"), reallocate=False)
        counts.created += 1
    return counts


def imported_inbound_committed(user_id: Optional[int]) -> list[int]:
    """After an inbound import committed: reserve the held orders."""
    return reallocate(user_id)

