"""Stream a large STOW-RS request (generated 512x512 16-bit instances) to a ``dicomql serve``
subprocess, retrieve the study back streaming, and report MB/s and the server's peak RSS.

Usage: python bench/stow_large.py [--megabytes 1024] [--database-url URL]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import insert

from dicomql.store.index import Index
from dicomql.store.schema import datasets, dicom_stores

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import process_tree

DICOMWEB = "/v1/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb"
BOUNDARY = "stow-large-boundary"
STUDY = "1.2.826.0.1.3680043.9.7777.1"
_SOP_WIDTH = 8


def instance_template(rows: int = 512, columns: int = 512) -> tuple[bytes, bytes]:
    """A 16-bit CT instance and the placeholder SOP Instance UID in it (fixed width)."""
    placeholder = f"{STUDY}.1.{'9' * _SOP_WIDTH}"
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = placeholder
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = placeholder
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = f"{STUDY}.1"
    ds.PatientName, ds.PatientID, ds.Modality = "Large^Study", "LARGE", "CT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    pixels = np.random.default_rng(7).integers(0, 4096, (rows, columns), np.uint16)
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue(), placeholder.encode()


def instance_count(megabytes: int) -> int:
    template, _ = instance_template()
    return max(1, megabytes * 1024 * 1024 // len(template))


def stow_body(count: int) -> Iterator[bytes]:
    """The multipart body of ``count`` distinct instances, generated as it is sent."""
    template, placeholder = instance_template()
    for number in range(count):
        # Fixed width, and no leading zero (PS3.5 9.1: a UID component has none).
        sop = f"{STUDY}.1.1{number:0{_SOP_WIDTH - 1}d}".encode()
        head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        yield head + template.replace(placeholder, sop) + b"\r\n"
    yield f"--{BOUNDARY}--\r\n".encode()


def create_store(data_dir: Path, database_url: str | None) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    index = Index.open(database_url or f"sqlite:///{data_dir / 'index.sqlite3'}")
    moment = datetime.now(UTC)
    try:
        with index.begin() as conn:
            dataset_pk = conn.execute(
                insert(datasets)
                .values(project="p", location="l", dataset_id="d", resource={}, create_time=moment)
                .returning(datasets.c.pk)
            ).scalar_one()
            conn.execute(
                insert(dicom_stores).values(
                    dataset_pk=dataset_pk,
                    store_id="s",
                    resource={},
                    create_time=moment,
                    update_time=moment,
                )
            )
    finally:
        index.close()


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set size) of a server, in MB: summed over its process and every
    server process under it (``dicomql serve --processes N``)."""
    total = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue  # gone meanwhile
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    if not total:
        raise RuntimeError("no VmHWM in /proc status")
    return total / 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """``dicomql serve`` in a subprocess on a loopback port."""

    def __init__(self, data_dir: Path, database_url: str | None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable,
            "-m",
            "dicomql.cli",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(data_dir),
        ]
        if database_url:
            command += ["--database-url", database_url]
        env = {key: value for key, value in os.environ.items() if key != "DICOMQL_AUTH_TOKEN"}
        self.process = subprocess.Popen(command, env=env)
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{self.url}{DICOMWEB}/studies/x", timeout=1)
                break
            except httpx.TransportError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("dicomql serve did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def run(megabytes: int, data_dir: Path, database_url: str | None = None) -> dict[str, float]:
    """STOW ``megabytes`` then retrieve it; returns sizes, rates and peak RSS figures."""
    create_store(data_dir, database_url)
    server = Server(data_dir, database_url)
    try:
        count = instance_count(megabytes)
        baseline = peak_rss_mb(server.process.pid)
        sent = 0

        def counted() -> Iterator[bytes]:
            nonlocal sent
            for chunk in stow_body(count):
                sent += len(chunk)
                yield chunk

        started = time.perf_counter()
        with httpx.Client(timeout=600) as http:
            response = http.post(
                f"{server.url}{DICOMWEB}/studies",
                content=counted(),
                headers={
                    "content-type": f'multipart/related; type="application/dicom"; '
                    f"boundary={BOUNDARY}"
                },
            )
            stow_seconds = time.perf_counter() - started
            if response.status_code != 200:
                raise RuntimeError(f"STOW failed: {response.status_code} {response.text[:500]}")
            stow_peak = peak_rss_mb(server.process.pid)
            received = 0
            started = time.perf_counter()
            with http.stream(
                "GET",
                f"{server.url}{DICOMWEB}/studies/{STUDY}",
                headers={
                    "accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'
                },
            ) as stream:
                if stream.status_code != 200:
                    raise RuntimeError(f"WADO failed: {stream.status_code}")
                for chunk in stream.iter_bytes():
                    received += len(chunk)
            wado_seconds = time.perf_counter() - started
        return {
            "instances": count,
            "stow_mb": sent / 1e6,
            "stow_mb_per_s": sent / 1e6 / stow_seconds,
            "wado_mb": received / 1e6,
            "wado_mb_per_s": received / 1e6 / wado_seconds,
            "baseline_rss_mb": baseline,
            "peak_rss_after_stow_mb": stow_peak,
            "peak_rss_after_wado_mb": peak_rss_mb(server.process.pid),
        }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megabytes", type=int, default=1024)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="dicomql-bench-"))
    try:
        for key, value in run(args.megabytes, data_dir, args.database_url).items():
            print(f"{key:>24}: {value:,.1f}")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
