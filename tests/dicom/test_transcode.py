"""Transfer syntax negotiation and conversion with pydicom's handlers."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.data import get_testdata_file

from dicomql.dicom.transcode import TranscodeError, can_transcode, served_syntax, transcode


def _path(name: str) -> Path:
    return Path(str(get_testdata_file(name, download=False)))


def _read(data: bytes | Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data) if isinstance(data, bytes) else data)


@pytest.mark.parametrize(
    ("source", "target", "pixels", "possible"),
    [
        (uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian, True, True),
        (uid.ExplicitVRBigEndian, uid.ExplicitVRLittleEndian, True, True),
        (uid.JPEG2000Lossless, uid.ExplicitVRLittleEndian, True, True),
        (uid.JPEGBaseline8Bit, uid.ImplicitVRLittleEndian, True, True),
        (uid.ExplicitVRLittleEndian, uid.RLELossless, True, True),
        (uid.ExplicitVRLittleEndian, uid.JPEGBaseline8Bit, True, False),  # bit depth unknown
        (uid.ExplicitVRLittleEndian, uid.ExplicitVRBigEndian, True, False),  # retired
        (uid.JPEGBaseline8Bit, "*", True, True),
        (uid.ExplicitVRLittleEndian, uid.JPEGBaseline8Bit, False, True),  # nothing to compress
    ],
)
def test_can_transcode(source: str, target: str, pixels: bool, possible: bool) -> None:
    assert can_transcode(source, target, pixels) is possible


def test_served_syntax_of_star_is_the_stored_one() -> None:
    assert served_syntax(uid.JPEG2000, "*") == uid.JPEG2000
    assert served_syntax(uid.ExplicitVRLittleEndian, uid.RLELossless, False) == (
        uid.ExplicitVRLittleEndian
    )


@pytest.mark.parametrize(
    "name", ["MR_small_implicit.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm"]
)
def test_transcode_to_explicit_little_endian_keeps_the_pixels(name: str) -> None:
    with open(_path(name), "rb") as file:
        served = _read(transcode(file, uid.ExplicitVRLittleEndian))
    assert served.file_meta.TransferSyntaxUID == uid.ExplicitVRLittleEndian
    assert np.array_equal(served.pixel_array, _read(_path(name)).pixel_array)


def test_transcode_to_rle_round_trips_losslessly() -> None:
    with open(_path("CT_small.dcm"), "rb") as file:
        served = _read(transcode(file, uid.RLELossless))
    assert served.file_meta.TransferSyntaxUID == uid.RLELossless
    assert np.array_equal(served.pixel_array, _read(_path("CT_small.dcm")).pixel_array)


def test_docstring_examples() -> None:
    import doctest

    from dicomql.dicom import transcode as module

    assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize(
    ("name", "tolerance"),
    [
        ("SC_rgb_rle_2frame.dcm", 2.0),  # RLE, two frames, RGB
        ("SC_ybr_full_422_uncompressed.dcm", 2.0),
        ("image_dfl.dcm", 2.0),  # deflated, MONOCHROME2
        ("ExplVR_BigEnd.dcm", 3.0),  # big endian RGB, planar configuration 1
        ("SC_rgb_jpeg.dcm", 2.0),  # declares explicit VR, encoded implicit
    ],
)
def test_transcode_to_jpeg_baseline_with_pillow_keeps_the_pixels_close(
    name: str, tolerance: float
) -> None:
    """Google's conformance statement lists transfer-syntax=1.2.840.10008.1.2.4.50 for
    instances; PS3.5 8.2.1 (colour as YBR_FULL_422) and C.7.6.1.1.5 (lossy flags)."""
    with open(_path(name), "rb") as file:
        served = _read(transcode(file, uid.JPEGBaseline8Bit))
    original = _read(_path(name))
    assert served.file_meta.TransferSyntaxUID == uid.JPEGBaseline8Bit
    assert served.LossyImageCompression == "01"
    assert served.LossyImageCompressionMethod == "ISO_10918_1"
    decoded = served.pixel_array.astype(int)
    expected = original.pixel_array.astype(int)
    assert decoded.shape == expected.shape
    assert np.abs(decoded - expected).mean() <= tolerance
    if original.SamplesPerPixel == 3:
        assert served.PhotometricInterpretation == "YBR_FULL_422"


@pytest.mark.parametrize(
    ("name", "reason"),
    [("CT_small.dcm", "8-bit"), ("examples_palette.dcm", "palette")],
)
def test_jpeg_baseline_refuses_what_it_cannot_hold(name: str, reason: str) -> None:
    with open(_path(name), "rb") as file, pytest.raises(TranscodeError, match=reason):
        transcode(file, uid.JPEGBaseline8Bit)
