"""The schema comes from migrations, and on PostgreSQL they match the models exactly."""
from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.models import Model
from tests.conftest import make_app


def test_migrations_match_models_on_postgresql(pg_url, tmp_path):
    app = make_app(tmp_path / "unused.db", SQLALCHEMY_DATABASE_URI=pg_url)
    with app.app_context():
        from flask_migrate import upgrade

        from app.extensions import db

        upgrade()
        with db.engine.connect() as conn:
            assert conn.dialect.name == "postgresql"
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Model.metadata)
        assert diff == [], diff
        # The constraints that keep data honest exist in the database itself.
        with db.engine.connect() as conn:
            checks = {r[0] for r in conn.execute(sa.text(
                "select conname from pg_constraint where contype in ('c','u')"))}
        for name in ("ck_stock_reserved_le_on_hand", "ck_line_qty_pos", "uq_order_shop_platform_id",
                     "uq_line_order_platform_id", "ck_order_status", "ck_order_flag"):
            assert name in checks
        db.engine.dispose()


def test_init_seeds_roles_and_admin_on_postgresql(pg_url, tmp_path):
    app = make_app(tmp_path / "unused.db", SQLALCHEMY_DATABASE_URI=pg_url)
    with app.app_context():
        from flask_migrate import upgrade

        from app.extensions import appbuilder, db
        from app.services import setup

        upgrade()
        report = setup.initialise(admin_password="Admin-pass-123")
        assert any("admin" in line for line in report)
        assert appbuilder.sm.find_user(username="admin").all_shops is True
        assert {r.name for r in appbuilder.sm.get_all_roles()} >= {"管理员", "运营", "客服", "仓库", "财务"}
        # A negative quantity is refused by the database itself, not just by Python.
        with db.engine.begin() as conn:
            conn.execute(sa.text("insert into oms_shop (name, platform, sync_enabled, sync_interval_seconds,"
                                 " backfill_days, active, created_at) values ('s','taobao',true,60,3,true,now())"))
        try:
            with db.engine.begin() as conn:
                conn.execute(sa.text(
                    "insert into oms_order (shop_id, platform, platform_order_id, status, is_held, goods_amount,"
                    " discount_amount, post_fee, paid_amount, cost_amount, flag, created_at, updated_at,"
                    " is_returning_customer) values (1, 'taobao', 'x', 'to_audit', false, -1, 0, 0, 0, 0, 0,"
                    " now(), now(), false)"))
            raise AssertionError("negative amount accepted")
        except sa.exc.IntegrityError:
            pass
        db.engine.dispose()
