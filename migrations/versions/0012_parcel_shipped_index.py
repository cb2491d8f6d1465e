"""index parcels by ship time (the scorecard's and the parcel grid's period filter)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 18:35:00
"""
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index('ix_oms_parcel_shipped_at', 'oms_parcel', ['shipped_at'], unique=False)


def downgrade():
    op.drop_index('ix_oms_parcel_shipped_at', table_name='oms_parcel')
