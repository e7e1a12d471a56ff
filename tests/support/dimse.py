"""A ``dicomql serve`` subprocess with its DIMSE listener, and what the DIMSE tests share."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.uid import ExplicitVRLittleEndian

from tests.support.ports import free_port

DICOMQL = Path(sys.executable).with_name("dicomql")
LOCATION = "/v1/projects/p/locations/l"
DATASET = f"{LOCATION}/datasets/d"
STORE_ID = "s"
STORE_NAME = f"projects/p/locations/l/datasets/d/dicomStores/{STORE_ID}"
DICOMWEB = f"/v1/{STORE_NAME}/dicomWeb"
AE_TITLE = "DICOMQL"
# pydicom's test files with a PS3.10 header, in several transfer syntaxes and SOP classes.
TEST_FILES = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm")


def need_dcmtk() -> None:
    if shutil.which("echoscu") is None:
        pytest.skip("dcmtk is not installed (apt-get install dcmtk)")


@dataclass
class DimseServer:
    http: httpx.Client
    dimse_port: int
    log: Path

    def create_store(self, store_id: str = STORE_ID) -> None:
        response = self.http.post(f"{LOCATION}/datasets", params={"datasetId": "d"}, json={})
        assert response.status_code in (200, 409), response.text
        response = self.http.post(
            f"{DATASET}/dicomStores", params={"dicomStoreId": store_id}, json={}
        )
        assert response.status_code in (200, 409), response.text


@contextmanager
def dimse_server(
    data_dir: Path, *extra: str, processes: int = 1, store: str | None = STORE_NAME
) -> Iterator[DimseServer]:
    """``dicomql serve --dimse-port`` until it answers HTTP (its DIMSE listener starts first),
    with ``--dimse-store store`` unless it is None."""
    port, dimse_port = free_port(), free_port()
    log = data_dir.parent / f"serve-{port}.log"
    command = [
        str(DICOMQL),
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--processes",
        str(processes),
        "--dimse-port",
        str(dimse_port),
        *(["--dimse-store", store] if store else []),
        *extra,
    ]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 90
            while True:
                if process.poll() is not None:
                    raise AssertionError(f"dicomql serve exited: {log.read_text()[-3000:]}")
                try:
                    if client.get(LOCATION).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "dicomql serve did not answer in time"
                time.sleep(0.05)
            yield DimseServer(client, dimse_port, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def dcmtk(*command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A dcmtk tool, its output kept for the assertion messages."""
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def dataset_bytes(ps310: bytes) -> bytes:
    """The data set of a PS3.10 file: what follows its preamble and file meta group."""
    assert ps310[128:132] == b"DICM" and ps310[132:136] == b"\x02\x00\x00\x00", ps310[:140]
    group_length = int.from_bytes(ps310[140:144], "little")
    return ps310[144 + group_length :]


CT = "1.2.840.10008.5.1.4.1.1.2"
# Two patients; P1 has two studies (one with two series), P2 one study.
LAYOUT = [
    # patient id, name, study, date, series, modality, instances
    ("FIND-P1", "Doe^Jane", "1.2.3.40.1", "20240105", "1.2.3.40.1.1", "CT", 2),
    ("FIND-P1", "Doe^Jane", "1.2.3.40.1", "20240105", "1.2.3.40.1.2", "MR", 1),
    ("FIND-P1", "Doe^Jane", "1.2.3.40.2", "20240310", "1.2.3.40.2.1", "CT", 1),
    ("FIND-P2", "Roe^Rich", "1.2.3.40.3", "20231120", "1.2.3.40.3.1", "US", 3),
]


def instance(
    patient: str, name: str, study: str, date: str, series: str, modality: str, n: int
) -> bytes:
    """A small CT instance as PS3.10 bytes."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CT
    ds.file_meta.MediaStorageSOPInstanceUID = f"{series}.{n}"
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = f"{series}.{n}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientID, ds.PatientName, ds.StudyDate = patient, name, date
    ds.Modality, ds.InstanceNumber = modality, n
    buffer = DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def stow_layout(server: DimseServer) -> dict[str, bytes]:
    """The instances of :data:`LAYOUT` stored through STOW-RS; their bytes by SOP Instance UID."""
    stored = {}
    for patient, name, study, date, series, modality, count in LAYOUT:
        for n in range(1, count + 1):
            body = instance(patient, name, study, date, series, modality, n)
            response = server.http.post(
                f"{DICOMWEB}/studies", content=body, headers={"content-type": "application/dicom"}
            )
            assert response.status_code == 200, response.text
            stored[f"{series}.{n}"] = body
    return stored


def values_of(ds: Dataset) -> dict[object, object]:
    """The data set's values but its group lengths and trailing padding (storescu drops
    them, as PS3.5 allows)."""
    return {e.tag: e.value for e in ds if e.tag.element != 0 and e.tag != 0xFFFCFFFC}
