"""IAM policies of datasets and DICOM stores (getIamPolicy / setIamPolicy).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "iam_policies",
        sa.Column("pk", PK, autoincrement=True, nullable=False),
        sa.Column("dataset_pk", PK, nullable=True),
        sa.Column("store_pk", PK, nullable=True),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("etag", sa.String(length=64), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_pk"],
            ["datasets.pk"],
            name=op.f("fk_iam_policies_dataset_pk_datasets"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["store_pk"],
            ["dicom_stores.pk"],
            name=op.f("fk_iam_policies_store_pk_dicom_stores"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_iam_policies")),
        sa.UniqueConstraint("dataset_pk", name="uq_iam_policies_dataset"),
        sa.UniqueConstraint("store_pk", name="uq_iam_policies_store"),
    )


def downgrade() -> None:
    op.drop_table("iam_policies")
