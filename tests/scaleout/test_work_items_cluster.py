"""Issue 8's "done when": three ``dicomql serve`` processes sharing PostgreSQL and an S3 bucket
(moto's S3 server on loopback stands in for S3; see cluster.py) store through one and search and
retrieve through the others, spread one import's work items over all three, and finish it with
nothing lost or duplicated although one of them is SIGKILLed in the middle of it."""

from __future__ import annotations

import io
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dicomql.service.importer import FILES_PER_ITEM
from tests.support.cluster import Cluster

# One worker runs the clusters (docs/development.md): one moto server, one cluster at a time.
pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.xdist_group("scaleout")]

LOCATION = "/v1/projects/p/locations/l"
DATASET = f"{LOCATION}/datasets/d"
STORE = f"{DATASET}/dicomStores/s"
CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
MR_SMALL = Path(get_testdata_file("MR_small.dcm"))
# 12 items: two rounds for six workers on three servers.
SOURCE_FILES = 12 * FILES_PER_ITEM
# Short leases so the killed server's item is taken over within seconds; every server renews
# its leases every lease/3 s, which a loaded 2-core machine still manages at 3 s.
LEASE_SECONDS = 3
DEADLINE = 120.0  # seconds; only reached if something is stuck


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def operation_done(client: httpx.Client, name: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        response = client.get(f"/v1/{name}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body if body.get("done") else None

    result: dict[str, Any] = wait_for(done, f"operation {name}")
    return result


def write_source_files(folder: Path, count: int) -> set[str]:
    """``count`` copies of CT_small, each its own instance; their SOP Instance UIDs."""
    folder.mkdir()
    ds = pydicom.dcmread(CT_SMALL)
    uids = set()
    for number in range(count):
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(folder / f"{number:04d}.dcm", enforce_file_format=True)
        uids.add(ds.SOPInstanceUID)
    return uids


def server_of(claimed_by: str) -> int:
    """The process ID in a claim token (``host:pid/worker/nonce``, see WorkerPool)."""
    match = re.search(r":(\d+)/", claimed_by)
    assert match is not None, claimed_by
    return int(match[1])


def test_three_servers_share_one_store_and_finish_an_import_when_one_is_killed_mid_way(
    cluster_factory: Callable[..., Cluster], tmp_path: Path
) -> None:
    cluster = cluster_factory(servers=3, workers=2, lease_seconds=LEASE_SECONDS)
    first, second, third = cluster
    created = first.http.post(f"{LOCATION}/datasets", params={"datasetId": "d"})
    assert created.status_code == 200, created.text
    created = first.http.post(f"{DATASET}/dicomStores", params={"dicomStoreId": "s"}, json={})
    assert created.status_code == 200, created.text

    # Stored through one server, found and retrieved through the other two.
    for path in (CT_SMALL, MR_SMALL):
        stored = first.http.post(
            f"{STORE}/dicomWeb/studies",
            content=path.read_bytes(),
            headers={"Content-Type": "application/dicom"},
        )
        assert stored.status_code == 200, stored.text
    mr = pydicom.dcmread(MR_SMALL, stop_before_pixels=True)
    found = second.http.get(f"{STORE}/dicomWeb/instances", params={"Modality": "MR"})
    assert found.status_code == 200, found.text
    assert [item["00080018"]["Value"][0] for item in found.json()] == [mr.SOPInstanceUID]
    retrieved = third.http.get(
        f"{STORE}/dicomWeb/studies/{mr.StudyInstanceUID}/series/{mr.SeriesInstanceUID}"
        f"/instances/{mr.SOPInstanceUID}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    assert retrieved.status_code == 200, retrieved.text
    assert MR_SMALL.read_bytes() in retrieved.content

    source = tmp_path / "source"
    uids = write_source_files(source, SOURCE_FILES)
    # Started through the server that will be killed: woken at once, its workers take the first
    # items, so it has finished one and holds another before the others run out of work.
    started = third.http.post(f"{STORE}:import", json={"gcsSource": {"uri": f"{source}/*.dcm"}})
    assert started.status_code == 200, started.text
    operation_name = started.json()["name"]

    def unfinished_items_of_third() -> list[int] | None:
        """The items the third server holds unfinished, once it has finished one."""
        rows = cluster.query("SELECT pk, claimed_by, done FROM work_items")
        mine = [
            (pk, done)
            for pk, claimed_by, done in rows
            if claimed_by and server_of(claimed_by) == third.pid
        ]
        if not any(done for _, done in mine):
            return None
        return [pk for pk, done in mine if not done] or None

    # Frozen (SIGSTOP) before looking, so it cannot finish the item between the look and the
    # kill; thawed and tried again if it held none.
    deadline = time.monotonic() + DEADLINE
    while True:
        assert time.monotonic() < deadline, "the third server never held an item mid-way"
        if unfinished_items_of_third():
            os.kill(third.pid, signal.SIGSTOP)
            wait_for(lambda: cluster.settled(third), "PostgreSQL to apply what it was sent")
            held = unfinished_items_of_third()
            if held:
                break
            os.kill(third.pid, signal.SIGCONT)
        time.sleep(0.05)  # paces the look
    third.kill()

    finished = operation_done(first.http, operation_name)
    assert "error" not in finished, finished
    assert finished["metadata"]["counter"] == {"success": str(SOURCE_FILES)}

    # Every source file stored exactly once, in the index and in the bucket.
    rows = cluster.query("SELECT sop_instance_uid, blob_key FROM instances")
    stored_uids = Counter(uid for uid, _ in rows)
    assert max(stored_uids.values()) == 1
    assert set(stored_uids) == uids | {mr.SOPInstanceUID, pydicom.dcmread(CT_SMALL).SOPInstanceUID}
    keys = set(cluster.blob_keys())
    assert {key for _, key in rows} <= keys

    # Every server did some of the work, and the killed server's item was run again elsewhere.
    items = cluster.query("SELECT claimed_by, done, attempts, counter_success FROM work_items")
    assert len(items) == SOURCE_FILES // FILES_PER_ITEM
    assert all(done for _, done, _, _ in items)
    assert sum(success for *_, success in items) == SOURCE_FILES
    workers_of_done_items = {server_of(claimed_by) for claimed_by, *_ in items}
    assert workers_of_done_items == {first.pid, second.pid, third.pid}
    taken_over = cluster.query(
        "SELECT claimed_by, attempts FROM work_items WHERE pk = ANY(%(held)s)", {"held": held}
    )
    assert len(taken_over) == len(held)
    for claimed_by, attempts in taken_over:
        assert server_of(claimed_by) in {first.pid, second.pid} and attempts == 2

    # The survivors serve the imported instances.
    some_uid = sorted(uids)[0]
    found = first.http.get(f"{STORE}/dicomWeb/instances", params={"SOPInstanceUID": some_uid})
    assert [item["00080018"]["Value"][0] for item in found.json()] == [some_uid]
    study = pydicom.dcmread(io.BytesIO((source / "0000.dcm").read_bytes())).StudyInstanceUID
    metadata = second.http.get(f"{STORE}/dicomWeb/studies/{study}/metadata")
    assert metadata.status_code == 200, metadata.text
    assert len(metadata.json()) == SOURCE_FILES + 1  # the import's copies and the STOWed CT
    survivors = [server for server in cluster if server.alive]
    assert not "".join(server.errors_logged() for server in survivors)
