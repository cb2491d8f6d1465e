"""Write-back jobs: retried with backoff by RQ; the last attempt records the failure."""
from __future__ import annotations

from rq import Retry, get_current_job

from app.jobs.queue import get_queue
from app.services import writeback

BACKOFF = [10, 30, 120, 600, 1800]


def writeback_job(order_id: int) -> str:
    job = get_current_job()
    final = job is None or job.retries_left in (None, 0)
    return writeback.write_back(order_id, final_attempt=final)


def enqueue_writeback(order_id: int):
    try:
        return get_queue("sync").enqueue(writeback_job, order_id, retry=Retry(max=len(BACKOFF), interval=BACKOFF),
                                         description=f"发货回传 订单#{order_id}", job_id=f"writeback-{order_id}",
                                         result_ttl=86400, failure_ttl=30 * 86400)
    except Exception:  # Redis down: the order stays pending and the sweeper queues it later
        return None


def _job_alive(order_id: int) -> bool:
    from rq.job import Job

    from app.jobs.queue import redis_conn

    try:
        job = Job.fetch(f"writeback-{order_id}", connection=redis_conn())
    except Exception:
        return False
    return job.get_status(refresh=True) in ("queued", "started", "deferred", "scheduled")


def sweep_pending_writebacks() -> dict:
    """Queue pending write-backs whose job was lost; never a second job for one
    that is still queued or waiting for its retry (that would reset its retries)."""
    ids = [oid for oid in writeback.stale_pending() if not _job_alive(oid)]
    for oid in ids:
        enqueue_writeback(oid)
    return {"requeued": ids}
