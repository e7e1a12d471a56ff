"""Burned-in text redaction with Tesseract OCR over deid-data's ultrasound with a patient's name,
date, IDs and hospital burned into its pixels."""

from __future__ import annotations

import copy
import io
import shutil
from pathlib import Path

import deid_data
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from dicomql.dicom.deid import Deidentifier
from dicomql.dicom.deid import image as deid_image

pytestmark = [
    pytest.mark.slow,  # Tesseract takes seconds per image
    pytest.mark.skipif(
        shutil.which("tesseract") is None, reason="needs tesseract (Debian tesseract-ocr)"
    ),
]
ULTRASOUND = Path(deid_data.__file__).parent / "data/ultrasounds/RGB_IMAGE.dcm"


@pytest.fixture(scope="module")
def original() -> Dataset:
    return pydicom.dcmread(ULTRASOUND)


@pytest.fixture(scope="module")
def words(original: Dataset) -> dict[str, deid_image.Word]:
    return {word.text: word for word in deid_image.detect_words(original)}


def box(pixels: np.ndarray, word: deid_image.Word) -> np.ndarray:
    return pixels[word.top : word.top + word.height, word.left : word.left + word.width]


def redacted(original: Dataset, mode: str) -> Dataset:
    config = {"image": {"textRedactionMode": mode}}
    output = Deidentifier(config).deidentify(copy.deepcopy(original))
    buffer = io.BytesIO()
    output.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


def test_ocr_reads_the_burned_in_patient_name_and_the_vendor(
    words: dict[str, deid_image.Word],
) -> None:
    assert any("ZZZDOWNTIME" in text for text in words)
    assert "SIEMENS" in words


def test_redact_all_text_blanks_every_word_and_keeps_the_image(
    original: Dataset, words: dict[str, deid_image.Word]
) -> None:
    output = redacted(original, "REDACT_ALL_TEXT")
    pixels, before = output.pixel_array, original.pixel_array
    for word in words.values():
        assert not box(pixels, word).any(), word.text
    assert output.BurnedInAnnotation == "NO"
    assert pixels.shape == before.shape
    # The ultrasound picture itself (centre of the frame) is untouched.
    assert (pixels[300:500, 300:600] == before[300:500, 300:600]).all()


def test_redact_sensitive_text_blanks_name_date_and_ids_but_keeps_the_vendor(
    original: Dataset, words: dict[str, deid_image.Word]
) -> None:
    output = redacted(original, "REDACT_SENSITIVE_TEXT")
    pixels, before = output.pixel_array, original.pixel_array
    name = next(word for text, word in words.items() if "ZZZDOWNTIME" in text)
    for word in (name, words["4/14/2020"]):
        assert not box(pixels, word).any(), word.text
    assert (box(pixels, words["SIEMENS"]) == box(before, words["SIEMENS"])).all()
