"""后台任务 / 我的任务: the jobs page and the job status API the progress bars poll.

Everyone with the page (every seeded role) sees and retries their own jobs; a user
with ``can_write`` on Jobs (the admin) sees and retries everyone's.
"""
from __future__ import annotations

from flask import current_app, flash, g, redirect, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.api import BaseApi, expose as api_expose, safe
from flask_appbuilder.security.decorators import has_access
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from app.services import jobs as job_service
from app.services.display import format_time
from app.services.errors import DomainError


def may_manage_jobs(sm) -> bool:
    """Everyone's jobs, not only one's own: ``can_write`` on Jobs (the admin)."""
    return bool(sm.has_access("can_write", "Jobs"))


class JobsView(BaseView):
    route_base = "/jobs"
    class_permission_name = "Jobs"
    # Retrying one's own failed job needs only the page; others' jobs need can_write,
    # checked in the service (another user's job is not found).
    method_permission_name = {"index": "read", "retry": "read"}
    base_permissions = ["can_read", "can_write"]
    default_view = "index"

    @expose("/")
    @has_access
    def index(self):
        everyone = may_manage_jobs(self.appbuilder.sm)
        data = job_service.list_jobs(current_app.config["OMS_QUEUES"], user_id=g.user.id, everyone=everyone)
        title = _l("Background jobs") if everyone else _l("My jobs")
        return self.render_template("jobs/index.html", jobs=data, fmt=format_time,
                                    state_zh=job_service.STATE_ZH, title=title, everyone=everyone)

    @expose("/retry/<job_id>", methods=["POST"])
    @has_access
    def retry(self, job_id):
        try:
            job_service.retry(job_id, user_id=g.user.id, everyone=may_manage_jobs(self.appbuilder.sm))
            flash("任务已重新排队", "success")
        except DomainError as exc:
            flash(exc.message, "danger")
        return redirect(url_for("JobsView.index"))


class JobApi(BaseApi):
    """``GET /api/v1/job/<job_id>``: a job's state and progress for its owner.

    Response 200::

        {"id": "…", "state": "started", "state_zh": "运行中", "description": "批量审单 120 个订单",
         "progress": 40, "done": 48, "total": 120, "message": "已审单 48/120：…",
         "result": null}            # the job's return value once finished
                                    # (batch actions: services/batch_actions.py; exports: a dict
                                    # with download_url and filename)

    A failed job has ``state`` "failed" and a zh ``error`` (also in ``message``).
    Only the user who queued the job, or a user who may manage jobs, reads it:
    anyone else gets 404, an anonymous caller 401. No role grant is needed beyond
    being logged in (the permission is checked here, not by FAB's ``protect``).
    """

    resource_name = "job"
    allow_browser_login = True
    openapi_spec_tag = "Jobs"

    def _user(self):
        """The logged-in user (session cookie, or a JWT for API clients), or None."""
        if current_user.is_authenticated:
            return current_user
        from flask_jwt_extended import verify_jwt_in_request

        try:
            verify_jwt_in_request(optional=True)
        except Exception:  # noqa: BLE001 - an invalid or expired token is simply not a login
            return None
        user = self.appbuilder.sm.current_user
        return user if user is not None and getattr(user, "is_active", True) else None

    @api_expose("/<job_id>", methods=["GET"])
    @safe
    def status(self, job_id):
        """A background job's progress and result
        ---
        get:
          parameters:
          - in: path
            schema: {type: string}
            name: job_id
          responses:
            200: {description: State, progress and result}
            401: {$ref: '#/components/responses/401'}
            404: {$ref: '#/components/responses/404'}
        """
        user = self._user()
        if user is None:
            return self.response(401, message="请先登录")
        try:
            data = job_service.status(job_id, user_id=user.id,
                                      everyone=may_manage_jobs(self.appbuilder.sm))
        except DomainError as exc:
            return self.response(exc.status_code, **exc.to_dict())
        return self.response(200, **data)
