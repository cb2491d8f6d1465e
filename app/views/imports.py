"""导入: upload one or two files → preview (detected profile, editable column mapping,
first rows) → a job with a progress bar → counts and the error report. Thin: files
are saved under instance/imports/<token>/, everything else is services/imports."""
from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

from flask import abort, current_app, flash, jsonify, redirect, request, send_file, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.security.decorators import has_access
from flask_login import current_user
from sqlalchemy import select

from app.extensions import db
from app.models import Shop
from app.services.imports import ImportFileError, detect_only
from app.services.imports.templates import template_profiles, write_template

# What a user must be allowed to write to import each entity (on top of Import.write).
ENTITY_PERMISSION = {"orders": "Order", "order_items": "Order", "tracking": "Order", "skus": "Product",
                     "stocktake": "Warehouse", "inbound": "StockDocument", "carrier_bill": "CarrierBill"}
MODES = {"all": "全部成功才导入（有任何错误就不导入）", "valid": "只导入没有错误的行"}


def _upload_root() -> Path:
    return Path(current_app.config["OMS_INSTANCE_DIR"]) / "imports"


def _token_dir(token: str) -> Path:
    if not re.fullmatch(r"[0-9a-f]{32}", token or ""):
        abort(404)
    path = _upload_root() / token
    meta = path / "meta.json"
    if not meta.exists():
        abort(404)
    data = json.loads(meta.read_text())
    if data.get("user_id") != current_user.id:
        abort(404)
    return path


def _safe_label(name: str) -> str:
    name = os.path.basename(name or "").strip() or "upload"
    return re.sub(r"[^\w.\-\u4e00-\u9fff（）()]", "_", name)[:100]


class ImportView(BaseView):
    route_base = "/imports"
    class_permission_name = "Import"
    method_permission_name = {"index": "read", "template": "read", "preview": "write", "start": "write",
                              "job": "write", "status": "write", "report": "write"}
    default_view = "index"

    @expose("/")
    @has_access
    def index(self):
        shops = db.session.scalars(select(Shop).where(Shop.active.is_(True)).order_by(Shop.name)).all()
        return self.render_template("imports/index.html", shops=shops, modes=MODES,
                                    templates=template_profiles())

    @expose("/template/<name>")
    @has_access
    def template(self, name):
        try:
            filename, data = write_template(name)
        except ImportFileError as exc:
            flash(exc.message, "danger")
            return redirect(url_for("ImportView.index"))
        import io

        return send_file(io.BytesIO(data), download_name=filename, as_attachment=True,
                         mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")

    @expose("/preview", methods=["POST"])
    @has_access
    def preview(self):
        uploads = [f for f in request.files.getlist("files") if f and f.filename][:2]
        if not uploads:
            flash("请选择要导入的文件", "danger")
            return redirect(url_for("ImportView.index"))
        token = uuid.uuid4().hex
        folder = _upload_root() / token
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for i, up in enumerate(uploads):
            label = _safe_label(up.filename)
            path = folder / f"{i}-{label}"
            up.save(path)
            files.append([str(path), label])
        meta = {"user_id": current_user.id, "files": files, "shop": request.form.get("shop") or None,
                "mode": "valid" if request.form.get("mode") == "valid" else "all"}
        (folder / "meta.json").write_text(json.dumps(meta, ensure_ascii=False))
        try:
            sheets = detect_only(files)
        except ImportFileError as exc:
            flash(exc.message, "danger")
            return redirect(url_for("ImportView.index"))
        for s in sheets:
            perm = ENTITY_PERMISSION.get(s["entity"])
            if perm and not self.appbuilder.sm.has_access("can_write", perm):
                flash(f"没有导入「{s['title']}」的权限", "danger")
                return redirect(url_for("ImportView.index"))
        return self.render_template("imports/preview.html", token=token, sheets=sheets, meta=meta, modes=MODES)

    @expose("/start/<token>", methods=["POST"])
    @has_access
    def start(self, token):
        from app.jobs.imports import start_import

        folder = _token_dir(token)
        meta = json.loads((folder / "meta.json").read_text())
        mappings = []
        for i, _f in enumerate(meta["files"]):
            mapping = {}
            for key, value in request.form.items():
                m = re.fullmatch(rf"map-{i}-(.+)", key)
                if m:
                    mapping[m.group(1)] = value
            mappings.append(mapping)
        job = start_import([tuple(f) for f in meta["files"]], user_id=current_user.id, shop=meta["shop"],
                           valid_only=meta["mode"] == "valid", mappings=mappings,
                           description="导入 " + "、".join(f[1] for f in meta["files"]))
        return redirect(url_for("ImportView.job", job_id=job.id))

    def _job(self, job_id):
        from rq.exceptions import NoSuchJobError
        from rq.job import Job

        from app.jobs.queue import redis_conn

        try:
            job = Job.fetch(job_id, connection=redis_conn())
        except NoSuchJobError:
            abort(404)
        if job.meta.get("user_id") != current_user.id or job.func_name != "app.jobs.imports.import_job":
            abort(404)
        return job

    @expose("/job/<job_id>")
    @has_access
    def job(self, job_id):
        self._job(job_id)
        return self.render_template("imports/job.html", job_id=job_id)

    @expose("/job/<job_id>/status")
    @has_access
    def status(self, job_id):
        job = self._job(job_id)
        state = job.get_status(refresh=True)
        state = getattr(state, "value", state)
        result = job.return_value() if state == "finished" else None
        if result and result.get("report_path"):
            result = dict(result, report_url=url_for("ImportView.report", job_id=job_id))
        if result:
            result.pop("report_path", None)
        return jsonify(state=state, progress=int(job.meta.get("progress", 0)),
                       message=job.meta.get("message") or "", result=result)

    @expose("/job/<job_id>/report")
    @has_access
    def report(self, job_id):
        job = self._job(job_id)
        result = job.return_value() or {}
        path = Path(result.get("report_path") or "")
        root = _upload_root().resolve()
        if not path.name or root not in path.resolve().parents or not path.exists():
            abort(404)
        return send_file(path, download_name=path.name, as_attachment=True)
