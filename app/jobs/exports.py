"""Large grid exports as jobs (queue ``export``), and the daily cleanup of old files.

``queue_export`` is what the export endpoint calls above ``OMS_EXPORT_INLINE_MAX``
rows. ``export_job`` runs in the worker with the row scope *and* the column grant of
the user who queued it (services/exports.as_user), writes
``instance/exports/<file_id>.<ext>`` and returns ``{"download_url", "filename",
"rows"}``, which the 后台任务 page and ``GET /api/v1/job/<id>`` show as a link.
Running it twice writes the same file again (same ``file_id``): safe.
"""
from __future__ import annotations

from typing import Optional

from app.jobs.queue import enqueue, set_progress
from app.services import exports

QUEUE = "export"


def queue_export(req: exports.ExportRequest, *, user_id: Optional[int], filename: str):
    file_id = exports.new_file_id()
    return enqueue(export_job, req.to_dict(), file_id, filename, queue=QUEUE, user_id=user_id,
                   description=f"导出 {filename}")


def export_job(request: dict, file_id: str, filename: str) -> dict:
    from rq import get_current_job

    job = get_current_job()
    user_id = job.meta.get("user_id") if job is not None else None
    req = exports.loads_request(request)
    with exports.as_user(user_id):
        total, _capped = exports.count(req, exports.XLSX_MAX_ROWS + 1)
        set_progress(0, total, "正在导出")
        result = exports.write_file(
            req, user_id=user_id, file_id=file_id, name=filename, total=total,
            progress=lambda done, total_, message=None: set_progress(done, total_ or done, message))
    set_progress(result["rows"], result["rows"], "导出完成")
    return result


def cleanup_exports() -> int:
    """Delete export files older than ``OMS_EXPORT_KEEP_DAYS`` (scheduled daily)."""
    return exports.cleanup()
