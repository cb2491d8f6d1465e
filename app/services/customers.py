"""Customer tiers (客户分层) by spend and frequency."""
from __future__ import annotations

from decimal import Decimal
from typing import Callable, Optional

from sqlalchemy import select

from app.extensions import db
from app.models import Customer

# (tier, minimum orders, minimum spend in 元): the first that matches wins.
TIERS = [
    ("vip", 5, Decimal("1000")),
    ("loyal", 3, Decimal("300")),
    ("returning", 2, Decimal("0")),
    ("new", 1, Decimal("0")),
]
TIER_ZH = {"vip": "VIP", "loyal": "忠实客户", "returning": "回头客", "new": "新客户", "none": "未下单"}


def tier_for(order_count: int, total_spent: Decimal) -> str:
    for tier, min_orders, min_spend in TIERS:
        if (order_count or 0) >= min_orders and (total_spent or 0) >= min_spend:
            return tier
    return "none"


def recompute_tiers(batch: int = 1000, progress: Optional[Callable] = None) -> int:
    changed = 0
    last_id = 0
    total = db.session.query(Customer.id).count()
    done = 0
    while True:
        rows = db.session.scalars(
            select(Customer).where(Customer.id > last_id).order_by(Customer.id).limit(batch)
        ).all()
        if not rows:
            break
        for c in rows:
            tier = tier_for(c.order_count, c.total_spent)
            if c.tier != tier:
                c.tier = tier
                changed += 1
        last_id = rows[-1].id
        done += len(rows)
        db.session.commit()
        if progress:
            progress(done, total)
    return changed
