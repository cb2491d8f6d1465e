"""库存预警 sweep: the scheduler runs it every 5 minutes. Stock changes are evaluated
right after they commit (services/stock_alerts.py); the sweep re-evaluates every SKU
so a changed default threshold, or an evaluation lost to a crash, is caught up.
No arguments, safe to run twice: evaluation is state-based and idempotent."""
from __future__ import annotations

from app.services import stock_alerts


def evaluate_stock_alerts() -> dict:
    result = stock_alerts.evaluate_all()
    return {"triggered": len(result.triggered), "recovered": len(result.recovered)}
