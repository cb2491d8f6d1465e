"""parcels, tracking events and logistics exceptions (issue #6)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 17:20:00

Reserved in the chain so parallel work can fill it in; empty until then.
"""
from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
