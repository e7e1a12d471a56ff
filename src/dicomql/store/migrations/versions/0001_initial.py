"""The initial schema: datasets, DICOM stores, operations, studies, series, instances.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blob_journal",
        sa.Column("blob_key", sa.String(length=256), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("blob_key", name=op.f("pk_blob_journal")),
    )
    op.create_table(
        "datasets",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("project", sa.String(length=256), nullable=False),
        sa.Column("location", sa.String(length=256), nullable=False),
        sa.Column("dataset_id", sa.String(length=256), nullable=False),
        sa.Column("resource", sa.JSON(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_datasets")),
        sa.UniqueConstraint("project", "location", "dataset_id", name="uq_datasets_name"),
    )
    op.create_table(
        "dicom_stores",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "dataset_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("store_id", sa.String(length=256), nullable=False),
        sa.Column("resource", sa.JSON(), nullable=False),
        sa.Column("blob_storage_settings", sa.JSON(), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_pk"],
            ["datasets.pk"],
            name=op.f("fk_dicom_stores_dataset_pk_datasets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_dicom_stores")),
        sa.UniqueConstraint("dataset_pk", "store_id", name="uq_dicom_stores_name"),
    )
    op.create_table(
        "operations",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "dataset_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("operation_id", sa.String(length=64), nullable=False),
        sa.Column("api_method_name", sa.String(length=256), nullable=False),
        sa.Column("request", sa.JSON(), nullable=True),
        sa.Column("target", sa.String(length=1024), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("counter_success", sa.BigInteger(), nullable=False),
        sa.Column("counter_failure", sa.BigInteger(), nullable=False),
        sa.Column("counter_pending", sa.BigInteger(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("claimed_by", sa.String(length=128), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("checkpoint", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["dataset_pk"],
            ["datasets.pk"],
            name=op.f("fk_operations_dataset_pk_datasets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_operations")),
        sa.UniqueConstraint("dataset_pk", "operation_id", name="uq_operations_name"),
    )
    with op.batch_alter_table("operations", schema=None) as batch_op:
        batch_op.create_index("ix_operations_pending", ["done", "lease_until"], unique=False)

    op.create_table(
        "studies",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("store_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("patient_name", sa.String(length=324), nullable=True),
        sa.Column("patient_name_key", sa.String(length=324), nullable=True),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("patient_birth_date", sa.String(length=8), nullable=True),
        sa.Column("patient_sex", sa.String(length=16), nullable=True),
        sa.Column("accession_number", sa.String(length=64), nullable=True),
        sa.Column("referring_physician_name", sa.String(length=324), nullable=True),
        sa.Column("referring_physician_name_key", sa.String(length=324), nullable=True),
        sa.Column("study_date", sa.String(length=8), nullable=True),
        sa.Column("study_time", sa.String(length=32), nullable=True),
        sa.Column("study_id", sa.String(length=16), nullable=True),
        sa.Column("study_description", sa.String(length=64), nullable=True),
        sa.Column("modalities_in_study", sa.String(length=256), nullable=True),
        sa.Column("number_of_series", sa.Integer(), nullable=False),
        sa.Column("number_of_instances", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=True),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["store_pk"],
            ["dicom_stores.pk"],
            name=op.f("fk_studies_store_pk_dicom_stores"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_studies")),
        sa.UniqueConstraint("store_pk", "study_instance_uid", name="uq_studies_uid"),
    )
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.create_index(
            "ix_studies_accession_number",
            ["store_pk", "accession_number"],
            unique=False,
            postgresql_ops={"accession_number": "text_pattern_ops"},
        )
        batch_op.create_index(
            "ix_studies_patient_id",
            ["store_pk", "patient_id"],
            unique=False,
            postgresql_ops={"patient_id": "text_pattern_ops"},
        )
        batch_op.create_index(
            "ix_studies_patient_name_key",
            ["store_pk", "patient_name_key"],
            unique=False,
            postgresql_ops={"patient_name_key": "text_pattern_ops"},
        )
        batch_op.create_index(
            "ix_studies_referring_physician_name_key",
            ["store_pk", "referring_physician_name_key"],
            unique=False,
            postgresql_ops={"referring_physician_name_key": "text_pattern_ops"},
        )
        batch_op.create_index("ix_studies_store_pk", ["store_pk", "pk"], unique=False)
        batch_op.create_index("ix_studies_study_date", ["store_pk", "study_date"], unique=False)

    op.create_table(
        "person_name_tokens",
        sa.Column("study_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("store_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("keyword", sa.String(length=64), nullable=False),
        sa.Column("token", sa.String(length=324), nullable=False),
        sa.ForeignKeyConstraint(
            ["store_pk"],
            ["dicom_stores.pk"],
            name=op.f("fk_person_name_tokens_store_pk_dicom_stores"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["study_pk"],
            ["studies.pk"],
            name=op.f("fk_person_name_tokens_study_pk_studies"),
            ondelete="CASCADE",
        ),
    )
    with op.batch_alter_table("person_name_tokens", schema=None) as batch_op:
        batch_op.create_index(
            "ix_person_name_tokens_lookup",
            ["store_pk", "keyword", "token"],
            unique=False,
            postgresql_ops={"token": "text_pattern_ops"},
        )
        batch_op.create_index("ix_person_name_tokens_study", ["study_pk"], unique=False)

    op.create_table(
        "series",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("store_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("study_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=True),
        sa.Column("series_number", sa.Integer(), nullable=True),
        sa.Column("series_description", sa.String(length=64), nullable=True),
        sa.Column("performed_procedure_step_start_date", sa.String(length=8), nullable=True),
        sa.Column("performed_procedure_step_start_time", sa.String(length=32), nullable=True),
        sa.Column("number_of_instances", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=True),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["store_pk"],
            ["dicom_stores.pk"],
            name=op.f("fk_series_store_pk_dicom_stores"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["study_pk"],
            ["studies.pk"],
            name=op.f("fk_series_study_pk_studies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_series")),
        sa.UniqueConstraint("study_pk", "series_instance_uid", name="uq_series_uid"),
    )
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.create_index("ix_series_store_modality", ["store_pk", "modality"], unique=False)
        batch_op.create_index("ix_series_store_pk", ["store_pk", "pk"], unique=False)
        batch_op.create_index(
            "ix_series_store_uid", ["store_pk", "series_instance_uid"], unique=False
        )

    op.create_table(
        "instances",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("store_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("study_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "series_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=True),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        sa.Column("transfer_syntax_uid", sa.String(length=64), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=True),
        sa.Column("columns", sa.Integer(), nullable=True),
        sa.Column("bits_allocated", sa.Integer(), nullable=True),
        sa.Column("number_of_frames", sa.Integer(), nullable=True),
        sa.Column("blob_key", sa.String(length=256), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("storage_class", sa.String(length=16), nullable=False),
        sa.Column("storage_class_update_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_pk"],
            ["series.pk"],
            name=op.f("fk_instances_series_pk_series"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["store_pk"],
            ["dicom_stores.pk"],
            name=op.f("fk_instances_store_pk_dicom_stores"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["study_pk"],
            ["studies.pk"],
            name=op.f("fk_instances_study_pk_studies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_instances")),
        sa.UniqueConstraint("series_pk", "sop_instance_uid", name="uq_instances_uid"),
    )
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.create_index("ix_instances_blob_key", ["blob_key"], unique=False)
        batch_op.create_index("ix_instances_series_pk", ["series_pk", "pk"], unique=False)
        batch_op.create_index("ix_instances_store_pk", ["store_pk", "pk"], unique=False)
        batch_op.create_index(
            "ix_instances_store_sop_class", ["store_pk", "sop_class_uid"], unique=False
        )
        batch_op.create_index(
            "ix_instances_store_uid", ["store_pk", "sop_instance_uid"], unique=False
        )
        batch_op.create_index("ix_instances_study", ["study_pk"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_index("ix_instances_study")
        batch_op.drop_index("ix_instances_store_uid")
        batch_op.drop_index("ix_instances_store_sop_class")
        batch_op.drop_index("ix_instances_store_pk")
        batch_op.drop_index("ix_instances_series_pk")
        batch_op.drop_index("ix_instances_blob_key")

    op.drop_table("instances")
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.drop_index("ix_series_store_uid")
        batch_op.drop_index("ix_series_store_pk")
        batch_op.drop_index("ix_series_store_modality")

    op.drop_table("series")
    with op.batch_alter_table("person_name_tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_person_name_tokens_study")
        batch_op.drop_index(
            "ix_person_name_tokens_lookup", postgresql_ops={"token": "text_pattern_ops"}
        )

    op.drop_table("person_name_tokens")
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_index("ix_studies_study_date")
        batch_op.drop_index("ix_studies_store_pk")
        batch_op.drop_index(
            "ix_studies_referring_physician_name_key",
            postgresql_ops={"referring_physician_name_key": "text_pattern_ops"},
        )
        batch_op.drop_index(
            "ix_studies_patient_name_key", postgresql_ops={"patient_name_key": "text_pattern_ops"}
        )
        batch_op.drop_index(
            "ix_studies_patient_id", postgresql_ops={"patient_id": "text_pattern_ops"}
        )
        batch_op.drop_index(
            "ix_studies_accession_number", postgresql_ops={"accession_number": "text_pattern_ops"}
        )

    op.drop_table("studies")
    with op.batch_alter_table("operations", schema=None) as batch_op:
        batch_op.drop_index("ix_operations_pending")

    op.drop_table("operations")
    op.drop_table("dicom_stores")
    op.drop_table("datasets")
    op.drop_table("blob_journal")
