"""Extension singletons, initialised by the app factory (app/__init__.py)."""
from flask_appbuilder import AppBuilder
from flask_appbuilder.models.sqla.base import SQLA
from flask_migrate import Migrate
from flask_wtf.csrf import CSRFProtect

db = SQLA()
appbuilder = AppBuilder(update_perms=False)
migrate = Migrate()
# Global CSRF: without it FAB's action_post and delete routes accept token-less POSTs.
csrf = CSRFProtect()
