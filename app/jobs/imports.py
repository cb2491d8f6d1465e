"""导入 as an RQ job: the page uploads the file(s), the job imports them with progress.

The job takes paths and plain values, runs in the row scope of the user who queued
it (the worker's ``as_user``), and is safe to run twice: an import is an upsert, so
a second run finds every order unchanged.
"""
from __future__ import annotations

from typing import Optional, Sequence

from app.jobs.queue import enqueue, set_progress

QUEUE = "default"


def start_import(files: Sequence, *, user_id: int, shop: Optional[str] = None, valid_only: bool = False,
                 profile_names: Optional[Sequence] = None, mappings: Optional[Sequence] = None,
                 description: Optional[str] = None):
    """Queue :func:`import_job`; ``files`` are (path, label) pairs already saved."""
    return enqueue(import_job, [list(f) for f in files], shop=shop, valid_only=valid_only,
                   profile_names=list(profile_names or []) or None, mappings=list(mappings or []) or None,
                   queue=QUEUE, user_id=user_id, description=description or "导入表格")


def import_job(files: list, shop: Optional[str] = None, valid_only: bool = False,
               profile_names: Optional[list] = None, mappings: Optional[list] = None) -> dict:
    from pathlib import Path

    from rq import get_current_job

    from app.services.imports import ImportFileError, run_import

    job = get_current_job()
    user_id = job.meta.get("user_id") if job is not None else None
    report_dir = Path(files[0][0]).parent if files else None
    set_progress(0, 1, "正在读取文件")
    try:
        result = run_import([tuple(f) for f in files], profile_names=profile_names, mappings=mappings, shop=shop,
                            valid_only=valid_only, user_id=user_id, progress=set_progress, report_dir=report_dir)
    except ImportFileError as exc:
        set_progress(1, 1, exc.message)
        return {"ok": False, "applied": False, "summary": exc.message, "errors": [exc.message],
                "error_count": 1, "report_path": None}
    out = result.to_dict()
    out["ok"] = result.ok
    set_progress(1, 1, result.summary)
    return out
