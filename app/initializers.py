"""One small initialiser per concern, called in order by create_app()."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from flask import Flask, g, jsonify, render_template, request


def init_logging(app: Flask) -> None:
    if not app.debug and not app.testing:
        logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def init_instance(app: Flask) -> None:
    from config import INSTANCE_DIR

    Path(INSTANCE_DIR).mkdir(parents=True, exist_ok=True)
    app.config.setdefault("OMS_INSTANCE_DIR", str(INSTANCE_DIR))
    key = app.config.get("SECRET_KEY") or ""
    if len(key.encode()) < 32:
        raise RuntimeError("SECRET_KEY must be at least 32 bytes")


def init_crypto(app: Flask) -> None:
    from app.services import crypto

    crypto.configure(app.config["OMS_PII_KEY"], app.config["OMS_CREDENTIALS_KEY"])


def init_jobs(app: Flask) -> None:
    from app.jobs import queue

    queue.init_app(app)


def init_limiter_storage(app: Flask) -> None:
    # Login limits live in Redis so every web process shares them.
    if not app.config.get("RATELIMIT_STORAGE_URI"):
        url = app.config["OMS_REDIS_URL_RESOLVED"]
        if url.startswith("unix://"):
            url = "redis+unix://" + url[len("unix://"):]
        app.config["RATELIMIT_STORAGE_URI"] = url


def init_database(app: Flask) -> None:
    from app import models  # noqa: F401  (register every table on the metadata)
    from app.extensions import db, migrate
    from app.services import scope  # noqa: F401  (installs the row-scope hook)
    from app.services import stock_push  # noqa: F401  (stock changes mark listings for 库存同步)

    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("postgres://"):
        app.config["SQLALCHEMY_DATABASE_URI"] = "postgresql://" + uri[len("postgres://"):]
    if uri.startswith("sqlite"):
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {}
    db.init_app(app)
    if uri.startswith("sqlite"):
        from sqlalchemy import event

        with app.app_context():
            @event.listens_for(db.engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=5000")
                cur.close()

            @event.listens_for(db.engine, "savepoint")
            def _sqlite_begin_before_savepoint(conn, _name):
                # pysqlite opens a transaction only before INSERT/UPDATE/DELETE: a SAVEPOINT
                # issued first would itself start the transaction, and its RELEASE would
                # COMMIT everything (a later ROLLBACK could not undo it). Open it first.
                raw = conn.connection.driver_connection
                if not raw.in_transaction:
                    raw.execute("BEGIN")
    migrate.init_app(app, db, directory=str(Path(__file__).resolve().parent.parent / "migrations"),
                     render_as_batch=True, compare_type=True)


def init_csrf(app: Flask) -> None:
    from app.extensions import csrf

    csrf.init_app(app)


def init_appbuilder(app: Flask) -> None:
    from flask_appbuilder import AppBuilder

    from app.extensions import db
    from app.security import OmsSecurityManager
    from app.views.home import OmsIndexView

    appbuilder = AppBuilder(update_perms=False, security_manager_class=OmsSecurityManager,
                            indexview=OmsIndexView, base_template="oms_base.html")
    appbuilder.init_app(app, db.session)


def init_views(app: Flask) -> None:
    from app.views import register_views

    register_views(app.appbuilder)


def init_jinja(app: Flask) -> None:
    from app.services.display import format_money, format_time

    app.jinja_env.filters["oms_time"] = format_time
    app.jinja_env.filters["oms_money"] = format_money


def init_proxy(app: Flask) -> None:
    """Behind N reverse proxies (OMS_PROXY_COUNT), trust their X-Forwarded-* headers, so
    login limits and PII access logs see the client's address, not the proxy's."""
    count = int(app.config.get("OMS_PROXY_COUNT") or 0)
    if count > 0:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count, x_host=count)


def init_security_headers(app: Flask) -> None:
    @app.after_request
    def _headers(resp):
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        return resp


def init_errors(app: Flask) -> None:
    from flask_wtf.csrf import CSRFError

    from app.services.errors import DomainError

    def render_error(message: str, status: int):
        if request.path.startswith("/api/") or request.is_json:
            return jsonify({"message": message}), status
        if "user" not in g.__dict__:  # the error came before FAB's before_request
            from flask_login import current_user

            g.user = current_user
        return render_template("oms_error.html", message=message,
                               base_template=app.appbuilder.base_template,
                               appbuilder=app.appbuilder), status

    @app.errorhandler(DomainError)
    def _domain_error(exc: DomainError):
        if request.path.startswith("/api/") or request.is_json:
            return jsonify(exc.to_dict()), exc.status_code
        return render_error(exc.message, exc.status_code)

    @app.errorhandler(CSRFError)
    def _csrf_error(exc):
        return render_error("表单已过期或缺少安全令牌（CSRF），请刷新页面后重试", 400)

    @app.errorhandler(429)
    def _too_many(exc):
        return render_error("尝试次数过多，请稍后再试", 429)


def init_cli(app: Flask) -> None:
    from app.cli import oms

    app.cli.add_command(oms)
