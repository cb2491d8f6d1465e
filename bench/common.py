"""What every benchmark needs: a scratch PostgreSQL database and the app on it."""
from __future__ import annotations

import re
import uuid


def psycopg_url(url: str) -> str:
    """A plain ``postgresql://`` URL (psycopg's own form) from any SQLAlchemy-style one."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)


def database_url(pg_url: str, name: str) -> str:
    return re.sub(r"/[^/]+$", f"/{name}", psycopg_url(pg_url))


def create_database(pg_url: str, prefix: str = "oms_bench_") -> tuple[str, str]:
    """Create an empty database on the server of ``pg_url``: (name, url)."""
    import psycopg

    name = prefix + uuid.uuid4().hex[:8]
    with psycopg.connect(psycopg_url(pg_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, database_url(pg_url, name)


def drop_database(pg_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(psycopg_url(pg_url), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def build_app(db_url: str, redis_url: str):
    """The app on ``db_url`` as tests/conftest.py's make_app builds it, on psycopg 3, with
    production's permission cache: the tests turn it off (they edit roles and check the
    effect at once), a benchmark measures what a deployed process does."""
    import config
    from app import create_app

    return create_app(config.TestConfig, SQLALCHEMY_DATABASE_URI=db_url.replace("postgresql://",
                                                                                 "postgresql+psycopg://", 1),
                      REDIS_URL=redis_url, WTF_CSRF_ENABLED=False, RATELIMIT_ENABLED=False,
                      OMS_PERMISSION_CACHE_SECONDS=config.Config.OMS_PERMISSION_CACHE_SECONDS)
