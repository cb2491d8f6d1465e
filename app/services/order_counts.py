"""Status tab counts from maintained counters, exact and cheap at a million orders.

The database keeps them (migration 0005): triggers on ``oms_order`` insert signed
rows into ``oms_order_count_delta`` (models/counters.py) for every change of an
order's (shop, platform, status, is_held), in the writer's own transaction. So a
count is ``sum(n)`` over a small table, and it is exact in any snapshot: a
committed order change and its deltas become visible together, a rolled-back one
leaves neither. Writers only INSERT there, so two transactions moving orders in
opposite directions (审单 and 反审核) never wait on a shared counter row.

:func:`compact` (the scheduler runs it every minute) folds each group's rows into
one, atomically; :func:`check` compares the counters with an exact GROUP BY in one
snapshot, and :func:`rebuild` recomputes them from ``oms_order`` (repair only).

Tabs: one per status (services/order_status.STATUS_ZH) plus 异常 (``held``): orders
on hold that are not closed. With ``held_apart`` (the default, the 订单工作台's tabs,
services/order_grid.tab_filter) a held order counts under 异常 only, not under 待审核
or 待发货 (the statuses a hold sits on); a status the order left while held (平台发货)
counts it in both. Without it every status tab counts every order of its status
(the classic order list, whose tab links filter by status alone).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Optional

from sqlalchemy import func, select, text

from app.extensions import db
from app.models import Order, OrderCountDelta

from .order_status import HOLDABLE, STATUS_ZH
from .scope import UNRESTRICTED, current_scope

HELD_TAB = "held"
HELD_LABEL = "异常"

_KEY = "shop_id, platform, status, is_held"
_TABLE = OrderCountDelta.__tablename__


def _effective_shops(shop_ids: Optional[Iterable[int]]) -> Optional[frozenset[int]]:
    """The shops to count: the requested ones within the user's row scope (None: all)."""
    scope = current_scope()
    wanted = None if shop_ids is None else frozenset(int(s) for s in shop_ids)
    if scope is UNRESTRICTED:
        return wanted
    return scope if wanted is None else wanted & scope


def _tabs(by_status: dict[str, int], held: int) -> list[dict]:
    tabs = [{"code": code, "label": zh, "count": by_status.get(code, 0)} for code, zh in STATUS_ZH.items()]
    tabs.append({"code": HELD_TAB, "label": HELD_LABEL, "count": held})
    return tabs


def tab_counts(shop_ids: Optional[Iterable[int]] = None,
               platforms: Optional[Iterable[str]] = None, *, held_apart: bool = True) -> list[dict]:
    """``[{code, label, count}]`` for 待付款 … 已关闭 and 异常, within the current row scope.

    ``shop_ids`` / ``platforms``: count only those shops / platforms (None: all).
    ``held_apart``: see the module docstring. One aggregate over the counter table,
    never over ``oms_order``.
    """
    shops = _effective_shops(shop_ids)
    plats = None if platforms is None else sorted({str(p) for p in platforms})
    if (shops is not None and not shops) or (plats is not None and not plats):
        return _tabs({}, 0)
    d = OrderCountDelta
    stmt = select(d.status, d.is_held, func.sum(d.n)).group_by(d.status, d.is_held)
    if shops is not None:
        stmt = stmt.where(d.shop_id.in_(sorted(shops)))
    if plats is not None:
        stmt = stmt.where(d.platform.in_(plats))
    by_status: dict[str, int] = defaultdict(int)
    held = 0
    for status, is_held, n in db.session.execute(stmt):
        n = int(n or 0)
        if not (is_held and held_apart and status in HOLDABLE):
            by_status[status] += n
        if is_held and status != "closed":
            held += n
    return _tabs(by_status, held)


# --- maintenance: compaction, check, rebuild ------------------------------------------
def compact() -> dict:
    """Fold the delta rows into one row per (shop, platform, status, is_held) group.

    Safe while orders change and while another compaction runs. PostgreSQL: one
    statement, ``WITH moved AS (DELETE … RETURNING …) INSERT … SELECT sum …``, in READ
    COMMITTED: it deletes exactly the rows of its snapshot and inserts their sums;
    rows committed after the snapshot stay for the next run, and a row another
    compaction deleted first is skipped (it waits for that row's lock, then sees it
    gone), so nothing is counted twice or lost. SQLite: one writer at a time; the
    transaction starts with the DELETE, so it holds the write lock before it reads.
    Groups that sum to 0 disappear. Runs on its own connection, unscoped.
    """
    engine = db.engine
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="READ COMMITTED") as conn:
            with conn.begin():
                if not _needs_compaction(conn):
                    return {"rows_before": None, "rows_after": None, "skipped": True}
                result = conn.execute(text(
                    f"WITH moved AS (DELETE FROM {_TABLE} RETURNING {_KEY}, n),"
                    f" kept AS (INSERT INTO {_TABLE} ({_KEY}, n)"
                    f"   SELECT {_KEY}, sum(n) FROM moved GROUP BY {_KEY} HAVING sum(n) <> 0 RETURNING 1)"
                    f" SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM kept)")).one()
        return {"rows_before": int(result[0]), "rows_after": int(result[1]), "skipped": False}
    with engine.begin() as conn:
        moved = conn.execute(text(f"DELETE FROM {_TABLE} RETURNING {_KEY}, n")).all()
        sums: dict[tuple, int] = defaultdict(int)
        for shop_id, platform, status, is_held, n in moved:
            sums[(shop_id, platform, status, bool(is_held))] += n
        rows = [dict(shop_id=k[0], platform=k[1], status=k[2], is_held=k[3], n=n) for k, n in sums.items() if n]
        if rows:
            conn.execute(OrderCountDelta.__table__.insert(), rows)
    return {"rows_before": len(moved), "rows_after": len(rows), "skipped": False}


def _needs_compaction(conn) -> bool:
    return conn.execute(text(
        f"SELECT 1 FROM {_TABLE} GROUP BY {_KEY} HAVING count(*) > 1 OR sum(n) = 0 LIMIT 1")).first() is not None


def _exact_sql() -> str:
    return f"SELECT {_KEY}, count(*) FROM {Order.__tablename__} GROUP BY {_KEY}"


def check() -> list[dict]:
    """Groups whose counter differs from an exact count over ``oms_order``; ``[]`` when
    all agree. One statement, so both sides are read in one snapshot, even while
    orders change."""
    sql = (f"SELECT {_KEY}, sum(c), sum(e) FROM ("
           f" SELECT {_KEY}, n AS c, 0 AS e FROM {_TABLE}"
           f" UNION ALL SELECT {_KEY}, 0 AS c, 1 AS e FROM {Order.__tablename__}"
           f") AS both_sides GROUP BY {_KEY} HAVING sum(c) <> sum(e) ORDER BY {_KEY}")
    with db.engine.connect() as conn:
        rows = conn.execute(text(sql)).all()
    return [{"shop_id": r[0], "platform": r[1], "status": r[2], "is_held": bool(r[3]),
             "counter": int(r[4]), "exact": int(r[5])} for r in rows]


def rebuild() -> int:
    """Recompute the counters from ``oms_order`` (repair after manual surgery, e.g. a
    migration that recreated the table on SQLite without its triggers). PostgreSQL:
    ``oms_order`` is locked in SHARE mode meanwhile (reads go on, writes wait)."""
    engine = db.engine
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"LOCK TABLE {Order.__tablename__} IN SHARE MODE"))
        conn.execute(text(f"DELETE FROM {_TABLE}"))
        conn.execute(text(f"INSERT INTO {_TABLE} ({_KEY}, n) {_exact_sql()}"))
        return int(conn.execute(text(f"SELECT count(*) FROM {_TABLE}")).scalar())
