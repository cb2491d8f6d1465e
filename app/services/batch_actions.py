"""Batch actions on orders (订单工作台 → 批量操作): one registry, one runner.

``run(action, order_ids, params, user_id=...)`` validates the parameters first
(nothing is written when they are wrong), then applies the action to each order
in its own savepoint and commits every ``OMS_BATCH_CHUNK`` orders (default 200),
reporting progress after each chunk. A failed order never undoes another order,
and an order committed in an earlier chunk stays committed whatever happens
later. The result::

    {"action": "audit", "action_zh": "审单", "total": 3,
     "ok": [12, 13],                                   # changed now
     "skipped": [{"id": 14, "platform_order_id": "…", "message": "…已审核…"}],
     "failed": [{"id": 15, "platform_order_id": "…", "message": "订单 … 当前为「已发货」，不能审单…"}]}

``skipped`` holds the orders that were already in the target state (already
audited, already held, flag already 3…): nothing was done to them, nothing needs
doing. That makes a batch safe to run twice (a retried job): the second run
changes nothing and reports every order as skipped or failed with its reason.
``total`` = len(ok) + len(skipped) + len(failed).

Audit trail: every change writes its OrderEvent(s) through the state machine or
``orders.update_fields``, with the note ``批量操作`` (a hold's event note also
carries its reason), so an order's history shows that a batch did it and who.

Decisions a team would ask about:

* **Hold** (挂起) is a manual hold (人工挂起) whose note is the reason the user typed.
* **Release** (解除挂起) releases the holds a person may judge — 人工挂起, 缺货,
  地址不全, 黑名单, and 未匹配商品 once every line matches a SKU — but never
  退款中 or 平台锁定: those mirror a platform fact and sync releases them when the
  platform clears it. An order left with only such holds is reported as failed
  with the reason; an order released of some holds but still under a platform
  hold counts as done (it stays under 异常).
* **Warehouse** (指定仓库) only before audit (待付款, 待审核): an audited order has its
  stock reserved in its warehouse, so it must be un-audited first.
* **Carrier** (指定快递公司) only before shipping; inactive carriers are refused.
* **Ship** (发货) needs a carrier and a tracking number on the order that no other
  order holds; it deducts stock and marks the write-back, which is queued after
  each chunk's commit.
* **按规则选快递** re-chooses the carrier by the 快递规则 (services/carrier_rules.py),
  only before shipping and while the order has no tracking number.
* **取号 / 回收单号** take a tracking number from the carrier's 电子面单 account, or
  give it back before shipping (services/ewaybill.py).
* **打印** is one PDF for the whole selection (1–500 orders), all or nothing; its
  result carries ``download_url``/``filename`` (services/printing.py).
* **Selection**: explicit ids or a grid filter ("select all matching"), at most
  ``OMS_BATCH_MAX`` (5,000) orders either way, always within the user's shops.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Optional

from flask import current_app, has_app_context
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from app.extensions import db
from app.models import Carrier, Order, OrderEvent, OrderLine, Warehouse

from . import grid, order_status, sku_mapping
from . import orders as order_service, stock as stock_service
from .errors import DomainError, IllegalTransition, ValidationError
from .order_status import HOLD_ZH, STATUS_ZH
from .stock import OutOfStock
from .warehouse_choice import StockMoved

log = logging.getLogger(__name__)

BATCH_NOTE = "批量操作"
DEFAULT_MAX = 5000
DEFAULT_CHUNK = 200
HOLD_REASON_MAX = 200
# Holds that mirror a platform fact: only sync releases them.
PLATFORM_HOLDS = frozenset(order_status.PLATFORM_HOLDS)

Progress = Callable[[int, int, Optional[str]], None]


class AlreadyDone(Exception):
    """The order is already in the action's target state: nothing to do."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class BatchAction:
    code: str
    zh: str
    clean: Callable[[dict], dict]                  # params -> validated params (raises ValidationError)
    apply: Optional[Callable[[Order, dict, "Context"], None]]  # one order; raises AlreadyDone / DomainError
    # A whole-batch action (打印: one PDF, all or nothing) instead of one order at a time:
    # run_all(ids, params, user_id=, source=, progress=) -> the result dict.
    run_all: Optional[Callable[..., dict]] = None
    # Raises what ``apply`` would refuse before writing anything (AlreadyDone, DomainError):
    # with it, a chunk runs without a SAVEPOINT per order (see ``run``).
    check: Optional[Callable[[Order, dict, "Context"], None]] = None


@dataclass(frozen=True)
class Context:
    user_id: Optional[int]
    source: str
    prepared: dict = field(default_factory=dict)  # 审单: the chunk's reservations, decided together


def _pid(order: Order) -> str:
    return order.platform_order_id


def _status_zh(order: Order) -> str:
    return STATUS_ZH.get(order.status, order.status)


def _mark_batch(order: Order, note: str = BATCH_NOTE) -> None:
    """Note the batch on the events just written for ``order`` by update_fields."""
    for obj in db.session.new:
        if isinstance(obj, OrderEvent) and obj.order is order and not obj.note:
            obj.note = note


# --- parameters ------------------------------------------------------------------
def _no_params(params: dict) -> dict:
    return {}


def _clean_hold(params: dict) -> dict:
    reason = str(params.get("reason") or "").strip()
    if not reason:
        raise ValidationError("挂起原因不能为空", "reason")
    if len(reason) > HOLD_REASON_MAX:
        raise ValidationError(f"挂起原因过长：{len(reason)} 个字符，最多 {HOLD_REASON_MAX} 个", "reason")
    return {"reason": reason}


def _clean_flag(params: dict) -> dict:
    if params.get("flag") in (None, ""):
        raise ValidationError("旗帜不能为空（0–5）", "flag")
    return {"flag": order_service._clean("flag", params.get("flag"))}


def _clean_memo(params: dict) -> dict:
    memo = params.get("memo")
    memo = None if memo is None else str(memo).strip()
    return {"memo": order_service._clean("seller_memo", memo or None)}


def _clean_ref(params: dict, key: str, model, label: str) -> dict:
    value = params.get(key)
    if value in (None, ""):
        raise ValidationError(f"请选择{label}", key)
    try:
        obj = db.session.get(model, int(value))
    except (TypeError, ValueError):
        obj = None
    if obj is None:
        raise ValidationError(f"「{label}」不存在：{value}", key)
    if not obj.active:
        raise ValidationError(f"{label}「{obj.name}」已停用", key)
    return {key: obj.id}


def _clean_carrier(params: dict) -> dict:
    return _clean_ref(params, "carrier_id", Carrier, "快递公司")


def _clean_warehouse(params: dict) -> dict:
    return _clean_ref(params, "warehouse_id", Warehouse, "仓库")


# --- one order ---------------------------------------------------------------------
def _transition(action: str, done_status: str, done_message: str, *, check: bool = False):
    """The batch form of a transition: ``apply`` it, or (``check``) raise what it would refuse
    before writing anything (order_status.check)."""
    run = order_status.check if check else order_status.apply

    def one(order: Order, params: dict, ctx: Context) -> None:
        if order.status == done_status:
            raise AlreadyDone(done_message.format(pid=_pid(order), status=_status_zh(order)))
        kw = {} if check else {"user_id": ctx.user_id, "note": BATCH_NOTE}
        run(order, action, source=ctx.source, prepared=ctx.prepared.get(order.id), **kw)
    return one


def _hold(order: Order, params: dict, ctx: Context) -> None:
    if "manual" in order.active_hold_reasons:
        raise AlreadyDone(f"订单 {_pid(order)} 已人工挂起")
    reason = params["reason"]
    h = order_status.hold(order, "manual", note=f"{BATCH_NOTE}：{reason}", source=ctx.source,
                          user_id=ctx.user_id)
    if h is not None:
        h.note = reason  # the hold itself carries exactly what the user typed


def _rematch_lines(order: Order) -> list[str]:
    """Link lines whose merchant code now has a SKU (services/sku_mapping.py's rule); return
    the codes still unmatched."""
    missing = [ln for ln in order.lines if ln.sku_id is None and ln.sku is None]
    if not missing:
        return []
    # the SKU of each code, or the one this shop's listings map it to
    skus = sku_mapping.resolve(order.shop_id, (ln.merchant_code for ln in missing))
    still = []
    for ln in missing:
        sku = skus.get(ln.merchant_code)
        if sku is None:
            still.append(ln.merchant_code or "（空）")
        else:
            ln.sku, ln.cost_price = sku, sku_mapping.line_cost(sku)
    if len(still) < len(missing):
        from decimal import Decimal

        order.cost_amount = sum((ln.cost_price * ln.quantity for ln in order.lines), Decimal("0.00"))
    return sorted(set(still))


def _release(order: Order, params: dict, ctx: Context) -> None:
    active = order.active_hold_reasons
    if not active:
        raise AlreadyDone(f"订单 {_pid(order)} 没有挂起")
    releasable = [r for r in dict.fromkeys(active) if r not in PLATFORM_HOLDS]
    kept = [HOLD_ZH.get(r, r) for r in dict.fromkeys(active) if r in PLATFORM_HOLDS]
    problems = []
    if "unmatched_sku" in releasable:
        still = _rematch_lines(order)
        if still:
            releasable.remove("unmatched_sku")
            problems.append(f"仍有商家编码未匹配（{'、'.join(still)}），请先建立对应 SKU")
    if not releasable:
        if kept:
            problems.append(f"「{'、'.join(kept)}」需平台解除后由同步自动解除")
        raise IllegalTransition(f"订单 {_pid(order)} 不能解除挂起：" + "；".join(problems))
    for reason in releasable:
        order_status.release(order, reason, note=BATCH_NOTE, source=ctx.source, user_id=ctx.user_id)


def _set_field(name: str, param: str, label: str, allowed: Optional[frozenset] = None,
               refuse: Optional[Callable[[Order], Optional[str]]] = None):
    def apply(order: Order, params: dict, ctx: Context) -> None:
        if allowed is not None and order.status not in allowed:
            raise IllegalTransition(f"订单 {_pid(order)} 当前为「{_status_zh(order)}」，不能修改{label}")
        if refuse is not None:
            message = refuse(order)
            if message:
                raise IllegalTransition(message)
        value = params[param]
        if getattr(order, name) == value:
            raise AlreadyDone(f"订单 {_pid(order)} 的{label}无需修改")
        order_service.update_fields(order, {name: value}, source=ctx.source, user_id=ctx.user_id)
        _mark_batch(order)
    return apply


def _refuse_audited_warehouse(order: Order) -> Optional[str]:
    if order.status == "to_ship":
        where = f"「{order.warehouse.name}」" if order.warehouse is not None else ""
        return f"订单 {_pid(order)} 已审核，库存已在{where}占用，请先反审核再改仓库"
    return None


def _ship(order: Order, params: dict, ctx: Context) -> None:
    """发货: the tracking number (typed, imported or from 取号) may not be another order's."""
    if order.status == "shipped":
        raise AlreadyDone(f"订单 {_pid(order)} 已发货")
    if order.status == "to_ship" and (order.tracking_number or "").strip():
        from . import ewaybill

        ewaybill.check_unique(order)
    order_status.apply(order, "ship", source=ctx.source, user_id=ctx.user_id, note=BATCH_NOTE)


def _carrier_by_rule(order: Order, params: dict, ctx: Context) -> None:
    from . import carrier_rules

    if not carrier_rules.rechoose(order, source=ctx.source, user_id=ctx.user_id):
        rule = order.carrier_rule.name if order.carrier_rule is not None else ""
        raise AlreadyDone(f"订单 {_pid(order)} 的快递公司已是规则「{rule}」选的")
    _mark_batch(order, BATCH_NOTE)


def _issue_waybill(order: Order, params: dict, ctx: Context) -> None:
    from . import ewaybill

    if ewaybill.issue_for_order(order, user_id=ctx.user_id, source=ctx.source) is None:
        raise AlreadyDone(f"订单 {_pid(order)} 已有快递单号 {order.tracking_number}")


def _cancel_waybill(order: Order, params: dict, ctx: Context) -> None:
    from . import ewaybill

    if ewaybill.cancel_for_order(order, user_id=ctx.user_id, source=ctx.source) is None:
        raise AlreadyDone(f"订单 {_pid(order)} 没有快递单号")


def _print_documents(documents: tuple[str, ...]):
    def clean(params: dict) -> dict:
        return {"documents": list(documents)}
    return clean


def _print_all(ids: list[int], params: dict, *, user_id: Optional[int], source: str,
               progress: Optional[Progress]) -> dict:
    """打印: one PDF for the whole selection (services/printing.py), all or nothing; a
    refused batch raises the zh reasons and prints nothing. The result carries the
    file's download_url and filename."""
    from . import printing

    if len(ids) > printing.MAX_ORDERS:
        raise ValidationError(f"一次最多打印 {printing.MAX_ORDERS} 个订单，已选 {len(ids)} 个", "ids")
    out = printing.print_to_file(ids, documents=params["documents"], user_id=user_id, source=source,
                                 progress=progress)
    zh = "打印面单和发货单" if len(params["documents"]) > 1 else "打印" + printing.DOCUMENTS[params["documents"][0]]
    return {"action": "print", "action_zh": zh, "total": len(ids), "ok": list(ids), "skipped": [], "failed": [],
            **out}


ACTIONS: dict[str, BatchAction] = {a.code: a for a in [
    BatchAction("audit", "审单", _no_params,
                _transition("audit", "to_ship", "订单 {pid} 已审核（{status}）"),
                check=_transition("audit", "to_ship", "订单 {pid} 已审核（{status}）", check=True)),
    BatchAction("unaudit", "反审核", _no_params,
                _transition("unaudit", "to_audit", "订单 {pid} 已是「{status}」")),
    BatchAction("hold", "挂起", _clean_hold, _hold),
    BatchAction("release", "解除挂起", _no_params, _release),
    BatchAction("flag", "设置旗帜", _clean_flag, _set_field("flag", "flag", "旗帜")),
    BatchAction("memo", "修改卖家备注", _clean_memo, _set_field("seller_memo", "memo", "卖家备注")),
    BatchAction("carrier", "指定快递公司", _clean_carrier,
                _set_field("carrier_id", "carrier_id", "快递公司",
                           frozenset({"pending_payment", "to_audit", "to_ship"}))),
    BatchAction("warehouse", "指定仓库", _clean_warehouse,
                _set_field("warehouse_id", "warehouse_id", "仓库",
                           frozenset({"pending_payment", "to_audit", "to_ship"}), _refuse_audited_warehouse)),
    BatchAction("ship", "发货", _no_params, _ship),
    BatchAction("carrier_rules", "按规则选快递", _no_params, _carrier_by_rule),
    BatchAction("waybill", "取号", _no_params, _issue_waybill),
    BatchAction("cancel_waybill", "回收单号", _no_params, _cancel_waybill),
    BatchAction("print", "打印面单和发货单", _print_documents(("label", "packing_list")), None, _print_all),
    BatchAction("print_labels", "打印面单", _print_documents(("label",)), None, _print_all),
]}


def get_action(code: str) -> BatchAction:
    act = ACTIONS.get(str(code or ""))
    if act is None:
        raise ValidationError(f"未知的批量操作：{code}", "action")
    return act


def clean_params(code: str, params: Optional[dict]) -> dict:
    """Validate an action's parameters (zh message naming the field); nothing is written."""
    if params is not None and not isinstance(params, dict):
        raise ValidationError("参数格式错误（应为 JSON 对象）", "params")
    return get_action(code).clean(dict(params or {}))


# --- selection --------------------------------------------------------------------------
def batch_max() -> int:
    return int(current_app.config.get("OMS_BATCH_MAX", DEFAULT_MAX)) if has_app_context() else DEFAULT_MAX


def _chunk_size() -> int:
    return int(current_app.config.get("OMS_BATCH_CHUNK", DEFAULT_CHUNK)) if has_app_context() else DEFAULT_CHUNK


def select_ids(ids: Optional[Iterable] = None, filters=None, *, limit: Optional[int] = None) -> list[int]:
    """The orders a batch acts on: explicit ``ids``, or every order matching the grid
    ``filters`` (select all matching, within the user's shops). At most ``limit``."""
    limit = batch_max() if limit is None else limit
    has_ids = ids not in (None, [], ())
    has_filters = filters not in (None, "", {})
    if has_ids and has_filters:
        raise ValidationError("请选择订单或使用筛选条件，二者只能选其一", "ids")
    if has_filters:
        spec = grid.spec_for("order")
        parsed = grid.parse_filters(filters)
        n, capped = grid.count(spec, parsed, cap=limit)
        if capped:
            raise ValidationError(f"符合筛选条件的订单超过 {limit} 个，一次最多批量处理 {limit} 个，请缩小筛选范围",
                                  "filters")
        out = grid.matching_ids(spec, parsed, limit)
        if not out:
            raise ValidationError("没有符合筛选条件的订单", "filters")
        return out
    if not has_ids:
        raise ValidationError("请先选择订单", "ids")
    if not isinstance(ids, (list, tuple)):
        raise ValidationError("订单编号格式错误（应为数组）", "ids")
    try:
        out = list(dict.fromkeys(int(i) for i in ids))
    except (TypeError, ValueError):
        raise ValidationError("订单编号无效", "ids") from None
    if len(out) > limit:
        raise ValidationError(f"一次最多批量处理 {limit} 个订单，已选 {len(out)} 个，请分批操作或缩小筛选范围",
                              "ids")
    return out


# --- the runner ---------------------------------------------------------------------------
def _load(chunk: list[int]) -> dict[int, Order]:
    """The chunk's orders in the current row scope (another shop's order is absent),
    locked against a concurrent batch or sync on PostgreSQL (ignored by SQLite)."""
    stmt = (select(Order).where(Order.id.in_(chunk)).order_by(Order.id)
            .options(selectinload(Order.lines).selectinload(OrderLine.sku), selectinload(Order.holds),
                     selectinload(Order.customer))
            .with_for_update(of=Order).execution_options(populate_existing=True))
    return {o.id: o for o in db.session.scalars(stmt)}


class _Redo(Exception):
    """An order failed after writing without its own SAVEPOINT: run the chunk again with one."""


def _run_chunk(act: BatchAction, chunk: list[int], cleaned: dict, ctx: Context, *, locked: bool,
               savepoints: bool = True):
    """One chunk in the current transaction (the caller commits): (ok, skipped, failed).

    ``savepoints=False`` (actions with a ``check``): each order is checked first and the
    refused ones recorded; the others are applied without a SAVEPOINT of their own and
    flushed together at the end. Should one fail after all, :class:`_Redo`: the caller
    rolls the chunk back and runs it again with SAVEPOINTs."""
    ok: list[int] = []
    skipped: list[dict] = []
    failed: list[dict] = []
    found = _load(chunk)
    prepared = None
    if act.code == "audit":
        prepared = order_status.prepare_audit(found.values(), source=ctx.source, user_id=ctx.user_id, lock=locked)
        ctx = replace(ctx, prepared=prepared)
    for oid in chunk:
        order = found.get(oid)
        if order is None:
            failed.append({"id": oid, "platform_order_id": None,
                           "message": f"订单 #{oid} 不存在或无权访问"})
            continue
        pid = order.platform_order_id
        try:
            if not savepoints:
                act.check(order, cleaned, ctx)
                try:
                    act.apply(order, cleaned, ctx)
                except Exception as exc:
                    raise _Redo() from exc
            else:
                with db.session.begin_nested():
                    act.apply(order, cleaned, ctx)
            ok.append(oid)
        except AlreadyDone as exc:
            skipped.append({"id": oid, "platform_order_id": pid, "message": exc.message})
        except OutOfStock as exc:
            # The savepoint is gone, and the 缺货 hold with it: put the hold back.
            order_service.hold_out_of_stock(exc, source=ctx.source, user_id=ctx.user_id)
            failed.append({"id": oid, "platform_order_id": pid, "message": exc.message})
        except DomainError as exc:
            failed.append({"id": oid, "platform_order_id": pid, "message": exc.message})
    if prepared is not None:
        prepared.finish()  # the hot stock rows last: locked for one statement and the COMMIT
        done = set(ok)
        for oid, out in prepared.items():
            if out.ok and oid not in done:  # reserved for a 审单 that failed for another reason
                stock_service.release_order(found[oid], user_id=ctx.user_id, note="审单未成功，释放库存")
    return ok, skipped, failed


def run(action: str, order_ids: Iterable[int], params: Optional[dict] = None, *, user_id: Optional[int],
        source: str = "user", progress: Optional[Progress] = None, chunk_size: Optional[int] = None) -> dict:
    """Apply ``action`` to each order; see the module docstring for the result."""
    act = get_action(action)
    cleaned = act.clean(dict(params or {}))
    ids = list(dict.fromkeys(int(i) for i in order_ids))
    if act.run_all is not None:
        return act.run_all(ids, cleaned, user_id=user_id, source=source, progress=progress)
    size = max(1, chunk_size or _chunk_size())
    ctx = Context(user_id=user_id, source=source)
    ok: list[int] = []
    skipped: list[dict] = []
    failed: list[dict] = []
    total = len(ids)
    if progress:
        progress(0, total, f"正在{act.zh}")
    for start in range(0, total, size):
        chunk = ids[start:start + size]
        # 审单 reserves the chunk's stock together (order_status.prepare_audit): optimistic
        # first, and once more with the stock rows locked if another writer took them.
        # Actions with a check run without a SAVEPOINT per order (one flush for the chunk);
        # an unexpected failure re-runs the chunk with them.
        attempts = [(False, act.check is None), (True, act.check is None), (True, True)] \
            if act.code == "audit" else [(False, act.check is None), (False, True)]
        i = 0
        while True:
            locked, savepoints = attempts[i]
            try:
                part = _run_chunk(act, chunk, cleaned, ctx, locked=locked, savepoints=savepoints)
                db.session.commit()  # this chunk is final: later failures never undo it
                break
            except StockMoved:
                db.session.rollback()
                i = min(i + 1, len(attempts) - 1)
            except _Redo:
                db.session.rollback()
                log.warning("批量%s：逐单重试本批（%s 单）", act.zh, len(chunk))
                i = len(attempts) - 1
            except Exception:
                db.session.rollback()
                raise
        ok += part[0]
        skipped += part[1]
        failed += part[2]
        done = min(start + size, total)
        if progress:
            progress(done, total, f"已{act.zh} {done}/{total}：成功 {len(ok)}，跳过 {len(skipped)}，失败 {len(failed)}")
    return {"action": act.code, "action_zh": act.zh, "total": total, "ok": ok, "skipped": skipped,
            "failed": failed}


def summary(result: dict) -> str:
    """One zh line for a flash message or a job's final progress message."""
    parts = [f"{result['action_zh']}：成功 {len(result['ok'])} 个"]
    if result["skipped"]:
        parts.append(f"无需处理 {len(result['skipped'])} 个")
    if result["failed"]:
        parts.append(f"失败 {len(result['failed'])} 个")
    return "，".join(parts)
