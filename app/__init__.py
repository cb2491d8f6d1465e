"""Application factory: small initialisers wired in order (see STYLE.md, Airflow's create_app)."""
from __future__ import annotations

import logging

from flask import Flask


def create_app(config: object | None = None, **overrides) -> Flask:
    app = Flask(__name__, instance_path=None)
    app.config.from_object(config or "config.Config")
    app.config.update(overrides)

    from app import initializers as init

    init.init_logging(app)
    init.init_instance(app)
    init.init_crypto(app)
    init.init_jobs(app)  # before the limiter: it decides the Redis URL
    init.init_limiter_storage(app)
    init.init_database(app)
    init.init_csrf(app)
    with app.app_context():
        init.init_appbuilder(app)
        init.init_views(app)
    init.init_jinja(app)
    init.init_proxy(app)
    init.init_security_headers(app)
    init.init_errors(app)
    init.init_cli(app)
    return app


logging.getLogger("flask_appbuilder").setLevel(logging.WARNING)
