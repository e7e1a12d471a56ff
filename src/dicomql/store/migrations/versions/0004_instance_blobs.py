"""The bytes of small instances inline in the index (store/inline_blobs.py).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "instance_blobs",
        sa.Column("instance_pk", PK, autoincrement=False, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_pk"],
            ["instances.pk"],
            name=op.f("fk_instance_blobs_instance_pk_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("instance_pk", name=op.f("pk_instance_blobs")),
    )


def downgrade() -> None:
    op.drop_table("instance_blobs")
