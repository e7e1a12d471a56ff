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
from dicomql.store.index import Index
from dicomql.store.instances import (
    InstanceRecord,
    Outcome,
    discard_blob,
    index_instance,
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
) -> IngestResult:
    """Store one instance into a DICOM store; never leaves an orphan blob behind.

    Args:
        storage_class: the blob storage class to give a newly stored instance (import's
            ``blobStorageSettings``); STANDARD when None.
    """
    key = blobs.new_key("instances")
    # Journaled before the file exists, so a crash in between leaves it to recovery.
    journal_blobs(index, [key])
    writer = blobs.writer(key)
    try:
        writer.write(data)
        writer.commit()
    except BaseException:
        writer.abort()
        discard_blob(index, blobs, key)
        raise
    try:
        record = _record(blobs, key, data)
        if isinstance(record, IngestResult):
            discard_blob(index, blobs, key)
            return record
        result = index_instance(index, store_pk, record)
    except BaseException:
        discard_blob(index, blobs, key, unless_indexed=True)
        raise
    uid = record.parsed.sop_instance_uid
    if result.outcome is not Outcome.STORED:
        discard_blob(index, blobs, key)
    if result.outcome is Outcome.STORED:
        if storage_class and storage_class != "STANDARD":
            with index.begin() as conn:
                conn.execute(
                    update(instances)
                    .where(instances.c.blob_key == key)
                    .values(storage_class=storage_class, storage_class_update_time=now())
                )
        return IngestResult(Stored.STORED, sop_instance_uid=uid)
    if result.outcome is Outcome.DUPLICATE:
        return IngestResult(Stored.DUPLICATE, sop_instance_uid=uid)
    if result.outcome is Outcome.CONFLICT:
        return IngestResult(Stored.CONFLICT, result.message, uid)
    return IngestResult(Stored.INVALID, result.message, uid)


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
