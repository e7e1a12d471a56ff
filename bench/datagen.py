"""Deterministic benchmark data: CT-like 512x512 16-bit series (about 0.5 MB an instance) and
copies of pydicom's CT_small (39 KB) with fresh UIDs, spread over patients, dates and modalities.

Instances are rendered from a serialised template by swapping fixed-width placeholder values, so
a corpus of 100,000 instances costs the client microseconds an instance, not pydicom's
milliseconds; the load generator must not be what limits the servers under test.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

# pydicom's registered root (PS3.5 §9); a 30-digit component keeps every UID 56 characters long,
# an even length, so a UID swaps in place without touching any element or group length.
UID_ROOT = "1.2.826.0.1.3680043.8.498."
UID_LENGTH = 56

SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
    "MG": "1.2.840.10008.5.1.4.1.1.1.2",
}
# Share of studies per modality (projection radiography dominates study counts, CT and MR
# dominate instance counts), the series a study holds and the instances a series holds.
MODALITY_MIX = {"CR": 0.30, "DX": 0.15, "US": 0.15, "CT": 0.20, "MR": 0.12, "PT": 0.03, "MG": 0.05}
SERIES_PER_STUDY = {
    "CR": (1, 2),
    "DX": (1, 2),
    "US": (1, 3),
    "CT": (1, 4),
    "MR": (2, 6),
    "PT": (2, 3),
    "MG": (1, 2),
}
SERIES_SIZES = {
    "CR": (1, 2),
    "DX": (1, 3),
    "US": (1, 12),
    "CT": (20, 80),
    "MR": (10, 40),
    "PT": (20, 60),
    "MG": (2, 4),
}

_FAMILY_NAMES = (
    "SMITH JOHNSON WILLIAMS BROWN JONES GARCIA MILLER DAVIS RODRIGUEZ MARTINEZ HERNANDEZ LOPEZ "
    "GONZALEZ WILSON ANDERSON THOMAS TAYLOR MOORE JACKSON MARTIN LEE PEREZ THOMPSON WHITE HARRIS "
    "SANCHEZ CLARK RAMIREZ LEWIS ROBINSON WALKER YOUNG ALLEN KING WRIGHT SCOTT TORRES NGUYEN HILL "
    "FLORES GREEN ADAMS NELSON BAKER HALL RIVERA CAMPBELL MITCHELL CARTER ROBERTS SMITHERS DUBOIS "
    "MULLER SCHMIDT ROSSI JANSSENS PEETERS NOVAK KOWALSKI TANAKA"
)
_GIVEN_NAMES = (
    "JAMES MARY ROBERT PATRICIA JOHN JENNIFER MICHAEL LINDA DAVID ELIZABETH WILLIAM BARBARA "
    "RICHARD SUSAN JOSEPH JESSICA THOMAS SARAH CHARLES KAREN CHRISTOPHER LISA DANIEL NANCY MATTHEW "
    "BETTY ANTHONY MARGARET MARK SANDRA SOPHIE LUCAS EMMA NOAH OLIVIA LIAM MIA ELLA HUGO LENA"
)
FAMILY_NAMES = _FAMILY_NAMES.split()
GIVEN_NAMES = _GIVEN_NAMES.split()
DESCRIPTIONS = (
    "CT CHEST W CONTRAST",
    "CT ABDOMEN PELVIS",
    "MR BRAIN WO CONTRAST",
    "MR KNEE LEFT",
    "XR CHEST PA LAT",
    "US ABDOMEN COMPLETE",
    "PET CT WHOLE BODY",
    "CT HEAD WO CONTRAST",
)
FIRST_YEAR, LAST_YEAR = 2005, 2024

# Placeholders: distinctive, valid for their VR, and exactly as wide as the values put in them.
_STUDY_UID = UID_ROOT + "1" + "1" * 29
_SERIES_UID = UID_ROOT + "2" + "2" * 29
_SOP_UID = UID_ROOT + "3" + "3" * 29
_FRAME_UID = UID_ROOT + "4" + "4" * 29
_PATIENT_NAME = "QQPLACEHOLDER^PATIENTNAMEQQQQQQ"  # PN, 32 with padding
_PATIENT_ID = "QQPATIENTIDQ"  # LO, 12
_ACCESSION = "QQACCESSIONQQQQQ"  # SH, 16
_DESCRIPTION = "QQSTUDYDESCRIPTIONQQQQQQQQQQQQQQ"  # LO, 32
_STUDY_DATE = "18880808"
_BIRTH_DATE = "18770707"
_SERIES_NUMBER = "999917"
_INSTANCE_NUMBER = "888827"
_WIDTHS = {"name": 32, "patient_id": 12, "accession": 16, "description": 32, "number": 6}


@dataclass(frozen=True)
class SeriesPlan:
    series_instance_uid: str
    modality: str
    number: int
    size: int


@dataclass(frozen=True)
class StudyPlan:
    study_instance_uid: str
    patient_id: str
    patient_name: str
    birth_date: str
    study_date: str
    accession_number: str
    description: str
    series: tuple[SeriesPlan, ...] = field(default_factory=tuple)

    @property
    def size(self) -> int:
        return sum(series.size for series in self.series)


@dataclass(frozen=True)
class Template:
    """A serialised instance whose header holds the placeholders; ``pixels`` follow it."""

    header: bytes
    pixel_length: int


class UidFactory:
    """Fixed-length, collision-free (2**96 space) UIDs, reproducible from a seed."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def __call__(self) -> str:
        digits = f"{self._random.getrandbits(96) % 10**29:029d}"
        return f"{UID_ROOT}1{digits}"


def _base_dataset(modality: str) -> Dataset:
    dataset = dcmread(get_testdata_file("CT_small.dcm"))
    # PixelData must be the last element so the header/pixel split is a byte offset.
    # (keys(): iterating a pydicom Dataset yields elements, not tags)
    for tag in [tag for tag in dataset.keys() if tag > 0x7FE00010]:  # noqa: SIM118
        del dataset[tag]
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = SOP_CLASSES[modality]
    dataset.file_meta.MediaStorageSOPClassUID = SOP_CLASSES[modality]
    dataset.Modality = modality
    dataset.StudyInstanceUID = _STUDY_UID
    dataset.SeriesInstanceUID = _SERIES_UID
    dataset.SOPInstanceUID = _SOP_UID
    dataset.file_meta.MediaStorageSOPInstanceUID = _SOP_UID
    dataset.FrameOfReferenceUID = _FRAME_UID
    dataset.PatientName = _PATIENT_NAME
    dataset.PatientID = _PATIENT_ID
    dataset.PatientBirthDate = _BIRTH_DATE
    dataset.AccessionNumber = _ACCESSION
    dataset.StudyDescription = _DESCRIPTION
    dataset.StudyDate = _STUDY_DATE
    dataset.SeriesDate = _STUDY_DATE
    dataset.SeriesNumber = _SERIES_NUMBER
    dataset.InstanceNumber = _INSTANCE_NUMBER
    return dataset


def _serialise(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@cache
def small_template(modality: str) -> Template:
    """CT_small (128x128, 16-bit) as ``modality``: 39 KB an instance."""
    dataset = _base_dataset(modality)
    pixel_length = len(dataset.PixelData)
    data = _serialise(dataset)
    return Template(header=data[:-pixel_length], pixel_length=pixel_length)


@cache
def small_pixels() -> bytes:
    pixels: bytes = dcmread(get_testdata_file("CT_small.dcm")).PixelData
    return pixels


@cache
def ct_template() -> Template:
    """A CT slice of 512x512 16-bit signed pixels: 0.5 MB of pixel data."""
    dataset = _base_dataset("CT")
    dataset.Rows = dataset.Columns = 512
    dataset.PixelSpacing = [0.7, 0.7]
    dataset.PixelData = bytes(512 * 512 * 2)
    data = _serialise(dataset)
    return Template(header=data[: -len(dataset.PixelData)], pixel_length=len(dataset.PixelData))


@cache
def ct_slices(count: int = 8) -> tuple[bytes, ...]:
    """A few distinct phantom slices (body ellipse, bone ring, noise) in Hounsfield units."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[-256:256, -256:256]
    slices = []
    for index in range(count):
        body = (x / 200.0) ** 2 + (y / (150.0 + 4 * index)) ** 2 <= 1.0
        ring = np.abs(np.hypot(x, y) - 90 - index) < 6
        image = np.full((512, 512), -1000, dtype=np.int16)
        image[body] = 40
        image[ring] = 700
        image += rng.normal(0, 12, image.shape).astype(np.int16)
        slices.append(image.astype("<i2").tobytes())
    return tuple(slices)


def _fixed(value: str, width: int) -> bytes:
    if len(value) > width:
        raise ValueError(f"{value!r} is wider than {width}")
    return value.ljust(width).encode("ascii")


def render(
    template: Template,
    pixels: bytes,
    study: StudyPlan,
    series: SeriesPlan,
    sop_instance_uid: str,
    instance_number: int,
) -> bytes:
    """One instance's Part 10 bytes: the template header with this instance's values."""
    if len(pixels) != template.pixel_length:
        raise ValueError("pixel data does not fit the template")
    header = template.header
    for placeholder, value in (
        (_STUDY_UID, study.study_instance_uid),
        (_SERIES_UID, series.series_instance_uid),
        (_SOP_UID, sop_instance_uid),
        # One frame of reference per series, derived so it needs no extra state.
        (_FRAME_UID, series.series_instance_uid[:-1] + "9"),
    ):
        header = header.replace(placeholder.encode(), value.encode())
    for placeholder, value, width in (
        (_PATIENT_NAME, study.patient_name, _WIDTHS["name"]),
        (_PATIENT_ID, study.patient_id, _WIDTHS["patient_id"]),
        (_ACCESSION, study.accession_number, _WIDTHS["accession"]),
        (_DESCRIPTION, study.description, _WIDTHS["description"]),
        (_STUDY_DATE, study.study_date, 8),
        (_BIRTH_DATE, study.birth_date, 8),
        (_SERIES_NUMBER, str(series.number), _WIDTHS["number"]),
        (_INSTANCE_NUMBER, str(instance_number), _WIDTHS["number"]),
    ):
        header = header.replace(placeholder.encode().ljust(width), _fixed(value, width))
    return header + pixels


class Corpus:
    """Plans studies over a population of patients and renders their instances.

    Args:
        seed: makes the plan (patients, dates, UIDs) reproducible across servers and runs.
        patients: how many distinct patients studies are spread over.
    """

    def __init__(self, seed: int = 1, patients: int = 2000) -> None:
        self._random = random.Random(seed)
        self.uid = UidFactory(seed)
        self.patients = [self._patient(index) for index in range(patients)]
        self._accession = 0

    def _patient(self, index: int) -> tuple[str, str, str]:
        family = self._random.choice(FAMILY_NAMES)
        given = self._random.choice(GIVEN_NAMES)
        birth = (
            f"{self._random.randint(1930, 2015)}{self._random.randint(1, 12):02d}"
            f"{self._random.randint(1, 28):02d}"
        )
        return f"PID{index:07d}", f"{family}^{given}", birth

    def study(
        self,
        modality: str | None = None,
        series_sizes: list[int] | None = None,
        patient: int | None = None,
    ) -> StudyPlan:
        """A study of one patient on one date; sizes default to the modality's usual range."""
        rnd = self._random
        if modality is None:
            modality = rnd.choices(list(MODALITY_MIX), weights=list(MODALITY_MIX.values()))[0]
        if series_sizes is None:
            low, high = SERIES_SIZES[modality]
            series_count = rnd.randint(*SERIES_PER_STUDY[modality])
            series_sizes = [rnd.randint(low, high) for _ in range(series_count)]
        patient_id, patient_name, birth = self.patients[
            rnd.randrange(len(self.patients)) if patient is None else patient
        ]
        self._accession += 1
        date = (
            f"{rnd.randint(FIRST_YEAR, LAST_YEAR)}{rnd.randint(1, 12):02d}{rnd.randint(1, 28):02d}"
        )
        series = tuple(
            SeriesPlan(self.uid(), modality, number, size)
            for number, size in enumerate(series_sizes, start=1)
        )
        return StudyPlan(
            study_instance_uid=self.uid(),
            patient_id=patient_id,
            patient_name=patient_name,
            birth_date=birth,
            study_date=date,
            accession_number=f"A{self._accession:011d}",
            description=rnd.choice(DESCRIPTIONS),
            series=series,
        )

    def studies(self, instances: int) -> list[StudyPlan]:
        """Studies holding exactly ``instances`` instances in all (the last one is trimmed)."""
        plans: list[StudyPlan] = []
        remaining = instances
        while remaining > 0:
            plan = self.study()
            if plan.size > remaining:
                plan = _trim(plan, remaining)
            plans.append(plan)
            remaining -= plan.size
        return plans

    def small_instances(self, plans: list[StudyPlan]) -> Iterator[bytes]:
        """CT_small-sized (39 KB) instances of the planned studies, in study/series order."""
        for study in plans:
            for series in study.series:
                template = small_template(series.modality)
                for number in range(1, series.size + 1):
                    yield render(template, small_pixels(), study, series, self.uid(), number)

    def skip_small_instances(self, plans: list[StudyPlan]) -> None:
        """Advance as :meth:`small_instances` would, rendering nothing: the studies planned next
        are then those of a run that stored these instances (``compare.py --loaded``)."""
        for study in plans:
            for series in study.series:
                for _ in range(series.size):
                    self.uid()

    def ct_instances(self, plans: list[StudyPlan]) -> Iterator[bytes]:
        """CT-like 512x512 16-bit instances (about 0.5 MB each) of the planned studies."""
        template = ct_template()
        slices = ct_slices()
        for study in plans:
            for series in study.series:
                for number in range(1, series.size + 1):
                    pixels = slices[number % len(slices)]
                    yield render(template, pixels, study, series, self.uid(), number)


def _trim(plan: StudyPlan, instances: int) -> StudyPlan:
    kept: list[SeriesPlan] = []
    for series in plan.series:
        if instances <= 0:
            break
        size = min(series.size, instances)
        kept.append(SeriesPlan(series.series_instance_uid, series.modality, series.number, size))
        instances -= size
    return StudyPlan(**{**plan.__dict__, "series": tuple(kept)})


def ct_instance_size() -> int:
    template = ct_template()
    return len(template.header) + template.pixel_length
