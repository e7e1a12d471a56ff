"""The one unit of work that stores instances (``store.ingest``): STOW-RS, import and
de-identification refuse the same unreadable inputs with the same reason, and a store deleted
while instances are being stored into it leaves no blob behind and answers 404."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from dicomql.service.config import ServiceConfig
from dicomql.store import events
from dicomql.store import ingest as ingest_module
from dicomql.store.index import Index
from dicomql.store.ingest import BlobKeys, Ingest, store_instances
from dicomql.store.instances import CANNOT_UNDERSTAND, Outcome, StoreNotFound, journal_blobs
from dicomql.store.object_blobs import blob_store_for
from dicomql.store.schema import blob_journal, dicom_stores, instances
from tests.support.dicomweb import (
    DICOMWEB,
    DicomWebClient,
    create_store,
    failed,
    make_instance,
    multipart,
)
from tests.support.lro import counter, run, store_path
from tests.support.reliability import stored_blobs_of

STUDY, SERIES = "1.2.826.0.3.1", "1.2.826.0.3.1.1"
VALID = make_instance(STUDY, SERIES, "1.2.826.0.3.1.1.1")
# (0028,0002) SamplesPerPixel, US, written with a 1-byte value: pydicom reads the header and
# fails only when the value is converted (BytesLengthException, which import once let escape).
_SAMPLES_PER_PIXEL = b"\x28\x00\x02\x00US\x02\x00\x01\x00"
assert _SAMPLES_PER_PIXEL in VALID
UNREADABLE = {
    "empty": b"",
    "not DICOM": b"this is not DICOM at all" * 10,
    "a preamble and nothing after it": b"\x00" * 128 + b"DICM",
    "no SOPInstanceUID": VALID.replace(b"1.2.826.0.3.1.1.1\x00", b" " * 18),
    "a 1-byte US value": VALID.replace(_SAMPLES_PER_PIXEL, b"\x28\x00\x02\x00US\x01\x00\x01"),
}


@pytest.fixture
def client(service_config: ServiceConfig) -> Iterator[DicomWebClient]:
    client = DicomWebClient(service_config)  # creates dataset d, store s
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def store(service_config: ServiceConfig, client: DicomWebClient) -> Iterator[tuple[Index, int]]:
    index = Index.open(service_config.index_url)
    with index.connect() as conn:
        store_pk = conn.execute(select(dicom_stores.c.pk)).scalar_one()
    try:
        yield index, store_pk
    finally:
        index.close()


def _stow_reason(client: DicomWebClient, data: bytes) -> tuple[int, str]:
    response = client.stow([data])
    assert response.status_code == 400, response.text  # PS3.18 Table 10.5.3-1: bad syntax
    [(_, reason)] = failed(response)
    warning = response.headers["warning"]
    return reason, warning.split('"', 1)[1].rstrip('"')


def _import_reason(
    client: DicomWebClient, data: bytes, folder: Path, caplog: pytest.LogCaptureFixture
) -> str:
    folder.mkdir()
    (folder / "file.dcm").write_bytes(data)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dicomql"):
        operation = run(
            client.http, f"{store_path('s')}:import", {"gcsSource": {"uri": f"{folder}/*.dcm"}}
        )
    assert counter(operation) == {"failure": 1}
    [record] = [r for r in caplog.records if r.name == "dicomql.store.ingest"]
    return str(record.args[-1])  # type: ignore[index]


@pytest.mark.parametrize("data", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_stow_import_and_deidentify_refuse_an_unreadable_file_with_one_reason(
    client: DicomWebClient,
    store: tuple[Index, int],
    service_config: ServiceConfig,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    data: bytes,
) -> None:
    index, store_pk = store
    stow_reason, stow_message = _stow_reason(client, data)
    import_message = _import_reason(client, data, tmp_path / "in", caplog)
    # De-identification stores its outputs through the same call (store_instances, action
    # DeidentifyDicomStore); an output it could not read would be refused like this.
    [deidentified] = store_instances(
        index, blob_store_for(service_config, index), store_pk, [data], action=events.DEIDENTIFY
    )
    assert deidentified.outcome is Outcome.UNREADABLE
    assert stow_reason == deidentified.failure_reason == CANNOT_UNDERSTAND
    assert import_message == deidentified.message
    assert deidentified.message.startswith(stow_message)  # the Warning header is cut at 300
    with index.connect() as conn:
        assert conn.execute(select(instances.c.pk)).first() is None
        assert conn.execute(select(blob_journal.c.blob_key)).first() is None
    assert _blob_files(service_config) == []


def test_an_unreadable_file_is_refused_without_failing_the_others(
    store: tuple[Index, int], service_config: ServiceConfig
) -> None:
    index, store_pk = store
    blobs = blob_store_for(service_config, index)
    outcomes = store_instances(index, blobs, store_pk, [*UNREADABLE.values(), VALID, VALID])
    assert [outcome.outcome for outcome in outcomes] == [Outcome.UNREADABLE] * len(UNREADABLE) + [
        Outcome.STORED,
        Outcome.DUPLICATE,
    ]
    assert outcomes[-1].ok and outcomes[-1].failure_reason is None
    assert len(_blob_files(service_config)) == 1


def test_the_failed_item_of_a_convertible_header_names_its_instance(
    store: tuple[Index, int], service_config: ServiceConfig
) -> None:
    index, store_pk = store
    [outcome] = store_instances(
        index, blob_store_for(service_config, index), store_pk, [UNREADABLE["a 1-byte US value"]]
    )
    assert outcome.sop_instance_uid == "1.2.826.0.3.1.1.1"
    assert outcome.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"


def test_a_store_deleted_before_indexing_leaves_no_blob_and_no_journal_entry(
    client: DicomWebClient, store: tuple[Index, int], service_config: ServiceConfig
) -> None:
    index, store_pk = store

    def sources() -> Iterator[bytes]:
        yield VALID
        # The first instance is written and parsed; the store goes before the index commit.
        response = client.http.delete(store_path("s"))
        assert response.status_code == 200, response.text
        yield make_instance(STUDY, SERIES, "1.2.826.0.3.1.1.2")

    ingest = Ingest(index, blob_store_for(service_config, index), store_pk)
    with pytest.raises(StoreNotFound):
        ingest.store(sources())
    with index.connect() as conn:
        assert conn.execute(select(blob_journal.c.blob_key)).first() is None
        assert conn.execute(select(instances.c.pk)).first() is None
    assert _blob_files(service_config) == []


def test_stows_into_a_store_deleted_under_them_answer_404_and_leave_no_blob(
    service_config: ServiceConfig, live_server: object
) -> None:
    # issue 13 item 5: four clients STOW while the store is deleted; each request answers 200
    # (stored before the delete, then removed with the store) or 404, never 500, and no blob
    # file outlives the store.
    url = live_server.url  # type: ignore[attr-defined]
    create_store(service_config)
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    enough_stored = threading.Event()
    store_gone = threading.Event()

    def stow_until_gone(number: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            for request in range(10_000):
                parts = [
                    make_instance(STUDY, f"{SERIES}.{number}", f"{SERIES}.{number}.{request}.{n}")
                    for n in range(3)
                ]
                body, content_type = multipart(parts)
                response = http.post(
                    f"{DICOMWEB}/studies",
                    content=body,
                    headers={"content-type": content_type, "accept": "application/dicom+json"},
                )
                with lock:
                    statuses[response.status_code] += 1
                    if statuses[200] >= 8:
                        enough_stored.set()
                if response.status_code == 404 and store_gone.is_set():
                    return

    threads = [threading.Thread(target=stow_until_gone, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    assert enough_stored.wait(timeout=120)
    with httpx.Client(base_url=url, timeout=120) as admin:
        response = admin.delete(store_path("s"))
        assert response.status_code == 200, response.text
    store_gone.set()
    for thread in threads:
        thread.join(timeout=300)
    assert set(statuses) <= {200, 404}, statuses
    assert statuses[404] >= 4
    index = Index.open(service_config.index_url)
    try:
        with index.connect() as conn:
            assert conn.execute(select(instances.c.pk)).first() is None
            assert conn.execute(select(blob_journal.c.blob_key)).first() is None
    finally:
        index.close()
    assert _blob_files(service_config) == []


def _blob_files(config: ServiceConfig) -> list[str]:
    return stored_blobs_of(config)


def _journal(index: Index) -> list[str]:
    with index.connect() as conn:
        return list(conn.execute(select(blob_journal.c.blob_key)).scalars())


def test_units_of_work_sharing_blob_keys_journal_a_batch_and_release_the_rest(
    store: tuple[Index, int], service_config: ServiceConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DIMSE association's C-STOREs: keys journaled a batch at a time stay journaled between
    instances, keys held too long are forgotten in the next index commit, release() forgets
    the rest."""
    index, store_pk = store
    blobs = blob_store_for(service_config, index)
    keys = BlobKeys(index, blobs)
    journaled: list[int] = []

    def journal(index: Index, keys: list[str]) -> None:
        journaled.append(len(keys))
        journal_blobs(index, keys)

    monkeypatch.setattr(ingest_module, "journal_blobs", journal)
    for number in range(1, 5):
        instance = make_instance(STUDY, SERIES, f"1.2.826.0.3.1.1.{number}")
        [outcome] = Ingest(index, blobs, store_pk, keys=keys).store([instance])
        assert outcome.outcome is Outcome.STORED
    assert journaled == [1, ingest_module._KEY_BATCH]  # one key first, then a batch
    assert len(_journal(index)) == ingest_module._KEY_BATCH - 3  # the batch's unused keys
    held = set(_journal(index))
    monkeypatch.setattr(ingest_module, "_KEY_MAX_AGE", 0.0)
    instance = make_instance(STUDY, SERIES, "1.2.826.0.3.1.1.5")
    [outcome] = Ingest(index, blobs, store_pk, keys=keys).store([instance])
    assert outcome.outcome is Outcome.STORED
    # The old batch was given up and forgotten in the index commit; a fresh one is held.
    assert held.isdisjoint(_journal(index))
    assert len(_journal(index)) == ingest_module._KEY_BATCH - 1
    keys.release()
    assert _journal(index) == []
    assert len(_blob_files(service_config)) == 5
