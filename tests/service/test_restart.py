"""The admin state lives in the index: a real ``dicomql serve`` process, killed and started
again on the same data directory (and database), still has every dataset, store and operation."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.ports import free_port

LOCATION = "/v1/projects/p/locations/us-central1"
DATASET = f"{LOCATION}/datasets/ds"
DICOMQL = Path(sys.executable).with_name("dicomql")


@contextmanager
def serving(
    data_dir: Path, database_url: str | None, *, stop: signal.Signals = signal.SIGTERM
) -> Iterator[httpx.Client]:
    """``dicomql serve`` in a subprocess until it answers; stopped with ``stop`` afterwards."""
    port = free_port()
    command = [str(DICOMQL), "serve", "--port", str(port), "--data-dir", str(data_dir)]
    command += ["--processes", "1"]  # SIGKILL kills the whole server
    if database_url:
        command += ["--database-url", database_url]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    output = process.stdout.read().decode() if process.stdout else ""
                    raise AssertionError(f"dicomql serve exited: {output}")
                try:
                    if client.get("/v1/projects/p/locations/l").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError("dicomql serve did not answer within 60 s")
                time.sleep(0.1)
            yield client
    finally:
        process.send_signal(stop)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()


@pytest.mark.slow
def test_datasets_stores_labels_and_operations_survive_a_killed_server(
    tmp_path: Path, database_url: str | None
) -> None:
    data_dir = tmp_path / "data"
    # Killed, not terminated: what was acknowledged must be in the index, not in memory.
    with serving(data_dir, database_url, stop=signal.SIGKILL) as client:
        created = client.post(f"{LOCATION}/datasets?datasetId=ds", json={"timeZone": "Asia/Tokyo"})
        assert created.status_code == 200, created.text
        operation = created.json()
        for n in range(3):
            response = client.post(
                f"{DATASET}/dicomStores?dicomStoreId=store-{n}",
                json={"labels": {"env": "prod" if n else "test", "n": str(n)}},
            )
            assert response.status_code == 200, response.text
        patched = client.patch(
            f"{DATASET}/dicomStores/store-2?updateMask=labels", json={"labels": {"env": "dev"}}
        )
        assert patched.status_code == 200, patched.text
        first_page = client.get(f"{DATASET}/dicomStores", params={"pageSize": 1}).json()
        before = {
            "dataset": client.get(DATASET).json(),
            "stores": client.get(f"{DATASET}/dicomStores").json(),
            "operations": client.get(f"{DATASET}/operations").json(),
        }

    with serving(data_dir, database_url) as client:  # and a clean stop after this one
        after = {
            "dataset": client.get(DATASET).json(),
            "stores": client.get(f"{DATASET}/dicomStores").json(),
            "operations": client.get(f"{DATASET}/operations").json(),
        }
        assert after == before
        assert after["dataset"]["timeZone"] == "Asia/Tokyo"
        labels = {s["name"].rsplit("/", 1)[1]: s["labels"] for s in after["stores"]["dicomStores"]}
        assert labels == {
            "store-0": {"env": "test", "n": "0"},
            "store-1": {"env": "prod", "n": "1"},
            "store-2": {"env": "dev"},
        }
        assert client.get(f"/v1/{operation['name']}").json() == operation
        # A page token from the previous process still works: paging keeps no process state.
        second = client.get(
            f"{DATASET}/dicomStores",
            params={"pageSize": 1, "pageToken": first_page["nextPageToken"]},
        ).json()
        assert second["dicomStores"][0]["name"].endswith("/store-1")
        filtered = client.get(f"{DATASET}/dicomStores", params={"filter": "labels.env=prod"})
        assert [s["name"][-1] for s in filtered.json()["dicomStores"]] == ["1"]
