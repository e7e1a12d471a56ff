"""A small corpus of generated instances with chosen patient, study and series attributes, stored
through STOW-RS, for the QIDO-RS and WADO-RS metadata tests."""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from dicomql.provider.transports import InProcessTransport
from dicomql.service.app import create_app
from dicomql.service.config import ServiceConfig
from tests.support.dicomweb import DICOMWEB, create_store, multipart

CT = "1.2.840.10008.5.1.4.1.1.2"


@dataclass(frozen=True)
class Study:
    uid: str
    patient_name: str
    patient_id: str
    accession_number: str
    referring_physician_name: str
    study_date: str
    description: str
    series: tuple[tuple[str, str, tuple[str, ...]], ...]  # (series uid, modality, sop uids)


STUDIES = (
    Study(
        "1.2.826.0.1.1",
        "Doe^John",
        "PID-A",
        "ACC100",
        "House^Gregory",
        "20200115",
        "Head CT",
        (
            ("1.2.826.0.1.1.1", "CT", ("1.2.826.0.1.1.1.1", "1.2.826.0.1.1.1.2")),
            ("1.2.826.0.1.1.2", "MR", ("1.2.826.0.1.1.2.1",)),
        ),
    ),
    Study(
        "1.2.826.0.1.2",
        "Smith^Anna",
        "PID-B",
        "ACC200",
        "Wilson^James",
        "20211231",
        "Abdomen US",
        (("1.2.826.0.1.2.1", "US", ("1.2.826.0.1.2.1.1",)),),
    ),
    Study(
        "1.2.826.0.1.3",
        "Müller^Jürgen",
        "pid-c",
        "XYZ9",
        "",
        "20190601",
        "Chest CT",
        (("1.2.826.0.1.3.1", "CT", ("1.2.826.0.1.3.1.1",)),),
    ),
    Study(
        "1.2.826.0.1.4",
        "Yamada^Tarou=山田^太郎=やまだ^たろう",
        "jp-1",
        "JP1",
        "",
        "20180101",
        "Knee MR",
        (("1.2.826.0.1.4.1", "MR", ("1.2.826.0.1.4.1.1",)),),
    ),
)
# Short names used by the tests' tables.
A, B, C, D = (study.uid for study in STUDIES)
A1, A2, B1, C1, D1 = (
    "1.2.826.0.1.1.1",
    "1.2.826.0.1.1.2",
    "1.2.826.0.1.2.1",
    "1.2.826.0.1.3.1",
    "1.2.826.0.1.4.1",
)
A1_1, A1_2, A2_1, B1_1, C1_1, D1_1 = (
    "1.2.826.0.1.1.1.1",
    "1.2.826.0.1.1.1.2",
    "1.2.826.0.1.1.2.1",
    "1.2.826.0.1.2.1.1",
    "1.2.826.0.1.3.1.1",
    "1.2.826.0.1.4.1.1",
)


def instance_bytes(
    study: Study, series_uid: str, modality: str, sop_uid: str, number: int
) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CT
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study.uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.AccessionNumber = study.accession_number
    ds.ReferringPhysicianName = study.referring_physician_name
    ds.StudyDate = study.study_date
    ds.StudyTime = "101500"
    ds.StudyID = "S1"
    ds.StudyDescription = study.description
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.SeriesDescription = f"{modality} series"
    ds.Manufacturer = "dicomql"
    ds.InstanceNumber = number
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Rows, ds.Columns = 2, 2
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = b"\x00\x01" * 4
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def corpus_parts() -> list[bytes]:
    parts = []
    for study in STUDIES:
        for series_uid, modality, sops in study.series:
            for number, sop in enumerate(sops, start=1):
                parts.append(instance_bytes(study, series_uid, modality, sop, number))
    return parts


def store_corpus(client: httpx.Client) -> None:
    body, content_type = multipart(corpus_parts())
    response = client.post(
        f"{DICOMWEB}/studies", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 200, response.text


def embedded_with_corpus(data_dir: Path, database_url: str | None) -> Iterator[httpx.Client]:
    config = ServiceConfig(data_dir=data_dir, database_url=database_url)
    data_dir.mkdir(parents=True, exist_ok=True)
    create_store(config)
    transport = InProcessTransport(create_app(config))
    with httpx.Client(transport=transport, base_url="http://embedded") as client:
        store_corpus(client)
        yield client


@contextmanager
def index_url(backend: str) -> Iterator[str | None]:
    """The index URL for ``backend``: None (SQLite in the data dir) or a fresh PostgreSQL schema,
    for module-scoped fixtures (conftest's ``database_url`` is per test)."""
    if backend == "sqlite":
        yield None
        return
    import psycopg

    # As tests/conftest.py does (not imported: several conftest modules share that name).
    postgres = os.environ.get(
        "DICOMQL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    plain = postgres.replace("+psycopg", "")
    try:
        psycopg.connect(plain, connect_timeout=3).close()
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL at {postgres} is not reachable: {exc}")
    schema = f"dq_{secrets.token_hex(6)}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{postgres}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
