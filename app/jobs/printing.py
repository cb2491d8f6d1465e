"""Printing labels and packing lists: small batches inline, larger ones as a job.

``print_orders`` is what a view or API calls: up to ``INLINE_LIMIT`` orders it
returns the PDF at once; above that it checks the batch (so a bad order is
refused now, with the zh message, not later in the worker) and queues
``print_job``, which writes the PDF under ``instance/prints/`` and reports its
progress in the job metadata.
"""
from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

from flask import current_app

from app.jobs.queue import enqueue, set_progress
from app.services import printing

INLINE_LIMIT = 50
QUEUE = "export"
DEFAULT_DOCUMENTS = ("label", "packing_list")


@dataclass
class PrintOutcome:
    """Either the PDF (inline) or the queued job that will write it."""

    pdf: Optional[bytes] = None
    job: object = None
    out_name: Optional[str] = None


def prints_dir() -> Path:
    path = Path(current_app.config["OMS_INSTANCE_DIR"]) / "prints"
    path.mkdir(parents=True, exist_ok=True)
    return path


def safe_name(out_name: Optional[str]) -> str:
    """A plain file name inside prints/: no directories, ends in .pdf."""
    name = os.path.basename((out_name or "").strip())
    name = re.sub(r"[^\w.\-]", "_", name).lstrip(".")
    if not name:
        name = "print-" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    if not name.lower().endswith(".pdf"):
        name += ".pdf"
    return name


def print_path(out_name: str) -> Path:
    return prints_dir() / safe_name(out_name)


def print_orders(order_ids: Iterable[int], *, user_id: int,
                 documents: Sequence[str] = DEFAULT_DOCUMENTS,
                 out_name: Optional[str] = None) -> PrintOutcome:
    """Print now (≤ INLINE_LIMIT orders) or queue a job; the batch is checked first either way."""
    ids = list(dict.fromkeys(int(i) for i in order_ids))
    if len(ids) <= INLINE_LIMIT:
        return PrintOutcome(pdf=printing.render_orders(ids, documents=documents, user_id=user_id))
    printing.check_orders(ids, documents)
    name = safe_name(out_name or f"print-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-{len(ids)}")
    job = enqueue(print_job, ids, name, documents=tuple(documents), queue=QUEUE, user_id=user_id,
                  description=f"打印 {len(ids)} 个订单的面单/发货单")
    return PrintOutcome(job=job, out_name=name)


def print_job(order_ids: list[int], out_name: str, documents: Sequence[str] = DEFAULT_DOCUMENTS,
              user_id: Optional[int] = None) -> dict:
    """Render the batch into instance/prints/<out_name>; progress in the job metadata.

    The worker runs it in the row scope of the user who queued it; that user is
    also the one logged as having printed (and seen) the buyers' data. The file
    appears only complete: it is written beside its final name and renamed
    after the print log is committed; a failure leaves neither file nor log.
    """
    from rq import get_current_job

    job = get_current_job()
    if user_id is None and job is not None:
        user_id = job.meta.get("user_id")
    path = print_path(out_name)
    partial = path.with_name(path.name + ".part")
    set_progress(0, len(order_ids), "正在检查订单")

    def deliver(pdf: bytes) -> None:
        # Buyers' names, phones and addresses: readable by the service's user only.
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pdf)

    try:
        pdf = printing.render_orders(order_ids, documents=documents, user_id=user_id, source="job",
                                     progress=set_progress, deliver=deliver)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    set_progress(len(order_ids), len(order_ids), "打印文件已生成")
    return {"path": str(path), "name": path.name, "orders": len(order_ids), "bytes": len(pdf)}
