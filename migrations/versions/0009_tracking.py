"""parcels, tracking events and logistics exceptions (issue #6)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 17:20:00

oms_parcel (one tracked tracking number of a shipped order, polled at Kuaidi100),
oms_parcel_event (物流轨迹), oms_logistics_exception (物流异常; at most one open
entry per parcel and reason: a partial unique index).
"""
from alembic import op
import sqlalchemy as sa

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('oms_parcel',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=False),
    sa.Column('carrier_id', sa.Integer(), nullable=True),
    sa.Column('tracking_number', sa.String(length=64), nullable=False),
    sa.Column('kuaidi100_code', sa.String(length=32), nullable=True),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('state_code', sa.String(length=8), nullable=True),
    sa.Column('shipped_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('picked_up_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_event_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('signed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_polled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('next_poll_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('poll_errors', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("state IN ('pending','collected','in_transit','delivering','signed','problem','return_signed','returning','redirected','customs','customs_problem','refused')", name='ck_parcel_state'),
    sa.ForeignKeyConstraint(['carrier_id'], ['oms_carrier.id'], ),
    sa.ForeignKeyConstraint(['order_id'], ['oms_order.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('order_id', 'tracking_number', name='uq_parcel_order_number')
    )
    with op.batch_alter_table('oms_parcel', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oms_parcel_order_id'), ['order_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_oms_parcel_tracking_number'), ['tracking_number'], unique=False)
        batch_op.create_index('ix_parcel_next_poll', ['next_poll_at'], unique=False)

    op.create_table('oms_logistics_exception',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('parcel_id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=24), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('detected_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('assignee_id', sa.Integer(), nullable=True),
    sa.Column('resolution', sa.Text(), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved_by_id', sa.Integer(), nullable=True),
    sa.CheckConstraint("reason IN ('no_pickup','stalled','problem','return_signed','returning','refused','customs_problem')", name='ck_logistics_exception_reason'),
    sa.CheckConstraint("status IN ('open','resolved')", name='ck_logistics_exception_status'),
    sa.ForeignKeyConstraint(['assignee_id'], ['ab_user.id'], ),
    sa.ForeignKeyConstraint(['order_id'], ['oms_order.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['parcel_id'], ['oms_parcel.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['resolved_by_id'], ['ab_user.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('oms_logistics_exception', schema=None) as batch_op:
        batch_op.create_index('ix_logistics_exception_status_detected', ['status', 'detected_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_oms_logistics_exception_order_id'), ['order_id'], unique=False)
        batch_op.create_index('uq_logistics_exception_open', ['parcel_id', 'reason'], unique=True, sqlite_where=sa.text("status = 'open'"), postgresql_where=sa.text("status = 'open'"))

    op.create_table('oms_parcel_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('parcel_id', sa.Integer(), nullable=False),
    sa.Column('event_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('context', sa.Text(), nullable=False),
    sa.Column('area', sa.String(length=100), nullable=True),
    sa.Column('status_text', sa.String(length=32), nullable=True),
    sa.Column('fingerprint', sa.String(length=40), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['parcel_id'], ['oms_parcel.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('parcel_id', 'fingerprint', name='uq_parcel_event_fingerprint')
    )
    with op.batch_alter_table('oms_parcel_event', schema=None) as batch_op:
        batch_op.create_index('ix_parcel_event_parcel_time', ['parcel_id', 'event_time'], unique=False)


def downgrade():
    with op.batch_alter_table('oms_parcel_event', schema=None) as batch_op:
        batch_op.drop_index('ix_parcel_event_parcel_time')

    op.drop_table('oms_parcel_event')
    with op.batch_alter_table('oms_logistics_exception', schema=None) as batch_op:
        batch_op.drop_index('uq_logistics_exception_open', sqlite_where=sa.text("status = 'open'"), postgresql_where=sa.text("status = 'open'"))
        batch_op.drop_index(batch_op.f('ix_oms_logistics_exception_order_id'))
        batch_op.drop_index('ix_logistics_exception_status_detected')

    op.drop_table('oms_logistics_exception')
    with op.batch_alter_table('oms_parcel', schema=None) as batch_op:
        batch_op.drop_index('ix_parcel_next_poll')
        batch_op.drop_index(batch_op.f('ix_oms_parcel_tracking_number'))
        batch_op.drop_index(batch_op.f('ix_oms_parcel_order_id'))

    op.drop_table('oms_parcel')
