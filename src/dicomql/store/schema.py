"""The index schema: the resource hierarchy and the DICOM study/series/instance model.

Designed for ten million instances per deployment: every lookup on the request path goes through
a unique key or an index whose leading column is the store, and QIDO's searchable attributes are
real columns (Cloud Healthcare conformance statement, "Search transaction"). Counters at study and
series level are maintained on write so that QIDO never counts rows to answer
NumberOfStudyRelatedInstances.

Conventions:
- DICOM values are stored as their DICOM string form (DA as ``YYYYMMDD``, TM as given), which
  sorts and range-compares correctly as text.
- ``*_key`` columns hold the case-folded form of a person name for case-insensitive matching.
- ``attributes`` columns hold the DICOM JSON (PS3.18 F.2) of the level's attributes, used for
  ``includefield`` and for the default return attributes.
- JSON columns use SQLAlchemy's JSON type (TEXT on SQLite, JSON on PostgreSQL).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

# Integer primary keys autoincrement on SQLite only as INTEGER; BigInteger elsewhere.
PrimaryKey = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

UID = String(64)  # PS3.5 9.1: a UID is at most 64 characters
RESOURCE_ID = String(256)  # Cloud Healthcare: dataset and store IDs are 1-256 characters

datasets = Table(
    "datasets",
    metadata,
    Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    Column("project", RESOURCE_ID, nullable=False),
    Column("location", RESOURCE_ID, nullable=False),
    Column("dataset_id", RESOURCE_ID, nullable=False),
    # The Dataset resource without its name: timeZone, encryptionSpec.
    Column("resource", JSON, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
    UniqueConstraint("project", "location", "dataset_id", name="uq_datasets_name"),
)

dicom_stores = Table(
    "dicom_stores",
    metadata,
    Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    Column("dataset_pk", ForeignKey("datasets.pk", ondelete="CASCADE"), nullable=False),
    Column("store_id", RESOURCE_ID, nullable=False),
    # The DicomStore resource without its name: labels, notificationConfig(s), streamConfigs.
    Column("resource", JSON, nullable=False),
    # Store-level BlobStorageSettings (Cloud Healthcare: STANDARD unless set).
    Column("blob_storage_settings", JSON, nullable=True),
    Column("create_time", DateTime(timezone=True), nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False),
    UniqueConstraint("dataset_pk", "store_id", name="uq_dicom_stores_name"),
)

# IAM policies of datasets and DICOM stores (setIamPolicy), kept as Google returns them;
# recorded, not enforced. A row goes with its resource (ON DELETE CASCADE), so a resource
# re-created under the same name starts without a policy, as on Google.
iam_policies = Table(
    "iam_policies",
    metadata,
    Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    Column("dataset_pk", ForeignKey("datasets.pk", ondelete="CASCADE"), nullable=True),
    Column("store_pk", ForeignKey("dicom_stores.pk", ondelete="CASCADE"), nullable=True),
    # The Policy without its etag: version, bindings, auditConfigs.
    Column("policy", JSON, nullable=False),
    Column("etag", String(64), nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False),
    UniqueConstraint("dataset_pk", name="uq_iam_policies_dataset"),
    UniqueConstraint("store_pk", name="uq_iam_policies_store"),
)

operations = Table(
    "operations",
    metadata,
    Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    Column("dataset_pk", ForeignKey("datasets.pk", ondelete="CASCADE"), nullable=False),
    Column("operation_id", String(64), nullable=False),
    Column("api_method_name", String(256), nullable=False),
    # The request that started it, so any worker (in any process) can run or resume it.
    Column("request", JSON, nullable=True),
    # The resource the operation acts on (a store or study name), for display and cleanup.
    Column("target", String(1024), nullable=True),
    Column("create_time", DateTime(timezone=True), nullable=False),
    Column("end_time", DateTime(timezone=True), nullable=True),
    Column("done", Boolean, nullable=False, default=False),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("counter_success", BigInteger, nullable=False, default=0),
    Column("counter_failure", BigInteger, nullable=False, default=0),
    Column("counter_pending", BigInteger, nullable=False, default=0),
    Column("response", JSON, nullable=True),
    Column("error", JSON, nullable=True),
    # Work claiming for workers across processes (issue: scale-out).
    Column("claimed_by", String(128), nullable=True),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    # How many times a worker claimed it (bounds crash loops), and the handler's resume point.
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("checkpoint", JSON, nullable=True),
    UniqueConstraint("dataset_pk", "operation_id", name="uq_operations_name"),
    Index("ix_operations_pending", "done", "lease_until"),
)


def _pattern_ops(column: str) -> dict[str, str]:
    return {column: "text_pattern_ops"}


studies = Table(
    "studies",
    metadata,
    Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    Column("store_pk", ForeignKey("dicom_stores.pk", ondelete="CASCADE"), nullable=False),
    Column("study_instance_uid", UID, nullable=False),
    Column("patient_name", String(324), nullable=True),
    Column("patient_name_key", String(324), nullable=True),
    Column("patient_id", String(64), nullable=True),
    Column("patient_birth_date", String(8), nullable=True),
    Column("patient_sex", String(16), nullable=True),
    Column("accession_number", String(64), nullable=True),
    Column("referring_physician_name", String(324), nullable=True),
    Column("referring_physician_name_key", String(324), nullable=True),
    Column("study_date", String(8), nullable=True),
    Column("study_time", String(32), nullable=True),
    Column("study_id", String(16), nullable=True),
    Column("study_description", String(64), nullable=True),
    # Backslash-joined distinct Modality values of the study's series (ModalitiesInStudy).
    Column("modalities_in_study", String(256), nullable=True),
    Column("number_of_series", Integer, nullable=False, default=0),
    Column("number_of_instances", Integer, nullable=False, default=0),
    Column("size_bytes", BigInteger, nullable=False, default=0),
    Column("attributes", JSON, nullable=True),
    Column("update_time", DateTime(timezone=True), nullable=False),
    UniqueConstraint("store_pk", "study_instance_uid", name="uq_studies_uid"),
    # text_pattern_ops: PostgreSQL serves QIDO's wildcard LIKE 'PID-%' from these indexes only
    # with that operator class (unless the database collation is "C"); equality works as before.
    Index(
        "ix_studies_patient_id", "store_pk", "patient_id", postgresql_ops=_pattern_ops("patient_id")
    ),
    Index(
        "ix_studies_patient_name_key",
        "store_pk",
        "patient_name_key",
        postgresql_ops=_pattern_ops("patient_name_key"),
    ),
    Index(
        "ix_studies_accession_number",
        "store_pk",
        "accession_number",
        postgresql_ops=_pattern_ops("accession_number"),
    ),
    Index("ix_studies_study_date", "store_pk", "study_date"),
    Index(
        "ix_studies_referring_physician_name_key",
        "store_pk",
        "referring_physician_name_key",
        postgresql_ops=_pattern_ops("referring_physician_name_key"),
    ),
    # QIDO pages through a store's studies in pk order (/studies?limit=…) without sorting them all.
    Index("ix_studies_store_pk", "store_pk", "pk"),
)

# One row per token of a person name, for Cloud Healthcare's fuzzymatching (token-prefix match).
person_name_tokens = Table(
    "person_name_tokens",
    metadata,
    Column("study_pk", ForeignKey("studies.pk", ondelete="CASCADE"), nullable=False),
    Column("store_pk", ForeignKey("dicom_stores.pk", ondelete="CASCADE"), nullable=False),
    Column("keyword", String(64), nullable=False),  # PatientName, ReferringPhysicianName
    Column("token", String(324), nullable=False),  # case-folded
    # text_pattern_ops lets PostgreSQL serve the fuzzy token-prefix LIKE 'jo%' from this index.
    Index(
        "ix_person_name_tokens_lookup",
        "store_pk",
        "keyword",
        "token",
        postgresql_ops={"token": "text_pattern_ops"},
    ),
    Index("ix_person_name_tokens_study", "study_pk"),
)

series = Table(
    "series",
    metadata,
    Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    Column("store_pk", ForeignKey("dicom_stores.pk", ondelete="CASCADE"), nullable=False),
    Column("study_pk", ForeignKey("studies.pk", ondelete="CASCADE"), nullable=False),
    Column("series_instance_uid", UID, nullable=False),
    Column("modality", String(16), nullable=True),
    Column("series_number", Integer, nullable=True),
    Column("series_description", String(64), nullable=True),
    Column("performed_procedure_step_start_date", String(8), nullable=True),
    Column("performed_procedure_step_start_time", String(32), nullable=True),
    Column("number_of_instances", Integer, nullable=False, default=0),
    Column("size_bytes", BigInteger, nullable=False, default=0),
    Column("attributes", JSON, nullable=True),
    Column("update_time", DateTime(timezone=True), nullable=False),
    UniqueConstraint("study_pk", "series_instance_uid", name="uq_series_uid"),
    Index("ix_series_store_uid", "store_pk", "series_instance_uid"),
    Index("ix_series_store_modality", "store_pk", "modality"),
    # QIDO /series pages in pk order without a sort.
    Index("ix_series_store_pk", "store_pk", "pk"),
)

instances = Table(
    "instances",
    metadata,
    Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    Column("store_pk", ForeignKey("dicom_stores.pk", ondelete="CASCADE"), nullable=False),
    Column("study_pk", ForeignKey("studies.pk", ondelete="CASCADE"), nullable=False),
    Column("series_pk", ForeignKey("series.pk", ondelete="CASCADE"), nullable=False),
    Column("sop_instance_uid", UID, nullable=False),
    Column("sop_class_uid", UID, nullable=True),
    Column("instance_number", Integer, nullable=True),
    Column("transfer_syntax_uid", UID, nullable=False),
    Column("rows", Integer, nullable=True),
    Column("columns", Integer, nullable=True),
    Column("bits_allocated", Integer, nullable=True),
    Column("number_of_frames", Integer, nullable=True),
    # The stored bytes: where (an opaque key in the blob store), how many, and their SHA-256.
    Column("blob_key", String(256), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("storage_class", String(16), nullable=False, default="STANDARD"),
    Column("storage_class_update_time", DateTime(timezone=True), nullable=True),
    Column("attributes", JSON, nullable=True),
    Column("create_time", DateTime(timezone=True), nullable=False),
    UniqueConstraint("series_pk", "sop_instance_uid", name="uq_instances_uid"),
    Index("ix_instances_store_uid", "store_pk", "sop_instance_uid"),
    Index("ix_instances_study", "study_pk"),
    Index("ix_instances_store_sop_class", "store_pk", "sop_class_uid"),
    # Crash recovery asks, per journaled blob, whether an instance references it.
    Index("ix_instances_blob_key", "blob_key"),
    # QIDO /instances pages in pk order without a sort; instances of a series in pk order.
    Index("ix_instances_store_pk", "store_pk", "pk"),
    Index("ix_instances_series_pk", "series_pk", "pk"),
)

# The bytes of small instances, kept in the index rather than as files (store/inline_blobs.py):
# inserted in the transaction that indexes the instance, so storing one is a single durable
# write instead of a file, its directory and the index (and no new inode), and deleted with the
# instance's row. Keyed by the instance's row, so it adds no index of its own.
instance_blobs = Table(
    "instance_blobs",
    metadata,
    Column(
        "instance_pk",
        ForeignKey("instances.pk", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("data", LargeBinary, nullable=False),
)

# Blobs written but not yet referenced by a committed index row. A key goes in here before its
# file is written and leaves in the transaction that indexes it, so recovery after a crash
# deletes exactly the leftovers instead of scanning the blob store.
blob_journal = Table(
    "blob_journal",
    metadata,
    Column("blob_key", String(256), primary_key=True),
    Column("create_time", DateTime(timezone=True), nullable=False),
)

# A long-running operation split into pieces any server's workers can claim (issue: scale-out).
# The operation's first claimer plans the items (a slice of source files, of instances to
# de-identify, …); then workers everywhere claim items one at a time with the same lease rules as
# operations (see dicomql.store.work), and whoever finishes the last item completes the
# operation from the items' summed counters.
work_items = Table(
    "work_items",
    metadata,
    Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    Column("operation_pk", ForeignKey("operations.pk", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),  # order within the operation, from 0
    Column("payload", JSON, nullable=False),
    Column("done", Boolean, nullable=False, default=False),
    Column("claimed_by", String(128), nullable=True),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("counter_success", BigInteger, nullable=False, default=0, server_default="0"),
    Column("counter_failure", BigInteger, nullable=False, default=0, server_default="0"),
    # What the item produced that the operation's response or a later item needs.
    Column("result", JSON, nullable=True),
    # Where a worker that lost the item stopped within it (written with the counters, so a
    # re-run resumes after it and counts nothing twice).
    Column("checkpoint", JSON, nullable=True),
    UniqueConstraint("operation_pk", "seq", name="uq_work_items_seq"),
    Index("ix_work_items_pending", "done", "lease_until"),
)

# Outbox of per-instance deliveries: a Pub/Sub message (notificationConfigs) or a row for a
# BigQuery table (streamConfigs). Written in the transaction that indexes the instance, so an
# acknowledged STOW is never missing its notification after a crash; delivered, with retries,
# by whichever server's deliverer claims the row, then deleted.
instance_events = Table(
    "instance_events",
    metadata,
    Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    Column("store_pk", ForeignKey("dicom_stores.pk", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),  # "pubsub" or "bigquery"
    Column("destination", String(1024), nullable=False),  # topic name or table URI
    Column("payload", JSON, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
    # Claiming and retries, as for operations; a failed delivery waits until next_attempt_time.
    Column("claimed_by", String(128), nullable=True),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),
    Column("next_attempt_time", DateTime(timezone=True), nullable=False),
    Column("last_error", String(1024), nullable=True),
    Index("ix_instance_events_due", "next_attempt_time"),
)
