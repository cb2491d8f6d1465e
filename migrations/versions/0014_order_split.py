"""拆分订单: oms_order.split_from_id (a part split off an order points to the original trade)

Revision ID: 0014
Revises: 0012
Create Date: 2026-12-01 10:00:00

Chained after 0012 because 0013 did not exist when this was written (0013 is reserved
for another change): re-chain ``down_revision`` to '0013' when that lands.
"""
from alembic import op
import sqlalchemy as sa

revision = '0014'
down_revision = '0012'
branch_labels = None
depends_on = None


def _restore_order_count_triggers():
    """On SQLite the batch operation recreates oms_order (a foreign key cannot be added in
    place), which drops the order-count triggers of 0005: create them again and recompute
    the counters (as 0010 does). PostgreSQL alters the table in place."""
    if op.get_bind().dialect.name != "sqlite":
        return
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("oms_migration_0005",
                                                  Path(__file__).with_name("0005_order_counts.py"))
    counts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(counts)
    counts._drop_triggers()
    counts._create_triggers()
    op.execute("DELETE FROM oms_order_count_delta")
    op.execute(f"INSERT INTO oms_order_count_delta ({counts._COLS}, n)"
               f" SELECT {counts._COLS}, count(*) FROM oms_order GROUP BY {counts._COLS}")


def _alter(fn):
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        # Recreating oms_order drops it while other tables reference it: SQLite allows that
        # only with foreign keys off (Alembic runs SQLite DDL outside a transaction).
        op.execute("PRAGMA foreign_keys=OFF")
    with op.batch_alter_table('oms_order', schema=None) as batch_op:
        fn(batch_op)
    _restore_order_count_triggers()
    if sqlite:
        op.execute("PRAGMA foreign_keys=ON")


def upgrade():
    def add(batch_op):
        batch_op.add_column(sa.Column('split_from_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_order_split_from', 'oms_order', ['split_from_id'], ['id'])
        batch_op.create_index(batch_op.f('ix_oms_order_split_from_id'), ['split_from_id'], unique=False)

    _alter(add)


def downgrade():
    def drop(batch_op):
        batch_op.drop_index(batch_op.f('ix_oms_order_split_from_id'))
        batch_op.drop_constraint('fk_order_split_from', type_='foreignkey')
        batch_op.drop_column('split_from_id')

    _alter(drop)
