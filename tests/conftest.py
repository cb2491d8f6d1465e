"""Fixtures: every test gets its own copy of a migrated, initialised database
with the small world of tests/world.py, and a client that logs in as a role."""
from __future__ import annotations

import os
import re
import shutil
import uuid

import pytest

import config
from app import create_app
from tests import world

TEST_REDIS_URL = os.environ.get("OMS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
TEST_PG_URL = os.environ.get("OMS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def make_app(db_path, **overrides):
    settings = dict(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{db_path}",
        REDIS_URL=TEST_REDIS_URL,
        WTF_CSRF_ENABLED=False,
        RATELIMIT_ENABLED=False,
        # Test sandboxes listen on random loopback ports.
        OMS_ALLOWED_GATEWAY_HOSTS="127.0.0.1",
    )
    settings.update(overrides)
    return create_app(config.TestConfig, **settings)


@pytest.fixture(scope="session")
def template_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("template") / "oms.db"
    app = make_app(path)
    with app.app_context():
        from flask_migrate import upgrade

        from app.extensions import db
        from app.services import setup

        upgrade()
        setup.initialise(admin_password=world.ADMIN_PASSWORD)
        ids = world.build()
        db.session.remove()
        db.engine.dispose()
    return path, ids


@pytest.fixture
def ids(template_db):
    return template_db[1]


def restore(template, path):
    for suffix in ("-wal", "-shm"):
        if os.path.exists(str(path) + suffix):
            os.remove(str(path) + suffix)
    shutil.copy(template, path)


@pytest.fixture
def db_path(template_db, tmp_path):
    """A private copy of the template database, for tests that build their own app."""
    path = tmp_path / "oms.db"
    restore(template_db[0], path)
    return path


@pytest.fixture(scope="session")
def _shared_app(template_db, tmp_path_factory):
    path = tmp_path_factory.mktemp("shared") / "oms.db"
    restore(template_db[0], path)
    return make_app(path), path


@pytest.fixture
def app(_shared_app, template_db):
    """The shared app on a fresh copy of the template database (fast: no app rebuild).

    No app context stays pushed: each test-client request then gets its own, as
    in production (a pushed context would share ``g`` and the DB session across
    requests). Use ``ctx`` for direct database work, or ``with app.app_context()``.
    """
    from app.extensions import db

    shared, path = _shared_app
    with shared.app_context():
        db.session.remove()
        db.engine.dispose()
    restore(template_db[0], path)
    yield shared
    with shared.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def ctx(app):
    """The app with an app context pushed, for tests that work on the database directly."""
    with app.app_context():
        yield app


class RoleClient:
    """A test client logged in as one user."""

    def __init__(self, app, username, password):
        self.app = app
        self.client = app.test_client()
        self.username = username
        resp = self.client.post("/login/", data={"username": username, "password": password})
        assert resp.status_code == 302, f"login failed for {username}"

    def __getattr__(self, item):
        return getattr(self.client, item)


@pytest.fixture
def login(app):
    def _login(username):
        pw = world.ADMIN_PASSWORD if username == "admin" else world.PASSWORD
        return RoleClient(app, username, pw)

    return _login


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    import sqlalchemy as sa

    name = "oms_t_" + uuid.uuid4().hex[:10]
    admin = sa.create_engine(TEST_PG_URL.replace("postgresql://", "postgresql+psycopg://"),
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = re.sub(r"/[^/]+$", f"/{name}", TEST_PG_URL)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def commit_buyer_elsewhere(pg_url: str, phone: str) -> None:
    """Another writer commits a customer with this phone on its own connection: the unique
    phone hash an import or a sync batch then meets (their conflict retries are tested with it)."""
    import sqlalchemy as sa

    from app.services import orders

    other = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with other.begin() as c:
            c.execute(sa.text("INSERT INTO oms_customer (phone_hash, order_count, total_spent, created_at)"
                              " VALUES (:h, 0, 0, now())"), {"h": orders.phone_hash(phone)})
    finally:
        other.dispose()


def buyer_committed_after_first_lookup(monkeypatch, writer_cls, pg_url: str, phone: str) -> list:
    """Patch ``writer_cls.load_customers_by_hash`` so that right after its first lookup
    another writer commits the buyer of ``phone``; returns the list of lookups made."""
    lookups: list = []
    load = writer_cls.load_customers_by_hash

    def load_then_someone_commits_the_buyer(self, hashes, conn=None):
        hashes = list(hashes)
        load(self, hashes, conn)
        lookups.append(hashes)
        if len(lookups) == 1:  # the first attempt only
            commit_buyer_elsewhere(pg_url, phone)

    monkeypatch.setattr(writer_cls, "load_customers_by_hash", load_then_someone_commits_the_buyer)
    return lookups
