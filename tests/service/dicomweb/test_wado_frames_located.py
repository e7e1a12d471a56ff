"""Frames of uncompressed instances are found from the index's geometry (no header parse) when
the pixel data ends the file, and from the parsed header otherwise; both give the same bytes."""

from __future__ import annotations

import io
import struct

import numpy as np
import pydicom

from dicomql.dicom.frames import native_frames_location
from dicomql.dicom.parse import read_header
from tests.support.dicomweb import (
    DICOMWEB,
    TEST_FILES,
    DicomWebClient,
    make_instance,
    read_multipart,
)

FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def _instance_path(data: bytes) -> str:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return (
        f"studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    )


def _frames(client: DicomWebClient, path: str, numbers: str) -> list[bytes]:
    response = client.http.get(f"{DICOMWEB}/{path}/frames/{numbers}", headers={"accept": FRAMES})
    assert response.status_code == 200, response.text
    return [part for _, part in read_multipart(response.headers["content-type"], response.content)]


def _geometry(data: bytes) -> tuple[int, int, int, int, int]:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return ds.Rows, ds.Columns, ds.BitsAllocated, frames, ds.SamplesPerPixel


def test_frames_of_a_multiframe_instance_whose_pixel_data_ends_the_file(
    client: DicomWebClient,
) -> None:
    data = make_instance(rows=6, columns=5, frames=4, seed=3)
    # The geometry alone locates the pixel data: the fast path is taken for this file.
    header = read_header(io.BytesIO(data))
    found = native_frames_location(
        io.BytesIO(data), len(data), header.transfer_syntax_uid, _geometry(data)
    )
    assert found == (header.pixel_data_offset, 6 * 5 * 2)
    assert client.stow([data]).status_code == 200
    pixels = pydicom.dcmread(io.BytesIO(data)).pixel_array
    assert _frames(client, _instance_path(data), "4,1") == [
        pixels[3].tobytes(),
        pixels[0].tobytes(),
    ]


def test_frames_of_an_instance_with_elements_after_its_pixel_data(client: DicomWebClient) -> None:
    # CT_small.dcm has 138 bytes of elements after (7FE0,0010): the geometry cannot confirm
    # where the pixel data lies, so the header is parsed, and the frame is still right.
    data = (TEST_FILES / "CT_small.dcm").read_bytes()
    header = read_header(io.BytesIO(data))
    found = native_frames_location(
        io.BytesIO(data), len(data), header.transfer_syntax_uid, _geometry(data)
    )
    assert found is None
    assert client.stow([data]).status_code == 200
    pixels = pydicom.dcmread(io.BytesIO(data)).pixel_array
    assert _frames(client, _instance_path(data), "1") == [pixels.tobytes()]


def test_a_pixel_data_header_with_another_length_is_not_taken_for_the_frames() -> None:
    data = bytearray(make_instance(rows=4, columns=4, frames=2))
    header = read_header(io.BytesIO(bytes(data)))
    assert header.pixel_data_offset is not None
    # Claim one frame more than the file holds: the length in the element header disagrees.
    rows, columns, bits, _, samples = _geometry(bytes(data))
    geometry = (rows, columns, bits, 3, samples)
    assert (
        native_frames_location(io.BytesIO(data), len(data), header.transfer_syntax_uid, geometry)
        is None
    )
    # And a damaged tag in front of the value is not pixel data either.
    data[header.pixel_data_offset - 12 : header.pixel_data_offset - 8] = struct.pack(
        "<HH", 0x7FE0, 0x0011
    )
    assert (
        native_frames_location(
            io.BytesIO(data), len(data), header.transfer_syntax_uid, _geometry(bytes(data))
        )
        is None
    )


def test_frames_asked_for_in_any_order_and_repeated_come_back_as_asked(
    client: DicomWebClient,
) -> None:
    data = make_instance(rows=3, columns=3, frames=3, seed=5)
    assert client.stow([data]).status_code == 200
    pixels = np.asarray(pydicom.dcmread(io.BytesIO(data)).pixel_array)
    assert _frames(client, _instance_path(data), "2,2,3") == [
        pixels[1].tobytes(),
        pixels[1].tobytes(),
        pixels[2].tobytes(),
    ]
