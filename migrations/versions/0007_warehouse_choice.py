"""warehouse coverage and choice, split policy, reservation timing (issue #5)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 17:20:00

* oms_warehouse_coverage: the provinces (or 全国) each warehouse serves; a warehouse
  without rows serves 全国 (services/warehouse_choice.py), so existing warehouses keep
  shipping after the upgrade.
* oms_shop.allow_split (拆单发货, default off) and oms_shop.reserve_at ('audit' default:
  reserve on 审单 as before; 'payment': reserve when the order is paid).
* oms_order.warehouse_reason: why the warehouse was chosen; oms_order_line.warehouse_id:
  where each line's stock is reserved (split orders).
"""
from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'oms_warehouse_coverage',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('warehouse_id', sa.Integer(), nullable=False),
        sa.Column('province', sa.String(length=16), nullable=False),
        sa.CheckConstraint("province <> ''", name='ck_coverage_province_nonempty'),
        sa.ForeignKeyConstraint(['warehouse_id'], ['oms_warehouse.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('warehouse_id', 'province', name='uq_coverage_wh_province'),
    )
    with op.batch_alter_table('oms_warehouse_coverage', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oms_warehouse_coverage_warehouse_id'), ['warehouse_id'],
                              unique=False)

    with op.batch_alter_table('oms_order', schema=None) as batch_op:
        batch_op.add_column(sa.Column('warehouse_reason', sa.String(length=500), nullable=True))

    with op.batch_alter_table('oms_order_line', schema=None) as batch_op:
        batch_op.add_column(sa.Column('warehouse_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_order_line_warehouse', 'oms_warehouse', ['warehouse_id'], ['id'])

    with op.batch_alter_table('oms_shop', schema=None) as batch_op:
        batch_op.add_column(sa.Column('allow_split', sa.Boolean(), server_default=sa.text('false'),
                                      nullable=False))
        batch_op.add_column(sa.Column('reserve_at', sa.String(length=16), server_default='audit',
                                      nullable=False))
        batch_op.create_check_constraint('ck_shop_reserve_at', "reserve_at IN ('audit','payment')")


def downgrade():
    with op.batch_alter_table('oms_shop', schema=None) as batch_op:
        batch_op.drop_constraint('ck_shop_reserve_at', type_='check')
        batch_op.drop_column('reserve_at')
        batch_op.drop_column('allow_split')

    with op.batch_alter_table('oms_order_line', schema=None) as batch_op:
        batch_op.drop_constraint('fk_order_line_warehouse', type_='foreignkey')
        batch_op.drop_column('warehouse_id')

    with op.batch_alter_table('oms_order', schema=None) as batch_op:
        batch_op.drop_column('warehouse_reason')

    with op.batch_alter_table('oms_warehouse_coverage', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oms_warehouse_coverage_warehouse_id'))
    op.drop_table('oms_warehouse_coverage')
