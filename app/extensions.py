"""Extension singletons, initialised by the app factory (app/__init__.py).

``appbuilder`` is a proxy to the current app's AppBuilder: the factory builds a
fresh AppBuilder per app (FAB keeps per-app state such as its view list), so
several apps (tests, workers) can live in one process.
"""
from flask import current_app
from flask_appbuilder.models.sqla.base import SQLA
from flask_migrate import Migrate
from flask_wtf.csrf import CSRFProtect
from werkzeug.local import LocalProxy

db = SQLA()
appbuilder = LocalProxy(lambda: current_app.appbuilder)
migrate = Migrate()
# Global CSRF: without it FAB's action_post and delete routes accept token-less POSTs.
csrf = CSRFProtect()
