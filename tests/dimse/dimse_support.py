"""A ``dicomql serve`` subprocess with its DIMSE listener, and what the DIMSE tests share."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ports import free_port

DICOMQL = Path(sys.executable).with_name("dicomql")
LOCATION = "/v1/projects/p/locations/l"
DATASET = f"{LOCATION}/datasets/d"
STORE_ID = "s"
STORE_NAME = f"projects/p/locations/l/datasets/d/dicomStores/{STORE_ID}"
DICOMWEB = f"/v1/{STORE_NAME}/dicomWeb"
AE_TITLE = "DICOMQL"
# pydicom's test files with a PS3.10 header, in several transfer syntaxes and SOP classes.
TEST_FILES = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm")


def need_dcmtk() -> None:
    if shutil.which("echoscu") is None:
        pytest.skip("dcmtk is not installed (apt-get install dcmtk)")


@dataclass
class DimseServer:
    http: httpx.Client
    dimse_port: int
    log: Path

    def create_store(self) -> None:
        response = self.http.post(f"{LOCATION}/datasets", params={"datasetId": "d"}, json={})
        assert response.status_code in (200, 409), response.text
        response = self.http.post(
            f"{DATASET}/dicomStores", params={"dicomStoreId": STORE_ID}, json={}
        )
        assert response.status_code in (200, 409), response.text


@contextmanager
def dimse_server(data_dir: Path, *extra: str, processes: int = 1) -> Iterator[DimseServer]:
    """``dicomql serve --dimse-port`` until it answers HTTP (its DIMSE listener starts first)."""
    port, dimse_port = free_port(), free_port()
    log = data_dir.parent / f"serve-{port}.log"
    command = [
        str(DICOMQL),
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--processes",
        str(processes),
        "--dimse-port",
        str(dimse_port),
        "--dimse-store",
        STORE_NAME,
        *extra,
    ]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 90
            while True:
                if process.poll() is not None:
                    raise AssertionError(f"dicomql serve exited: {log.read_text()[-3000:]}")
                try:
                    if client.get(LOCATION).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "dicomql serve did not answer in time"
                time.sleep(0.05)
            yield DimseServer(client, dimse_port, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def dcmtk(*command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A dcmtk tool, its output kept for the assertion messages."""
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def dataset_bytes(ps310: bytes) -> bytes:
    """The data set of a PS3.10 file: what follows its preamble and file meta group."""
    assert ps310[128:132] == b"DICM" and ps310[132:136] == b"\x02\x00\x00\x00", ps310[:140]
    group_length = int.from_bytes(ps310[140:144], "little")
    return ps310[144 + group_length :]
