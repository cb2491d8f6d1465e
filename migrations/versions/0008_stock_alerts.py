"""low-stock thresholds and alerts, stock documents (issue #5)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 17:20:00

库存预警: one row per fall of a SKU to its threshold (at most one open alert per
SKU: a partial unique index), and who has read which alert. The threshold
itself (oms_sku.low_stock_threshold, nullable) exists since 0001.
"""
from alembic import op
import sqlalchemy as sa

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'oms_stock_alert',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('sku_id', sa.Integer(), nullable=False),
        sa.Column('threshold', sa.Integer(), nullable=False),
        sa.Column('available', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('recovered_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('recovered_available', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['sku_id'], ['oms_sku.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('oms_stock_alert', schema=None) as batch_op:
        batch_op.create_index('ix_stock_alert_created', ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_oms_stock_alert_sku_id'), ['sku_id'], unique=False)
        batch_op.create_index('uq_stock_alert_open', ['sku_id'], unique=True,
                              sqlite_where=sa.text('recovered_at IS NULL'),
                              postgresql_where=sa.text('recovered_at IS NULL'))

    op.create_table(
        'oms_stock_alert_read',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('alert_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('read_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['alert_id'], ['oms_stock_alert.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['ab_user.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('alert_id', 'user_id', name='uq_stock_alert_read'),
    )
    with op.batch_alter_table('oms_stock_alert_read', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oms_stock_alert_read_user_id'), ['user_id'], unique=False)


def downgrade():
    with op.batch_alter_table('oms_stock_alert_read', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oms_stock_alert_read_user_id'))
    op.drop_table('oms_stock_alert_read')
    with op.batch_alter_table('oms_stock_alert', schema=None) as batch_op:
        batch_op.drop_index('uq_stock_alert_open', sqlite_where=sa.text('recovered_at IS NULL'),
                            postgresql_where=sa.text('recovered_at IS NULL'))
        batch_op.drop_index(batch_op.f('ix_oms_stock_alert_sku_id'))
        batch_op.drop_index('ix_stock_alert_created')
    op.drop_table('oms_stock_alert')
