"""The RQ worker: every job runs inside an app context and the row scope of the
user who queued it (``job.meta["user_id"]``), or as the system when none."""
from __future__ import annotations

import gc

from rq import Worker


def settle_process() -> None:
    """Call once the app is built in a long-lived process (RQ worker, web server): the
    objects that exist now (the app, its models, FAB's views, the imported libraries:
    about 280,000) live as long as the process, so they are moved out of the cyclic
    collector's reach (``gc.freeze``). Every full collection would otherwise walk them
    all again: a sync job of 10,000 orders paid about a fifth of its CPU for that. RQ forks
    a work horse per job; frozen objects are also not touched (copied) by the collector
    in the child."""
    gc.collect()
    gc.freeze()


class AppWorker(Worker):
    flask_app = None

    def perform_job(self, job, queue):
        from app.extensions import db
        from app.services.scope import as_user

        with self.flask_app.app_context():
            try:
                with as_user(job.meta.get("user_id")), _column_grant_of(job.meta.get("user_id")):
                    return super().perform_job(job, queue)
            finally:
                db.session.remove()


class _column_grant_of:
    """Run a job with the column grant (finance / PII / reveal) of the user who queued
    it, as their requests would: a 客服's export job never sees costs."""

    def __init__(self, user_id):
        self.user_id = user_id

    def __enter__(self):
        from app.extensions import db
        from app.models import OmsUser
        from app.services import columns
        from app.services.scope import as_scope

        self.prev = columns._job_grant
        if self.user_id is not None:
            with as_scope(None):
                user = db.session.get(OmsUser, self.user_id)
                columns._job_grant = (columns.grant_for_user(user) if user is not None
                                      else columns.ColumnGrant.nothing())
        return self

    def __exit__(self, *exc):
        from app.services import columns

        columns._job_grant = self.prev
        return False

