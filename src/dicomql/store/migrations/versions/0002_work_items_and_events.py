"""Work items (operations spread over servers) and the instance event outbox (notifications,
streaming).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "work_items",
        sa.Column("pk", PK, autoincrement=True, nullable=False),
        sa.Column("operation_pk", PK, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("claimed_by", sa.String(length=128), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("counter_success", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("counter_failure", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("checkpoint", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["operation_pk"],
            ["operations.pk"],
            name=op.f("fk_work_items_operation_pk_operations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_work_items")),
        sa.UniqueConstraint("operation_pk", "seq", name="uq_work_items_seq"),
    )
    with op.batch_alter_table("work_items", schema=None) as batch_op:
        batch_op.create_index("ix_work_items_pending", ["done", "lease_until"], unique=False)

    op.create_table(
        "instance_events",
        sa.Column("pk", PK, autoincrement=True, nullable=False),
        sa.Column("store_pk", PK, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("destination", sa.String(length=1024), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(length=128), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=1024), nullable=True),
        sa.ForeignKeyConstraint(
            ["store_pk"],
            ["dicom_stores.pk"],
            name=op.f("fk_instance_events_store_pk_dicom_stores"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_instance_events")),
    )
    with op.batch_alter_table("instance_events", schema=None) as batch_op:
        batch_op.create_index("ix_instance_events_due", ["next_attempt_time"], unique=False)


def downgrade() -> None:
    op.drop_table("instance_events")
    op.drop_table("work_items")
