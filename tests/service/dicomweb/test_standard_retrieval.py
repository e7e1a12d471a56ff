"""Retrieval PS3.18 requires beyond Google's subset, served under ``--conformance standard``
and refused under ``google`` as Google refuses it: metadata as
``multipart/related; type="application/dicom+xml"`` (Table 10.4.4-1, Required; PS3.19 Native
DICOM Model), instance resources as ``multipart/related; type="application/octet-stream"`` and
the Bulkdata resource of a study, series or instance (10.4.1.1.4)."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from dataclasses import replace
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from pydicom.uid import generate_uid

from dicomql.service.config import ServiceConfig
from tests.support.dicomweb import (
    DICOMWEB,
    TEST_FILES,
    DicomWebClient,
    create_store,
    make_instance,
    read_multipart,
)

NS = {"d": "http://dicom.nema.org/PS3.19/models/NativeDICOM"}
XML = 'multipart/related; type="application/dicom+xml"'
OCTETS = 'multipart/related; type="application/octet-stream"'


@pytest.fixture
def server(service_config: ServiceConfig, start_live_server: Any) -> Any:
    config = replace(service_config, conformance="standard")
    create_store(config)
    return start_live_server(config)


def _store(server: Any, data: bytes) -> tuple[str, pydicom.Dataset]:
    ds = pydicom.dcmread(io.BytesIO(data))
    DICOMwebClient(url=f"{server.url}{DICOMWEB}").store_instances([ds])
    url = (
        f"{server.url}{DICOMWEB}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    return url, ds


def test_metadata_as_native_dicom_model_xml(server: Any) -> None:
    """PS3.18 Table 10.4.4-1 and PS3.19 A.1: one NativeDicomModel part per instance, person
    names in components, pixel data as a BulkData URI."""
    study = generate_uid()
    for _ in range(2):
        _store(server, make_instance(study, patient_name="Doe^John^^Dr"))
    response = httpx.get(
        f"{server.url}{DICOMWEB}/studies/{study}/metadata", headers={"accept": XML}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(XML)
    parts = read_multipart(response.headers["content-type"], response.content)
    assert len(parts) == 2
    root = ET.fromstring(parts[0][1])
    assert root.tag == f"{{{NS['d']}}}NativeDicomModel"
    name = root.find("d:DicomAttribute[@tag='00100010']/d:PersonName/d:Alphabetic", NS)
    assert name is not None
    assert name.find("d:FamilyName", NS).text == "Doe"  # type: ignore[union-attr]
    assert name.find("d:GivenName", NS).text == "John"  # type: ignore[union-attr]
    assert name.find("d:NamePrefix", NS).text == "Dr"  # type: ignore[union-attr]
    study_uid = root.find("d:DicomAttribute[@tag='0020000D']/d:Value", NS)
    assert study_uid is not None and study_uid.text == study
    bulk = root.find("d:DicomAttribute[@tag='7FE00010']/d:BulkData", NS)
    assert bulk is not None and bulk.get("uri", "").endswith("/bulkdata/7FE00010")


def test_instance_bulkdata_resource_and_octet_stream_retrieval(server: Any) -> None:
    """PS3.18 10.4.1.1.4: each part one bulk data element, named by Content-Location."""
    url, ds = _store(server, make_instance(rows=4, columns=4, frames=2))
    client = DICOMwebClient(url=f"{server.url}{DICOMWEB}")
    [pixels] = client.retrieve_bulkdata(
        f"{url}/bulkdata", media_types=("application/octet-stream",)
    )
    assert pixels == ds.PixelData
    response = httpx.get(url, headers={"accept": OCTETS})
    assert response.status_code == 200
    [(headers, body)] = read_multipart(response.headers["content-type"], response.content)
    assert headers["content-location"] == f"{url}/bulkdata/7FE00010"
    assert np.array_equal(np.frombuffer(body, np.uint16), ds.pixel_array.ravel())


def test_compressed_pixel_data_comes_as_frames_in_their_media_type(server: Any) -> None:
    url, _ = _store(server, (TEST_FILES / "SC_rgb_rle_2frame.dcm").read_bytes())
    response = httpx.get(f"{url}/bulkdata", headers={"accept": OCTETS})
    parts = read_multipart(response.headers["content-type"], response.content)
    assert [h["content-location"] for h, _ in parts] == [f"{url}/frames/1", f"{url}/frames/2"]
    assert all(h["content-type"].startswith("image/x-dicom-rle") for h, _ in parts)


def test_google_profile_refuses_what_google_does_not_serve(service_config: ServiceConfig) -> None:
    client = DicomWebClient(service_config)
    try:
        study, series, sop = generate_uid(), generate_uid(), generate_uid()
        assert client.stow([make_instance(study, series, sop)]).status_code == 200
        instance = f"{DICOMWEB}/studies/{study}/series/{series}/instances/{sop}"
        metadata = client.http.get(f"{DICOMWEB}/studies/{study}/metadata", headers={"accept": XML})
        octets = client.http.get(instance, headers={"accept": OCTETS})
        bulkdata = client.http.get(f"{instance}/bulkdata")
    finally:
        client.close()
    assert metadata.status_code == 406 and octets.status_code == 406
    assert bulkdata.status_code == 404
