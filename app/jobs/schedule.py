"""The periodic jobs. RQ 2.12's cron works in UTC: 19:00 UTC is 03:00 in Shanghai."""
from __future__ import annotations

from rq.cron import CronScheduler

from app.jobs.counters import compact_order_counts_job
from app.jobs.customers import recompute_tiers
from app.jobs.exports import cleanup_exports
from app.jobs.queue import redis_conn
from app.jobs.stock_alerts import evaluate_stock_alerts
from app.jobs.stock_push import push_due_job
from app.jobs.sync import dispatch_due_syncs
from app.jobs.tracking import check_logistics_exceptions, dispatch_due_tracking
from app.jobs.writeback import sweep_pending_writebacks
from app.services import stock_push


def build_scheduler() -> CronScheduler:
    scheduler = CronScheduler(connection=redis_conn(), name="oms")
    scheduler.register(recompute_tiers, queue_name="default", cron="0 19 * * *", name="customer-tiers")
    # Each shop has its own interval (60 s in the demo); the dispatcher checks often.
    scheduler.register(dispatch_due_syncs, queue_name="default", interval=5, name="sync-dispatch",
                       result_ttl=600)
    scheduler.register(sweep_pending_writebacks, queue_name="default", interval=300, name="writeback-sweep",
                       result_ttl=3600)
    scheduler.register(push_due_job, queue_name="sync", interval=10, name="stock-push", result_ttl=600,
                       job_timeout=stock_push.JOB_TIMEOUT)
    # 库存预警: changes are evaluated after each stock commit; this sweep catches up the rest.
    scheduler.register(evaluate_stock_alerts, queue_name="default", interval=300, name="stock-alerts",
                       result_ttl=600)
    # Fold the status-tab counter deltas (services/order_counts.py) into one row per group.
    scheduler.register(compact_order_counts_job, queue_name="default", interval=60, name="order-count-compact",
                       result_ttl=600)
    # Export files older than OMS_EXPORT_KEEP_DAYS (7) are deleted; 03:30 in Shanghai.
    scheduler.register(cleanup_exports, queue_name="default", cron="30 19 * * *", name="export-cleanup")
    # Parcel tracking: queue the polls that are due (each parcel sets its own next time),
    # and check the 物流异常 time rules (no pickup / no update) every 15 minutes.
    scheduler.register(dispatch_due_tracking, queue_name="default", interval=60, name="tracking-dispatch",
                       result_ttl=600)
    scheduler.register(check_logistics_exceptions, queue_name="default", interval=900,
                       name="logistics-exception-check", result_ttl=3600)
    return scheduler
