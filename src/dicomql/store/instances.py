"""Index writes and reads of DICOM instances: ingest (with its blob journal), lookups, deletion
with counters kept right, and crash recovery of blobs written but never indexed."""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    Table,
    Text,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal_column,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from dicomql.dicom.attributes import Level
from dicomql.dicom.parse import ParsedInstance, person_name_tokens
from dicomql.store import events
from dicomql.store.blobs import BlobStore
from dicomql.store.index import Index
from dicomql.store.operations import now
from dicomql.store.prepared import Prepared
from dicomql.store.records import InstanceRecord
from dicomql.store.schema import (
    blob_journal,
    dicom_stores,
    instance_blobs,
    instances,
    series,
    studies,
)
from dicomql.store.schema import person_name_tokens as name_tokens

log = logging.getLogger("dicomql.store")

_RETRIES = 8


class Outcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # the same instance, byte for byte, was already stored
    CONFLICT = "conflict"  # the same UIDs with different bytes
    INVALID = "invalid"  # values the index cannot hold
    UNREADABLE = "unreadable"  # not a PS3.10 instance the store can read
    STUDY_MISMATCH = "study-mismatch"  # not in the study the request named (STOW-RS)
    OUT_OF_RESOURCES = "out-of-resources"  # refused below the free-space floor


# PS3.4 Table B.2-1 / PS3.18 10.5.3: the FailureReason (0008,1197) of each refusal.
PROCESSING_FAILURE = 0x0110  # 272: Google reports a UID conflict with different bytes as this
CANNOT_UNDERSTAND = 0xC000  # 49152: not a readable DICOM instance
# PS3.18 names no reason for "Study Instance UID does not match the target resource"; 0xA900
# ("Data Set does not match SOP Class", PS3.4 B.2.3) is the closest class of error (a choice
# recorded in docs/service.md; Google's conformance statement does not say).
STUDY_MISMATCH = 0xA900
OUT_OF_RESOURCES = 0xA700  # A7xx "Refused: Out of Resources" (below the free-space floor)
_FAILURE_REASONS = {
    Outcome.CONFLICT: PROCESSING_FAILURE,
    Outcome.INVALID: CANNOT_UNDERSTAND,
    Outcome.UNREADABLE: CANNOT_UNDERSTAND,
    Outcome.STUDY_MISMATCH: STUDY_MISMATCH,
    Outcome.OUT_OF_RESOURCES: OUT_OF_RESOURCES,
}


@dataclass(frozen=True)
class InstanceOutcome:
    """What became of one instance given to the store: stored, already there, or refused (with
    the DICOM FailureReason a STOW-RS response or a C-STORE status reports)."""

    outcome: Outcome
    message: str = ""
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None

    @classmethod
    def of(
        cls, parsed: ParsedInstance | None, outcome: Outcome, message: str = ""
    ) -> InstanceOutcome:
        if parsed is None:
            return cls(outcome, message)
        return cls(
            outcome,
            message,
            parsed.sop_class_uid,
            parsed.sop_instance_uid,
            parsed.study_instance_uid,
            parsed.series_instance_uid,
        )

    @property
    def ok(self) -> bool:
        """Stored, or stored already (Cloud Healthcare answers a duplicate as a success)."""
        return self.outcome in (Outcome.STORED, Outcome.DUPLICATE)

    @property
    def failure_reason(self) -> int | None:
        return _FAILURE_REASONS.get(self.outcome)


class StoreNotFound(LookupError):
    """The DICOM store was deleted while instances were being stored into it."""


# --- the blob journal -----------------------------------------------------------------------


def journal_blobs(index: Index, keys: list[str]) -> None:
    """Record ``keys`` before their files are written, so a crash leaves nothing unaccounted
    for (recovery deletes any journaled blob no instance row references)."""
    rows = [{"blob_key": key, "create_time": now()} for key in keys]
    index.writes.run(lambda conn: conn.execute(insert(blob_journal), rows))


def unjournal_blobs(index: Index, keys: list[str]) -> None:
    """Forget journaled keys whose blobs were never written."""
    if keys:
        index.writes.run(
            lambda conn: conn.execute(delete(blob_journal).where(blob_journal.c.blob_key.in_(keys)))
        )


def discard_blob(index: Index, blobs: BlobStore, key: str, *, unless_indexed: bool = False) -> None:
    """Remove a journaled blob that was not indexed (failed or duplicate), then its entry.

    With ``unless_indexed``, first make sure no instance row references it (after an error
    whose outcome is unknown, e.g. a commit whose acknowledgement was lost).
    """
    if unless_indexed:
        with index.connect() as conn:
            referenced = conn.execute(
                select(instances.c.pk).where(instances.c.blob_key == key).limit(1)
            ).first()
        if referenced is not None:
            return
    blobs.delete(key)
    index.writes.run(lambda conn: _UNJOURNAL.run(conn, {"key": key}))


def recover_journal(index: Index, blobs: BlobStore, older_than: timedelta | None = None) -> int:
    """Delete blobs journaled before a crash that no committed instance row references.

    Args:
        older_than: only entries at least this old. When several processes share one index,
            another process's STOW in flight has young entries that must not be touched; a
            single process recovering at startup passes None (everything is left over).
    """
    removed = 0
    query = select(blob_journal.c.blob_key)
    if older_than is not None:
        # Other servers' janitors may sweep at the same moment: each takes different entries
        # (PostgreSQL; SQLite has one writer at a time and ignores the clause).
        query = query.where(blob_journal.c.create_time < now() - older_than).with_for_update(
            skip_locked=True
        )
    with index.begin() as conn:
        keys = [row.blob_key for row in conn.execute(query)]
        for key in keys:
            referenced = conn.execute(
                select(instances.c.pk).where(instances.c.blob_key == key).limit(1)
            ).first()
            if referenced is None:
                blobs.delete(key)
                removed += 1
        if keys:
            conn.execute(delete(blob_journal).where(blob_journal.c.blob_key.in_(keys)))
    return removed


# --- ingest ---------------------------------------------------------------------------------


def index_instances(
    index: Index,
    store_pk: int,
    records: list[InstanceRecord],
    *,
    action: str = events.STORE_INSTANCES,
    storage_class: str | None = None,
    unjournal: Sequence[str] = (),
) -> list[InstanceOutcome]:
    """Index written blobs in one transaction (group commit: one fsync for the lot). Each
    instance's study, series and instance rows, counters, name tokens and journal entry change
    together under its own savepoint; nothing is visible before the commit.

    Concurrent writers of the same study or instance collide on the unique constraints; the
    loser's savepoint is rolled back and retried, and then sees the winner's rows (a duplicate
    or a conflict, never two rows).

    Args:
        action: what stores them, for the store's notifications and streams (issue 5):
            StoreInstances, ImportDicomData, DeidentifyDicomStore.
        storage_class: the storage class the caller gives them (import's
            ``blobStorageSettings``); STANDARD when None.
        unjournal: keys the caller journaled but never wrote, forgotten in the same
            transaction (one commit less).

    Raises:
        StoreNotFound: the store is gone (deleted by a request that committed first); nothing
            was indexed.
    """

    # One instance (a C-STORE, most STOW requests) is indexed without a savepoint of its own:
    # a collision or a value the index cannot hold rolls back its whole transaction (or the
    # group commit's savepoint around it), and it runs again the careful way, with savepoints.
    alone = len(records) == 1

    def work(conn: Connection) -> list[InstanceOutcome]:
        if unjournal:
            conn.execute(delete(blob_journal).where(blob_journal.c.blob_key.in_(unjournal)))
        # The store's row locked, and its resource read for the notifications in one go.
        resource = _LOCK_STORE_RESOURCE.scalar(conn, {"store": store_pk})
        if resource is None:
            raise StoreNotFound(f"DICOM store {store_pk} no longer exists.")
        if alone:
            results = [_index_instance(conn, store_pk, records[0], storage_class)]
        else:
            results = [
                _index_with_savepoint(conn, store_pk, record, storage_class) for record in records
            ]
        _announce_stored(conn, store_pk, resource, records, results, action, storage_class)
        return results

    for attempt in range(_RETRIES):
        try:
            # With other writers of this process, in one commit (store/group_commit.py).
            return index.writes.run(work)
        except (IntegrityError, DataError):
            if not alone:
                raise
            alone = False  # nothing of it was committed: again, under a savepoint
        except DBAPIError as exc:
            # PostgreSQL deadlock (40P01) or serialization failure (40001) between writers
            # updating the same counters: retry, the transaction left nothing behind.
            code = getattr(exc.orig, "sqlstate", None)
            if code not in ("40P01", "40001") or attempt == _RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def _announce_stored(
    conn: Connection,
    store_pk: int,
    resource: str,
    records: list[InstanceRecord],
    results: list[InstanceOutcome],
    action: str,
    storage_class: str | None,
) -> None:
    """Outbox rows for the store's notificationConfig(s) and streamConfigs, in the transaction
    that indexes the instances, so a committed instance never misses its notification; nothing
    more when the store's ``resource`` (its JSON text) names none (:mod:`dicomql.store.events`).
    """
    stored = [
        record
        for record, result in zip(records, results, strict=True)
        if result.outcome is Outcome.STORED
    ]
    if stored:
        events.enqueue_stored(
            conn, store_pk, stored, action=action, storage_class=storage_class, resource=resource
        )


def lock_store(conn: Connection, store_pk: int) -> bool:
    """Serialize a store's instance writers on PostgreSQL, as BEGIN IMMEDIATE does on SQLite;
    False if the store no longer exists.

    Under READ COMMITTED, an ingest that read a series row and a delete that removed that
    series' last instance could both commit, leaving counters off by one and blobs without rows
    (tests/reliability/test_concurrency.py, PostgreSQL). SQLite ignores FOR UPDATE.
    """
    return conn.execute(_LOCK_STORE, {"store": store_pk}).first() is not None


_LOCK_STORE = (
    select(dicom_stores.c.pk).where(dicom_stores.c.pk == bindparam("store")).with_for_update()
)
# The text, not the decoded JSON: the notifications need it only when it names a destination.
_LOCK_STORE_RESOURCE = Prepared(
    select(cast(dicom_stores.c.resource, Text))
    .where(dicom_stores.c.pk == bindparam("store"))
    .with_for_update()
)


def _index_with_savepoint(
    conn: Connection, store_pk: int, record: InstanceRecord, storage_class: str | None
) -> InstanceOutcome:
    for attempt in range(_RETRIES):
        savepoint = conn.begin_nested()
        try:
            result = _index_instance(conn, store_pk, record, storage_class)
        except IntegrityError:
            savepoint.rollback()
            if attempt == _RETRIES - 1:
                raise
            continue
        except DataError as exc:
            # A value the index cannot hold (PostgreSQL checks lengths and ranges strictly).
            savepoint.rollback()
            log.warning("cannot index %s: %s", record.parsed.sop_instance_uid, exc)
            return InstanceOutcome.of(
                record.parsed, Outcome.INVALID, "The instance has values the index cannot hold."
            )
        savepoint.commit()
        return result
    raise AssertionError("unreachable")


def _index_instance(
    conn: Connection, store_pk: int, record: InstanceRecord, storage_class: str | None
) -> InstanceOutcome:
    parsed = record.parsed
    moment = now()
    # Rows of (kind, pk, detail, series UID, study UID): see _EXISTING.
    found = {
        row[0]: row
        for row in _EXISTING.rows(
            conn,
            {
                "store": store_pk,
                "instance": parsed.sop_instance_uid,
                "series": parsed.series_instance_uid,
                "study": parsed.study_instance_uid,
            },
        )
    }
    existing = found.get(_INSTANCE)
    if existing is not None:
        _, _, sha256, series_uid, study_uid = existing
        same_place = (
            series_uid == parsed.series_instance_uid and study_uid == parsed.study_instance_uid
        )
        if same_place and sha256 == record.sha256:
            return InstanceOutcome.of(parsed, Outcome.DUPLICATE)
        return InstanceOutcome.of(
            parsed,
            Outcome.CONFLICT,
            f"An instance with SOPInstanceUID {parsed.sop_instance_uid} already exists with"
            " different content.",
        )
    series_row = found.get(_SERIES)
    if series_row is not None and series_row[4] != parsed.study_instance_uid:
        return InstanceOutcome.of(
            parsed,
            Outcome.CONFLICT,
            f"Series {parsed.series_instance_uid} already exists in another study.",
        )
    new_series = series_row is None
    study_row = found.get(_STUDY)
    if study_row is None:
        study_pk = _insert_study(conn, store_pk, record, moment)
        modalities = None
    else:
        _, study_pk, modalities, _, _ = study_row
    if series_row is None:
        columns = parsed.columns[Level.SERIES]
        series_pk = _INSERT_SERIES.scalar(
            conn,
            {
                "store_pk": store_pk,
                "study_pk": study_pk,
                "number_of_instances": 0,
                "size_bytes": 0,
                "attributes": record.series_attributes,
                "update_time": moment,
                **_fit(series, columns),
            },
        )
    else:
        series_pk = series_row[1]
    values = {
        "store_pk": store_pk,
        "study_pk": study_pk,
        "series_pk": series_pk,
        "transfer_syntax_uid": parsed.transfer_syntax_uid,
        "blob_key": record.blob_key,
        "size_bytes": record.size,
        "sha256": record.sha256,
        "storage_class": storage_class or "STANDARD",
        "storage_class_update_time": None if storage_class in (None, "STANDARD") else moment,
        "attributes": record.instance_attributes,
        "create_time": moment,
        **_fit(instances, parsed.columns[Level.INSTANCE]),
    }
    if record.inline_data is None:
        _INSERT_INSTANCE.run(conn, values)
    else:
        instance_pk = _INSERT_INLINE_INSTANCE.scalar(conn, values)
        _INSERT_INSTANCE_BLOB.run(conn, {"instance_pk": instance_pk, "data": record.inline_data})
    _COUNT_IN_SERIES.run(conn, {"row": series_pk, "added": record.size, "moment": moment})
    study_values: dict[str, Any] = {"row": study_pk, "added": record.size, "moment": moment}
    statement = _COUNT_IN_STUDY
    if new_series:
        statement = _COUNT_SERIES_IN_STUDY
        modality = parsed.columns[Level.SERIES].get("modality")
        known = modalities.split("\\") if modalities else []
        if modality and modality not in known:
            statement = _COUNT_SERIES_AND_MODALITY_IN_STUDY
            study_values["modalities"] = "\\".join([*known, modality])[:256]
    statement.run(conn, study_values)
    _UNJOURNAL.run(conn, {"key": record.blob_key})
    return InstanceOutcome.of(parsed, Outcome.STORED)


# The ingest statements, built once with bound parameters and compiled once per dialect
# (store/prepared.py): building Core statements and their cache keys per instance, and
# SQLAlchemy's execution of them, cost more CPU than SQLite spends running them (docs/service.md,
# "Performance"). Parameter names differ from column names, which UPDATE … SET reserves.
# Whether the instance, its series and its study exist, in one round trip: a row of each kind
# found (``kind``), with the instance's sha256 or the study's modalities as ``detail`` and the
# UIDs of the study and series it is in.
_INSTANCE, _SERIES, _STUDY = 0, 1, 2
_EXISTING_ROWS = union_all(
    select(
        literal_column(str(_INSTANCE)).label("kind"),
        instances.c.pk,
        instances.c.sha256.label("detail"),
        series.c.series_instance_uid,
        studies.c.study_instance_uid,
    )
    .join(series, series.c.pk == instances.c.series_pk)
    .join(studies, studies.c.pk == instances.c.study_pk)
    .where(
        instances.c.store_pk == bindparam("store"),
        instances.c.sop_instance_uid == bindparam("instance"),
    ),
    select(
        literal_column(str(_SERIES)),
        series.c.pk,
        null(),
        series.c.series_instance_uid,
        studies.c.study_instance_uid,
    )
    .join(studies, studies.c.pk == series.c.study_pk)
    .where(
        series.c.store_pk == bindparam("store"),
        series.c.series_instance_uid == bindparam("series"),
    ),
    select(
        literal_column(str(_STUDY)),
        studies.c.pk,
        studies.c.modalities_in_study,
        null(),
        studies.c.study_instance_uid,
    ).where(
        studies.c.store_pk == bindparam("store"),
        studies.c.study_instance_uid == bindparam("study"),
    ),
)
_EXISTING = Prepared(_EXISTING_ROWS)


def _settable(table: Table) -> list[str]:
    """The columns an INSERT sets: every one but the key."""
    return [column.key for column in table.columns if not column.primary_key]


_INSERT_STUDY = Prepared(insert(studies).returning(studies.c.pk), keys=_settable(studies))
_INSERT_SERIES = Prepared(insert(series).returning(series.c.pk), keys=_settable(series))
_INSERT_INSTANCE = Prepared(insert(instances), keys=_settable(instances))
_INSERT_INLINE_INSTANCE = Prepared(
    insert(instances).returning(instances.c.pk), keys=_settable(instances)
)
_INSERT_INSTANCE_BLOB = Prepared(insert(instance_blobs))
_INSERT_NAME_TOKENS = insert(name_tokens)
_COUNT_IN_SERIES = Prepared(
    update(series)
    .where(series.c.pk == bindparam("row"))
    .values(
        number_of_instances=series.c.number_of_instances + 1,
        size_bytes=series.c.size_bytes + bindparam("added"),
        update_time=bindparam("moment"),
    )
)
_COUNT_IN_STUDY_UPDATE = (
    update(studies)
    .where(studies.c.pk == bindparam("row"))
    .values(
        number_of_instances=studies.c.number_of_instances + 1,
        size_bytes=studies.c.size_bytes + bindparam("added"),
        update_time=bindparam("moment"),
    )
)
_COUNT_SERIES_IN_STUDY_UPDATE = _COUNT_IN_STUDY_UPDATE.values(
    number_of_series=studies.c.number_of_series + 1
)
_COUNT_IN_STUDY = Prepared(_COUNT_IN_STUDY_UPDATE)
_COUNT_SERIES_IN_STUDY = Prepared(_COUNT_SERIES_IN_STUDY_UPDATE)
_COUNT_SERIES_AND_MODALITY_IN_STUDY = Prepared(
    _COUNT_SERIES_IN_STUDY_UPDATE.values(modalities_in_study=bindparam("modalities"))
)
_UNJOURNAL = Prepared(delete(blob_journal).where(blob_journal.c.blob_key == bindparam("key")))


def _fit(table: Table, values: dict[str, Any]) -> dict[str, Any]:
    """Values cut to their column's length: DICOM allows longer values than some columns
    hold in practice (and files break the limits); PostgreSQL would refuse them."""
    lengths = _lengths(table)
    fitted = {}
    for name, value in values.items():
        length = lengths.get(name)
        if length is not None and isinstance(value, str) and len(value) > length:
            value = value[:length]
        fitted[name] = value
    return fitted


@functools.cache
def _lengths(table: Table) -> dict[str, int]:
    lengths = {column.key: getattr(column.type, "length", None) for column in table.columns}
    return {name: length for name, length in lengths.items() if length is not None}


def _insert_study(conn: Connection, store_pk: int, record: InstanceRecord, moment: Any) -> int:
    parsed = record.parsed
    study_pk: int = _INSERT_STUDY.scalar(
        conn,
        {
            "store_pk": store_pk,
            "number_of_series": 0,
            "number_of_instances": 0,
            "size_bytes": 0,
            "modalities_in_study": None,
            "attributes": record.study_attributes,
            "update_time": moment,
            **_fit(studies, parsed.columns[Level.STUDY]),
        },
    )
    rows = [
        {"study_pk": study_pk, "store_pk": store_pk, "keyword": keyword, "token": token[:324]}
        for keyword, name in parsed.person_names.items()
        for token in sorted(person_name_tokens(name))
    ]
    if rows:
        conn.execute(_INSERT_NAME_TOKENS, rows)
    return study_pk


# --- lookups --------------------------------------------------------------------------------


def find_study(conn: Connection, store_pk: int, study_uid: str) -> Row | None:
    return conn.execute(
        select(studies).where(
            studies.c.store_pk == store_pk, studies.c.study_instance_uid == study_uid
        )
    ).first()


def find_series(conn: Connection, store_pk: int, study_uid: str, series_uid: str) -> Row | None:
    return conn.execute(
        select(series)
        .join(studies, studies.c.pk == series.c.study_pk)
        .where(
            series.c.store_pk == store_pk,
            studies.c.study_instance_uid == study_uid,
            series.c.series_instance_uid == series_uid,
        )
    ).first()


def find_instances(
    conn: Connection,
    store_pk: int,
    study_uid: str,
    series_uid: str | None = None,
    instance_uid: str | None = None,
) -> list[Row]:
    """The instances of a study, series or one instance, in series then instance order."""
    query = _instances_query(series_uid is not None, instance_uid is not None)
    parameters: dict[str, Any] = {"store_pk": store_pk, "study_uid": study_uid}
    if series_uid is not None:
        parameters["series_uid"] = series_uid
    if instance_uid is not None:
        parameters["instance_uid"] = instance_uid
    return list(conn.execute(query, parameters))


@functools.cache
def _instances_query(by_series: bool, by_instance: bool) -> Select[Any]:
    # Built once per shape with bound parameters: building a Core statement and its cache key
    # cost more CPU than running the query on SQLite (docs/service.md, "Performance").
    query = (
        select(
            instances.c.pk,
            instances.c.sop_instance_uid,
            instances.c.sop_class_uid,
            instances.c.transfer_syntax_uid,
            instances.c.blob_key,
            instances.c.size_bytes,
            instances.c.number_of_frames,
            instances.c.rows,
            instances.c.columns,
            instances.c.bits_allocated,
            instances.c.storage_class,
            instances.c.storage_class_update_time,
            series.c.series_instance_uid,
            studies.c.study_instance_uid,
        )
        .join(series, series.c.pk == instances.c.series_pk)
        .join(studies, studies.c.pk == instances.c.study_pk)
        .where(
            studies.c.store_pk == bindparam("store_pk"),
            studies.c.study_instance_uid == bindparam("study_uid"),
        )
    )
    if by_series:
        query = query.where(series.c.series_instance_uid == bindparam("series_uid"))
    if by_instance:
        query = query.where(instances.c.sop_instance_uid == bindparam("instance_uid"))
    order = (series.c.series_number, series.c.pk, instances.c.instance_number, instances.c.pk)
    return query.order_by(*order)


def instance_attributes(conn: Connection, instance_pk: int) -> dict[str, Any] | None:
    """The stored DICOM JSON of one instance (what ingest indexed from its header)."""
    attributes: dict[str, Any] | None = conn.execute(
        select(instances.c.attributes).where(instances.c.pk == instance_pk)
    ).scalar_one_or_none()
    return attributes


def instance_elements(
    conn: Connection, instance_pk: int, tags: tuple[str, ...]
) -> dict[str, Any] | None:
    """The stored DICOM JSON elements ``tags`` (``"00280002"``…) of one instance, each None
    when absent; None when there is no such instance. SQLite picks them out (decoding the
    whole header's JSON costs more than a retrieval of one frame spends elsewhere);
    PostgreSQL's ``->`` on a JSON (not JSONB) column parses the text once per element, so there
    the whole JSON is fetched and decoded once."""
    if conn.dialect.name != "sqlite":
        attributes = instance_attributes(conn, instance_pk)
        return None if attributes is None else {tag: attributes.get(tag) for tag in tags}
    row = conn.execute(_elements_query(tags), {"pk": instance_pk}).first()
    return None if row is None else dict(zip(tags, row, strict=True))


@functools.cache
def _elements_query(tags: tuple[str, ...]) -> Select[Any]:
    return select(*(instances.c.attributes[tag] for tag in tags)).where(
        instances.c.pk == bindparam("pk")
    )


def _structured_size(conn: Connection, where: ColumnElement[bool], *levels: Any) -> int:
    """Bytes of indexed metadata (the DICOM JSON of each row) of the given tables."""
    total = 0
    for table in levels:
        total += int(
            conn.execute(
                select(func.coalesce(func.sum(func.length(cast(table.c.attributes, Text))), 0))
                .select_from(table)
                .where(where)
            ).scalar_one()
        )
    return total


def study_structured_size(conn: Connection, study_pk: int) -> int:
    """Bytes of DICOM JSON the index keeps for a study and every series and instance in it."""
    return (
        _structured_size(conn, studies.c.pk == study_pk, studies)
        + _structured_size(conn, series.c.study_pk == study_pk, series)
        + _structured_size(conn, instances.c.study_pk == study_pk, instances)
    )


def series_structured_size(conn: Connection, series_pk: int) -> int:
    """Bytes of DICOM JSON the index keeps for a series and its instances."""
    return _structured_size(conn, series.c.pk == series_pk, series) + _structured_size(
        conn, instances.c.series_pk == series_pk, instances
    )


def instance_structured_size(conn: Connection, instance_pk: int) -> int:
    """Bytes of DICOM JSON the index keeps for one instance."""
    return _structured_size(conn, instances.c.pk == instance_pk, instances)


# --- deletion -------------------------------------------------------------------------------


def delete_instances(conn: Connection, store_pk: int, instance_pks: list[int]) -> list[str]:
    """Delete instances, their emptied series and studies, and fix the counters above them.

    Returns the blob keys, journaled in this transaction: remove them with
    :func:`dicomql.store.resources.release_blobs` after commit (recovery does, after a crash).
    """
    keys: list[str] = []
    for start in range(0, len(instance_pks), _BATCH):
        keys += _delete_instances(conn, instance_pks[start : start + _BATCH])
    return keys


_BATCH = 500


def _delete_instances(conn: Connection, instance_pks: list[int]) -> list[str]:
    rows = list(
        conn.execute(
            select(
                instances.c.pk,
                instances.c.blob_key,
                instances.c.size_bytes,
                instances.c.series_pk,
                instances.c.study_pk,
            ).where(instances.c.pk.in_(instance_pks))
        )
    )
    moment = now()
    keys = [row.blob_key for row in rows]
    conn.execute(insert(blob_journal), [{"blob_key": key, "create_time": moment} for key in keys])
    conn.execute(delete(instance_blobs).where(instance_blobs.c.instance_pk.in_(instance_pks)))
    conn.execute(delete(instances).where(instances.c.pk.in_(instance_pks)))
    by_series: dict[int, tuple[int, int, int]] = {}
    for row in rows:
        count, size, study_pk = by_series.get(row.series_pk, (0, 0, row.study_pk))
        by_series[row.series_pk] = (count + 1, size + row.size_bytes, study_pk)
    by_study: dict[int, tuple[int, int]] = {}
    for series_pk, (count, size, study_pk) in by_series.items():
        conn.execute(
            update(series)
            .where(series.c.pk == series_pk)
            .values(
                number_of_instances=series.c.number_of_instances - count,
                size_bytes=series.c.size_bytes - size,
                update_time=moment,
            )
        )
        total_count, total_size = by_study.get(study_pk, (0, 0))
        by_study[study_pk] = (total_count + count, total_size + size)
    # A series or study without instances no longer exists (PS3.4: they are defined by them).
    conn.execute(
        delete(series).where(series.c.pk.in_(list(by_series)), series.c.number_of_instances <= 0)
    )
    for study_pk, (count, size) in by_study.items():
        remaining = list(
            conn.execute(select(series.c.modality).where(series.c.study_pk == study_pk))
        )
        if not remaining:
            conn.execute(delete(name_tokens).where(name_tokens.c.study_pk == study_pk))
            conn.execute(delete(studies).where(studies.c.pk == study_pk))
            continue
        modalities: list[str] = []
        for row in remaining:
            if row.modality and row.modality not in modalities:
                modalities.append(row.modality)
        conn.execute(
            update(studies)
            .where(studies.c.pk == study_pk)
            .values(
                number_of_instances=studies.c.number_of_instances - count,
                size_bytes=studies.c.size_bytes - size,
                number_of_series=len(remaining),
                modalities_in_study="\\".join(modalities) or None,
                update_time=moment,
            )
        )
    return keys
