"""order counts: maintained status-tab counters (oms_order_count_delta + triggers) and
keyset indexes with id as the tie-breaker

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 16:46:42.142638

The counters: every change of an order's (shop, platform, status, is_held) inserts
signed rows into ``oms_order_count_delta`` from a trigger on ``oms_order``; a group's
count is ``sum(n)``; services/order_counts.compact folds the rows. Writers only ever
INSERT there, so concurrent transactions never wait on one another's counter rows.

* PostgreSQL: three statement-level triggers with transition tables (one INSERT …
  SELECT … GROUP BY per statement, so a bulk insert of a million orders adds a few
  dozen rows, not a million), plus TRUNCATE. An UPDATE trigger with transition tables
  cannot name columns (``UPDATE OF``); instead the old and new images are summed per
  group and only non-zero groups are written, so a memo edit writes nothing.
* SQLite: row-level triggers; the UPDATE one only ``OF`` the four columns and only
  ``WHEN`` one of them changed.

Triggers are created first and the backfill runs after them in the same transaction:
on PostgreSQL CREATE TRIGGER holds a SHARE ROW EXCLUSIVE lock on oms_order until
commit, so no write can slip between the backfill and the triggers; SQLite has one
writer. NOTE for later migrations: on SQLite a ``batch_alter_table('oms_order')``
that recreates the table drops its triggers; such a migration must create them
again (copy ``_sqlite_triggers`` below) and re-run the backfill after ``DELETE FROM
oms_order_count_delta``.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_COLS = "shop_id, platform, status, is_held"

_PG_FUNCTIONS = {
    "oms_order_count_on_insert": f"""
        INSERT INTO oms_order_count_delta ({_COLS}, n)
        SELECT {_COLS}, count(*)::integer FROM oms_new_rows GROUP BY {_COLS};""",
    "oms_order_count_on_update": f"""
        INSERT INTO oms_order_count_delta ({_COLS}, n)
        SELECT {_COLS}, sum(n)::integer FROM (
            SELECT {_COLS}, -1 AS n FROM oms_old_rows
            UNION ALL
            SELECT {_COLS}, 1 AS n FROM oms_new_rows
        ) AS d
        GROUP BY {_COLS} HAVING sum(n) <> 0;""",
    "oms_order_count_on_delete": f"""
        INSERT INTO oms_order_count_delta ({_COLS}, n)
        SELECT {_COLS}, -count(*)::integer FROM oms_old_rows GROUP BY {_COLS};""",
    "oms_order_count_on_truncate": """
        DELETE FROM oms_order_count_delta;""",
}

_PG_TRIGGERS = [
    ("trg_order_count_insert", "INSERT", "REFERENCING NEW TABLE AS oms_new_rows", "oms_order_count_on_insert"),
    ("trg_order_count_update", "UPDATE", "REFERENCING OLD TABLE AS oms_old_rows NEW TABLE AS oms_new_rows",
     "oms_order_count_on_update"),
    ("trg_order_count_delete", "DELETE", "REFERENCING OLD TABLE AS oms_old_rows", "oms_order_count_on_delete"),
    ("trg_order_count_truncate", "TRUNCATE", "", "oms_order_count_on_truncate"),
]


def _sqlite_triggers():
    ins = f"INSERT INTO oms_order_count_delta ({_COLS}, n) VALUES"
    return [
        f"""CREATE TRIGGER trg_order_count_insert AFTER INSERT ON oms_order
        BEGIN
            {ins} (NEW.shop_id, NEW.platform, NEW.status, NEW.is_held, 1);
        END""",
        f"""CREATE TRIGGER trg_order_count_update AFTER UPDATE OF {_COLS} ON oms_order
        WHEN OLD.shop_id IS NOT NEW.shop_id OR OLD.platform IS NOT NEW.platform
          OR OLD.status IS NOT NEW.status OR OLD.is_held IS NOT NEW.is_held
        BEGIN
            {ins} (OLD.shop_id, OLD.platform, OLD.status, OLD.is_held, -1),
                  (NEW.shop_id, NEW.platform, NEW.status, NEW.is_held, 1);
        END""",
        f"""CREATE TRIGGER trg_order_count_delete AFTER DELETE ON oms_order
        BEGIN
            {ins} (OLD.shop_id, OLD.platform, OLD.status, OLD.is_held, -1);
        END""",
    ]


def _create_triggers():
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for name, body in _PG_FUNCTIONS.items():
            op.execute(f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $fn$\n"
                       f"BEGIN{body}\n    RETURN NULL;\nEND\n$fn$")
        for name, event, referencing, function in _PG_TRIGGERS:
            op.execute(f"CREATE TRIGGER {name} AFTER {event} ON oms_order {referencing}"
                       f" FOR EACH STATEMENT EXECUTE FUNCTION {function}()")
    elif dialect == "sqlite":
        for ddl in _sqlite_triggers():
            op.execute(ddl)
    else:
        raise NotImplementedError(f"order counters: no triggers for {dialect}")


def _drop_triggers():
    dialect = op.get_bind().dialect.name
    for name, *_ in _PG_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON oms_order" if dialect == "postgresql"
                   else f"DROP TRIGGER IF EXISTS {name}")
    if dialect == "postgresql":
        for name in _PG_FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")


def upgrade():
    op.create_table('oms_order_count_delta',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('shop_id', sa.Integer(), nullable=False),
    sa.Column('platform', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('is_held', sa.Boolean(), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    # The grid's keyset order is (paid_at DESC, id DESC): id joins the index as the
    # tie-breaker. Plain index operations (no batch): on SQLite they never recreate
    # the table, which would drop the triggers below.
    op.drop_index('ix_order_shop_status_paid', table_name='oms_order')
    op.create_index('ix_order_shop_status_paid', 'oms_order', ['shop_id', 'status', 'paid_at', 'id'], unique=False)
    op.drop_index('ix_order_status_paid', table_name='oms_order')
    op.create_index('ix_order_status_paid', 'oms_order', ['status', 'paid_at', 'id'], unique=False)
    # the 全部 tab (no status filter) and 异常 (is_held) in the same order
    op.create_index('ix_order_paid', 'oms_order', ['paid_at', 'id'], unique=False)
    op.drop_index('ix_order_held', table_name='oms_order')
    op.create_index('ix_order_held', 'oms_order', ['is_held', 'paid_at', 'id'], unique=False)

    _create_triggers()
    op.execute(f"INSERT INTO oms_order_count_delta ({_COLS}, n)"
               f" SELECT {_COLS}, count(*) FROM oms_order GROUP BY {_COLS}")


def downgrade():
    _drop_triggers()
    op.drop_index('ix_order_held', table_name='oms_order')
    op.create_index('ix_order_held', 'oms_order', ['is_held', 'status'], unique=False)
    op.drop_index('ix_order_paid', table_name='oms_order')
    op.drop_index('ix_order_status_paid', table_name='oms_order')
    op.create_index('ix_order_status_paid', 'oms_order', ['status', 'paid_at'], unique=False)
    op.drop_index('ix_order_shop_status_paid', table_name='oms_order')
    op.create_index('ix_order_shop_status_paid', 'oms_order', ['shop_id', 'status', 'paid_at'], unique=False)
    op.drop_table('oms_order_count_delta')
