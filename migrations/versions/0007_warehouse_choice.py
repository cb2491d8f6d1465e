"""warehouse coverage and choice, split policy, reservation timing (issue #5)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 17:20:00

Reserved in the chain so parallel work can fill it in; empty until then.
"""
from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
