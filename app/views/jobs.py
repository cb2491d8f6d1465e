"""后台任务: the admin's view of queued, running, finished and failed jobs."""
from __future__ import annotations

from flask import current_app, flash, redirect, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.security.decorators import has_access, permission_name

from app.services import jobs as job_service
from app.services.display import format_time
from app.services.errors import DomainError


class JobsView(BaseView):
    route_base = "/jobs"
    class_permission_name = "Jobs"
    method_permission_name = {"index": "read", "retry": "write"}
    default_view = "index"

    @expose("/")
    @has_access
    def index(self):
        data = job_service.list_jobs(current_app.config["OMS_QUEUES"])
        return self.render_template("jobs/index.html", jobs=data, fmt=format_time,
                                    state_zh=job_service.STATE_ZH)

    @expose("/retry/<job_id>", methods=["POST"])
    @has_access
    def retry(self, job_id):
        try:
            job_service.retry(job_id)
            flash("任务已重新排队", "success")
        except DomainError as exc:
            flash(exc.message, "danger")
        return redirect(url_for("JobsView.index"))
