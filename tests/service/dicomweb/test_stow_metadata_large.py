"""Memory is bounded for STOW-RS of metadata and bulk data too (PS3.18 10.5.1.4): a DICOM JSON
instance whose 200 MB Pixel Data comes as a bulk data part, streamed to a ``dicomql serve``
subprocess, raises the server's peak RSS by less than 100 MB (holding the instance in memory
raised it by about 570 MB): the part is spooled to a temporary file and pydicom writes the
instance from it in chunks."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from pydicom.uid import generate_uid

from dicomql.service.config import ServiceConfig
from tests.support.dicomweb import stow_large_bench

# One test of the heavy group at a time (docs/development.md): SIGKILLs, 200 MB bodies, peak RSS.
pytestmark = pytest.mark.xdist_group("heavy")

GROWTH_BOUND_MB = 100
ROWS = COLUMNS = 10_000  # 16-bit: 200 MB of Pixel Data
BOUNDARY = "json-large"


def _body(study: str, sop: str) -> Iterator[bytes]:
    def us(value: int) -> dict[str, object]:
        return {"vr": "US", "Value": [value]}

    metadata = {
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.7"]},
        "00080018": {"vr": "UI", "Value": [sop]},
        "0020000D": {"vr": "UI", "Value": [study]},
        "0020000E": {"vr": "UI", "Value": [generate_uid()]},
        "00280002": us(1),
        "00280004": {"vr": "CS", "Value": ["MONOCHROME2"]},
        "00280010": us(ROWS),
        "00280011": us(COLUMNS),
        "00280100": us(16),
        "00280101": us(16),
        "00280102": us(15),
        "00280103": us(0),
        "7FE00010": {"vr": "OW", "BulkDataURI": "pixels"},
    }
    yield (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom+json\r\n\r\n{json.dumps([metadata])}"
        f"\r\n--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\n"
        "Content-Location: pixels\r\n\r\n"
    ).encode()
    chunk = bytes(range(256)) * 4096  # 1 MiB
    for _ in range(ROWS * COLUMNS * 2 // len(chunk)):
        yield chunk
    yield bytes(ROWS * COLUMNS * 2 % len(chunk))
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


@pytest.mark.slow
def test_200_megabyte_json_metadata_stow_grows_rss_under_100_megabytes(
    service_config: ServiceConfig,
) -> None:
    bench = stow_large_bench()
    bench.create_store(service_config.data_dir, service_config.database_url)
    server = bench.Server(service_config.data_dir, service_config.database_url)
    try:
        baseline = bench.peak_rss_mb(server.process.pid)
        study, sop = generate_uid(), generate_uid()
        response = httpx.post(
            f"{server.url}{bench.DICOMWEB}/studies",
            content=_body(study, sop),
            headers={
                "content-type": f'multipart/related; type="application/dicom+json"; '
                f"boundary={BOUNDARY}",
                "accept": "application/dicom+json",
            },
            timeout=600,
        )
        assert response.status_code == 200, response.text
        peak = bench.peak_rss_mb(server.process.pid)
        metadata = httpx.get(
            f"{server.url}{bench.DICOMWEB}/studies/{study}/metadata", timeout=60
        ).json()
        assert metadata[0]["00080018"]["Value"] == [sop]
        assert metadata[0]["00280010"]["Value"] == [ROWS]
    finally:
        server.stop()
    assert peak - baseline < GROWTH_BOUND_MB, (baseline, peak)
