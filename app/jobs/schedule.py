"""The periodic jobs. RQ 2.12's cron works in UTC: 19:00 UTC is 03:00 in Shanghai."""
from __future__ import annotations

from rq.cron import CronScheduler

from app.jobs.customers import recompute_tiers
from app.jobs.queue import redis_conn


def build_scheduler() -> CronScheduler:
    scheduler = CronScheduler(connection=redis_conn(), name="oms")
    scheduler.register(recompute_tiers, queue_name="default", cron="0 19 * * *", name="customer-tiers")
    return scheduler
