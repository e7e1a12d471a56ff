"""Studies for the viewer tests: a CT series whose slices differ visibly (pydicom's CT_small,
shifted and brightened a little more on each slice), single-image studies of other patients,
and one study per encoding OHIF must decode (JPEG Baseline, JPEG 2000, a multi-frame MR
image), stored through the real admin API and STOW-RS."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pydicom.data
from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid

from tests.support.dicomweb import multipart

PROJECT, LOCATION, DATASET, STORE = "p", "l", "d", "s"
STORE_NAME = f"projects/{PROJECT}/locations/{LOCATION}/datasets/{DATASET}/dicomStores/{STORE}"
DICOMWEB = f"/v1/{STORE_NAME}/dicomWeb"


@dataclass(frozen=True)
class Study:
    patient_name: str
    patient_id: str
    study_date: str
    description: str
    uid: str


CT = Study("VIEWER^CT", "VCT-1", "20240315", "Chest CT for the viewer test", generate_uid())
OTHERS = (
    Study("OTHER^FIRST", "VOT-1", "20190102", "An older study", generate_uid()),
    Study("OTHER^SECOND", "VOT-2", "20221010", "Another patient", generate_uid()),
)


# pydicom's test files, one study each: (what it shows, file).
ENCODINGS = (
    ("JPEG Baseline", "SC_rgb_jpeg_dcmtk.dcm"),
    ("JPEG 2000", "JPEG2000.dcm"),
)
MULTI_FRAME = Study("MULTI^FRAME", "VMF-1", "20200606", "Eight frames", generate_uid())
FRAMES = 8


def _template() -> Dataset:
    return dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))


def _as_study(dataset: Dataset, study: Study, series_uid: str) -> None:
    dataset.PatientName = study.patient_name
    dataset.PatientID = study.patient_id
    dataset.StudyDate = study.study_date
    dataset.SeriesDate = study.study_date
    dataset.StudyDescription = study.description
    dataset.StudyInstanceUID = study.uid
    dataset.SeriesInstanceUID = series_uid
    dataset.AccessionNumber = study.patient_id


def ct_series(slices: int) -> list[bytes]:
    """``slices`` CT images, 5 mm apart, each a shifted and brighter copy of the one before."""
    base = _template()
    pixels = base.pixel_array.astype(np.int32)
    series_uid = generate_uid()
    out = []
    for number in range(slices):
        dataset = _template()
        _as_study(dataset, CT, series_uid)
        dataset.SeriesDescription = "Axial"
        dataset.SeriesNumber = 2
        dataset.InstanceNumber = number + 1
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        x, y, z = (float(v) for v in base.ImagePositionPatient)
        dataset.ImagePositionPatient = [x, y, z + 5.0 * number]
        dataset.SliceLocation = z + 5.0 * number
        image = np.roll(pixels, shift=9 * number, axis=1) + 60 * number
        image[8 + 8 * number : 24 + 8 * number, 8:40] = 2400  # a bright bar moving down
        dataset.PixelData = np.clip(image, -32768, 32767).astype(np.int16).tobytes()
        dataset.WindowCenter = 300
        dataset.WindowWidth = 1500
        out.append(_encode(dataset))
    return out


def single_image(study: Study) -> bytes:
    dataset = _template()
    _as_study(dataset, study, generate_uid())
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    return _encode(dataset)


def multi_frame() -> bytes:
    """A multi-frame grayscale image (Multi-frame Grayscale Word SC): MR_small, shifted down a
    little more on each frame."""
    dataset = dcmread(pydicom.data.get_testdata_file("MR_small.dcm"))
    image = dataset.pixel_array.astype(np.uint16)
    frames = np.stack([np.roll(image, 6 * number, axis=0) for number in range(FRAMES)])
    _as_study(dataset, MULTI_FRAME, generate_uid())
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7.3"
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.NumberOfFrames = FRAMES
    dataset.PixelRepresentation = 0
    dataset.FrameIncrementPointer = 0x00181063  # Frame Time
    dataset.FrameTime = 100
    dataset.PixelData = frames.tobytes()
    return _encode(dataset)


def encoded_studies() -> list[tuple[str, str, bytes]]:
    """(what it shows, StudyInstanceUID, the instance) for each encoding."""
    out = []
    for what, name in ENCODINGS:
        raw = Path(pydicom.data.get_testdata_file(name)).read_bytes()
        out.append((what, dcmread(io.BytesIO(raw), stop_before_pixels=True).StudyInstanceUID, raw))
    out.append(("multi-frame", MULTI_FRAME.uid, multi_frame()))
    return out


def _encode(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def fill(base_url: str, token: str | None, ct_slices: int) -> dict[str, str]:
    """Create the store and store the CT series, the other patients' studies and one study per
    encoding in it; the encodings' StudyInstanceUIDs by what they show."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
        parent = f"/v1/projects/{PROJECT}/locations/{LOCATION}"
        client.post(f"{parent}/datasets", params={"datasetId": DATASET}).raise_for_status()
        client.post(
            f"{parent}/datasets/{DATASET}/dicomStores", params={"dicomStoreId": STORE}
        ).raise_for_status()
        encoded = encoded_studies()
        parts = ct_series(ct_slices) + [single_image(study) for study in OTHERS]
        parts += [instance for _, _, instance in encoded]
        body, content_type = multipart(parts)
        response = client.post(
            f"{DICOMWEB}/studies", content=body, headers={"Content-Type": content_type}
        )
        response.raise_for_status()
    return {what: study for what, study, _ in encoded}
