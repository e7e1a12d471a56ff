"""Rendering frames as JPEG and PNG: windowing, photometric interpretation, viewport."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from dicomql.dicom.render import RenderError, RenderOptions, render_frame


def _path(name: str) -> Path:
    return Path(str(get_testdata_file(name, download=False)))


def _render(data: bytes, index: int = 0, **options: object) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    image = render_frame(io.BytesIO(data), header, index, RenderOptions(**options))  # type: ignore[arg-type]
    return Image.open(io.BytesIO(image))


def _gradient(photometric: str = "MONOCHROME2", window: tuple[int, int] | None = None) -> bytes:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.2.1"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 4, 256, 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = np.tile(np.arange(256, dtype=np.uint16) * 4, (4, 1)).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize(("media_type", "fmt"), [("image/jpeg", "JPEG"), ("image/png", "PNG")])
def test_render_encodes_the_asked_format(media_type: str, fmt: str) -> None:
    image = _render(_path("CT_small.dcm").read_bytes(), media_type=media_type)
    assert image.format == fmt and image.size == (128, 128) and image.mode == "L"


def test_min_max_scaling_uses_the_full_8_bit_range() -> None:
    pixels = np.asarray(_render(_gradient(), media_type="image/png"))
    assert pixels.min() == 0 and pixels.max() == 255
    assert (np.diff(pixels[0].astype(int)) >= 0).all()  # brighter to the right


def test_monochrome1_is_inverted() -> None:
    pixels = np.asarray(_render(_gradient("MONOCHROME1"), media_type="image/png"))
    assert pixels[0, 0] == 255 and pixels[0, -1] == 0


def test_window_from_the_data_clips_outside_values() -> None:
    # A narrow window around the middle: the left quarter is black, the right quarter white.
    pixels = np.asarray(_render(_gradient(window=(512, 256)), media_type="image/png"))
    assert pixels[0, :60].max() == 0 and pixels[0, -60:].min() == 255


def test_viewport_keeps_the_aspect_ratio() -> None:
    image = _render(_gradient(), viewport=(64, 64), media_type="image/png")
    assert image.size == (64, 1)


def test_colour_frames_render_as_rgb() -> None:
    image = _render(_path("SC_rgb_rle_2frame.dcm").read_bytes(), index=1)
    assert image.mode == "RGB" and image.size == (100, 100)


def test_a_file_without_pixels_cannot_be_rendered() -> None:
    data = _path("rtplan.dcm").read_bytes()
    with pytest.raises(RenderError):
        _render(data)


def _signed_12_bit_with_garbage_high_bits() -> bytes:
    ds = pydicom.dcmread(io.BytesIO(_gradient()))
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 1
    values = np.tile(np.arange(-2048, 2048, 16, dtype=np.int16), (4, 1))
    raw = (values.view(np.uint16) & 0x0FFF) | 0xA000  # bits 12-15 hold garbage
    ds.PixelData = raw.astype("<u2").tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "source",
    [
        "CT_small.dcm",
        "MR_small.dcm",
        "MR_small_implicit.dcm",
        "examples_overlay.dcm",
        "signed 12 bit with garbage high bits",
    ],
)
def test_the_native_fast_path_renders_what_decoding_renders(source: str) -> None:
    """Native frames are viewed, not decoded (dicom/render.py): the image must be the one the
    decoded pixel values give, signed data and unused high bits included."""
    from pydicom.pixels import pixel_array

    from dicomql.dicom.render import grayscale_to_8bit

    if source.endswith(".dcm"):
        data = _path(source).read_bytes()
    else:
        data = _signed_12_bit_with_garbage_high_bits()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data))
        expected = grayscale_to_8bit(pixel_array(ds, index=0), ds, 0, None)
        png = render_frame(ds, ds, 0, RenderOptions(media_type="image/png"))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), expected)


def test_palette_colour_renders_through_its_palette() -> None:
    """PS3.3 C.7.6.3.1.5: each index shown as its palette entry (16-bit entries, high byte)."""
    from pydicom.pixels import apply_color_lut, pixel_array

    data = _path("examples_palette.dcm").read_bytes()
    image = _render(data, media_type="image/png")
    assert image.mode == "RGB"
    ds = pydicom.dcmread(io.BytesIO(data))
    expected = apply_color_lut(pixel_array(ds, index=0), ds) >> 8
    assert np.array_equal(np.asarray(image), expected.astype(np.uint8))


@pytest.mark.parametrize("dtype", ["<u2", "<i2", "u1", "i1"])
@pytest.mark.parametrize("bits_stored", [None, 12, 7])
@pytest.mark.parametrize(
    ("slope", "intercept", "window", "photometric"),
    [
        (1, 0, None, "MONOCHROME2"),
        (-2.5, 100, None, "MONOCHROME1"),
        (1, -1024, (40, 400, "LINEAR"), "MONOCHROME2"),
        (0.5, 3, (10, 90, "SIGMOID"), "MONOCHROME1"),
    ],
)
def test_the_value_range_table_shows_what_each_pixel_computed_alone_shows(
    dtype: str,
    bits_stored: int | None,
    slope: float,
    intercept: float,
    window: tuple[float, float, str] | None,
    photometric: str,
) -> None:
    """The table over the frame's value range (dicom/render.py) gives every pixel the value
    the transforms give it one by one: negative slopes, windows, inversion, 8- and 16-bit
    words, signed and unsigned, all bits in use or garbage above BitsStored."""
    from dicomql.dicom.render import Window, _display, _stored_values, grayscale_to_8bit

    rng = np.random.default_rng(7)
    kind, width = np.dtype(dtype).kind, 8 * np.dtype(dtype).itemsize
    bits = width if bits_stored is None or bits_stored > width else bits_stored
    info = np.iinfo(np.dtype(dtype))
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if kind == "i" else (0, (1 << bits) - 1)
    frame = rng.integers(max(low, info.min), min(high, info.max) + 1, (16, 24)).astype(dtype)
    header = pydicom.Dataset()
    header.PhotometricInterpretation = photometric
    header.RescaleSlope, header.RescaleIntercept = slope, intercept
    shown = Window(*window) if window else None
    values = _stored_values(frame.astype(np.int64), width, bits, kind)
    expected = _display(values, header, 0, shown, None)
    assert np.array_equal(grayscale_to_8bit(frame, header, 0, shown, bits_stored), expected)
    # The same values with garbage in the bits above BitsStored: the table over every word.
    if bits < width:
        garbage = (frame.view(f"u{width // 8}") | (1 << (width - 1))).view(dtype)
        assert np.array_equal(grayscale_to_8bit(garbage, header, 0, shown, bits), expected)
