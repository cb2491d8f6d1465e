"""无法保存的平台订单: oms_sync_reject, and oms_sync_run.rejected

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 02:00:00

A platform order the sync cannot save (a quantity of 0, a negative amount) no longer fails
the shop's whole batch on every run: the run goes on without it and records it here.
"""
from alembic import op
import sqlalchemy as sa

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'oms_sync_reject',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('shop_id', sa.Integer(), nullable=False),
        sa.Column('platform_order_id', sa.String(length=64), nullable=False),
        sa.Column('error', sa.Text(), nullable=False),
        sa.Column('first_seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_tried_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['shop_id'], ['oms_shop.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('shop_id', 'platform_order_id', name='uq_sync_reject_shop_order'),
    )
    with op.batch_alter_table('oms_sync_run', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rejected', sa.Integer(), server_default='0', nullable=False))


def downgrade():
    with op.batch_alter_table('oms_sync_run', schema=None) as batch_op:
        batch_op.drop_column('rejected')
    op.drop_table('oms_sync_reject')
