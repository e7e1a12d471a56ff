"""Helpers for the DICOMweb storage-path tests: a dataset and store created directly in the index,
pydicom's bundled test files, generated instances, and multipart bodies."""

from __future__ import annotations

import importlib.util
import io
import struct
import warnings
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import httpx
import numpy as np
import pydicom.data
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import insert, select

from dicomql.dicom.limits import MAX_SEQUENCE_DEPTH
from dicomql.service.config import ServiceConfig
from dicomql.store.index import Index
from dicomql.store.schema import datasets, dicom_stores

STORE_PATH = "/v1/projects/p/locations/l/datasets/d/dicomStores/s"
DICOMWEB = f"{STORE_PATH}/dicomWeb"
CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
STOW_LARGE_BENCH = Path(__file__).parents[2] / "bench" / "stow_large.py"


def stow_large_bench() -> ModuleType:
    """``bench/stow_large.py`` (its ``dicomql serve`` subprocess and peak-RSS reading)."""
    spec = importlib.util.spec_from_file_location("stow_large", STOW_LARGE_BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def create_store(config: ServiceConfig, project: str = "p", location: str = "l") -> None:
    """Create dataset ``d`` and DICOM store ``s`` as rows (the admin API is built elsewhere)."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    index = Index.open(config.index_url)
    try:
        moment = datetime.now(UTC)
        with index.begin() as conn:
            if conn.execute(select(datasets.c.pk)).first() is not None:
                return
            dataset_pk = conn.execute(
                insert(datasets)
                .values(
                    project=project,
                    location=location,
                    dataset_id="d",
                    resource={},
                    create_time=moment,
                )
                .returning(datasets.c.pk)
            ).scalar_one()
            conn.execute(
                insert(dicom_stores).values(
                    dataset_pk=dataset_pk,
                    store_id="s",
                    resource={},
                    create_time=moment,
                    update_time=moment,
                )
            )
    finally:
        index.close()


def uid_bearing_test_files() -> list[Path]:
    """pydicom's bundled files that read as PS3.10 and carry the three UIDs."""
    found = []
    # Only the files bundled in the wheel: get_testdata_files would try to download more.
    for path in sorted(TEST_FILES.rglob("*")):
        if path.suffix.lower() not in ("", ".dcm", ".dicom") or not path.is_file():
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        meta = getattr(ds, "file_meta", None)
        if meta is None or "TransferSyntaxUID" not in meta:
            continue
        if all(ds.get(k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")):
            found.append(path)
    return found


def make_instance(
    study: str | None = None,
    series: str | None = None,
    sop: str | None = None,
    *,
    rows: int = 8,
    columns: int = 8,
    frames: int = 1,
    patient_name: str = "Doe^John",
    modality: str = "CT",
    seed: int = 0,
) -> bytes:
    """A small 16-bit CT instance in explicit VR little endian, as PS3.10 bytes."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CT_SOP_CLASS
    ds.file_meta.MediaStorageSOPInstanceUID = sop or generate_uid()
    ds.SOPClassUID = CT_SOP_CLASS
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.PatientName = patient_name
    ds.PatientID = "P1"
    ds.Modality = modality
    ds.StudyDate = "20240102"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    pixels = np.random.default_rng(seed).integers(0, 4096, (frames, rows, columns), np.uint16)
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def with_64_bit_values(data: bytes, signed: list[int] | None, unsigned: list[int] | None) -> bytes:
    """The instance ``data`` with (0072,0082) Selector SV Value and (0072,0083) Selector UV
    Value, SV and UV (PS3.5 7.1.2: 2 reserved bytes and a 4-byte length, as OB's); None: not
    that one."""
    ds = dcmread(io.BytesIO(data))
    if signed is not None:
        ds.SelectorSVValue = signed
    if unsigned is not None:
        ds.SelectorUVValue = unsigned
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def values_resembling_a_deep_nest(format: str) -> list[int]:
    """64-bit numbers (``struct`` format ``q`` or ``Q``) whose bytes, read as the walk once
    read an SV or UV element (its reserved bytes as a 2-byte length, then its 4-byte length and
    value as elements), are sequences of undefined length nested beyond MAX_SEQUENCE_DEPTH."""
    # From the 4-byte length on: an LO element of 4 bytes (the first value), then the nest.
    nest = struct.pack("<HH2s2xI", 0x0009, 0x0010, b"SQ", 0xFFFFFFFF) * (MAX_SEQUENCE_DEPTH + 2)
    raw = b"LO\x04\x00" + bytes(4) + nest
    return list(struct.unpack(f"<{len(raw) // 8}{format}", raw))


def multipart(parts: list[bytes], boundary: str = "b0undary") -> tuple[bytes, str]:
    """A STOW body of ``application/dicom`` parts and its Content-Type."""
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n"
        for part in parts
    )
    body += b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def read_multipart(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart response body (headers lower-cased)."""
    boundary = next(
        param.split("=", 1)[1].strip('"')
        for param in content_type.split(";")
        if param.strip().lower().startswith("boundary=")
    )
    delimiter = b"--" + boundary.encode()
    pieces = body.split(delimiter)
    parts = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            break
        head, _, payload = piece[2:].partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, payload[:-2] if payload.endswith(b"\r\n") else payload))
    return parts


class DicomWebClient:
    """An httpx client of the embedded service (in-process) with store ``s`` created."""

    def __init__(self, config: ServiceConfig) -> None:
        from dicomql.provider.transports import InProcessTransport
        from dicomql.service.app import create_app

        create_store(config)
        self.transport = InProcessTransport(create_app(config))
        self.http = httpx.Client(transport=self.transport, base_url="http://embedded")

    def stow(self, parts: list[bytes], study: str | None = None, **headers: str) -> httpx.Response:
        """STOW ``parts``; the response as DICOM JSON unless ``accept`` says otherwise (with no
        Accept the service answers XML, as Google does)."""
        body, content_type = multipart(parts)
        path = f"{DICOMWEB}/studies" + (f"/{study}" if study else "")
        headers = {"content-type": content_type, "accept": "application/dicom+json", **headers}
        return self.http.post(path, content=body, headers=headers)

    def close(self) -> None:
        self.http.close()
        self.transport.close()


def referenced(response: httpx.Response) -> list[str]:
    """SOPInstanceUIDs of the ReferencedSOPSequence of a STOW response."""
    items = response.json().get("00081199", {}).get("Value", [])
    return [item["00081155"]["Value"][0] for item in items]


def failed(response: httpx.Response) -> list[tuple[str | None, int]]:
    """(SOPInstanceUID or None, FailureReason) of the FailedSOPSequence of a STOW response."""
    items = response.json().get("00081198", {}).get("Value", [])
    return [
        (item.get("00081155", {}).get("Value", [None])[0], item["00081197"]["Value"][0])
        for item in items
    ]
