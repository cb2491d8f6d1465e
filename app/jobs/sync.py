"""Sync jobs: one shop per job (ids only, safe to run twice: the lock and the
checksums make a duplicate a no-op), and the dispatcher the scheduler runs."""
from __future__ import annotations

import contextlib
from rq.exceptions import NoSuchJobError
from rq.job import Job

from app.jobs.queue import get_queue, redis_conn, set_progress
from app.services import sync


def sync_shop_job(shop_id: int, trigger: str = "schedule") -> dict:
    try:
        run = sync.sync_shop(shop_id, trigger=trigger, progress=set_progress)
    except sync.SyncBusy as exc:
        return {"skipped": exc.message}
    return {"run_id": run.id, "status": run.status, "fetched": run.fetched, "created": run.created,
            "updated": run.updated, "error": run.error}


def job_id_for(shop_id: int) -> str:
    return f"sync-shop-{shop_id}"


def enqueue_sync(shop_id: int, trigger: str = "schedule", user_id=None):
    """Queue a sync of one shop; None when one is already queued or running."""
    jid = job_id_for(shop_id)
    with contextlib.suppress(NoSuchJobError):  # no earlier job: queue one
        existing = Job.fetch(jid, connection=redis_conn())
        if existing.get_status(refresh=True) in ("queued", "started", "deferred", "scheduled"):
            return None
    if sync.is_syncing(shop_id):
        return None
    return get_queue("sync").enqueue(sync_shop_job, shop_id, trigger, job_id=jid,
                                     description=f"同步店铺 #{shop_id}", meta={"user_id": user_id,
                                                                            "progress": 0},
                                     result_ttl=3600, failure_ttl=7 * 86400, job_timeout=1800)


def dispatch_due_syncs() -> dict:
    queued = [sid for sid in sync.due_shops() if enqueue_sync(sid) is not None]
    return {"queued": queued}


def sync_state(shop_id: int) -> str:
    """What the shop list shows about a sync in progress: 同步中 45% / 排队中 / ''."""
    try:
        job = Job.fetch(job_id_for(shop_id), connection=redis_conn())
        status = job.get_status(refresh=True)
    except Exception:
        return ""
    if status == "started":
        return f"同步中 {int(job.meta.get('progress', 0))}%"
    if status in ("queued", "deferred", "scheduled"):
        return "排队中"
    return ""
