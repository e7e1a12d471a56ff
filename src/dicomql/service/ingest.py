"""Storing one PS3.10 instance given as bytes: journal its blob key, write and fsync the blob,
parse it, index it and unjournal it, the way STOW does part by part (used by import and
deidentify, which run in worker threads)."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from sqlalchemy import update

from dicomql.dicom.jsonmodel import split_by_level
from dicomql.dicom.parse import UnreadableInstance, read_header
from dicomql.store.blobs import BlobStore
from dicomql.store.events import IMPORT_DICOM_DATA
from dicomql.store.index import Index
from dicomql.store.instances import (
    InstanceRecord,
    Outcome,
    discard_blob,
    index_instances,
    journal_blobs,
)
from dicomql.store.operations import now
from dicomql.store.schema import instances

_HEADER_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError)


class Stored(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # the identical instance was there already: ignored, not overwritten
    CONFLICT = "conflict"  # the same SOPInstanceUID with other bytes: refused
    INVALID = "invalid"  # not a DICOM instance the index can hold


@dataclass(frozen=True)
class IngestResult:
    outcome: Stored
    message: str = ""
    sop_instance_uid: str | None = None

    @property
    def ok(self) -> bool:
        """Stored or already there: Cloud Healthcare ignores duplicates on import."""
        return self.outcome in (Stored.STORED, Stored.DUPLICATE)


def ingest_bytes(
    index: Index,
    blobs: BlobStore,
    store_pk: int,
    data: bytes,
    *,
    storage_class: str | None = None,
    action: str = IMPORT_DICOM_DATA,
) -> IngestResult:
    """Store one instance; see :func:`ingest_many`."""
    return ingest_many(index, blobs, store_pk, [data], storage_class=storage_class, action=action)[
        0
    ]


def ingest_many(
    index: Index,
    blobs: BlobStore,
    store_pk: int,
    items: list[bytes],
    *,
    storage_class: str | None = None,
    action: str = IMPORT_DICOM_DATA,
) -> list[IngestResult]:
    """Store instances into a DICOM store, one result per item; never leaves an orphan blob.

    The keys are journaled in one transaction and the instances indexed in another (group
    commit, as STOW does), each instance still under its own savepoint.

    Args:
        storage_class: the blob storage class of the newly stored instances (import's
            ``blobStorageSettings``); STANDARD when None.
        action: the endpoint storing them, as the store's Pub/Sub notifications name it and
            decide whether to send one (``ImportDicomData`` honours ``sendForBulkImport``;
            ``DeidentifyDicomStore`` is streamed but not notified). See docs/notifications.md.
    """
    if not items:
        return []
    keys = [blobs.new_key("instances") for _ in items]
    # Journaled before the files exist, so a crash in between leaves them to recovery.
    journal_blobs(index, keys)
    results: list[IngestResult | None] = [None] * len(items)
    pending: list[tuple[int, InstanceRecord]] = []
    try:
        for number, (key, data) in enumerate(zip(keys, items, strict=True)):
            writer = blobs.writer(key)
            try:
                writer.write(data)
                writer.commit()
            except BaseException:
                writer.abort()
                raise
            record = _record(blobs, key, data)
            if isinstance(record, IngestResult):
                discard_blob(index, blobs, key)
                results[number] = record
            else:
                pending.append((number, record))
        outcomes = index_instances(
            index,
            store_pk,
            [record for _, record in pending],
            action=action,
            storage_class=storage_class,
        )
    except BaseException:
        for key in keys:
            discard_blob(index, blobs, key, unless_indexed=True)
        raise
    stored: list[str] = []
    for (number, record), outcome in zip(pending, outcomes, strict=True):
        uid = record.parsed.sop_instance_uid
        if outcome.outcome is Outcome.STORED:
            stored.append(record.blob_key)
            results[number] = IngestResult(Stored.STORED, sop_instance_uid=uid)
            continue
        discard_blob(index, blobs, record.blob_key)
        kind = {
            Outcome.DUPLICATE: Stored.DUPLICATE,
            Outcome.CONFLICT: Stored.CONFLICT,
        }.get(outcome.outcome, Stored.INVALID)
        results[number] = IngestResult(kind, outcome.message, uid)
    if stored and storage_class and storage_class != "STANDARD":
        with index.begin() as conn:
            conn.execute(
                update(instances)
                .where(instances.c.blob_key.in_(stored))
                .values(storage_class=storage_class, storage_class_update_time=now())
            )
    assert all(result is not None for result in results)
    return [result for result in results if result is not None]


def _record(blobs: BlobStore, key: str, data: bytes) -> InstanceRecord | IngestResult:
    try:
        with blobs.open(key) as file:
            parsed = read_header(file)
    except UnreadableInstance as exc:
        return IngestResult(Stored.INVALID, str(exc))
    try:
        model = parsed.dicom_json()
    except _HEADER_ERRORS as exc:
        # A header pydicom could read but not convert: bad input, not a server fault (as STOW).
        return IngestResult(
            Stored.INVALID, f"Cannot convert the header: {exc}", parsed.sop_instance_uid
        )
    study, series, _ = split_by_level(model)
    return InstanceRecord(
        parsed=parsed,
        blob_key=key,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        study_attributes=study,
        series_attributes=series,
        instance_attributes=model,
    )
