"""库存同步 job: the scheduler runs it every 10 s; it pushes every listing whose
debounce has passed. No arguments, safe to run twice: a second concurrent run is
skipped (one lock), and a push sets the full quantity, so repeating it changes nothing."""
from __future__ import annotations

from app.services import stock_push


def push_due_job() -> dict:
    try:
        return stock_push.push_due()
    except stock_push.StockPushBusy as exc:
        return {"skipped": exc.message}
