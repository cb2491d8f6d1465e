"""carrier rate cards and bills for the scorecard (issue #6 item 7)

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 17:55:00

oms_carrier_rate (运费价目: per carrier × destination province, flat or 首重 + 续重)
and oms_carrier_bill_line (快递账单: one imported bill line per parcel; its amount
overrides the rate card for that parcel).
"""
from alembic import op
import sqlalchemy as sa

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('oms_carrier_rate',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('carrier_id', sa.Integer(), nullable=False),
    sa.Column('province', sa.String(length=32), nullable=False),
    sa.Column('first_weight_kg', sa.Numeric(precision=10, scale=3), nullable=False),
    sa.Column('first_price', sa.Numeric(precision=12, scale=2), nullable=True),
    sa.Column('additional_price', sa.Numeric(precision=12, scale=2), nullable=False),
    sa.Column('flat_price', sa.Numeric(precision=12, scale=2), nullable=True),
    sa.Column('note', sa.String(length=200), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('additional_price >= 0', name='ck_carrier_rate_additional_price'),
    sa.CheckConstraint('first_price IS NULL OR first_price >= 0', name='ck_carrier_rate_first_price'),
    sa.CheckConstraint('first_weight_kg >= 0', name='ck_carrier_rate_first_weight'),
    sa.CheckConstraint('flat_price IS NOT NULL OR first_price IS NOT NULL', name='ck_carrier_rate_has_price'),
    sa.CheckConstraint('flat_price IS NULL OR flat_price >= 0', name='ck_carrier_rate_flat_price'),
    sa.ForeignKeyConstraint(['carrier_id'], ['oms_carrier.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('carrier_id', 'province', name='uq_carrier_rate_province')
    )
    with op.batch_alter_table('oms_carrier_rate', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oms_carrier_rate_carrier_id'), ['carrier_id'], unique=False)

    op.create_table('oms_carrier_bill_line',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('parcel_id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=False),
    sa.Column('carrier_id', sa.Integer(), nullable=True),
    sa.Column('tracking_number', sa.String(length=64), nullable=False),
    sa.Column('weight_kg', sa.Numeric(precision=10, scale=3), nullable=True),
    sa.Column('amount', sa.Numeric(precision=12, scale=2), nullable=False),
    sa.Column('source', sa.String(length=200), nullable=True),
    sa.Column('imported_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('imported_by_id', sa.Integer(), nullable=True),
    sa.CheckConstraint('amount >= 0', name='ck_carrier_bill_line_amount'),
    sa.CheckConstraint('weight_kg IS NULL OR weight_kg >= 0', name='ck_carrier_bill_line_weight'),
    sa.ForeignKeyConstraint(['carrier_id'], ['oms_carrier.id'], ),
    sa.ForeignKeyConstraint(['imported_by_id'], ['ab_user.id'], ),
    sa.ForeignKeyConstraint(['order_id'], ['oms_order.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['parcel_id'], ['oms_parcel.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('parcel_id', name='uq_carrier_bill_line_parcel')
    )
    with op.batch_alter_table('oms_carrier_bill_line', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oms_carrier_bill_line_carrier_id'), ['carrier_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_oms_carrier_bill_line_order_id'), ['order_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_oms_carrier_bill_line_tracking_number'), ['tracking_number'], unique=False)



def downgrade():
    with op.batch_alter_table('oms_carrier_bill_line', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oms_carrier_bill_line_tracking_number'))
        batch_op.drop_index(batch_op.f('ix_oms_carrier_bill_line_order_id'))
        batch_op.drop_index(batch_op.f('ix_oms_carrier_bill_line_carrier_id'))

    op.drop_table('oms_carrier_bill_line')
    with op.batch_alter_table('oms_carrier_rate', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oms_carrier_rate_carrier_id'))

    op.drop_table('oms_carrier_rate')
