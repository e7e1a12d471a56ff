"""Rendering a frame as a consumer image (PS3.18 8.3.5.1.3, 10.4.1.1.3): modality and VOI
transforms (PS3.3 C.11.1, C.11.2), scaling to 8 bits, optional viewport, encoded as JPEG or PNG
with Pillow.

Grayscale frames of integer pixels go through one 8-bit lookup table built over the frame's
value range (at most 65,536 entries for 16-bit data): the modality rescale, the window and the
inversion of MONOCHROME1 are computed once per value from the frame's least to its greatest
(found with one min and one max; the whole 16-bit range, and a count of the values that occur,
only for garbage above BitsStored or a Modality/VOI LUT with no window), never per pixel in
floating point, so rendering a frame costs its decoded size plus one byte a pixel. Frames larger
than :data:`MAX_RENDERED_PIXELS` are refused before they are decoded.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from PIL import Image
from pydicom import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, pixel_array
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

RENDERED_MEDIA_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}
# Pillow loads its JPEG and PNG writers on the first save (about 14 ms of CPU): loaded with this
# module instead, so each server process's first rendered image costs what the others do.
Image.preinit()
_LITTLE_ENDIAN_NATIVE = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
# A choice: 50 megapixels (e.g. 7000 x 7000) a frame. A 16-bit frame of that size decodes to
# 100 MB; docs/reliability.md gives the measured peak.
MAX_RENDERED_PIXELS = 50_000_000
# PS3.18 8.3.5.1.3 "window" function names and PS3.3 C.11.2.1.3 VOI LUT Function values.
WINDOW_FUNCTIONS = {
    "linear": "LINEAR",
    "linear-exact": "LINEAR_EXACT",
    "sigmoid": "SIGMOID",
}


class RenderError(ValueError):
    """The frame cannot be decoded or rendered."""


class TooLargeToRender(RenderError):
    """The frame has more pixels than :data:`MAX_RENDERED_PIXELS`."""


@dataclass(frozen=True)
class Window:
    """A VOI window (PS3.3 C.11.2.1.2): center, width and function."""

    center: float
    width: float
    function: str = "LINEAR"  # LINEAR, LINEAR_EXACT or SIGMOID


@dataclass(frozen=True)
class RenderOptions:
    media_type: str = "image/jpeg"
    viewport: tuple[int, int] | None = None  # (width, height), aspect ratio kept
    quality: int = 75  # JPEG quality 1-100
    window: Window | None = None  # the request's window, over the data's own


def parse_window(text: str) -> Window:
    """The ``window`` query parameter (PS3.18 8.3.5.1.3): ``center,width[,function]``.

    Raises:
        ValueError: not two numbers and an optional known function, or a width the function
            does not allow (PS3.3 C.11.2.1.2: at least 1 for linear, above 0 otherwise).

    >>> parse_window("40,400,sigmoid")
    Window(center=40.0, width=400.0, function='SIGMOID')
    """
    pieces = [piece.strip() for piece in text.split(",")]
    if len(pieces) not in (2, 3):
        raise ValueError("window must be center,width,function (e.g. 40,400,linear).")
    try:
        center, width = float(pieces[0]), float(pieces[1])
    except ValueError:
        raise ValueError("window center and width must be numbers.") from None
    if not (math.isfinite(center) and math.isfinite(width)):
        raise ValueError("window center and width must be finite numbers.")
    name = pieces[2].lower() if len(pieces) == 3 else "linear"
    if name not in WINDOW_FUNCTIONS:
        raise ValueError(
            f"window function {pieces[2]!r} is not one of {', '.join(WINDOW_FUNCTIONS)}."
        )
    function = WINDOW_FUNCTIONS[name]
    if function == "LINEAR" and width < 1:
        raise ValueError("a linear window's width must be at least 1.")
    if width <= 0:
        raise ValueError("the window width must be greater than 0.")
    return Window(center, width, function)


def frame_pixels(header: Dataset) -> int:
    """Rows x Columns of one frame, from the header (0 when absent)."""
    return int(header.get("Rows", 0) or 0) * int(header.get("Columns", 0) or 0)


def render_frame(
    file: BinaryIO | Dataset, header: Dataset, index: int, options: RenderOptions
) -> bytes:
    """Encode frame ``index`` (from 0) of the instance in ``file`` (a PS3.10 file, or a dataset
    read whole with its pixel data) as ``options.media_type``.

    Raises:
        TooLargeToRender: the frame has more than :data:`MAX_RENDERED_PIXELS` pixels.
        RenderError: no pixel data, an undecodable syntax, or a shape Pillow cannot show.
    """
    pixels = frame_pixels(header)
    if pixels > MAX_RENDERED_PIXELS:
        raise TooLargeToRender(
            f"The frame has {pixels:,} pixels; frames of at most {MAX_RENDERED_PIXELS:,} pixels"
            " are rendered. Retrieve its pixel data (frames resource) instead."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stored = _native_grayscale(file, header, index)
            if stored is not None:
                frame, bits_stored = stored
                image = Image.fromarray(
                    grayscale_to_8bit(frame, header, index, options.window, bits_stored)
                )
            else:
                overrides: dict[str, Any] = {}
                if "PixelRepresentation" not in header:
                    # Type 1, yet some files omit it: read the values as unsigned, the usual case.
                    overrides["pixel_representation"] = 0
                frame = pixel_array(file, index=index, **overrides)
                image = _to_image(frame, header, index, options.window)
    except (ValueError, RuntimeError, NotImplementedError, TypeError, AttributeError) as exc:
        raise RenderError(f"Cannot render the frame: {exc}") from exc
    del frame
    if options.viewport is not None:
        image.thumbnail(options.viewport)
    buffer = io.BytesIO()
    encoder = RENDERED_MEDIA_TYPES[options.media_type]
    if encoder == "JPEG":
        image.save(buffer, encoder, quality=options.quality)
    else:
        image.save(buffer, encoder)
    return buffer.getvalue()


def _to_image(frame: np.ndarray, header: Dataset, index: int, window: Window | None) -> Image.Image:
    samples = int(header.get("SamplesPerPixel", 1) or 1)
    if samples == 1 and header.get("PhotometricInterpretation") == "PALETTE COLOR":
        frame = apply_color_lut(frame, header)  # PS3.3 C.7.6.3.1.5: indices to RGB
        if frame.dtype == np.uint16:  # 16-bit palette entries: keep their high byte
            frame = (frame >> 8).astype(np.uint8)
        samples = 3
    if samples == 1:
        return Image.fromarray(grayscale_to_8bit(frame, header, index, window))
    if frame.dtype != np.uint8:
        frame = _stretch(frame.astype(np.float32, copy=False))
    return Image.fromarray(np.ascontiguousarray(frame[..., :3]).astype(np.uint8, copy=False))


def grayscale_to_8bit(
    frame: np.ndarray,
    header: Dataset,
    index: int = 0,
    window: Window | None = None,
    bits_stored: int | None = None,
) -> np.ndarray:
    """The displayed 8-bit values of a grayscale frame (PS3.4 N.2.1.1): modality transform,
    VOI transform (``window``, else the frame's own, else the value range), MONOCHROME1
    inverted. ``bits_stored`` below the dtype's width: the frame holds raw words whose bits
    above BitsStored are ignored (and a signed value sign-extended, PS3.5 8.1.1).

    >>> ds = Dataset(); ds.PhotometricInterpretation = "MONOCHROME2"
    >>> grayscale_to_8bit(np.array([[0, 50, 100]], np.uint16), ds, 0, Window(50, 101)).tolist()
    [[1, 129, 255]]
    """
    if frame.dtype.kind in "iu" and frame.itemsize <= 2 and frame.size:
        # A table over every bit pattern of the dtype: the frame, viewed as unsigned (no
        # copy), indexes it directly, so the transforms run once per possible value.
        unsigned = frame.view(np.dtype(f"u{frame.itemsize}"))
        stretched = window is None and _stored_window(header, index) is None
        span = _value_span(frame, bits_stored)
        if span is not None and not (stretched and _lookup_tables(header, index)):
            # Every pixel holds its stored value: the table needs only the values from the
            # frame's least to its greatest. Stretched through a rescale, which keeps their
            # order, their range is that of the values that occur.
            values = np.arange(span[0], span[1] + 1, dtype=np.int64)
            lut = np.zeros(1 << (8 * frame.itemsize), np.uint8)
            lut[values.astype(frame.dtype).view(unsigned.dtype)] = _display(
                values, header, index, window, None
            )
        else:
            patterns = np.arange(1 << (8 * frame.itemsize), dtype=np.int64)
            domain = _stored_values(patterns, 8 * frame.itemsize, bits_stored, frame.dtype.kind)
            occurring = None
            if stretched:
                occurring = _occurring(unsigned.ravel(), len(patterns))
            lut = _display(domain, header, index, window, occurring)
        return _apply_table(lut, unsigned)
    return _display(frame, header, index, window, None)


def _apply_table(lut: np.ndarray, patterns: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """``lut[patterns]`` with np.take, about twice as fast for a 16-bit index, a million pixels
    at a time: np.take widens its index to 8 bytes a pixel."""
    out = np.empty(patterns.shape, lut.dtype)
    flat_in, flat_out = patterns.reshape(-1), out.reshape(-1)
    for start in range(0, flat_in.size, chunk):
        np.take(lut, flat_in[start : start + chunk], out=flat_out[start : start + chunk])
    return out


def _value_span(frame: np.ndarray, bits_stored: int | None) -> tuple[int, int] | None:
    """The least and greatest value in an integer frame, or None when some pixel has bits
    set above BitsStored (its raw word is not its value; PS3.5 8.1.1)."""
    low, high = int(frame.min()), int(frame.max())
    width = 8 * frame.itemsize
    bits = width if bits_stored is None or not 0 < bits_stored <= width else bits_stored
    if frame.dtype.kind == "i":
        fits = -(1 << (bits - 1)) <= low and high < 1 << (bits - 1)
    else:
        fits = high < 1 << bits
    return (low, high) if fits else None


def _lookup_tables(header: Dataset, index: int) -> bool:
    """Whether a Modality LUT or a VOI LUT (not a rescale) gives the frame's displayed values:
    tables need not keep the order of the values they map."""
    transform = _functional_item(header, index, "PixelValueTransformationSequence")
    source = transform if transform is not None and "RescaleSlope" in transform else header
    return "ModalityLUTSequence" in source or "VOILUTSequence" in header


def _occurring(patterns: np.ndarray, size: int, chunk: int = 1 << 20) -> np.ndarray:
    """Which of ``size`` bit patterns occur in the frame: counted a million pixels at a time,
    since np.bincount widens its input to 8 bytes a pixel."""
    seen = np.zeros(size, dtype=bool)
    for start in range(0, len(patterns), chunk):
        seen |= np.bincount(patterns[start : start + chunk], minlength=size) > 0
    return seen


def _stored_values(patterns: np.ndarray, width: int, bits: int | None, kind: str) -> np.ndarray:
    """The value each bit pattern stands for: its low ``bits`` bits, sign-extended for a
    signed dtype (PS3.5 8.1.1: the bits above BitsStored carry no value)."""
    bits = width if bits is None or not 0 < bits <= width else bits
    values = patterns & ((1 << bits) - 1)
    if kind == "i":
        sign = 1 << (bits - 1)
        values = (values ^ sign) - sign
    return values


def _native_grayscale(
    file: BinaryIO | Dataset, header: Dataset, index: int
) -> tuple[np.ndarray, int] | None:
    """Frame ``index`` of a dataset held whole, as a view of its little-endian native pixel
    bytes (no decoding, no copy) with its BitsStored; None for anything else (compressed,
    big endian, colour, 1-bit or float data), which pydicom decodes."""
    if not isinstance(file, Dataset) or "PixelData" not in file:
        return None
    meta = getattr(file, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax not in _LITTLE_ENDIAN_NATIVE or int(header.get("SamplesPerPixel", 1) or 1) != 1:
        return None
    if header.get("PhotometricInterpretation") not in ("MONOCHROME1", "MONOCHROME2"):
        return None
    bits = int(header.get("BitsAllocated", 0) or 0)
    if bits not in (8, 16):
        return None
    rows, columns = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
    signed = int(header.get("PixelRepresentation", 0) or 0) == 1
    dtype = np.dtype(f"{'i' if signed else 'u'}{bits // 8}").newbyteorder("<")
    data = file.PixelData
    size = rows * columns * dtype.itemsize
    if not size or len(data) < (index + 1) * size:
        return None
    frame = np.frombuffer(data, dtype, rows * columns, index * size).reshape(rows, columns)
    return frame, int(header.get("BitsStored", bits) or bits)


def _display(
    values: np.ndarray,
    header: Dataset,
    index: int,
    window: Window | None,
    occurring: np.ndarray | None,
) -> np.ndarray:
    """The 8-bit display values of stored ``values``: a lookup table's domain (``occurring``
    marks the values the frame holds, for stretching its range) or a whole frame."""
    modality = _modality(values, header, index)
    if window is None:
        window = _stored_window(header, index)
    if window is not None:
        shown = _apply_window(modality, window)
    elif "VOILUTSequence" in header:
        voi = apply_voi(modality, header, 0).astype(np.float32, copy=False)
        shown = _stretch(voi, voi if occurring is None else voi[occurring])
    else:
        shown = _stretch(modality, modality if occurring is None else modality[occurring])
    if header.get("PhotometricInterpretation") == "MONOCHROME1":
        np.subtract(255, shown, out=shown)
    return shown


def _modality(values: np.ndarray, header: Dataset, index: int) -> np.ndarray:
    """Modality values (PS3.3 C.11.1) as float32: the frame's Pixel Value Transformation
    (functional groups), else the top-level rescale or Modality LUT."""
    transform = _functional_item(header, index, "PixelValueTransformationSequence")
    source = transform if transform is not None and "RescaleSlope" in transform else header
    if "ModalityLUTSequence" in source:
        return apply_modality_lut(values, source).astype(np.float32, copy=False)
    slope = float(source.get("RescaleSlope", 1) or 1)
    intercept = float(source.get("RescaleIntercept", 0) or 0)
    out = values.astype(np.float32)  # the one float copy (a LUT domain, or a float frame)
    if slope != 1:
        out *= np.float32(slope)
    if intercept:
        out += np.float32(intercept)
    return out


def _stored_window(header: Dataset, index: int) -> Window | None:
    """The frame's first window (Frame VOI LUT functional group), else the top-level one."""
    voi = _functional_item(header, index, "FrameVOILUTSequence")
    for source in (voi, header):
        if source is None or "WindowCenter" not in source or "WindowWidth" not in source:
            continue
        center = _first_number(source.WindowCenter)
        width = _first_number(source.WindowWidth)
        function = str(source.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        if center is None or width is None or width <= 0:
            continue
        if function not in WINDOW_FUNCTIONS.values():
            function = "LINEAR"
        if function == "LINEAR" and width < 1:
            continue
        return Window(center, width, function)
    return None


def _first_number(value: Any) -> float | None:
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _functional_item(header: Dataset, index: int, sequence: str) -> Dataset | None:
    """The first item of ``sequence`` in frame ``index``'s per-frame functional groups, else
    in the shared ones (PS3.3 C.7.6.16)."""
    for groups, position in (
        ("PerFrameFunctionalGroupsSequence", index),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        items = header.get(groups)
        if items is None or len(items) <= position:
            continue
        found = items[position].get(sequence)
        if found:
            item: Dataset = found[0]
            return item
    return None


def _apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """PS3.3 C.11.2.1.2 with y in [0, 255], rounded; ``values`` is float32, reused."""
    c, w = window.center, window.width
    if window.function == "SIGMOID":
        # y = 255 / (1 + exp(-4 (x - c) / w))  (C.11.2.1.3.1)
        values -= np.float32(c)
        values *= np.float32(-4.0 / w)
        np.clip(values, -80, 80, out=values)  # exp stays finite in float32
        np.exp(values, out=values)
        values += 1
        np.divide(255.0, values, out=values)
    elif window.function == "LINEAR_EXACT":
        # y = ((x - c) / w + 0.5) * 255, clipped at c -/+ w/2  (C.11.2.1.3.2)
        values -= np.float32(c)
        values *= np.float32(255.0 / w)
        values += np.float32(127.5)
    else:
        # y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255, clipped  (C.11.2.1.2.1); w == 1 is a
        # threshold at c - 0.5.
        if w == 1:
            return np.where(values > c - 0.5, 255, 0).astype(np.uint8)
        values -= np.float32(c - 0.5)
        values *= np.float32(255.0 / (w - 1))
        values += np.float32(127.5)
    np.clip(values, 0, 255, out=values)
    np.rint(values, out=values)
    return values.astype(np.uint8)


def _stretch(values: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
    """``present``'s value range (default: ``values``') scaled to [0, 255], clipped: the VOI
    when neither the data nor the request gives a window."""
    present = values if present is None else present
    low, high = float(present.min()), float(present.max())
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    out = values.astype(np.float32)
    out -= np.float32(low)
    out *= np.float32(255.0 / (high - low))
    np.clip(out, 0, 255, out=out)
    np.rint(out, out=out)
    return out.astype(np.uint8)
