"""无法保存的平台订单: oms_sync_reject, oms_sync_run.rejected, hold reason platform_data

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 02:00:00

A platform order the sync cannot save (a quantity of 0, a negative amount) no longer fails
the shop's whole batch on every run: the run goes on without it and records it here. A
stored order whose newer platform copy had to be refused is held (平台数据异常) until the
sync can save the platform's copy again.
"""
from alembic import op
import sqlalchemy as sa

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

_REASONS = ('out_of_stock', 'refunding', 'address_incomplete', 'blacklist', 'unmatched_sku', 'platform_locked',
            'manual')


def _hold_reasons(reasons) -> None:
    with op.batch_alter_table('oms_order_hold', schema=None) as batch_op:
        batch_op.drop_constraint('ck_hold_reason', type_='check')
        batch_op.create_check_constraint('ck_hold_reason', "reason IN (%s)" % ",".join(f"'{r}'" for r in reasons))


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
        sa.Column('times_seen', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['shop_id'], ['oms_shop.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('shop_id', 'platform_order_id', name='uq_sync_reject_shop_order'),
    )
    with op.batch_alter_table('oms_sync_run', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rejected', sa.Integer(), server_default='0', nullable=False))
    _hold_reasons(_REASONS + ('platform_data',))


def downgrade():
    op.execute("DELETE FROM oms_order_hold WHERE reason = 'platform_data'")
    _hold_reasons(_REASONS)
    with op.batch_alter_table('oms_sync_run', schema=None) as batch_op:
        batch_op.drop_column('rejected')
    op.drop_table('oms_sync_reject')
