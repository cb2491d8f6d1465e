"""The RQ worker: every job runs inside an app context and the row scope of the
user who queued it (``job.meta["user_id"]``), or as the system when none."""
from __future__ import annotations

from rq import Worker


class AppWorker(Worker):
    flask_app = None

    def perform_job(self, job, queue):
        from app.extensions import db
        from app.services.scope import as_user

        with self.flask_app.app_context():
            try:
                with as_user(job.meta.get("user_id")):
                    return super().perform_job(job, queue)
            finally:
                db.session.remove()
