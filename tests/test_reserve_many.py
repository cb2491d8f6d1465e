"""Reserving many orders in one transaction (issue #5): ``warehouse_choice.reserve_many``
(批量审单, stock arriving for held orders, a page of paid orders) decides exactly what
reserving the same orders one by one, first paid first served, decides — warehouse,
reason, ledger, 缺货 hold and its note — with the database work done once per batch."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import selectinload

from app.extensions import db
from app.models import Order, Stock, StockMovement
from app.services import batch_actions, order_status, orders, stock, warehouse_choice
from tests.test_stock import _ledger, _new_sku, _setup_pg, _sku, _stock, _wh
from tests.test_warehouse_choice import _order, _shop, _split_world, _two_warehouses
from tests.world import OPENING_STOCK as N

UTC = dt.timezone.utc


def _paid(day: int) -> dt.datetime:
    return dt.datetime(2026, 11, day, 2, 0, tzinfo=UTC)


def _load(ids_):
    return db.session.scalars(select(Order).where(Order.id.in_(ids_))
                              .options(selectinload(Order.lines), selectinload(Order.holds))).all()


def _state(ids_) -> dict:
    """What a reservation decided, per order: warehouse, reason, lines' warehouses, ledger, holds."""
    out = {}
    for oid in ids_:
        o = db.session.get(Order, oid)
        out[o.platform_order_id] = (
            o.warehouse_id, o.warehouse_reason,
            sorted((ln.merchant_code, ln.warehouse_id) for ln in o.lines),
            _ledger(oid),
            [(h.reason, h.note) for h in o.holds if h.released_at is None],
        )
    return out


def _mixed_orders():
    """杭州仓 (priority 1) + 广州仓 (priority 2, covers 广东 only … and 浙江 for the split world)."""
    hz, gz = _two_warehouses(hz_provinces=("浙江", "江苏"), gz_provinces=("广东", "浙江"),
                             gz_stock={"TS-BLK-L": 3, "TS-WHT-M": 1})
    blk = _sku("TS-BLK-L")
    on_hand, reserved = _stock(hz.id, blk.id)
    stock.adjust(hz.id, blk.id, 4 - (on_hand - reserved), note="可用只剩 4 件")  # 杭州仓 TS-BLK-L: 4 available
    db.session.commit()
    specs = [
        ("RM-1", [("TS-BLK-L", 3)], "浙江省", 21),   # 杭州仓 (whole, priority 1): HZ 4 → 1
        ("RM-2", [("TS-BLK-L", 2)], "浙江省", 22),   # 杭州仓 short → 广州仓: GZ 3 → 1
        ("RM-3", [("TS-BLK-L", 2)], "浙江省", 23),   # nowhere: 缺货 naming both
        ("RM-4", [("TS-WHT-M", 1)], "新疆", 24),     # nothing covers 新疆
        ("RM-5", [("TS-BLK-L", 1), ("TS-WHT-M", 1)], "广东省", 25),  # 广州仓 only covers 广东
        ("RM-6", [("TS-BLK-L", 1)], "江苏省", 26),   # 杭州仓's last unit
    ]
    return [_order(pid, lines, province=prov, paid=_paid(day)).id for pid, lines, prov, day in specs]


def test_a_batch_decides_what_one_by_one_decides(ctx, ids):
    order_ids = _mixed_orders()
    # one by one, first paid first served, in a savepoint that is then undone
    nested = db.session.begin_nested()
    for o in sorted(_load(order_ids), key=lambda o: (o.paid_at, o.id)):
        warehouse_choice.reserve(o)
    db.session.flush()
    expected = _state(order_ids)
    nested.rollback()
    db.session.expire_all()
    assert _state(order_ids)["RM-1"][3] == {}  # undone

    # the batch, given in the reverse order
    result = warehouse_choice.reserve_many(list(reversed(_load(order_ids))))
    db.session.commit()
    got = _state(order_ids)
    assert got == expected
    assert {db.session.get(Order, k).platform_order_id: v.ok for k, v in result.items()} == {
        "RM-1": True, "RM-2": True, "RM-3": False, "RM-4": False, "RM-5": True, "RM-6": True}
    assert got["RM-1"][1] == "杭州仓：覆盖浙江、库存齐全、优先级1"
    assert got["RM-2"][1] == "广州仓：覆盖浙江、库存齐全、优先级2（杭州仓库存不足）"
    assert got["RM-3"][4] == [("out_of_stock",
                               "浙江缺货（覆盖仓库：杭州仓、广州仓）：TS-BLK-L 需要 2，可用 2（杭州仓 1、广州仓 1）")]
    assert got["RM-4"][4][0][1].startswith("缺货：没有仓库覆盖新疆")
    assert stock.check_ledger() == []


def test_first_paid_first_served_whatever_order_they_are_given_in(ctx, ids):
    hz, wht = _wh(), _sku("TS-WHT-M")
    on_hand, reserved = _stock(hz.id, wht.id)
    stock.adjust(hz.id, wht.id, 3 - (on_hand - reserved), note="可用只剩 3 件")
    db.session.commit()
    base = _stock(hz.id, wht.id)
    late = _order("RM-LATE", [("TS-WHT-M", 3)], paid=_paid(23))
    early = _order("RM-EARLY", [("TS-WHT-M", 2)], paid=_paid(21))
    mid = _order("RM-MID", [("TS-WHT-M", 1)], paid=_paid(22))
    result = stock.reserve_orders(_load([late.id, mid.id, early.id]))
    db.session.commit()
    assert result == {early.id: True, mid.id: True, late.id: False}
    assert _stock(hz.id, wht.id) == (base[0], base[1] + 3)
    assert db.session.get(Order, late.id).active_hold_reasons == ["out_of_stock"]
    assert stock.check_ledger() == []


def test_a_split_is_reserved_at_its_place_in_the_sequence(ctx, ids):
    hz, gz = _split_world()
    _shop(allow_split=True)
    hat = _sku("HAT-1")
    first = _order("RM-SPLIT", [("TS-BLK-L", 2), ("HAT-1", 4)], paid=_paid(21))  # HZ has no hats: a split
    second = _order("RM-AFTER", [("HAT-1", 2)], paid=_paid(22))  # only 1 hat left after the split
    result = stock.reserve_orders(_load([second.id, first.id]))
    db.session.commit()
    assert result == {first.id: True, second.id: False}
    assert db.session.get(Order, first.id).warehouse_reason == "拆分发货：杭州仓（TS-BLK-L×2）、广州仓（HAT-1×4）"
    assert _stock(gz.id, hat.id) == (5, 4)
    assert "HAT-1 需要 2，可用 1" in db.session.get(Order, second.id).holds[0].note
    assert stock.check_ledger() == []


def test_already_reserved_and_a_persons_warehouse_go_one_by_one(ctx, ids):
    hz, gz = _two_warehouses(hz_provinces=("浙江",), gz_provinces=("浙江",))
    kept = _order("RM-KEPT", [("TS-BLK-L", 1)], paid=_paid(21))
    assert stock.reserve_order(kept)
    db.session.commit()
    manual = _order("RM-MANUAL", [("TS-BLK-L", 1)], paid=_paid(22))
    orders.update_fields(manual, {"warehouse_id": gz.id}, source="user", user_id=None)
    db.session.commit()
    result = warehouse_choice.reserve_many(_load([kept.id, manual.id]))
    db.session.commit()
    assert result[kept.id].kept and result[manual.id].ok
    assert _ledger(kept.id) == {"TS-BLK-L": (0, 1)}  # not reserved twice
    assert db.session.get(Order, manual.id).warehouse_reason.startswith("人工指定：广州仓")
    assert stock.reserved_by_order(manual.id) == {(gz.id, _sku("TS-BLK-L").id): 1}


def test_batch_audit_releases_a_reservation_whose_audit_failed(ctx, ids, monkeypatch):
    good = _order("RM-GOOD", [("TS-BLK-L", 1)])
    bad = _order("RM-BAD", [("TS-BLK-L", 2)])
    from app.services import carrier_rules

    real = carrier_rules.on_audit

    def failing(order, **kw):
        if order.platform_order_id == "RM-BAD":
            raise order_status.IllegalTransition("快递规则出错（测试）")
        return real(order, **kw)

    monkeypatch.setattr(carrier_rules, "on_audit", failing)
    result = batch_actions.run("audit", [good.id, bad.id], user_id=None, source="user")
    assert result["ok"] == [good.id]
    assert [f["message"] for f in result["failed"]] == ["快递规则出错（测试）"]
    assert db.session.get(Order, bad.id).status == "to_audit"
    assert stock.reserved_by_order(bad.id) == {}  # the batch's reservation was given back
    assert db.session.get(Order, good.id).status == "to_ship" and _ledger(good.id) == {"TS-BLK-L": (0, 1)}
    assert stock.check_ledger() == []


def test_batch_audit_of_short_orders_keeps_each_out_of_stock_hold(ctx, ids):
    hz, wht = _wh(), _sku("TS-WHT-M")
    on_hand, reserved = _stock(hz.id, wht.id)
    stock.adjust(hz.id, wht.id, 2 - (on_hand - reserved), note="可用只剩 2 件")
    db.session.commit()
    base = _stock(hz.id, wht.id)
    made = [_order(f"RM-B{i}", [("TS-WHT-M", 1)], paid=_paid(21 + i)).id for i in range(4)]
    result = batch_actions.run("audit", made, user_id=None, source="user", chunk_size=3)
    assert result["ok"] == made[:2]
    assert [f["id"] for f in result["failed"]] == made[2:]
    assert all("缺货" in f["message"] for f in result["failed"])
    for oid in made[2:]:
        o = db.session.get(Order, oid)
        assert o.status == "to_audit" and o.active_hold_reasons == ["out_of_stock"]
        assert "TS-WHT-M 需要 1，可用 0" in o.holds[0].note
    assert _stock(hz.id, wht.id) == (base[0], base[1] + 2) and stock.check_ledger() == []


def test_stock_taken_between_the_decision_and_the_commit_reruns_the_batch_locked(pg_url, tmp_path, monkeypatch):
    """The optimistic 批量审单 decides on an unlocked read; another writer takes the stock before
    its guarded UPDATE: the chunk is rolled back and decided again with the rows locked."""
    app = _setup_pg(pg_url, tmp_path)
    with app.app_context():
        hz, sku = _wh(), _new_sku("HOT-RM")
        stock.inbound(hz.id, sku.id, 3, source_ref="RK-HOT")
        db.session.commit()
        from tests.test_stock import _paid_order

        made = [_paid_order(f"RM-PG-{i}", [("HOT-RM", 1)]).id for i in range(3)]
        real = order_status.prepare_audit
        calls = []

        def racing(orders_, **kw):
            out = real(orders_, **kw)
            calls.append(kw["lock"])
            if not kw["lock"]:  # another process takes 2 units (a loss booked through the ledger)
                with db.engine.connect() as other:
                    other.execute(text("UPDATE oms_stock SET on_hand = on_hand - 2 WHERE id = :i"),
                                  {"i": db.session.scalar(select(Stock.id).where(Stock.sku_id == sku.id))})
                    other.execute(StockMovement.__table__.insert().values(
                        warehouse_id=hz.id, sku_id=sku.id, movement_type="adjust", on_hand_delta=-2,
                        reserved_delta=0, source_ref="TZ-RACE", created_at=dt.datetime.now(UTC)))
                    other.commit()
            return out

        monkeypatch.setattr(order_status, "prepare_audit", racing)
        result = batch_actions.run("audit", made, user_id=None, source="rule")
        assert calls == [False, True]  # optimistic, then locked
        assert len(result["ok"]) == 1 and len(result["failed"]) == 2
        assert _stock(hz.id, sku.id) == (1, 1)
        assert stock.check_ledger() == []
        db.session.remove()
        db.engine.dispose()
