"""carrier rate cards and bills for the scorecard (issue #6 item 7)

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 17:55:00

Reserved in the chain so parallel work can fill it in; empty until then.
"""
from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
