"""Burned-in text redaction (ImageConfig.textRedactionMode) with Tesseract OCR.

REDACT_ALL_TEXT blanks every word Tesseract reads in the pixels; REDACT_SENSITIVE_TEXT blanks only
the words that the free-text recognisers (``text.find``) flag or that repeat the instance's own
names and identifiers. Needs the ``tesseract`` program (Debian ``tesseract-ocr``) and PyPI
``pytesseract``. A multi-frame image is read once, as the per-pixel maximum over its frames
(burned-in annotations are overlays that stay put), and the boxes are blanked in every frame.
Redacted pixels are stored uncompressed (Explicit VR Little Endian), as re-encoding a lossy
image would degrade it again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from dicomql.dicom.deid import text

# Tesseract word confidence (0-100) below which a "word" is most likely image texture.
MIN_CONFIDENCE = 30.0
# Pixels around each word box also blanked: OCR boxes are tight and anti-aliasing bleeds.
PADDING = 2
# Sparse text (page segmentation mode 11): overlays are scattered words, not paragraphs.
TESSERACT_CONFIG = "--psm 11"


@dataclass(frozen=True)
class Word:
    """One word Tesseract read, with its box in pixel coordinates."""

    text: str
    left: int
    top: int
    width: int
    height: int
    line: tuple[int, int, int]
    confidence: float


def _frames(ds: Dataset) -> np.ndarray:
    """The decoded pixels as (frames, rows, columns[, samples])."""
    pixels = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames == 1:
        pixels = pixels[np.newaxis, ...]
    return pixels


def _ocr_image(frames: np.ndarray) -> Any:
    from PIL import Image

    projection = frames.max(axis=0)
    if projection.ndim == 3:  # colour: Tesseract reads luminance anyway
        projection = projection.mean(axis=2)
    projection = projection.astype(np.float64)
    low, high = float(projection.min()), float(projection.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    return Image.fromarray(((projection - low) * scale).astype(np.uint8))


def detect_words(ds: Dataset) -> list[Word]:
    """The words burned into ``ds``'s pixels."""
    import pytesseract

    data = pytesseract.image_to_data(
        _ocr_image(_frames(ds)), config=TESSERACT_CONFIG, output_type=pytesseract.Output.DICT
    )
    words = []
    for n, word in enumerate(data["text"]):
        confidence = float(data["conf"][n])
        if not word.strip() or confidence < MIN_CONFIDENCE:
            continue
        words.append(
            Word(
                text=word,
                left=int(data["left"][n]),
                top=int(data["top"][n]),
                width=int(data["width"][n]),
                height=int(data["height"][n]),
                line=(int(data["block_num"][n]), int(data["par_num"][n]), int(data["line_num"][n])),
                confidence=confidence,
            )
        )
    return words


def sensitive_words(
    words: list[Word],
    known: re.Pattern[str] | None,
    custom: tuple[tuple[re.Pattern[str], tuple[int, ...]], ...] = (),
) -> list[Word]:
    """The words that are (part of) a finding of the text recognisers, a known value, or a
    match of a custom regex (its ``groupIndexes`` groups, or all of it)."""
    lines: dict[tuple[int, int, int], list[Word]] = {}
    for word in words:
        lines.setdefault(word.line, []).append(word)
    chosen = []
    for line_words in lines.values():
        spans = []
        position = 0
        for word in line_words:
            spans.append((position, position + len(word.text), word))
            position += len(word.text) + 1
        line = " ".join(word.text for word in line_words)
        ranges = [(f.start, f.end) for f in text.find(line, known)]
        for pattern, groups in custom:
            for match in pattern.finditer(line):
                ranges.extend(match.span(group) for group in groups or (0,))
        for start, end, word in spans:
            if any(low < end and start < high for low, high in ranges):
                chosen.append(word)
    return chosen


def blank(ds: Dataset, words: list[Word]) -> None:
    """Set the pixels under ``words`` to 0 in every frame and store the pixels uncompressed."""
    if not words:
        return
    frames = _frames(ds).copy()
    rows, columns = frames.shape[1], frames.shape[2]
    for word in words:
        top, left = max(word.top - PADDING, 0), max(word.left - PADDING, 0)
        bottom = min(word.top + word.height + PADDING, rows)
        right = min(word.left + word.width + PADDING, columns)
        frames[:, top:bottom, left:right, ...] = 0
    pixels = frames if int(ds.get("NumberOfFrames", 1) or 1) > 1 else frames[0]
    # pydicom decodes colour (YBR JPEG included) to RGB; the stored interpretation must follow.
    photometric = "RGB" if int(ds.SamplesPerPixel) == 3 else str(ds.PhotometricInterpretation)
    ds.set_pixel_data(
        pixels, photometric_interpretation=photometric, bits_stored=int(ds.BitsStored)
    )
