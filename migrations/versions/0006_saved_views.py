"""saved grid views (视图) per user and grid

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 17:40:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'oms_saved_view',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('resource', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('state', sa.Text(), nullable=False),
        sa.Column('is_default', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['ab_user.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('user_id', 'resource', 'name', name='uq_saved_view_user_resource_name'),
    )
    with op.batch_alter_table('oms_saved_view', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oms_saved_view_user_id'), ['user_id'], unique=False)


def downgrade():
    with op.batch_alter_table('oms_saved_view', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oms_saved_view_user_id'))
    op.drop_table('oms_saved_view')
