"""Batch actions on orders: small selections inline, larger ones as an RQ job.

``start`` is what the API (and the order list's actions) call, after the
selection and the parameters were checked: up to ``OMS_BATCH_INLINE_MAX`` orders
(default 50) it runs the batch now and returns its result; above, it queues
``batch_job`` with the ids and the validated parameters (never ORM objects).
The job runs in the row scope of the user who queued it (app/jobs/worker.py),
reports progress after every chunk through the job metadata, and returns the
same result dict the inline run returns. Running it twice is safe: orders
already in the target state come back under ``skipped``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from flask import current_app

from app.jobs.queue import enqueue, set_progress
from app.services import batch_actions

DEFAULT_INLINE_MAX = 50
QUEUE = "default"


@dataclass
class BatchOutcome:
    """Either the result (run inline) or the queued job that will produce it."""

    result: Optional[dict] = None
    job: object = None
    total: int = 0


def inline_max() -> int:
    return int(current_app.config.get("OMS_BATCH_INLINE_MAX", DEFAULT_INLINE_MAX))


def start(action: str, order_ids: Iterable[int], params: Optional[dict], *, user_id: int) -> BatchOutcome:
    ids = list(dict.fromkeys(int(i) for i in order_ids))
    cleaned = batch_actions.clean_params(action, params)  # refused now, not later in the worker
    if len(ids) <= inline_max():
        return BatchOutcome(result=batch_actions.run(action, ids, cleaned, user_id=user_id), total=len(ids))
    act = batch_actions.get_action(action)
    job = enqueue(batch_job, act.code, ids, cleaned, queue=QUEUE, user_id=user_id,
                  description=f"批量{act.zh} {len(ids)} 个订单")
    return BatchOutcome(job=job, total=len(ids))


def batch_job(action: str, order_ids: list[int], params: dict) -> dict:
    """Run a batch as the user who queued it; progress after each chunk."""
    from rq import get_current_job

    job = get_current_job()
    user_id = job.meta.get("user_id") if job is not None else None
    result = batch_actions.run(action, order_ids, params, user_id=user_id, source="job",
                               progress=set_progress)
    set_progress(len(order_ids), len(order_ids), batch_actions.summary(result))
    return result
