"""A full disk: the data directory on a real 24 MB tmpfs, filled through STOW until the free-space
floor refuses new instances (A700 per part, 507 for a request), while reads and deletes keep
working and every acknowledged instance stays retrievable."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from dicomql.service.config import ServiceConfig
from dicomql.store.space import SpaceFloor, free_space
from tests.support.dicomweb import multipart
from tests.support.reliability import (
    ANY_SYNTAX,
    DICOMWEB,
    STORE,
    create_dataset_and_store,
    make_instance,
)

if TYPE_CHECKING:  # conftest names differ by folder: never imported at run time (tests/ports.py)
    from tests.conftest import LiveServer

OUT_OF_RESOURCES = 0xA700
FLOOR = "8MB"
INSTANCE_PIXELS = 512 * 512 * 2  # 512 KiB of pixel data an instance


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MB tmpfs mounted for this test (skips where mounting is not permitted)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the full-disk test cannot run here")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _instance(number: int) -> tuple[str, bytes]:
    """An instance of 512 KiB of pixels in a study of its own, so that deleting one frees a
    known amount."""
    sop = f"1.2.826.0.1.3680043.9.7.{number + 1}"
    study = f"1.2.826.0.1.3680043.9.5.{number + 1}"
    series = f"1.2.826.0.1.3680043.9.6.{number + 1}"
    return sop, make_instance(study, series, sop, seed=number, rows=512)


def _failures(response: httpx.Response) -> list[int]:
    body: dict[str, Any] = response.json()
    return [item["00081197"]["Value"][0] for item in body.get("00081198", {}).get("Value", [])]


def _stored(response: httpx.Response) -> list[str]:
    body: dict[str, Any] = response.json()
    return [item["00081155"]["Value"][0] for item in body.get("00081199", {}).get("Value", [])]


@pytest.mark.slow
def test_stow_below_the_floor_is_refused_and_deletes_and_reads_keep_working(
    small_disk: Path,
    database_url: str | None,
    start_live_server: Callable[[ServiceConfig], LiveServer],
) -> None:
    config = ServiceConfig(
        data_dir=small_disk / "data",
        database_url=database_url,
        min_free_space=SpaceFloor.parse(FLOOR),
        workers=0,
    )
    server = start_live_server(config)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            create_dataset_and_store(client)
            # One request of 40 parts (~20 MB) on a 24 MB disk with an 8 MB floor: it must
            # cross the floor part way, and the parts after that are refused with A700.
            batch = [_instance(number) for number in range(40)]
            body, content_type = multipart([data for _, data in batch])
            response = client.post(
                f"{DICOMWEB}/studies",
                content=body,
                headers={"content-type": content_type, "accept": "application/dicom+json"},
            )
            assert response.status_code == 202, response.text[:500]
            sent = dict(batch)
            acknowledged = {sop: sent[sop] for sop in _stored(response)}
            refused_parts = _failures(response)
            assert refused_parts, "the floor never refused a part"
            assert set(refused_parts) == {OUT_OF_RESOURCES}
            assert acknowledged, "nothing was stored before the floor"

            # Below the floor a whole request is refused at once, in Google's error shape.
            _, data = _instance(40)
            response = client.post(
                f"{DICOMWEB}/studies", content=data, headers={"content-type": "application/dicom"}
            )
            assert response.status_code == 507, response.text
            error = response.json()["error"]
            assert error["code"] == 507 and "free-space floor" in error["message"]

            # Reads keep working: every acknowledged instance comes back byte for byte.
            for sop, sent_bytes in acknowledged.items():
                found = client.get(f"{DICOMWEB}/instances", params={"SOPInstanceUID": sop})
                assert found.status_code == 200, found.text
                (item,) = found.json()
                study, series = item["0020000D"]["Value"][0], item["0020000E"]["Value"][0]
                got = client.get(
                    f"{DICOMWEB}/studies/{study}/series/{series}/instances/{sop}",
                    headers=ANY_SYNTAX,
                )
                assert got.status_code == 200 and got.content == sent_bytes

            # Deletes keep working and free space: the freed store takes new instances again.
            before = free_space(small_disk).free
            deleted = client.delete(STORE)
            assert deleted.status_code == 200, deleted.text
            assert free_space(small_disk).free > before + len(acknowledged) * INSTANCE_PIXELS // 2
            create_dataset_and_store(client, "again")
            again = f"{STORE.rsplit('/', 1)[0]}/again/dicomWeb"
            response = client.post(
                f"{again}/studies", content=data, headers={"content-type": "application/dicom"}
            )
            assert response.status_code == 200, response.text
    finally:
        server.stop()


@pytest.mark.slow
def test_a_write_that_hits_enospc_is_a_507_and_leaves_no_partial_blob(
    small_disk: Path,
    database_url: str | None,
    start_live_server: Callable[[ServiceConfig], LiveServer],
) -> None:
    """With the floor off (``0``), one instance larger than the free space fills the disk: the
    request ends with 507 in Google's shape, its partial blob is removed, and the store keeps
    working."""
    config = ServiceConfig(
        data_dir=small_disk / "data",
        database_url=database_url,
        min_free_space=SpaceFloor.parse("0"),
        workers=0,
    )
    server = start_live_server(config)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            create_dataset_and_store(client)
            sop, small = _instance(1)
            stored = client.post(
                f"{DICOMWEB}/studies", content=small, headers={"content-type": "application/dicom"}
            )
            assert stored.status_code == 200, stored.text
            huge = small[:-INSTANCE_PIXELS] + os.urandom(1)  # a header; the body is streamed
            chunks = iter([huge[:-1], *(os.urandom(1024 * 1024) for _ in range(40))])
            response = client.post(
                f"{DICOMWEB}/studies",
                content=chunks,
                headers={"content-type": "application/dicom"},
            )
            assert response.status_code == 507, response.text[:500]
            assert response.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
            assert free_space(small_disk).free > 10 * 1024 * 1024  # the partial blob is gone
            found = client.get(f"{DICOMWEB}/instances", params={"SOPInstanceUID": sop})
            assert [item["00080018"]["Value"][0] for item in found.json()] == [sop]
            assert client.delete(f"{DICOMWEB}/studies/1.2.826.0.1.3680043.9.5.2").status_code == 200
    finally:
        server.stop()


def test_import_and_deidentify_below_the_floor_fail_with_their_counters(
    small_disk: Path, tmp_path: Path, database_url: str | None
) -> None:
    from dicomql.provider.transports import InProcessTransport
    from dicomql.service.app import create_app

    source = tmp_path / "source"
    source.mkdir()
    for number in range(3):
        (source / f"{number}.dcm").write_bytes(_instance(100 + number)[1])
    config = ServiceConfig(
        data_dir=small_disk / "data",
        database_url=database_url,
        min_free_space=SpaceFloor.parse(FLOOR),
        import_roots=(source,),
    )
    transport = InProcessTransport(create_app(config))
    with httpx.Client(transport=transport, base_url="http://embedded", timeout=120) as client:
        create_dataset_and_store(client)
        # Fill the disk to 4 MB below the floor with a file of the operator's.
        filler = small_disk / "filler"
        filler.write_bytes(b"\0" * (free_space(small_disk).free - 4 * 1024 * 1024))
        body = {"gcsSource": {"uri": f"{source}/*.dcm"}}
        failed = _wait(client, client.post(f"{STORE}:import", json=body).json())
        assert failed["error"]["code"] == 8, failed  # RESOURCE_EXHAUSTED
        assert "free-space floor" in failed["error"]["message"]
        assert failed["metadata"]["counter"] == {"failure": "3"}
        # De-identification into a new store is refused the same way.
        stow = client.post(
            f"{DICOMWEB}/studies",
            content=(source / "0.dcm").read_bytes(),
            headers={"content-type": "application/dicom"},
        )
        assert stow.status_code == 507  # and so is STOW
        filler.unlink()
        done = _wait(client, client.post(f"{STORE}:import", json=body).json())
        assert "error" not in done and done["metadata"]["counter"] == {"success": "3"}
        create_dataset_and_store(client, "out")
        filler.write_bytes(b"\0" * (free_space(small_disk).free - 4 * 1024 * 1024))
        destination = f"{STORE.rsplit('/', 1)[0]}/out"
        deidentify = {"destinationStore": destination[len("/v1/") :], "config": {}}
        started = client.post(f"{STORE}:deidentify", json=deidentify)
        assert started.status_code == 200, started.text
        failed = _wait(client, started.json())
        assert failed["error"]["code"] == 8, failed
        assert failed["metadata"]["counter"] == {"failure": "3"}


def _wait(client: httpx.Client, operation: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while not operation.get("done"):
        assert time.monotonic() < deadline, operation
        time.sleep(0.05)
        operation = client.get(f"/v1/{operation['name']}").json()
    return operation


def test_an_import_that_fills_the_disk_with_the_floor_off_ends_resource_exhausted(
    small_disk: Path, tmp_path: Path, database_url: str | None
) -> None:
    """With ``--min-free-space 0`` the import writes until the disk is full: the operation ends
    with RESOURCE_EXHAUSTED saying so (not INTERNAL with a traceback's text), and never hangs."""
    from dicomql.provider.transports import InProcessTransport
    from dicomql.service.app import create_app

    source = tmp_path / "source"
    source.mkdir()
    for number in range(8):
        (source / f"{number}.dcm").write_bytes(_instance(200 + number)[1])
    config = ServiceConfig(
        data_dir=small_disk / "data",
        database_url=database_url,
        min_free_space=SpaceFloor.parse("0"),
        import_roots=(source,),
    )
    transport = InProcessTransport(create_app(config))
    with httpx.Client(transport=transport, base_url="http://embedded", timeout=120) as client:
        create_dataset_and_store(client)
        filler = small_disk / "filler"
        filler.write_bytes(b"\0" * (free_space(small_disk).free - 2 * 1024 * 1024))
        body = {"gcsSource": {"uri": f"{source}/*.dcm"}}
        failed = _wait(client, client.post(f"{STORE}:import", json=body).json())
        assert failed["error"]["code"] == 8, failed
        assert "disk is full" in failed["error"]["message"]
        filler.unlink()
        # Nothing acknowledged was lost, and the store takes the import once space is back.
        done = _wait(client, client.post(f"{STORE}:import", json=body).json())
        assert "error" not in done and done["metadata"]["counter"] == {"success": "8"}
