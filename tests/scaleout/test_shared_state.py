"""Three ``dicomql serve`` processes on one PostgreSQL database and one S3 bucket behave as one
service: whatever one server stored or started, the others find, page, cancel and retrieve, and
concurrent or restarted servers neither duplicate nor lose instances.

The bucket is served by moto's S3 server on loopback (no real S3 can exist here); see cluster.py.
"""

from __future__ import annotations

import io
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from tests.support.cluster import Cluster, start_cluster

# One worker runs the clusters (docs/development.md): one moto server, one cluster at a time.
pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.xdist_group("scaleout")]

LOCATION = "/v1/projects/p/locations/l"
DATASET = f"{LOCATION}/datasets/d"
STORE = f"{DATASET}/dicomStores/s"
DICOMWEB = f"{STORE}/dicomWeb"
CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
# Short enough that the janitor test sees a sweep within seconds, long enough that no STOW in
# these tests is in flight that long even on a loaded machine.
GRACE_SECONDS = 60
JANITOR_INTERVAL_SECONDS = 1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[Cluster]:
    """Three servers without operation workers: an operation stays where a test leaves it until
    a test restarts a server with workers."""
    with start_cluster(
        tmp_path_factory.mktemp("shared-state"),
        3,
        workers=0,
        s3_endpoint=s3_endpoint,
        extra_args=[
            "--orphan-grace-seconds",
            str(GRACE_SECONDS),
            "--janitor-interval-seconds",
            str(JANITOR_INTERVAL_SECONDS),
        ],
    ) as started:
        response = started[0].http.post(f"{LOCATION}/datasets", params={"datasetId": "d"})
        assert response.status_code == 200, response.text
        response = started[0].http.post(
            f"{DATASET}/dicomStores", params={"dicomStoreId": "s"}, json={}
        )
        assert response.status_code == 200, response.text
        yield started
        assert not started.errors_logged(), started.errors_logged()


def make_instance(study: str, series: str, sop: str, *, size: int = 32) -> bytes:
    """A CT instance as PS3.10 bytes with ``size`` bytes of pixel data."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CT_SOP_CLASS
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.SOPClassUID = CT_SOP_CLASS
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "P1"
    ds.Modality = "CT"
    ds.Columns = min(size // 2, 256)  # 16-bit pixels
    ds.Rows = size // (2 * ds.Columns)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = secrets.token_bytes(size)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def new_uids() -> tuple[str, str, str]:
    root = f"1.2.826.0.1.3680043.10.{int(secrets.token_hex(4), 16)}"
    return root, f"{root}.1", f"{root}.1.1"


def stow(client: httpx.Client, data: bytes) -> httpx.Response:
    # JSON asked for: without an Accept the service answers XML, as Google's does.
    headers = {"Content-Type": "application/dicom", "Accept": "application/dicom+json"}
    return client.post(f"{DICOMWEB}/studies", content=data, headers=headers)


def referenced(response: httpx.Response) -> list[str]:
    items = response.json().get("00081199", {}).get("Value", [])
    return [item["00081155"]["Value"][0] for item in items]


def retrieve(client: httpx.Client, study: str, series: str, sop: str) -> bytes:
    response = client.get(
        f"{DICOMWEB}/studies/{study}/series/{series}/instances/{sop}",
        headers={"Accept": "application/dicom; transfer-syntax=*"},
    )
    assert response.status_code == 200, response.text
    return response.content


def unreferenced_blobs(cluster: Cluster) -> set[str]:
    """Objects in the bucket that no instance row references (orphans)."""
    indexed = {row[0] for row in cluster.query("SELECT blob_key FROM instances")}
    return set(cluster.blob_keys()) - indexed


def test_what_one_server_stores_the_others_search_retrieve_and_describe(
    cluster: Cluster,
) -> None:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    data = Path(path).read_bytes()
    dataset = dcmread(path)
    stored = stow(cluster[0].http, data)
    assert stored.status_code == 200, stored.text
    study, series, sop = (
        dataset.StudyInstanceUID,
        dataset.SeriesInstanceUID,
        dataset.SOPInstanceUID,
    )
    for server in cluster.servers[1:]:
        found = server.http.get(f"{DICOMWEB}/instances", params={"SOPInstanceUID": sop})
        assert found.status_code == 200, found.text
        assert [item["00080018"]["Value"][0] for item in found.json()] == [sop]
        studies = server.http.get(f"{DICOMWEB}/studies", params={"PatientID": dataset.PatientID})
        assert study in [item["0020000D"]["Value"][0] for item in studies.json()]
        assert retrieve(server.http, study, series, sop) == data
        metadata = server.http.get(
            f"{DICOMWEB}/studies/{study}/series/{series}/instances/{sop}/metadata"
        )
        assert metadata.status_code == 200, metadata.text
        assert metadata.json()[0]["00100010"]["Value"][0]["Alphabetic"] == str(dataset.PatientName)
    # The blob went to the shared bucket, not to server 0's data directory.
    (blob_key,) = cluster.query(
        "SELECT blob_key FROM instances WHERE sop_instance_uid = %(sop)s", {"sop": sop}
    )[0]
    assert blob_key in cluster.blob_keys()


def test_the_same_instance_stored_through_two_servers_at_once_is_kept_once(
    cluster: Cluster,
) -> None:
    for _ in range(12):
        study, series, sop = new_uids()
        data = make_instance(study, series, sop, size=64 * 1024)
        barrier = threading.Barrier(2)
        answers: dict[int, httpx.Response] = {}

        def store_through(
            number: int, data: bytes = data, barrier: Any = barrier, answers: Any = answers
        ) -> None:
            client = cluster[number].http
            barrier.wait(timeout=30)
            answers[number] = stow(client, data)

        threads = [threading.Thread(target=store_through, args=(n,)) for n in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert set(answers) == {0, 1}
        for answer in answers.values():
            assert answer.status_code == 200, answer.text
            assert referenced(answer) == [sop]
        (count,) = cluster.query(
            "SELECT count(*) FROM instances WHERE sop_instance_uid = %(sop)s", {"sop": sop}
        )[0]
        assert count == 1, f"{count} copies of {sop} after two concurrent STOWs"
        assert retrieve(cluster[2].http, study, series, sop) == data
    # The loser's blob was discarded, and nothing is left in the journal.
    assert unreferenced_blobs(cluster) == set()
    assert cluster.query("SELECT count(*) FROM blob_journal") == [(0,)]


def test_a_page_token_from_one_server_continues_the_listing_on_another(
    cluster: Cluster,
) -> None:
    for n in range(3):
        response = cluster[n].http.post(
            f"{DATASET}/dicomStores", params={"dicomStoreId": f"paged-{n}"}, json={}
        )
        assert response.status_code == 200, response.text
    names: list[str] = []
    token: str | None = None
    for page in range(10):
        params: dict[str, Any] = {"pageSize": 1}
        if token:
            params["pageToken"] = token
        response = cluster[page % 3].http.get(f"{DATASET}/dicomStores", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        names += [store["name"].rsplit("/", 1)[1] for store in body.get("dicomStores", [])]
        token = body.get("nextPageToken")
        if not token:
            break
    assert sorted(names) == sorted(["s", "paged-0", "paged-1", "paged-2"])
    assert len(names) == len(set(names))


def test_an_operation_started_on_one_server_is_seen_and_cancelled_on_the_others(
    cluster: Cluster, tmp_path: Path
) -> None:
    source = tmp_path / "import"
    source.mkdir()
    for n in range(3):
        study, series, sop = new_uids()
        (source / f"{n}.dcm").write_bytes(make_instance(study, series, sop))
    started = cluster[0].http.post(
        f"{STORE}:import", json={"gcsSource": {"uri": f"{source}/*.dcm"}}
    )
    assert started.status_code == 200, started.text
    name = started.json()["name"]
    # No server runs workers yet: the operation waits, the same everywhere.
    seen = [server.http.get(f"/v1/{name}").json() for server in cluster]
    assert all(operation["name"] == name for operation in seen)
    assert all(not operation.get("done") for operation in seen)
    listed = cluster[1].http.get(f"{DATASET}/operations").json()["operations"]
    assert name in [operation["name"] for operation in listed]

    cancelled = cluster[2].http.post(f"/v1/{name}:cancel", json={})
    assert cancelled.status_code == 200, cancelled.text
    assert cluster[1].http.get(f"/v1/{name}").json()["metadata"].get("cancelRequested") is True

    # A server with a worker claims it and finishes it cancelled (code 1), seen on server 0.
    cluster[1].restart(extra_args=["--workers", "1"])
    try:
        deadline = time.monotonic() + 120
        operation = cluster[0].http.get(f"/v1/{name}").json()
        while not operation.get("done"):
            assert time.monotonic() < deadline, f"operation not done: {operation}"
            time.sleep(0.1)
            operation = cluster[0].http.get(f"/v1/{name}").json()
        assert operation["error"]["code"] == 1, operation
    finally:
        cluster[1].restart()  # back to no workers for the other tests


def test_restarting_servers_while_another_stores_loses_nothing(cluster: Cluster) -> None:
    """Server 0 stores all along while server 2 is SIGKILLed and restarted and server 1 is
    restarted cleanly: a restarting server must not take server 0's STOWs in flight for a
    crash's leftovers (each restart runs start-up recovery)."""
    acknowledged: dict[str, tuple[str, str, bytes]] = {}
    failures: list[str] = []
    stop = threading.Event()

    def keep_storing(client_number: int) -> None:
        with httpx.Client(base_url=cluster[0].url, timeout=60) as client:
            while not stop.is_set():
                study, series, sop = new_uids()
                data = make_instance(study, series, sop, size=256 * 1024)
                try:
                    response = stow(client, data)
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code == 200 and referenced(response) == [sop]:
                    acknowledged[sop] = (study, series, data)
                else:
                    failures.append(f"{response.status_code} {response.text[:300]}")

    storers = [threading.Thread(target=keep_storing, args=(n,)) for n in range(2)]
    for thread in storers:
        thread.start()
    try:
        for _ in range(2):
            cluster[2].kill()
            cluster[2].start()
            cluster[1].restart()
    finally:
        stop.set()
        for thread in storers:
            thread.join(timeout=120)
    assert not failures, failures
    assert len(acknowledged) >= 4, "server 0 stored too little to show anything"
    for sop, (study, series, data) in acknowledged.items():
        assert retrieve(cluster[1].http, study, series, sop) == data
    assert unreferenced_blobs(cluster) == set()


def test_the_janitor_removes_a_dead_servers_leftovers_while_the_others_run(
    cluster: Cluster,
) -> None:
    """A crashed server's journaled, never-indexed blob goes once older than the grace period;
    a young one (another server's STOW in flight, as far as anyone can tell) stays."""
    from dicomql.store.object_blobs import FsspecBlobStore

    blobs = FsspecBlobStore(
        cluster.blob_url, endpoint_url=cluster.s3_endpoint, key="testing", secret="testing"
    )
    old_key, young_key = blobs.new_key("instances"), blobs.new_key("instances")
    for key in (old_key, young_key):
        writer = blobs.writer(key)
        writer.write(b"left over")
        writer.commit()
    moment = datetime.now(UTC)
    cluster.query(
        "INSERT INTO blob_journal (blob_key, create_time) VALUES (%(old)s, %(then)s),"
        " (%(young)s, %(now)s)",
        {
            "old": old_key,
            "then": moment - timedelta(seconds=GRACE_SECONDS * 2),
            "young": young_key,
            "now": moment,
        },
    )
    deadline = time.monotonic() + 60
    while blobs.exists(old_key):
        assert time.monotonic() < deadline, "the janitor did not remove the old leftover"
        time.sleep(0.2)
    assert (
        cluster.query("SELECT blob_key FROM blob_journal WHERE blob_key = %(k)s", {"k": old_key})
        == []
    )
    assert blobs.exists(young_key)
    assert cluster.query(
        "SELECT blob_key FROM blob_journal WHERE blob_key = %(k)s", {"k": young_key}
    ) == [(young_key,)]
    # Tidy up for the other tests' orphan checks.
    blobs.delete(young_key)
    cluster.query("DELETE FROM blob_journal WHERE blob_key = %(k)s", {"k": young_key})
