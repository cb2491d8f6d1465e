"""partial indexes on oms_order's sparse columns; drop the unused platform-modified index

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 19:30:00

A new order is not held, has no write-back, usually no tracking number and is not split:
with partial indexes it adds no entry to those four, which cuts the index work of every
bulk insert (sync and import) and keeps the indexes small. ``ix_order_platform_modified``
served no query (incremental sync reads the platform, not this column) and is dropped.
"""
from alembic import op
import sqlalchemy as sa

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

# name → (columns, PostgreSQL predicate, SQLite predicate)
PARTIAL = {
    # The bare column: PostgreSQL proves it from ``is_held`` or ``is_held = true`` (what the
    # 异常 tab writes), not from ``is_held IS TRUE``.
    'ix_order_held': (['paid_at', 'id'], "is_held", "is_held"),
    'ix_order_writeback': (['writeback_status'], "writeback_status IN ('pending', 'failed')",
                           "writeback_status IS NOT NULL"),
    'ix_oms_order_tracking_number': (['tracking_number'], "tracking_number IS NOT NULL",
                                     "tracking_number IS NOT NULL"),
    'ix_oms_order_split_from_id': (['split_from_id'], "split_from_id IS NOT NULL", "split_from_id IS NOT NULL"),
}
FULL = {  # what 0014 left
    'ix_order_held': ['is_held', 'paid_at', 'id'],
    'ix_order_writeback': ['writeback_status'],
    'ix_oms_order_tracking_number': ['tracking_number'],
    'ix_oms_order_split_from_id': ['split_from_id'],
}


def upgrade():
    op.drop_index('ix_order_platform_modified', table_name='oms_order')
    for name, (columns, pg_where, sqlite_where) in PARTIAL.items():
        op.drop_index(name, table_name='oms_order')
        op.create_index(name, 'oms_order', columns, unique=False,
                        postgresql_where=sa.text(pg_where), sqlite_where=sa.text(sqlite_where))


def downgrade():
    for name, columns in FULL.items():
        op.drop_index(name, table_name='oms_order')
        op.create_index(name, 'oms_order', columns, unique=False)
    op.create_index('ix_order_platform_modified', 'oms_order', ['platform_modified_at'], unique=False)
