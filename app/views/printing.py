"""打印模板 (the template editor with a live preview) and the download of a batch print.

The editor posts the edited source to ``preview`` (a PDF of a sample order, or a zh
error naming the line) and to ``save``, which stores it only if it previews cleanly
(services/printing.py: the same sandboxed environment, font and layout checks as a
real print)."""
from __future__ import annotations

from flask import Response, flash, g, redirect, request, send_file, url_for
from flask_appbuilder import BaseView, expose
from flask_appbuilder.security.decorators import has_access
from flask_login import current_user

from app.services import printing
from app.services.errors import DomainError


class PrintTemplateView(BaseView):
    route_base = "/print-templates"
    class_permission_name = "PrintTemplate"
    method_permission_name = {"index": "read", "edit": "read", "preview": "read", "save": "write",
                              "reset": "write"}
    base_permissions = ["can_read", "can_write"]
    default_view = "index"

    @expose("/")
    @has_access
    def index(self):
        rows = []
        stored = printing.stored_templates()
        for doc, zh in printing.DOCUMENTS.items():
            rows.append({"document": doc, "zh": zh, "custom": doc in stored})
        return self.render_template("printing/templates_index.html", rows=rows)

    def _document(self, document):
        if document not in printing.DOCUMENTS:
            flash(f"未知的模板：{document}", "danger")
            return None
        return document

    @expose("/<document>/", methods=["GET"])
    @has_access
    def edit(self, document):
        if self._document(document) is None:
            return redirect(url_for("PrintTemplateView.index"))
        source, custom = printing.current_source(document)
        return self.render_template("printing/template_edit.html", document=document,
                                    zh=printing.DOCUMENTS[document], source=source, custom=custom, error=None)

    @expose("/<document>/preview", methods=["POST"])
    @has_access
    def preview(self, document):
        body = request.get_json(silent=True) or {}
        source = body.get("source") if isinstance(body, dict) else None
        try:
            pdf = printing.preview(document, source if isinstance(source, str) else "")
        except DomainError as exc:
            return {"message": exc.message}, exc.status_code
        resp = Response(pdf, mimetype="application/pdf")
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @expose("/<document>/save", methods=["POST"])
    @has_access
    def save(self, document):
        if self._document(document) is None:
            return redirect(url_for("PrintTemplateView.index"))
        source = request.form.get("source") or ""
        try:
            printing.save_template(document, source, user_id=g.user.id)
        except DomainError as exc:
            # Nothing saved: the editor shows the error and keeps what was typed.
            return self.render_template("printing/template_edit.html", document=document,
                                        zh=printing.DOCUMENTS[document], source=source,
                                        custom=document in printing.stored_templates(), error=exc.message), 422
        flash(f"{printing.DOCUMENTS[document]}模板已保存", "success")
        return redirect(url_for("PrintTemplateView.edit", document=document))

    @expose("/<document>/reset", methods=["POST"])
    @has_access
    def reset(self, document):
        try:
            done = printing.reset_template(document)
        except DomainError as exc:
            flash(exc.message, "danger")
            return redirect(url_for("PrintTemplateView.index"))
        flash("已恢复为默认模板" if done else "当前已是默认模板", "success")
        return redirect(url_for("PrintTemplateView.edit", document=document))


class PrintDownloadView(BaseView):
    """The PDF of a batch print (订单工作台 → 打印): only for who printed it, or an admin."""

    route_base = "/printing"
    class_permission_name = "Order"
    method_permission_name = {"download": "read"}
    base_permissions = ["can_read"]

    @expose("/download/<file_id>")
    @has_access
    def download(self, file_id):
        from app.services.exports import content_disposition

        is_admin = self.appbuilder.sm.auth_role_admin in {r.name for r in (current_user.roles or [])}
        try:
            path, name = printing.print_file(file_id, user_id=g.user.id, is_admin=is_admin)
        except DomainError as exc:
            flash(exc.message, "danger")
            return redirect(url_for("OrderWorkbenchView.index"))
        resp = send_file(path, mimetype="application/pdf", max_age=0)
        resp.headers["Content-Disposition"] = content_disposition(name).replace("attachment", "inline", 1)
        resp.headers["Cache-Control"] = "no-store"
        return resp
