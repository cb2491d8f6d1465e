"""carrier rules, e-waybill accounts, print templates (issue #6)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 17:20:00

快递规则 (oms_carrier_rule, and the rule that chose an order's carrier on
oms_order.carrier_rule_id), 电子面单账号 and the numbers they issued
(oms_ewaybill_account, oms_waybill), print templates edited in the browser
(oms_print_template) and the print log (oms_print_record).
"""
from alembic import op
import sqlalchemy as sa

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def _restore_order_count_triggers():
    """On SQLite the batch operation above recreates oms_order (a foreign key cannot be
    added in place), which drops the order-count triggers of 0005: create them again
    and recompute the counters. PostgreSQL alters the table in place."""
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


def upgrade():
    op.create_table(
        'oms_carrier_rule',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('priority', sa.Integer(), nullable=False),
        sa.Column('carrier_id', sa.Integer(), nullable=False),
        sa.Column('is_default', sa.Boolean(), nullable=False),
        sa.Column('provinces', sa.Text(), nullable=True),
        sa.Column('min_weight_kg', sa.Numeric(precision=10, scale=3), nullable=True),
        sa.Column('max_weight_kg', sa.Numeric(precision=10, scale=3), nullable=True),
        sa.Column('min_amount', sa.Numeric(12, 2), nullable=True),
        sa.Column('max_amount', sa.Numeric(12, 2), nullable=True),
        sa.Column('shop_id', sa.Integer(), nullable=True),
        sa.Column('merchant_codes', sa.Text(), nullable=True),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('note', sa.String(length=200), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint('max_amount IS NULL OR max_amount >= 0', name='ck_carrier_rule_max_amount'),
        sa.CheckConstraint('max_weight_kg IS NULL OR max_weight_kg >= 0', name='ck_carrier_rule_max_weight'),
        sa.CheckConstraint('min_amount IS NULL OR min_amount >= 0', name='ck_carrier_rule_min_amount'),
        sa.CheckConstraint('min_weight_kg IS NULL OR min_weight_kg >= 0', name='ck_carrier_rule_min_weight'),
        sa.ForeignKeyConstraint(['carrier_id'], ['oms_carrier.id']),
        sa.ForeignKeyConstraint(['shop_id'], ['oms_shop.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
    )
    with op.batch_alter_table('oms_carrier_rule', schema=None) as batch_op:
        batch_op.create_index('ix_carrier_rule_priority', ['active', 'priority', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_oms_carrier_rule_carrier_id'), ['carrier_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_oms_carrier_rule_shop_id'), ['shop_id'], unique=False)

    op.create_table(
        'oms_ewaybill_account',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('carrier_id', sa.Integer(), nullable=False),
        sa.Column('endpoint', sa.String(length=255), nullable=False),
        sa.Column('app_key', sa.String(length=64), nullable=False),
        sa.Column('secret', sa.Text(), nullable=True),
        sa.Column('partner_id', sa.String(length=64), nullable=True),
        sa.Column('sender_name', sa.String(length=64), nullable=True),
        sa.Column('sender_phone', sa.String(length=32), nullable=True),
        sa.Column('sender_province', sa.String(length=32), nullable=True),
        sa.Column('sender_city', sa.String(length=32), nullable=True),
        sa.Column('sender_district', sa.String(length=32), nullable=True),
        sa.Column('sender_address', sa.String(length=255), nullable=True),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['carrier_id'], ['oms_carrier.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('carrier_id'),
    )
    op.create_table(
        'oms_print_template',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('document', sa.String(length=32), nullable=False),
        sa.Column('source', sa.Text(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_by_id', sa.Integer(), nullable=True),
        sa.CheckConstraint("document IN ('label','packing_list')", name='ck_print_template_doc'),
        sa.ForeignKeyConstraint(['updated_by_id'], ['ab_user.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('document'),
    )
    op.create_table(
        'oms_print_record',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('batch', sa.String(length=32), nullable=False),
        sa.Column('order_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('documents', sa.String(length=64), nullable=False),
        sa.Column('print_no', sa.Integer(), nullable=False),
        sa.Column('is_reprint', sa.Boolean(), nullable=False),
        sa.Column('batch_size', sa.Integer(), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(['order_id'], ['oms_order.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['ab_user.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('oms_print_record', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oms_print_record_batch'), ['batch'], unique=False)
        batch_op.create_index('ix_print_record_order', ['order_id', 'id'], unique=False)

    op.create_table(
        'oms_waybill',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('order_id', sa.Integer(), nullable=False),
        sa.Column('account_id', sa.Integer(), nullable=False),
        sa.Column('carrier_id', sa.Integer(), nullable=False),
        sa.Column('tracking_number', sa.String(length=64), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('issued_by_id', sa.Integer(), nullable=True),
        sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('cancelled_by_id', sa.Integer(), nullable=True),
        sa.CheckConstraint("status IN ('issued','cancelled')", name='ck_waybill_status'),
        sa.ForeignKeyConstraint(['account_id'], ['oms_ewaybill_account.id']),
        sa.ForeignKeyConstraint(['cancelled_by_id'], ['ab_user.id']),
        sa.ForeignKeyConstraint(['carrier_id'], ['oms_carrier.id']),
        sa.ForeignKeyConstraint(['issued_by_id'], ['ab_user.id']),
        sa.ForeignKeyConstraint(['order_id'], ['oms_order.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('oms_waybill', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oms_waybill_order_id'), ['order_id'], unique=False)
        batch_op.create_index('ix_waybill_number', ['carrier_id', 'tracking_number'], unique=False)

    with op.batch_alter_table('oms_order', schema=None) as batch_op:
        batch_op.add_column(sa.Column('carrier_rule_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_order_carrier_rule', 'oms_carrier_rule', ['carrier_rule_id'], ['id'],
                                    ondelete='SET NULL')
    _restore_order_count_triggers()


def downgrade():
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        # Recreating oms_order drops it while other tables reference it: SQLite allows
        # that only with foreign keys off (Alembic runs SQLite DDL outside a transaction,
        # where the pragma takes effect).
        op.execute("PRAGMA foreign_keys=OFF")
    with op.batch_alter_table('oms_order', schema=None) as batch_op:
        batch_op.drop_constraint('fk_order_carrier_rule', type_='foreignkey')
        batch_op.drop_column('carrier_rule_id')
    _restore_order_count_triggers()
    if sqlite:
        op.execute("PRAGMA foreign_keys=ON")

    with op.batch_alter_table('oms_waybill', schema=None) as batch_op:
        batch_op.drop_index('ix_waybill_number')
        batch_op.drop_index(batch_op.f('ix_oms_waybill_order_id'))
    op.drop_table('oms_waybill')
    with op.batch_alter_table('oms_print_record', schema=None) as batch_op:
        batch_op.drop_index('ix_print_record_order')
        batch_op.drop_index(batch_op.f('ix_oms_print_record_batch'))
    op.drop_table('oms_print_record')
    op.drop_table('oms_print_template')
    op.drop_table('oms_ewaybill_account')
    with op.batch_alter_table('oms_carrier_rule', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oms_carrier_rule_shop_id'))
        batch_op.drop_index(batch_op.f('ix_oms_carrier_rule_carrier_id'))
        batch_op.drop_index('ix_carrier_rule_priority')
    op.drop_table('oms_carrier_rule')
