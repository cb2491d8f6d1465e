"""Read and retry background jobs (后台任务) across every queue."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

from app.jobs.queue import get_queue, redis_conn

from .errors import NotFound, ValidationError

STATE_ZH = {"queued": "排队中", "started": "运行中", "finished": "已完成", "failed": "失败",
            "deferred": "等待中", "scheduled": "已计划", "stopped": "已停止", "canceled": "已取消"}


@dataclass
class JobRow:
    id: str
    queue: str
    state: str
    description: str
    enqueued_at: object
    ended_at: object
    progress: int
    error: Optional[str]

    @property
    def state_zh(self) -> str:
        return STATE_ZH.get(self.state, self.state)


def _row(job: Job, queue: str, state: str) -> JobRow:
    error = None
    if state == "failed":
        info = (job.latest_result().exc_string if job.latest_result() else None) or ""
        error = info.strip().splitlines()[-1] if info.strip() else None
    return JobRow(job.id, queue, state, job.description or job.func_name, job.enqueued_at,
                  job.ended_at, int(job.meta.get("progress", 0)), error)


def list_jobs(queue_names: list[str], limit: int = 50) -> dict[str, list[JobRow]]:
    conn = redis_conn()
    out: dict[str, list[JobRow]] = {"queued": [], "started": [], "finished": [], "failed": []}
    for name in queue_names:
        q = get_queue(name)
        sources = {
            "queued": q.get_job_ids(0, limit),
            "started": StartedJobRegistry(queue=q).get_job_ids(0, limit - 1),
            "finished": FinishedJobRegistry(queue=q).get_job_ids(0, limit - 1),
            "failed": FailedJobRegistry(queue=q).get_job_ids(0, limit - 1),
        }
        for state, ids in sources.items():
            for job in Job.fetch_many(ids, connection=conn):
                if job is not None:
                    out[state].append(_row(job, name, state))
    for rows in out.values():
        rows.sort(key=lambda r: str(r.ended_at or r.enqueued_at or ""), reverse=True)
    return out


def retry(job_id: str) -> Job:
    conn = redis_conn()
    try:
        job = Job.fetch(job_id, connection=conn)
    except Exception:
        raise NotFound(f"任务不存在：{job_id}") from None
    if not job.is_failed:
        raise ValidationError("只有失败的任务可以重试", "job")
    job.requeue()
    return job
