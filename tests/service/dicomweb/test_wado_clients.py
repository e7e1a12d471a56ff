"""pydicom's bundled test files through real clients: stored with dicomweb-client over HTTP and
retrieved byte for byte with ``transfer-syntax=*``."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from xml.etree import ElementTree

import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient
from PIL import Image

from dicomql.service.config import ServiceConfig
from tests.support.dicomweb import DICOMWEB, TEST_FILES, create_store, uid_bearing_test_files

_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


@pytest.fixture
def dicomweb(service_config: ServiceConfig, live_server) -> Iterator[DICOMwebClient]:  # type: ignore[no-untyped-def]
    create_store(service_config)
    yield DICOMwebClient(url=f"{live_server.url}{DICOMWEB}")


def _encode(ds: pydicom.Dataset) -> bytes:
    # What dicomweb-client sends for a dataset (its store_instances uses pydicom.dcmwrite).
    with io.BytesIO() as buffer:
        pydicom.dcmwrite(buffer, ds)
        return buffer.getvalue()


_NATIVE = "{http://dicom.nema.org/PS3.19/models/NativeDICOM}"


def test_every_bundled_file_round_trips_byte_identical(dicomweb: DICOMwebClient) -> None:
    files = uid_bearing_test_files()
    assert len(files) >= 100
    stored: dict[str, tuple[tuple[str, str], bytes]] = {}  # SOP UID -> (study, series), bytes
    series_study: dict[str, str] = {}
    conflicts = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the bundled files are deliberately odd
        for path in files:
            ds = pydicom.dcmread(path)
            study, series, sop = (str(ds[k].value) for k in _UIDS)
            try:
                data = _encode(ds)
            except (TypeError, ValueError):
                data = None
            try:
                if data is not None:
                    response = dicomweb.store_instances([ds])
                else:
                    # pydicom cannot re-encode this file; send its own bytes, still through
                    # dicomweb-client's multipart encoder.
                    data = path.read_bytes()
                    response = dicomweb._http_post_multipart_application_dicom(
                        f"{dicomweb.base_url}/studies", [data]
                    )
            except requests.HTTPError as exc:
                # Only a UID that is already taken by different content may be refused.
                assert exc.response.status_code == 409, (path.name, exc.response.text)
                # dicomweb-client asks for no type, so the answer is XML, as Google's is.
                assert exc.response.headers["content-type"].startswith("application/dicom+xml")
                reasons = [
                    int(attribute.findtext(f"{_NATIVE}Value") or "")
                    for attribute in ElementTree.fromstring(exc.response.content).iter(
                        f"{_NATIVE}DicomAttribute"
                    )
                    if attribute.get("tag") == "00081197"
                ]
                assert reasons == [0x0110], path.name
                taken = sop in stored and stored[sop][1] != data
                moved = series_study.get(series, study) != study
                assert taken or moved, path.name
                conflicts += 1
                continue
            assert response.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == sop
            stored.setdefault(sop, ((study, series), data))
            series_study.setdefault(series, study)
        assert conflicts < len(files) // 4
        for sop, ((study, series), data) in stored.items():
            assert _raw(dicomweb, study, series, sop) == data, sop
            retrieved = dicomweb.retrieve_instance(
                study, series, sop, media_types=(("application/dicom", "*"),)
            )
            assert retrieved.SOPInstanceUID == sop


def _raw(client: DICOMwebClient, study: str, series: str, sop: str) -> bytes:
    response = client._session.get(
        f"{client.base_url}/studies/{study}/series/{series}/instances/{sop}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    response.raise_for_status()
    content_type = response.headers["content-type"]
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"')
    body = response.content
    start = body.index(b"\r\n\r\n") + 4
    end = body.rindex(b"\r\n--" + boundary.encode() + b"--")
    return body[start:end]


def test_dicomweb_client_reads_frames_and_rendered_images(dicomweb: DICOMwebClient) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(TEST_FILES / "rtdose.dcm")  # 15 native frames
        dicomweb.store_instances([ds])
        uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        frames = dicomweb.retrieve_instance_frames(*uids, frame_numbers=[2, 15])
        rendered = dicomweb.retrieve_instance_rendered(*uids, media_types=("image/png",))
    pixels = ds.pixel_array
    assert frames == [pixels[1].tobytes(), pixels[14].tobytes()]
    assert Image.open(io.BytesIO(rendered)).size == (ds.Columns, ds.Rows)
