"""Rendering memory (issue 13 item 12): a 6000 x 6000 RLE frame rendered as JPEG by a
``dicomql serve`` process raises its peak RSS by a bounded amount, and a frame past the
documented pixel limit is refused with a 406 before anything is decoded."""

from __future__ import annotations

import io
import struct

import httpx
import numpy as np
import pytest
from PIL import Image
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless, generate_uid

from dicomql.dicom.render import MAX_RENDERED_PIXELS
from tests.support.reliability import (
    DICOMWEB,
    ServerProcess,
    create_dataset_and_store,
    peak_rss,
    stow,
)

# One test of the heavy group at a time (docs/development.md): SIGKILLs, 200 MB bodies, peak RSS.
pytestmark = pytest.mark.xdist_group("heavy")

# Measured 2026-12-04 on the 2-core test machine: +138 MB for 6000 x 6000 as a full-size JPEG
# (+330 MB before rendering went through an 8-bit lookup table).
PEAK_GROWTH_LIMIT = 200 * 1024 * 1024


def _rle_row(width: int, value: int) -> bytes:
    """One row of one RLE segment (PS3.5 G.3.1): replicate runs of at most 128 bytes."""
    out = bytearray()
    left = width
    while left:
        run = min(128, left)
        out += struct.pack("b", 1 - run) + bytes([value])
        left -= run
    return bytes(out)


def rle_instance(size: int) -> bytes:
    """A 16-bit MONOCHROME2 instance of ``size`` x ``size`` in RLE Lossless, built segment by
    segment (pydicom's encoder would take minutes): the high byte grows every 500 rows, so the
    rendered image has known bands."""
    high = b"".join(_rle_row(size, (row // 500) % 16) for row in range(size))
    low = _rle_row(size, 0) * size
    header = struct.pack("<16I", 2, 64, 64 + len(high), *([0] * 13))
    frame = header + high + low
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "OT"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _store(client: httpx.Client, data: bytes) -> str:
    response = stow(client, [data])
    assert response.status_code == 200, response.text
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    return (
        f"{DICOMWEB}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def test_a_6000_square_rle_frame_renders_within_the_memory_bound(server: ServerProcess) -> None:
    assert server.process is not None
    with httpx.Client(base_url=server.url, timeout=300) as client:
        create_dataset_and_store(client)
        small = _store(client, rle_instance(600))
        assert client.get(f"{small}/rendered").status_code == 200  # imports, warm caches
        big = _store(client, rle_instance(6000))
        before = peak_rss(server.process.pid)
        response = client.get(f"{big}/rendered", params={"viewport": "600,600"})
        growth = peak_rss(server.process.pid) - before
    assert response.status_code == 200, response.text
    image = np.asarray(Image.open(io.BytesIO(response.content)))
    assert image.shape == (600, 600)
    # Bands of 500 rows (50 at this scale) brighten downwards: min/max stretch of 0 … 11 << 8.
    assert image[10].mean() < 5 and image[-10].mean() > 250
    assert growth < PEAK_GROWTH_LIMIT, f"peak RSS grew {growth / 2**20:.0f} MB"


def test_a_frame_past_the_pixel_limit_is_refused_before_decoding(server: ServerProcess) -> None:
    side = int(MAX_RENDERED_PIXELS**0.5) + 1
    with httpx.Client(base_url=server.url, timeout=300) as client:
        create_dataset_and_store(client)
        url = _store(client, rle_instance(side))
        response = client.get(f"{url}/rendered")
    assert response.status_code == 406
    assert f"{MAX_RENDERED_PIXELS:,}" in response.json()["error"]["message"]
