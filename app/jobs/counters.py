"""Order counter compaction: the scheduler runs it every minute. No arguments, safe to
run twice or concurrently (services/order_counts.compact)."""
from __future__ import annotations

from app.services import order_counts


def compact_order_counts_job() -> dict:
    return order_counts.compact()
