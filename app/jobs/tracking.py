"""Tracking jobs: polls of parcels (ids only; a poll run twice stores nothing twice),
the dispatcher the scheduler runs every minute, and the periodic 物流异常 check."""
from __future__ import annotations

from app.jobs.queue import get_queue
from app.services import logistics_exceptions, tracking

CHUNK = 50  # parcels per poll job


def poll_parcels_job(parcel_ids: list[int]) -> dict:
    outcomes: dict[str, int] = {}
    for pid in parcel_ids:
        result = tracking.poll_parcel(int(pid))
        outcomes[result] = outcomes.get(result, 0) + 1
    return outcomes


def enqueue_poll(parcel_ids: list[int]):
    try:
        return get_queue("tracking").enqueue(poll_parcels_job, list(parcel_ids),
                                         description=f"物流轨迹查询 {len(parcel_ids)} 个包裹",
                                         result_ttl=3600, failure_ttl=7 * 86400, job_timeout=1800)
    except Exception:  # Redis down: the parcel stays due and the dispatcher queues it later
        return None


def dispatch_due_tracking() -> dict:
    """Claim the parcels whose poll is due and queue them in chunks."""
    ids = tracking.claim_due()
    for i in range(0, len(ids), CHUNK):
        enqueue_poll(ids[i:i + CHUNK])
    return {"queued": len(ids)}


def check_logistics_exceptions() -> dict:
    return logistics_exceptions.check_all()
