"""Printing (issue #6): waybill labels (面单) and packing lists (发货单) as one PDF.

``render_orders(order_ids)`` validates the whole batch first and prints nothing
unless every order can be printed; then it renders the Jinja templates in
``app/templates/print/`` (sandboxed, autoescaped) to HTML, xhtml2pdf turns that
into one PDF, the PDF is checked for the CJK font, and only then one PII access
log row and one ``print`` order event per order are committed.

Layout: one xhtml2pdf document with two named page templates (``@page label``
100 × 180 mm and ``@page packing_list`` A5), switched per order with
``<pdf:nexttemplate>``: label, packing list, next order's label, … Batches are
rendered 50 orders at a time and the chunks joined with pypdf.

Font: xhtml2pdf draws Chinese only with a TrueType font (wqy-microhei from
Debian's ``fonts-wqy-microhei``, installed by ``make setup``; Noto CJK's CFF
outlines do not work). It silently falls back to Helvetica when the font cannot
be loaded, so every rendered PDF is checked: each piece of text on each page
must be drawn in the embedded CJK font, or the print fails.

Resources: the only file a template may reach is that font. A link callback
maps the font's token to its path and refuses everything else, under an
xhtml2pdf resource policy confined to the font's directory with no network.

Barcodes: Code128 from ``reportlab.graphics.barcode.code128`` (xhtml2pdf's
``<pdf:barcode>``), drawn as vectors.
"""
from __future__ import annotations

import datetime as dt
import io
import os
import re
import traceback
from collections import Counter, defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence
from zoneinfo import ZoneInfo

from flask import current_app, has_app_context, has_request_context, request
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from app.extensions import db
from app.models import PLATFORMS, Order, OrderEvent, PiiAccessLog
from app.models.types import utcnow

from . import scope
from .errors import DomainError, NotFound, ValidationError
from .order_status import HOLD_ZH, STATUS_ZH

DEFAULT_CJK_FONT = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
FONT_URL = "oms-font:cjk"  # the only URL the templates may use; mapped to the font file

DOCUMENTS = {"label": "面单", "packing_list": "发货单"}
MAX_ORDERS = 500
CHUNK_ORDERS = 50
PRINTABLE_STATUSES = {"to_ship": "待发货", "shipped": "已发货"}

# Page sizes in points (1 mm = 72 / 25.4 pt): how the checks tell the two documents apart.
MM = 72 / 25.4
LABEL_SIZE_MM = (100, 180)
# Room for a barcode: the label's full-width cell (page 100 mm, margins 3 mm, cell
# padding 2 mm, borders) and the right half of the packing list's header (A5, margins 8 mm).
LABEL_BARCODE_SPACE_MM = 100 - 2 * 3 - 2 * 2 - 1
PACKING_BARCODE_SPACE_MM = (148 - 2 * 8) / 2 - 2
# Code128 as reportlab draws it: a quiet zone of max(6.35 mm, 10 bars) each side.
QUIET_MM = 6.35
# Preferred bar widths are whole dots of a 203 dpi thermal printer (0.125 mm a dot).
LABEL_BAR_MM, PACKING_BAR_MM, MIN_BAR_MM = 0.375, 0.25, 0.19
# What a barcode can hold: printable ASCII without spaces (Code128 set B/C).
BARCODE_TEXT = re.compile(r"[\x21-\x7e]{1,64}")

SH = ZoneInfo("Asia/Shanghai")
TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates" / "print"
PII_FIELDS = {"label": ("receiver_name", "receiver_phone", "receiver_address"),
              "packing_list": ("receiver_name",)}


class PrintSetupError(DomainError):
    """The machine cannot print correctly (font missing, font not embedded)."""

    status_code = 503


# --- public API --------------------------------------------------------------
def render_orders(order_ids: Iterable[int], *, documents: Sequence[str] = ("label", "packing_list"),
                  user_id: Optional[int] = None, purpose: str = "print", source: str = "user",
                  templates: Optional[dict[str, str]] = None,
                  progress: Optional[Callable[..., None]] = None,
                  deliver: Optional[Callable[[bytes], None]] = None,
                  outcome: Optional[dict] = None) -> bytes:
    """One PDF with the chosen documents for every order, in the order given.

    All-or-nothing: a problem with any order raises (``NotFound`` for an order
    outside the current row scope, ``ValidationError`` with a zh message naming
    the orders otherwise) before anything is rendered or logged. ``templates``
    replaces the source of ``label`` / ``packing_list`` (the template editor's
    preview). ``deliver(pdf)`` runs after every check and before the log rows
    are committed: if it raises, nothing is logged (the job writes its file there).
    ``outcome``, when given, receives the print batch id, the number of orders, of
    reprinted orders and of pages.
    """
    user_id = _resolve_user(user_id)
    documents = _check_documents(documents)
    orders = check_orders(order_ids, documents)
    ids = [o.id for o in orders]
    counts = _print_counts(ids)
    sources = template_sources(templates)
    make_environment(sources)  # a bad override is refused before anything is loaded further
    font = font_path()
    printed_at = dt.datetime.now(SH).strftime("%Y-%m-%d %H:%M")
    report = progress or (lambda *a, **k: None)
    # Plain values (PII decrypted here, in memory): they go only into the PDF.
    contexts = [drawable(order_context(o, counts.get(o.id, 0) + 1, printed_at), font) for o in orders]
    numbers = [o.platform_order_id for o in orders]
    pdf = render_contexts(contexts, numbers, documents, sources, font, printed_at, report)
    try:
        if deliver is not None:
            deliver(pdf)
        batch = _record(orders, counts, documents, user_id=user_id, purpose=purpose, source=source)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    if outcome is not None:
        outcome.update(batch=batch, orders=len(ids), reprints=sum(1 for i in ids if counts.get(i)),
                       pages=page_count(pdf))
    return pdf


def render_contexts(contexts: list[dict], numbers: list[str], documents: Sequence[str],
                    sources: dict[str, str], font: str, printed_at: str,
                    report: Callable[..., None] = lambda *a, **k: None,
                    processes: Optional[int] = None) -> bytes:
    """Render chunks of ``CHUNK_ORDERS`` orders (in worker processes when there is more
    than one chunk and more than one process) and join them with pypdf, in order.

    Each chunk is rendered, font-checked and layout-checked by :func:`_render_chunk`,
    a pure function of plain values, so it runs the same in a child process. The
    children are forked, get the order values through a pipe (never Redis or disk)
    and exit when the batch is done.
    """
    total = len(contexts)
    tasks = [(contexts[i:i + CHUNK_ORDERS], numbers[i:i + CHUNK_ORDERS], tuple(documents), sources, font,
              printed_at) for i in range(0, total, CHUNK_ORDERS)]
    workers = min(len(tasks), print_processes() if processes is None else processes)
    chunks: list[bytes] = []
    if workers > 1:
        import gc
        import multiprocessing

        # A forked child first freezes what it inherited: its collector then never finalizes
        # the parent's objects (xhtml2pdf's NamedTemporaryFiles would be unlinked by the child
        # and fail to unlink in the parent) nor touches their pages; its own garbage is still
        # collected.
        with multiprocessing.get_context("fork").Pool(workers, initializer=gc.freeze) as pool:
            for pdf in pool.imap(_render_chunk, tasks):
                chunks.append(pdf)
                done = min(len(chunks) * CHUNK_ORDERS, total)
                report(done, total, f"已生成 {done}/{total} 单")
    else:
        for task in tasks:
            chunks.append(_render_chunk(task))
            done = min(len(chunks) * CHUNK_ORDERS, total)
            report(done, total, f"已生成 {done}/{total} 单")
    return chunks[0] if len(chunks) == 1 else merge_pdfs(chunks)


def _render_chunk(task) -> bytes:
    contexts, numbers, documents, sources, font, printed_at = task
    env = make_environment(sources)
    html = render_html(env, contexts, documents, printed_at)
    pdf = html_to_pdf(html, font)
    check_cjk_font(pdf, font_name(font))
    _check_layout(pdf, numbers, documents)
    return pdf


def print_processes() -> int:
    """Processes rendering one batch: OMS_PRINT_PROCESSES, default the CPU count (at most 4)."""
    value = (current_app.config.get("OMS_PRINT_PROCESSES") if has_app_context() else None) \
        or os.environ.get("OMS_PRINT_PROCESSES")
    try:
        return max(1, int(value)) if value else max(1, min(4, os.cpu_count() or 1))
    except ValueError:
        return 1


def check_orders(order_ids: Iterable[int], documents: Sequence[str] = ("label", "packing_list")) -> list[Order]:
    """Everything render_orders checks before rendering, without rendering (a job's caller)."""
    documents = _check_documents(documents)
    orders = _load_orders(_unique_ids(order_ids))
    validate_orders(orders, documents)
    return orders


def validate_orders(orders: Sequence[Order], documents: Sequence[str]) -> None:
    """Every reason the batch cannot be printed, in one zh message; nothing is written."""
    problems: list[str] = []
    labels = "label" in documents
    from app.services.setup import CARRIERS  # the carriers whose labels we know

    known_codes = {c[0] for c in CARRIERS}
    for o in orders:
        reasons = []
        if o.status not in PRINTABLE_STATUSES:
            reasons.append(f"状态为「{STATUS_ZH.get(o.status, o.status)}」（只能打印待发货或已发货的订单）")
        holds = [h.reason for h in o.holds if h.released_at is None]
        if o.is_held or holds:
            reasons.append(f"处于挂起状态（{'、'.join(HOLD_ZH.get(r, r) for r in holds) or '异常'}）")
        if not BARCODE_TEXT.fullmatch(o.platform_order_id or ""):
            reasons.append("订单号含有条码无法表示的字符")
        elif "packing_list" in documents and bar_width_mm(
                o.platform_order_id, PACKING_BARCODE_SPACE_MM, PACKING_BAR_MM) is None:
            reasons.append("订单号太长，发货单上放不下条码")
        if labels:
            carrier = o.carrier
            if carrier is None:
                reasons.append("未指定快递公司")
            elif (carrier.code or "").strip() not in known_codes:
                reasons.append(f"快递公司「{carrier.name}」的编码「{carrier.code or ''}」未知，没有它的面单")
            elif not carrier.active:
                reasons.append(f"快递公司「{carrier.name}」已停用")
            tn = (o.tracking_number or "").strip()
            if not tn:
                reasons.append("没有快递单号")
            elif not BARCODE_TEXT.fullmatch(tn):
                reasons.append(f"快递单号「{tn}」含有条码无法表示的字符")
            elif bar_width_mm(tn, LABEL_BARCODE_SPACE_MM, LABEL_BAR_MM) is None:
                reasons.append(f"快递单号「{tn}」太长，面单上放不下条码")
        if reasons:
            problems.append(f"订单 {o.platform_order_id} " + "，".join(reasons))
    if labels:
        problems += _duplicate_tracking(orders)
    if problems:
        shown = problems[:20]
        more = f"；等共 {len(problems)} 个问题" if len(problems) > len(shown) else ""
        raise ValidationError("不能打印：" + "；".join(shown) + more, "order_ids")


# --- loading and validation --------------------------------------------------
def _check_documents(documents: Sequence[str]) -> tuple[str, ...]:
    if isinstance(documents, str):
        documents = [d for d in documents.split(",") if d.strip()]
    docs = tuple(dict.fromkeys(d.strip() for d in documents))
    unknown = [d for d in docs if d not in DOCUMENTS]
    if not docs or unknown:
        raise ValidationError("要打印的单据只能是：面单（label）、发货单（packing_list）", "documents")
    return tuple(d for d in DOCUMENTS if d in docs)  # label before packing list


def _resolve_user(user_id: Optional[int]) -> int:
    if user_id is None and has_request_context():
        from flask_login import current_user

        if getattr(current_user, "is_authenticated", False):
            user_id = current_user.id
    if user_id is None:
        raise ValidationError("打印必须指定操作人（打印会记录敏感信息查看记录）", "user_id")
    return int(user_id)


def _unique_ids(order_ids: Iterable[int]) -> list[int]:
    ids: list[int] = []
    try:
        for value in order_ids:
            ids.append(int(value))
    except (TypeError, ValueError):
        raise ValidationError("订单 ID 必须是整数", "order_ids") from None
    ids = list(dict.fromkeys(ids))
    if not ids:
        raise ValidationError("请选择要打印的订单", "order_ids")
    if len(ids) > MAX_ORDERS:
        raise ValidationError(f"一次最多打印 {MAX_ORDERS} 个订单，当前选择了 {len(ids)} 个", "order_ids")
    return ids


def _load_orders(ids: list[int]) -> list[Order]:
    # A scoped query: another shop's order is simply not found.
    rows = db.session.scalars(
        select(Order).where(Order.id.in_(ids)).options(
            selectinload(Order.lines), selectinload(Order.holds), selectinload(Order.carrier),
            selectinload(Order.warehouse), selectinload(Order.shop))
    ).all()
    by_id = {o.id: o for o in rows}
    missing = [str(i) for i in ids if i not in by_id]
    if missing:
        raise NotFound("订单不存在或无权访问：" + "、".join(missing[:20])
                       + (f" 等 {len(missing)} 个" if len(missing) > 20 else ""))
    return [by_id[i] for i in ids]


def _duplicate_tracking(orders: Sequence[Order]) -> list[str]:
    """A tracking number on two orders, in this batch or anywhere in the database."""
    problems = []
    by_tn: dict[str, list[Order]] = defaultdict(list)
    for o in orders:
        tn = (o.tracking_number or "").strip()
        if tn:
            by_tn[tn].append(o)
    for tn, group in by_tn.items():
        if len(group) > 1:
            names = "、".join(f"订单 {o.platform_order_id}" for o in group)
            problems.append(f"快递单号 {tn} 同时用于 {names}")
    if not by_tn:
        return problems
    ids = [o.id for o in orders]
    owner = {tn: group[0] for tn, group in by_tn.items()}
    # Unscoped: a clash with a shop this user cannot see is still a clash (not named).
    with scope.as_scope(None):
        others = db.session.execute(
            select(Order.tracking_number, Order.platform_order_id, Order.shop_id)
            .where(Order.tracking_number.in_(list(by_tn)), Order.id.not_in(ids))
        ).all()
    for tn, pid, shop_id in others:
        other = f"订单 {pid}" if scope.can_see_shop(shop_id) else "其他店铺的一个订单"
        problems.append(f"快递单号 {tn} 同时用于 订单 {owner[tn].platform_order_id} 和 {other}")
    return problems


def _print_counts(ids: list[int]) -> dict[int, int]:
    rows = db.session.execute(
        select(OrderEvent.order_id, func.count()).where(
            OrderEvent.order_id.in_(ids), OrderEvent.action == "print").group_by(OrderEvent.order_id)
    ).all()
    return {oid: n for oid, n in rows}


# --- template context ----------------------------------------------------------
def bar_width_mm(value: str, space_mm: float, preferred_mm: float) -> Optional[float]:
    """The bar width that fits ``value`` as Code128 (with its quiet zones) into
    ``space_mm``, or None when even the thinnest bars would not fit."""
    from reportlab.graphics.barcode.code128 import Code128

    modules = Code128(value, barWidth=1, quiet=0).width
    width = min(preferred_mm, (space_mm - 2 * QUIET_MM) / modules)
    return round(width, 3) if width >= MIN_BAR_MM else None


def _local(when: Optional[dt.datetime]) -> str:
    if when is None:
        return ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(SH).strftime("%Y-%m-%d %H:%M")


def order_context(o: Order, print_count: int, printed_at: str = "") -> dict:
    """Plain values for the templates: the sandbox never sees an ORM object."""
    items = [{"title": ln.title, "spec": ln.spec or "", "merchant_code": ln.merchant_code or "",
              "quantity": ln.quantity} for ln in o.lines]
    summary = "；".join(f"{i['title']}{(' ' + i['spec']) if i['spec'] else ''} ×{i['quantity']}"
                       for i in items)
    if len(summary) > 60:
        summary = summary[:59] + "…"
    wh = o.warehouse
    if wh is not None:
        sender = {"name": wh.name, "contact": wh.contact or "", "phone": wh.phone or "",
                  "address": "".join(p for p in (wh.province, wh.city, wh.address) if p)}
    else:
        sender = {"name": o.shop.name, "contact": "", "phone": "", "address": ""}
    receiver_region = "".join(p for p in (o.receiver_province, o.receiver_city, o.receiver_district) if p)
    tn = (o.tracking_number or "").strip()
    return {
        "id": o.id,
        "number": o.platform_order_id,
        "shop": o.shop.name,
        "platform": str(PLATFORMS.get(o.platform, o.platform)),
        "paid_at": _local(o.paid_at),
        "buyer_nick": o.buyer_nick or "",
        "buyer_message": o.buyer_message or "",
        "seller_memo": o.seller_memo or "",
        "receiver": {
            "name": o.receiver_name or "", "phone": o.receiver_phone or "",
            "region": receiver_region, "address": o.receiver_address or "",
            "full_address": receiver_region + (o.receiver_address or ""), "zip": o.receiver_zip or "",
        },
        "sender": sender,
        "warehouse": wh.name if wh is not None else "",
        "carrier": {"code": o.carrier.code, "name": o.carrier.name} if o.carrier else None,
        "tracking_number": tn,
        "tracking_bar_mm": bar_width_mm(tn, LABEL_BARCODE_SPACE_MM, LABEL_BAR_MM) if tn else None,
        "number_bar_mm": bar_width_mm(o.platform_order_id, PACKING_BARCODE_SPACE_MM, PACKING_BAR_MM),
        "lines": items,  # not "items": Jinja would find dict.items first
        "item_summary": summary,
        "item_count": sum(i["quantity"] for i in items),
        "print_count": print_count,
        "is_reprint": print_count > 1,
        "printed_at": printed_at,
    }


@lru_cache(maxsize=4)
def _font_info(path: str) -> tuple[str, frozenset[int]]:
    from reportlab.pdfbase.ttfonts import TTFontFile

    face = TTFontFile(path, subfontIndex=0)
    return face.name.decode("latin-1"), frozenset(face.charToGlyph)


def font_name(path: str) -> str:
    """The font's PostScript name, as it is embedded (wqy-microhei: WenQuanYiMicroHei)."""
    return _font_info(path)[0]


def font_chars(path: str) -> frozenset[int]:
    """The code points the font has glyphs for (the font is read once per process, ~0.2 s)."""
    return _font_info(path)[1]


def drawable(value, font: str):
    """``value`` with every character the font cannot draw (emoji, rare characters
    beyond the font) shown as □, and control characters as spaces.

    xhtml2pdf would draw such a character in ZapfDingbats as a box anyway; doing
    it here keeps every glyph in the CJK font, so the font check stays strict.
    """
    if isinstance(value, dict):
        return {k: drawable(v, font) for k, v in value.items()}
    if isinstance(value, list):
        return [drawable(v, font) for v in value]
    if not isinstance(value, str):
        return value
    chars = font_chars(font)
    out = []
    for ch in value:
        if ch in "\n\t":
            out.append(ch)
        elif ord(ch) < 32 or 0x7f <= ord(ch) < 0xa0:
            out.append(" ")
        else:
            out.append(ch if ord(ch) in chars or ch.isspace() else "□")
    return "".join(out)


# --- templates -----------------------------------------------------------------
def default_source(document: str) -> str:
    """The shipped template of ``document`` (app/templates/print/<document>.html)."""
    if document not in DOCUMENTS:
        raise ValidationError(f"未知的模板：{document}", "document")
    return (TEMPLATE_DIR / f"{document}.html").read_text(encoding="utf-8")


def stored_templates() -> dict[str, str]:
    """The templates admins saved in the browser (PrintTemplate rows), by document."""
    from app.models import PrintTemplate

    if not has_app_context():
        return {}
    return {d: src for d, src in db.session.execute(select(PrintTemplate.document, PrintTemplate.source))}


def template_sources(overrides: Optional[dict[str, str]] = None) -> dict[str, str]:
    """What a print uses: the saved templates, replaced by ``overrides`` (a preview)."""
    sources = stored_templates()
    sources.update(overrides or {})
    return sources


def make_environment(templates: Optional[dict[str, str]] = None):
    """A sandboxed, autoescaping Jinja environment over app/templates/print/.

    ``templates`` replaces the source of ``label`` and/or ``packing_list``;
    ``document.html`` (fonts and page sizes) is not replaceable.
    """
    from jinja2 import ChoiceLoader, FileSystemLoader, FunctionLoader, StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    overrides = {}
    for key, source in (templates or {}).items():
        if key not in DOCUMENTS:
            raise ValidationError(f"未知的模板：{key}", "templates")
        overrides[f"{key}.html"] = source
    return ImmutableSandboxedEnvironment(
        # A replaced template keeps its name as its file name, so errors name the line in it.
        loader=ChoiceLoader([
            FunctionLoader(lambda name: (overrides[name], name, lambda: True) if name in overrides else None),
            FileSystemLoader(str(TEMPLATE_DIR)),
        ]),
        autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )


def render_html(env, orders: list[dict], documents: Sequence[str], printed_at: str) -> str:
    """document.html (fonts, page sizes) around each template's ``style()`` and ``page(o)`` macros."""
    from jinja2 import TemplateSyntaxError

    try:
        macros = {}
        for doc in documents:
            module = env.get_template(f"{doc}.html").module
            if not callable(getattr(module, "page", None)):
                raise ValidationError(f"模板错误：{doc}.html 没有定义 page(o) 宏", "templates")
            style = getattr(module, "style", None)
            macros[doc] = {"page": module.page, "style": style() if callable(style) else ""}
        return env.get_template("document.html").render(
            orders=orders, documents=list(documents), macros=macros, printed_at=printed_at,
            font_url=FONT_URL)
    except ValidationError:
        raise
    except TemplateSyntaxError as exc:
        where = f"{exc.name or exc.filename or '模板'} 第 {exc.lineno} 行"
        raise ValidationError(f"模板错误：{where}：{jinja_zh(exc.message or '')}", "templates") from None
    except Exception as exc:  # undefined names, sandbox refusals, bad filters, errors in expressions
        raise ValidationError(f"模板错误：{_where(exc)}{type(exc).__name__}: {jinja_zh(str(exc))}",
                              "templates") from None


_JINJA_ZH = [
    (re.compile(r"^unexpected end of template.*", re.S), "模板意外结束：有没有闭合的 {% macro/for/if %}（缺少 endmacro/endfor/endif）"),
    (re.compile(r"^unexpected '(.+?)'$"), r"意外的「\1」（括号或标记不配对）"),
    (re.compile(r"^expected token '(.+?)', got '(.+?)'$"), r"此处应为「\1」，实际是「\2」"),
    (re.compile(r"^Encountered unknown tag '(.+?)'.*", re.S), r"未知的标签「\1」（或缺少与之配对的开始标签）"),
    (re.compile(r"^'(.+?)' is undefined$"), r"未定义的变量「\1」"),
    (re.compile(r"^'(.+?)' has no attribute '(.+?)'$"), r"「\1」没有属性「\2」"),
    (re.compile(r"^(?:access to attribute|attribute) '(.+?)' of '(.+?)' object is unsafe\.?$"),
     r"出于安全限制，不允许访问「\2」的属性「\1」"),
    (re.compile(r"^No filter named '(.+?)'\.?$"), r"没有名为「\1」的过滤器"),
    (re.compile(r"^No test named '(.+?)'\.?$"), r"没有名为「\1」的测试"),
    (re.compile(r"^tag name expected$"), "此处应为标签名"),
    (re.compile(r"^unexpected char '(.+?)' at \d+$"), r"意外的字符「\1」"),
]


def jinja_zh(message: str) -> str:
    """A Jinja error message in Chinese (the common ones; others keep their text)."""
    text = (message or "").strip()
    for pattern, zh in _JINJA_ZH:
        if pattern.match(text):
            return pattern.sub(zh, text)
    return text


def _where(exc: BaseException) -> str:
    """'label.html 第 12 行：' from a Jinja render traceback (Jinja rewrites frames to template lines)."""
    names = {f"{d}.html" for d in DOCUMENTS} | {"document.html"}
    found = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        base = os.path.basename(frame.filename or "")
        if base in names or frame.filename == "<template>":
            found = f"{base if base in names else '模板'} 第 {frame.lineno} 行："
    return found


# --- PDF -------------------------------------------------------------------------
def font_path() -> str:
    path = (current_app.config.get("OMS_CJK_FONT") if has_app_context() else None) \
        or os.environ.get("OMS_CJK_FONT") or DEFAULT_CJK_FONT
    if not os.path.isfile(path):
        raise PrintSetupError(f"缺少中文字体 {path}：请运行 make setup（安装 fonts-wqy-microhei）")
    return path


class _RefusedResource(Exception):
    """A template asked for a file or URL other than the font."""


def html_to_pdf(html: str, font: str) -> bytes:
    """xhtml2pdf with one allowed local file (the font) and no network."""
    from xhtml2pdf import pisa
    from xhtml2pdf.config.resources import RenderLimitError, ResourceAccessError, ResourceAccessPolicy

    font_real = os.path.realpath(font)

    def link_callback(uri, rel):
        if uri == FONT_URL:
            return font_real
        if isinstance(uri, str) and uri.startswith("data:"):
            return None  # inline images in a template are fine
        raise _RefusedResource(str(uri)[:120])

    policy = ResourceAccessPolicy.server(
        base_dir=os.path.dirname(font_real), allow_remote=False, max_resources=4,
        max_render_seconds=600)
    out = io.BytesIO()
    try:
        result = pisa.CreatePDF(html, dest=out, encoding="utf-8", link_callback=link_callback,
                                resource_policy=policy)
    except _RefusedResource as exc:
        raise ValidationError(f"模板错误：不允许引用外部文件或网址：{exc}", "templates") from None
    except (ResourceAccessError, RenderLimitError) as exc:
        raise ValidationError(f"模板错误：{exc}", "templates") from None
    if result.err:
        errors = "；".join(str(m[2]) for m in result.log if m[0] == "error")[:300]
        raise ValidationError(f"生成 PDF 失败：{errors or '未知错误'}", "templates")
    return out.getvalue()


def merge_pdfs(parts: Sequence[bytes]) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for part in parts:
        writer.append(PdfReader(io.BytesIO(part)))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def page_count(pdf: bytes) -> int:
    from pypdf import PdfReader

    return len(PdfReader(io.BytesIO(pdf)).pages)


def pdf_fonts(pdf: bytes) -> set[str]:
    """The BaseFont names of every font on every page (e.g. 'AAAAAA+WenQuanYiMicroHei-0')."""
    from pypdf import PdfReader

    names = set()
    for page in PdfReader(io.BytesIO(pdf)).pages:
        fonts = (page.get("/Resources") or {}).get("/Font") or {}
        for ref in fonts.values():
            names.add(str(ref.get_object().get("/BaseFont")))
    return names


# Text operators in a content stream: a font selection, or a string shown.
_TEXT_OPS = re.compile(
    rb"/([^\s/\[\]()<>{}%]+)\s+[-+\d.]+\s+Tf"  # /F2+0 9 Tf
    rb"|(\((?:\\.|[^\\()])*\))\s*(?:Tj|'|\")"  # (text) Tj
    rb"|(<[0-9A-Fa-f\s]*>)\s*(?:Tj|'|\")"  # <hex> Tj
    rb"|\[((?:\((?:\\.|[^\\()])*\)|<[0-9A-Fa-f\s]*>|[^\]()<>])*)\]\s*TJ",  # [(a) -20 (b)] TJ
    re.S)
_STRING = re.compile(rb"\((?:\\.|[^\\()])*\)|<[0-9A-Fa-f\s]*>")


def _shows_text(operand: bytes) -> bool:
    """Does a string operand of a simple (non-CJK) font draw anything but spaces?"""
    for token in _STRING.findall(operand):
        if token.startswith(b"<"):
            digits = re.sub(rb"\s", b"", token[1:-1]).decode()
            data = bytes.fromhex(digits + "0" * (len(digits) % 2))
        else:
            data = re.sub(rb"\\(.)", rb"\1", token[1:-1])
        if data.strip():
            return True
    return False


def check_cjk_font(pdf: bytes, expected: Optional[str] = None) -> None:
    """Fail unless every piece of text is drawn in the embedded CJK font.

    xhtml2pdf reports success while drawing in Helvetica when it cannot load a
    font (and each Chinese character as a ZapfDingbats box), so this reads the
    PDF back: the CJK font must be embedded, and every text-showing operator on
    every page must use it (a fast scan of the content streams; the tests check
    the same with pypdf's text extraction).
    """
    from pypdf import PdfReader

    expected = expected or font_name(font_path())
    reader = PdfReader(io.BytesIO(pdf))
    wrong: Counter = Counter()
    embedded = False
    for page in reader.pages:
        names = {}
        for key, ref in ((page.get("/Resources") or {}).get("/Font") or {}).items():
            font = ref.get_object()
            base = str(font.get("/BaseFont"))
            names[key.lstrip("/").encode()] = base
            if expected in base:
                desc = font.get("/FontDescriptor")
                if desc is not None and "/FontFile2" in desc.get_object():
                    embedded = True
        contents = page.get_contents()
        current = None
        for m in _TEXT_OPS.finditer(contents.get_data() if contents is not None else b""):
            if m.group(1) is not None:
                current = names.get(m.group(1), m.group(1).decode("latin-1"))
                continue
            if current is not None and expected in current:
                continue
            if _shows_text(m.group(0)):
                wrong[str(current)] += 1
    if not embedded or wrong:
        detail = "、".join(sorted(wrong)) or "无"
        raise PrintSetupError(f"PDF 没有使用中文字体 {expected}（实际字体：{detail}）："
                              f"请运行 make setup 安装 fonts-wqy-microhei")


def _is_label(page) -> bool:
    w, h = float(page.mediabox.width), float(page.mediabox.height)
    return abs(w - LABEL_SIZE_MM[0] * MM) < 1 and abs(h - LABEL_SIZE_MM[1] * MM) < 1


def _check_layout(pdf: bytes, numbers: Sequence[str], documents: Sequence[str]) -> None:
    """A label is one page: one that runs over would print a second, broken label."""
    if "label" not in documents:
        return
    from pypdf import PdfReader

    kinds = ["label" if _is_label(p) else "other" for p in PdfReader(io.BytesIO(pdf)).pages]
    if kinds.count("label") == len(numbers):
        return
    overflow = []
    if "packing_list" in documents:
        runs = [kind for i, kind in enumerate(kinds) if i == 0 or kinds[i - 1] != kind]
        lengths, i = [], 0
        for kind in runs:
            n = 0
            while i < len(kinds) and kinds[i] == kind:
                n, i = n + 1, i + 1
            if kind == "label":
                lengths.append(n)
        overflow = [f"订单 {number}" for number, n in zip(numbers, lengths) if n > 1]
    who = "、".join(overflow) if overflow else "部分订单"
    raise ValidationError(f"不能打印：{who} 的面单内容超出一页（地址或商品信息过长），请检查模板",
                          "templates")


# --- after a successful render ----------------------------------------------------
def _record(orders: Sequence[Order], counts: dict[int, int], documents: Sequence[str], *,
            user_id: int, purpose: str, source: str) -> str:
    """One PII access row, one 打印 order event and one PrintRecord per order; the batch id."""
    from uuid import uuid4

    from app.models import PrintRecord

    batch = uuid4().hex
    fields = sorted({f for d in documents for f in PII_FIELDS[d]})
    remote = request.remote_addr if has_request_context() else None
    what = "、".join(DOCUMENTS[d] for d in documents)
    now = utcnow()
    for o in orders:
        n = counts.get(o.id, 0) + 1
        db.session.add(PiiAccessLog(user_id=user_id, entity="order", entity_id=o.id,
                                    fields=",".join(fields), purpose=purpose, remote_addr=remote,
                                    created_at=now))
        db.session.add(OrderEvent(order_id=o.id, action="print", source=source, user_id=user_id,
                                  new_value=what, note=f"第 {n} 次打印" + ("（补打）" if n > 1 else ""),
                                  created_at=now))
        db.session.add(PrintRecord(batch=batch, order_id=o.id, user_id=user_id, created_at=now,
                                   documents=",".join(documents), print_no=n, is_reprint=n > 1,
                                   batch_size=len(orders), source=source))
    return batch


# --- the template editor -------------------------------------------------------------
SAMPLE_ORDER = {
    "id": 0, "number": "4100000000000000001", "shop": "示例店铺", "platform": "淘宝", "paid_at": "2026-11-30 10:00",
    "buyer_nick": "示例买家", "buyer_message": "请尽快发货", "seller_memo": "送小样",
    "receiver": {"name": "张三", "phone": "13800001234", "region": "浙江省杭州市西湖区", "address": "文三路 100 号 3 幢 501",
                 "full_address": "浙江省杭州市西湖区文三路 100 号 3 幢 501", "zip": "310000"},
    "sender": {"name": "杭州仓", "contact": "王仓管", "phone": "0571-88886666", "address": "浙江省杭州市余杭区良睦路 1 号"},
    "warehouse": "杭州仓", "carrier": {"code": "ZTO", "name": "中通快递"}, "tracking_number": "78123456789012",
    "lines": [{"title": "纯棉T恤", "spec": "黑色 L", "merchant_code": "TS-BLK-L", "quantity": 2},
              {"title": "纯棉T恤", "spec": "白色 M", "merchant_code": "TS-WHT-M", "quantity": 1}],
    "item_summary": "纯棉T恤 黑色 L ×2；纯棉T恤 白色 M ×1", "item_count": 3, "print_count": 1, "is_reprint": False,
}


def sample_context(printed_at: str) -> dict:
    ctx = dict(SAMPLE_ORDER, printed_at=printed_at)
    ctx["tracking_bar_mm"] = bar_width_mm(ctx["tracking_number"], LABEL_BARCODE_SPACE_MM, LABEL_BAR_MM)
    ctx["number_bar_mm"] = bar_width_mm(ctx["number"], PACKING_BARCODE_SPACE_MM, PACKING_BAR_MM)
    return ctx


def preview(document: str, source: str) -> bytes:
    """The sample order printed with ``source`` as ``document``'s template, through the
    same sandboxed environment, font check and layout check as a real print. A Jinja
    error raises ValidationError naming the line; nothing is stored or logged."""
    if document not in DOCUMENTS:
        raise ValidationError(f"未知的模板：{document}", "document")
    if not (source or "").strip():
        raise ValidationError("模板内容不能为空", "source")
    if len(source) > 200_000:
        raise ValidationError("模板过长（最多 200000 个字符）", "source")
    font = font_path()
    printed_at = dt.datetime.now(SH).strftime("%Y-%m-%d %H:%M")
    sources = template_sources({document: source})
    return render_contexts([drawable(sample_context(printed_at), font)], [SAMPLE_ORDER["number"]], (document,),
                           sources, font, printed_at, processes=1)


def current_source(document: str) -> tuple[str, bool]:
    """(source, saved in the database?) of ``document``."""
    stored = stored_templates()
    if document in stored:
        return stored[document], True
    return default_source(document), False


def save_template(document: str, source: str, *, user_id: Optional[int]) -> None:
    """Store ``source`` for ``document`` only if it previews cleanly (else the zh error
    is raised and the stored template is unchanged)."""
    from app.models import PrintTemplate

    preview(document, source)
    try:
        row = db.session.scalar(select(PrintTemplate).where(PrintTemplate.document == document))
        if row is None:
            row = PrintTemplate(document=document)
            db.session.add(row)
        row.source = source
        row.updated_at = utcnow()
        row.updated_by_id = user_id
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise


def reset_template(document: str) -> bool:
    """Back to the shipped template: the stored one is deleted. True if one existed."""
    from app.models import PrintTemplate

    if document not in DOCUMENTS:
        raise ValidationError(f"未知的模板：{document}", "document")
    row = db.session.scalar(select(PrintTemplate).where(PrintTemplate.document == document))
    if row is None:
        return False
    db.session.delete(row)
    db.session.commit()
    return True


# --- print files (the grid's 打印 action) ---------------------------------------------
KEEP_HOURS = 24  # a print file carries buyers' PII: kept one day


def prints_dir() -> Path:
    path = Path(current_app.config["OMS_INSTANCE_DIR"]) / "prints"
    path.mkdir(parents=True, exist_ok=True)
    return path


def download_url(file_id: str) -> str:
    return f"/printing/download/{file_id}"


def print_to_file(order_ids: Iterable[int], *, documents: Sequence[str], user_id: int, source: str = "user",
                  progress: Optional[Callable[..., None]] = None) -> dict:
    """Print into ``instance/prints/<id>.pdf`` (0600, owner in a sidecar) and return
    ``{download_url, filename, orders, pages, reprints, batch}``. The file appears only
    complete and only if the print log is committed."""
    import json
    import secrets

    cleanup_prints()
    folder = prints_dir()
    file_id = secrets.token_hex(16)
    path, partial = folder / f"{file_id}.pdf", folder / f"{file_id}.pdf.part"
    outcome: dict = {}
    stamp = dt.datetime.now(SH).strftime("%Y%m%d-%H%M%S")

    def deliver(pdf: bytes) -> None:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pdf)

    try:
        render_orders(order_ids, documents=documents, user_id=user_id, source=source, progress=progress,
                      deliver=deliver, outcome=outcome)
        filename = f"打印-{stamp}-{outcome['orders']}单.pdf"
        fd = os.open(folder / f"{file_id}.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"user_id": user_id, "filename": filename, "batch": outcome["batch"]}, fh, ensure_ascii=False)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return {"download_url": download_url(file_id), "filename": filename, "orders": outcome["orders"],
            "pages": outcome["pages"], "reprints": outcome["reprints"], "batch": outcome["batch"]}


def print_file(file_id: str, *, user_id: Optional[int], is_admin: bool) -> tuple[Path, str]:
    """(path, download name) of a print file, for the user who printed it or an admin;
    anything else is NotFound (another user cannot learn that the file exists)."""
    from .owned_files import owned_meta

    missing = NotFound("打印文件不存在或已过期（保留 24 小时）")
    folder = prints_dir()
    meta = owned_meta(folder, file_id, user_id=user_id, is_admin=is_admin, missing=missing.message)
    path = folder / f"{file_id}.pdf"
    if not path.is_file():
        raise missing
    return path, meta.get("filename") or path.name


def cleanup_prints(max_age_hours: float = KEEP_HOURS, now: Optional[float] = None) -> int:
    import time

    limit = (now if now is not None else time.time()) - max_age_hours * 3600
    removed = 0
    for entry in prints_dir().iterdir():
        try:
            if entry.is_file() and entry.stat().st_mtime < limit:
                entry.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed
