"""Index writes of instances: rows and counters per level, name tokens, level attributes,
duplicates and conflicts, deletion, and recovery of journaled blobs after a crash."""

from __future__ import annotations

import errno
import hashlib
import io
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from dicomql.dicom.jsonmodel import split_by_level
from dicomql.dicom.parse import read_header
from dicomql.service.config import ServiceConfig
from dicomql.store import instances as instances_module
from dicomql.store.blobs import LocalBlobStore, LocalBlobWriter
from dicomql.store.index import Index
from dicomql.store.ingest import store_instances
from dicomql.store.instances import (
    Outcome,
    delete_instances,
    find_instances,
    index_instances,
    journal_blobs,
    recover_journal,
)
from dicomql.store.records import InstanceRecord
from dicomql.store.resources import release_blobs
from dicomql.store.schema import (
    blob_journal,
    dicom_stores,
    instances,
    person_name_tokens,
    series,
    studies,
)
from tests.support.dicomweb import create_store, make_instance

STUDY = "1.2.826.0.8.1"


@pytest.fixture
def store(service_config: ServiceConfig) -> Iterator[tuple[Index, LocalBlobStore, int]]:
    create_store(service_config)
    index = Index.open(service_config.index_url)
    blobs = LocalBlobStore(service_config.blob_root)
    with index.connect() as conn:
        store_pk = conn.execute(select(dicom_stores.c.pk)).scalar_one()
    try:
        yield index, blobs, store_pk
    finally:
        index.close()


def _ingest(index: Index, blobs: LocalBlobStore, store_pk: int, data: bytes) -> Outcome:
    """What STOW does for one part: journal, write, parse, index (or discard)."""
    key = blobs.new_key("instances")
    journal_blobs(index, [key])
    with blobs.writer(key) as writer:
        writer.write(data)
        writer.commit()
    parsed = read_header(io.BytesIO(data))
    model = parsed.dicom_json()
    study, series_part, _ = split_by_level(model)
    record = InstanceRecord(
        parsed, key, len(data), hashlib.sha256(data).hexdigest(), study, series_part, model
    )
    return index_instances(index, store_pk, [record])[0].outcome


def test_ingest_maintains_counters_modalities_and_sizes(store) -> None:  # type: ignore[no-untyped-def]
    index, blobs, store_pk = store
    parts = [
        make_instance(STUDY, f"{STUDY}.1", f"{STUDY}.1.1", modality="CT"),
        make_instance(STUDY, f"{STUDY}.1", f"{STUDY}.1.2", modality="CT"),
        make_instance(STUDY, f"{STUDY}.2", f"{STUDY}.2.1", modality="MR"),
    ]
    assert [_ingest(index, blobs, store_pk, p) for p in parts] == [Outcome.STORED] * 3
    with index.connect() as conn:
        study = conn.execute(select(studies)).one()
        assert (study.number_of_series, study.number_of_instances) == (2, 3)
        assert study.size_bytes == sum(len(p) for p in parts)
        assert study.modalities_in_study == "CT\\MR"
        assert study.patient_name == "Doe^John" and study.patient_name_key == "doe^john"
        counts = dict(
            conn.execute(select(series.c.series_instance_uid, series.c.number_of_instances)).all()
        )
        assert counts == {f"{STUDY}.1": 2, f"{STUDY}.2": 1}
        tokens = set(
            conn.execute(select(person_name_tokens.c.keyword, person_name_tokens.c.token)).all()
        )
        assert tokens == {("PatientName", "doe"), ("PatientName", "john")}
        assert conn.execute(select(func.count()).select_from(blob_journal)).scalar() == 0


def test_level_attributes_hold_dicom_json_split_by_level(store) -> None:  # type: ignore[no-untyped-def]
    index, blobs, store_pk = store
    _ingest(index, blobs, store_pk, make_instance(STUDY, f"{STUDY}.1", f"{STUDY}.1.1"))
    with index.connect() as conn:
        study_attributes = conn.execute(select(studies.c.attributes)).scalar_one()
        series_attributes = conn.execute(select(series.c.attributes)).scalar_one()
        [row] = find_instances(conn, store_pk, STUDY)
    assert study_attributes["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}
    assert "00080060" in series_attributes and "00080060" not in study_attributes
    assert row.blob_key and row.transfer_syntax_uid == "1.2.840.10008.1.2.1"


def test_duplicate_and_conflict_are_told_apart_by_content(store) -> None:  # type: ignore[no-untyped-def]
    index, blobs, store_pk = store
    first = make_instance(STUDY, f"{STUDY}.1", f"{STUDY}.1.1", seed=1)
    changed = make_instance(STUDY, f"{STUDY}.1", f"{STUDY}.1.1", seed=2)
    assert _ingest(index, blobs, store_pk, first) is Outcome.STORED
    assert _ingest(index, blobs, store_pk, first) is Outcome.DUPLICATE
    assert _ingest(index, blobs, store_pk, changed) is Outcome.CONFLICT
    moved = make_instance("1.2.826.0.8.2", f"{STUDY}.1", f"{STUDY}.1.9")
    assert _ingest(index, blobs, store_pk, moved) is Outcome.CONFLICT  # series in another study
    with index.connect() as conn:
        assert conn.execute(select(studies.c.number_of_instances)).scalar_one() == 1
        assert conn.execute(select(func.count()).select_from(studies)).scalar() == 1


@pytest.mark.parametrize("error", [IntegrityError, DataError])
def test_one_instance_failing_without_a_savepoint_runs_again_with_one(
    store,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    error: type[DBAPIError],
) -> None:
    """An instance indexed alone has no savepoint: a collision (or a value the index cannot
    hold) after its rows were written rolls back the whole transaction, and the second run,
    under a savepoint, counts it once."""
    index, blobs, store_pk = store
    real = instances_module._index_instance
    calls: list[int] = []

    def collide_once(*args: Any) -> Any:
        outcome = real(*args)
        calls.append(1)
        if len(calls) == 1:
            raise error("INSERT …", {}, Exception("a concurrent writer won"))
        return outcome

    monkeypatch.setattr(instances_module, "_index_instance", collide_once)
    data = make_instance(STUDY, f"{STUDY}.1", f"{STUDY}.1.1")
    assert _ingest(index, blobs, store_pk, data) is Outcome.STORED
    assert len(calls) == 2
    with index.connect() as conn:
        assert conn.execute(select(studies.c.number_of_instances)).scalar_one() == 1
        assert conn.execute(select(series.c.number_of_instances)).scalar_one() == 1
        assert conn.execute(select(func.count()).select_from(blob_journal)).scalar() == 0


def test_delete_then_crash_before_blob_removal_is_finished_by_recovery(store) -> None:  # type: ignore[no-untyped-def]
    index, blobs, store_pk = store
    _ingest(index, blobs, store_pk, make_instance(STUDY, f"{STUDY}.1", f"{STUDY}.1.1"))
    with index.begin() as conn:
        rows = find_instances(conn, store_pk, STUDY)
        keys = delete_instances(conn, store_pk, [row.pk for row in rows])
    assert all(blobs.exists(key) for key in keys)  # the "crash": release_blobs never ran
    assert recover_journal(index, blobs) == 1
    assert not any(blobs.exists(key) for key in keys)
    release_blobs(index, blobs, [])  # nothing left to do


def test_recovery_removes_written_but_unindexed_blobs_and_keeps_indexed_ones(store) -> None:  # type: ignore[no-untyped-def]
    index, blobs, store_pk = store
    _ingest(index, blobs, store_pk, make_instance(STUDY, f"{STUDY}.1", f"{STUDY}.1.1"))
    orphan = blobs.new_key("instances")
    journal_blobs(index, [orphan])
    with blobs.writer(orphan) as writer:  # written and renamed, then the process died
        writer.write(b"partial")
        writer.commit()
    never_written = blobs.new_key("instances")
    journal_blobs(index, [never_written])
    assert recover_journal(index, blobs) == 2
    assert not blobs.exists(orphan)
    with index.connect() as conn:
        [row] = find_instances(conn, store_pk, STUDY)
        assert blobs.exists(row.blob_key)
        assert conn.execute(select(func.count()).select_from(blob_journal)).scalar() == 0


def test_recovery_with_a_grace_period_leaves_young_entries_alone(store) -> None:  # type: ignore[no-untyped-def]
    index, blobs, _ = store
    in_flight = blobs.new_key("instances")
    journal_blobs(index, [in_flight])
    with blobs.writer(in_flight) as writer:  # another process is about to index it
        writer.write(b"data")
        writer.commit()
    assert recover_journal(index, blobs, older_than=timedelta(minutes=10)) == 0
    assert blobs.exists(in_flight)
    assert recover_journal(index, blobs) == 1


def test_an_instance_is_indexed_only_once_its_blob_is_durable(
    store: tuple[Index, LocalBlobStore, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index statements may run while the blob's fsyncs do, but the transaction commits
    only after them: until the blob's commit is done, no reader sees the instance."""
    index, blobs, store_pk = store
    seen_during_commit: list[int] = []
    real_commit = LocalBlobWriter.commit

    def slow_commit(self: LocalBlobWriter) -> None:
        time.sleep(0.3)  # the index's statements, in the other thread, are done by now
        with index.connect() as conn:
            seen_during_commit.append(
                conn.execute(select(func.count()).select_from(instances)).scalar_one()
            )
        real_commit(self)

    monkeypatch.setattr(LocalBlobWriter, "commit", slow_commit)
    part = make_instance(STUDY, f"{STUDY}.1", f"{STUDY}.1.1")
    [outcome] = store_instances(index, blobs, store_pk, [part])
    assert outcome.outcome is Outcome.STORED
    assert seen_during_commit == [0]
    with index.connect() as conn:
        assert conn.execute(select(func.count()).select_from(instances)).scalar_one() == 1


def test_a_blob_whose_commit_fails_leaves_no_instance_and_no_file(
    store: tuple[Index, LocalBlobStore, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk at the blob's fsync: the store request fails, nothing is indexed, and
    neither the blob nor its partial file stays behind (nor its journal entry)."""
    index, blobs, store_pk = store

    def full_disk(self: LocalBlobWriter) -> None:
        self._file.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(LocalBlobWriter, "commit", full_disk)
    part = make_instance(STUDY, f"{STUDY}.1", f"{STUDY}.1.1")
    with pytest.raises(OSError, match="No space"):
        store_instances(index, blobs, store_pk, [part])
    with index.connect() as conn:
        assert conn.execute(select(func.count()).select_from(instances)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(blob_journal)).scalar_one() == 0
    assert [path for path in blobs.root.rglob("*") if path.is_file()] == []
