"""Read and retry background jobs (后台任务) across every queue.

Everyone sees their own jobs (``job.meta["user_id"]``, set by app/jobs/queue.py
``enqueue``); a user who may manage jobs (``can_write`` on Jobs: the admin) sees
and retries everyone's. Another user's job is simply not found, as another
shop's order is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

from app.jobs.queue import get_queue, redis_conn

from .errors import NotFound, ValidationError

STATE_ZH = {"queued": "排队中", "started": "运行中", "finished": "已完成", "failed": "失败",
            "deferred": "等待中", "scheduled": "已计划", "stopped": "已停止", "canceled": "已取消"}
# How many ids per registry are read when only one user's jobs are shown.
_SCAN_FOR_OWNER = 500


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
    user_id: Optional[int] = None
    message: Optional[str] = None
    download_url: Optional[str] = None
    filename: Optional[str] = None

    @property
    def state_zh(self) -> str:
        return STATE_ZH.get(self.state, self.state)


def _error_line(job: Job) -> Optional[str]:
    result = job.latest_result()
    info = ((result.exc_string if result is not None else None) or "").strip()
    return info.splitlines()[-1] if info else None


def _zh_error(job: Job) -> str:
    """A failed job's reason for its user: the exception's message without the
    traceback (a service's DomainError carries a zh message already)."""
    line = _error_line(job)
    if not line:
        return "任务失败"
    _cls, sep, message = line.partition(": ")
    return f"任务失败：{message.strip() if sep else line}"


def _download(job: Job, state: str) -> tuple[Optional[str], Optional[str]]:
    if state != "finished":
        return None, None
    try:
        value = job.return_value()
    except Exception:  # noqa: BLE001 - an unreadable result simply has no download
        return None, None
    if isinstance(value, dict) and value.get("download_url") and value.get("filename"):
        url = str(value["download_url"])
        # Only a path on this site: never another host or a javascript: URL.
        if url.startswith("/") and not url.startswith("//") and "\\" not in url:
            return url, str(value["filename"])
    return None, None


def _row(job: Job, queue: str, state: str) -> JobRow:
    error = _error_line(job) if state == "failed" else None
    url, filename = _download(job, state)
    return JobRow(job.id, queue, state, job.description or job.func_name, job.enqueued_at,
                  job.ended_at, int(job.meta.get("progress", 0)), error, job.meta.get("user_id"),
                  job.meta.get("message"), url, filename)


def list_jobs(queue_names: list[str], limit: int = 50, *, user_id: Optional[int] = None,
              everyone: bool = True) -> dict[str, list[JobRow]]:
    """Jobs per state, newest first; only ``user_id``'s unless ``everyone``."""
    conn = redis_conn()
    scan = limit if everyone else _SCAN_FOR_OWNER
    out: dict[str, list[JobRow]] = {"queued": [], "started": [], "finished": [], "failed": []}
    for name in queue_names:
        q = get_queue(name)
        sources = {
            "queued": q.get_job_ids(0, scan),
            "started": StartedJobRegistry(queue=q).get_job_ids(0, scan - 1),
            "finished": FinishedJobRegistry(queue=q).get_job_ids(0, scan - 1),
            "failed": FailedJobRegistry(queue=q).get_job_ids(0, scan - 1),
        }
        for state, ids in sources.items():
            for job in Job.fetch_many(ids, connection=conn):
                if job is None:
                    continue
                if not everyone and job.meta.get("user_id") != user_id:
                    continue
                out[state].append(_row(job, name, state))
    for state, rows in out.items():
        rows.sort(key=lambda r: str(r.ended_at or r.enqueued_at or ""), reverse=True)
        del rows[limit:]
    return out


def _fetch(job_id: str, user_id: Optional[int], everyone: bool) -> Job:
    try:
        job = Job.fetch(str(job_id), connection=redis_conn())
    except (NoSuchJobError, ValueError):
        raise NotFound(f"任务不存在：{job_id}") from None
    if not everyone and (user_id is None or job.meta.get("user_id") != user_id):
        raise NotFound(f"任务不存在：{job_id}")  # another user's job: not found, not forbidden
    return job


def status(job_id: str, *, user_id: Optional[int], everyone: bool = False) -> dict:
    """What the page's progress bar polls: state, progress 0–100, done/total, message,
    and the job's result once finished (``error`` in zh when it failed)."""
    job = _fetch(job_id, user_id, everyone)
    state = job.get_status(refresh=True)
    state = getattr(state, "value", state) or "queued"
    meta = job.meta
    out = {
        "id": job.id, "state": state, "state_zh": STATE_ZH.get(state, state),
        "description": job.description, "progress": int(meta.get("progress", 0)),
        "done": meta.get("done"), "total": meta.get("total"), "message": meta.get("message"),
        "result": None,
    }
    if state == "finished":
        out["progress"] = 100
        out["result"] = job.return_value()
    elif state == "failed":
        out["error"] = _zh_error(job)
        out["message"] = out["error"]
    return out


def retry(job_id: str, *, user_id: Optional[int] = None, everyone: bool = True) -> Job:
    job = _fetch(job_id, user_id, everyone)
    if not job.is_failed:
        raise ValidationError("只有失败的任务可以重试", "job")
    job.requeue()
    return job
