"""Rendering a frame as a consumer image (PS3.18 8.3.5.1.3, 10.4.1.1.3): modality and VOI
transforms, scaling to 8 bits, optional viewport, encoded as JPEG or PNG with Pillow."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image
from pydicom import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

RENDERED_MEDIA_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}


class RenderError(ValueError):
    """The frame cannot be decoded or rendered."""


@dataclass(frozen=True)
class RenderOptions:
    media_type: str = "image/jpeg"
    viewport: tuple[int, int] | None = None  # (width, height), aspect ratio kept
    quality: int = 75  # JPEG quality 1-100


def render_frame(
    file: BinaryIO | Dataset, header: Dataset, index: int, options: RenderOptions
) -> bytes:
    """Encode frame ``index`` (from 0) of the instance in ``file`` (a PS3.10 file, or a dataset
    read whole with its pixel data) as ``options.media_type``.

    Raises:
        RenderError: no pixel data, an undecodable syntax, or a shape Pillow cannot show.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame = pixel_array(file, index=index)
            image = _to_image(frame, header)
    except (ValueError, RuntimeError, NotImplementedError, TypeError, AttributeError) as exc:
        raise RenderError(f"Cannot render the frame: {exc}") from exc
    if options.viewport is not None:
        image.thumbnail(options.viewport)
    buffer = io.BytesIO()
    encoder = RENDERED_MEDIA_TYPES[options.media_type]
    if encoder == "JPEG":
        image.save(buffer, encoder, quality=options.quality)
    else:
        image.save(buffer, encoder)
    return buffer.getvalue()


def _to_image(frame: np.ndarray, header: Dataset) -> Image.Image:
    samples = int(header.get("SamplesPerPixel", 1) or 1)
    if samples == 1:
        # PS3.4 N.2.1: modality LUT, then the VOI LUT (window) when the data carries one.
        values = apply_modality_lut(frame, header).astype(np.float64)
        if "WindowCenter" in header or "VOILUTSequence" in header:
            values = apply_voi_lut(values, header).astype(np.float64)
        values = _scale(values)
        if header.get("PhotometricInterpretation") == "MONOCHROME1":
            values = 255 - values
        return Image.fromarray(values)
    if frame.dtype != np.uint8:
        frame = _scale(frame.astype(np.float64))
    return Image.fromarray(np.ascontiguousarray(frame[..., :3]).astype(np.uint8))


def _scale(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    return ((values - low) * (255.0 / (high - low))).round().astype(np.uint8)
