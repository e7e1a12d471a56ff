"""The initial schema.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from dicomql.store.schema import metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Pre-release: the first revision builds whatever schema.py declares. It is frozen into
    # explicit op.create_table calls before the first release that stores user data.
    metadata.create_all(op.get_bind())


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
