"""STOW-RS of metadata and bulk data (PS3.18 10.5.1.4 and 10.5.2): a
``multipart/related; type="application/dicom+json"`` body whose first part is an array of DICOM
JSON instances (PS3.18 Annex F) naming their bulk data by ``BulkDataURI``, followed by the bulk
data parts, each with that URI as its ``Content-Location``. Served under both profiles: Google's
how-to "Store DICOM JSON metadata with JPEG files" documents the same request.

Sent with plain httpx: dicomweb-client's ``store_instances`` only sends PS3.10 datasets."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

import httpx
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from pydicom.dataelem import DataElement

from dicomql.service.config import ServiceConfig
from dicomql.service.dicomweb import store_metadata
from tests.support.dicomweb import (
    DICOMWEB,
    TEST_FILES,
    DicomWebClient,
    create_store,
    failed,
    referenced,
)

BOUNDARY = "json-b0undary"
IMAGE_PIXEL = (
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PlanarConfiguration",
)
CONTENT_TYPE = f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}'


@pytest.fixture(params=["standard", "google"])
def server(request: Any, service_config: ServiceConfig, start_live_server: Any) -> Any:
    config = replace(service_config, conformance=request.param)
    create_store(config)
    return start_live_server(config)


def _body(metadata: list[dict[str, Any]], bulk: dict[str, tuple[str, bytes]]) -> bytes:
    parts = [(b"Content-Type: application/dicom+json\r\n", json.dumps(metadata).encode())]
    for uri, (media_type, data) in bulk.items():
        head = f"Content-Type: {media_type}\r\nContent-Location: {uri}\r\n".encode()
        parts.append((head, data))
    body = b"".join(
        b"--" + BOUNDARY.encode() + b"\r\n" + head + b"\r\n" + data + b"\r\n"
        for head, data in parts
    )
    return body + b"--" + BOUNDARY.encode() + b"--\r\n"


def _stow(server: Any, body: bytes, study: str | None = None) -> httpx.Response:
    return httpx.post(
        f"{server.url}{DICOMWEB}/studies" + (f"/{study}" if study else ""),
        content=body,
        headers={"content-type": CONTENT_TYPE, "accept": "application/dicom+json"},
        timeout=60,
    )


def _as_json(
    ds: pydicom.Dataset, inline: bool = False
) -> tuple[dict[str, Any], dict[str, tuple[str, bytes]]]:
    """``ds`` as DICOM JSON, its binary values over 1 KiB as BulkDataURIs (or InlineBinary)."""
    bulk: dict[str, tuple[str, bytes]] = {}

    def to_uri(element: DataElement) -> str:
        uri = f"urn:dicomql-test:{element.tag:08X}"
        bulk[uri] = ("application/octet-stream", element.value)
        return uri

    if inline:
        return ds.to_json_dict(bulk_data_threshold=1 << 30), bulk
    return ds.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=to_uri), bulk


def _retrieve(server: Any, ds: pydicom.Dataset) -> pydicom.Dataset:
    client = DICOMwebClient(url=f"{server.url}{DICOMWEB}")
    return client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


def _assert_same_instance(stored: pydicom.Dataset, original: pydicom.Dataset) -> None:
    for element in original:
        if element.tag.group == 0x0002 or element.tag == 0xFFFCFFFC:
            continue  # file meta is rebuilt; trailing padding is not a value
        assert element.tag in stored, element
        assert stored[element.tag].value == element.value, element
    assert stored.PixelData == original.PixelData
    assert (stored.pixel_array == original.pixel_array).all()


@pytest.mark.parametrize("inline", [False, True], ids=["BulkDataURI", "InlineBinary"])
def test_stow_json_metadata_with_bulk_data_then_wado(server: Any, inline: bool) -> None:
    """PS3.18 10.5.1.4: the instance built from metadata and bulk data (or InlineBinary values)
    is stored, and WADO-RS returns the original's values and pixel bytes."""
    original = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    metadata, bulk = _as_json(original, inline=inline)
    if inline:
        assert "InlineBinary" in metadata["7FE00010"] and not bulk
    else:
        assert metadata["7FE00010"]["BulkDataURI"] in bulk
    response = _stow(server, _body([metadata], bulk))
    assert response.status_code == 200, response.text
    assert referenced(response) == [original.SOPInstanceUID]
    _assert_same_instance(_retrieve(server, original), original)


def test_stow_json_jpeg_pixel_data_as_google_documents(server: Any) -> None:
    """Google's "Store DICOM JSON metadata with JPEG files" (PS3.18 10.5.1.4 with a Compressed
    Bulk Data part, 8.7.3.3.2): TransferSyntaxUID (0002,0010) JPEG Baseline in the metadata and
    the JPEG bitstream as an ``image/jpeg`` part become an encapsulated one-frame instance. The
    metadata leaves out the Image Pixel Description attributes (PS3.18 Table 10.5.2-1 allows it);
    the server takes them from the JPEG header."""
    original = pydicom.dcmread(TEST_FILES / "SC_rgb_jpeg_dcmtk.dcm")
    frame = next(pydicom.encaps.generate_frames(original.PixelData, number_of_frames=1))
    sent = copy.deepcopy(original)
    del sent.PixelData
    for keyword in IMAGE_PIXEL:
        delattr(sent, keyword)
    metadata = sent.to_json_dict()
    assert "00280010" not in metadata  # Rows
    metadata["00020010"] = {"vr": "UI", "Value": [original.file_meta.TransferSyntaxUID]}
    metadata["7FE00010"] = {"vr": "OB", "BulkDataURI": "jpeg-image"}
    response = _stow(server, _body([metadata], {"jpeg-image": ("image/jpeg", frame)}))
    assert response.status_code == 200, response.text
    frames = DICOMwebClient(url=f"{server.url}{DICOMWEB}").retrieve_instance_frames(
        original.StudyInstanceUID,
        original.SeriesInstanceUID,
        original.SOPInstanceUID,
        frame_numbers=[1],
        media_types=(("image/jpeg", "1.2.840.10008.1.2.4.50"),),
    )
    assert frames == [frame]
    stored = _retrieve(server, original)
    for keyword in IMAGE_PIXEL:
        assert stored[keyword].value == original[keyword].value, keyword
    assert (stored.pixel_array == original.pixel_array).all()


def test_stow_json_instances_that_cannot_be_built_fail_with_c000(server: Any) -> None:
    """PS3.18 10.5.3: an unresolved BulkDataURI and missing SOP UIDs refuse that instance with
    0xC000 (Cannot understand) and a reason; the request's other instance is stored (202)."""
    original = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    good, bulk = _as_json(original)
    unresolved = json.loads(json.dumps(good))
    unresolved["00080018"]["Value"] = ["1.2.3.4.5.6.7.8.9"]
    unresolved["7FE00010"]["BulkDataURI"] = "urn:dicomql-test:nowhere"
    no_uid = json.loads(json.dumps(good))
    del no_uid["00080018"]
    response = _stow(server, _body([unresolved, no_uid, good], bulk))
    assert response.status_code == 202, response.text
    assert failed(response) == [("1.2.3.4.5.6.7.8.9", 0xC000), (None, 0xC000)]
    assert referenced(response) == [original.SOPInstanceUID]
    assert "urn:dicomql-test:nowhere" in response.headers["warning"]


def test_stow_json_bad_metadata_is_400(server: Any) -> None:
    """PS3.18 Table 10.5.3-1: nothing storable, every instance unreadable ("bad syntax")."""
    body = (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom+json\r\n\r\n{{not json\r\n"
        f"--{BOUNDARY}--\r\n"
    ).encode()
    response = _stow(server, body)
    assert response.status_code == 400
    assert failed(response) == [(None, 0xC000)]
    assert "not valid JSON" in response.headers["warning"]


def test_stow_json_metadata_part_over_the_cap_is_413(
    service_config: ServiceConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MAX_JSON_METADATA_BYTES (docs/reliability.md, Limits): metadata parts are parsed whole,
    so parts past the cap together (here two, each within it) are refused before they are held,
    and nothing is stored."""
    original = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    metadata, bulk = _as_json(original)
    cap = len(json.dumps([metadata])) + 100
    monkeypatch.setattr(store_metadata, "MAX_JSON_METADATA_BYTES", cap)
    client = DicomWebClient(service_config)
    try:
        path = f"{DICOMWEB}/studies"
        headers = {"content-type": CONTENT_TYPE, "accept": "application/dicom+json"}
        body = _body([metadata], bulk)
        first_part_end = body.index(b"\r\n--" + BOUNDARY.encode())
        two_parts = body[: first_part_end + 2] + body  # the same metadata part twice
        refused = client.http.post(path, content=two_parts, headers=headers)
        assert refused.status_code == 413
        assert f"metadata parts exceed {cap} bytes" in refused.json()["error"]["message"]
        search = client.http.get(f"{DICOMWEB}/instances")
        assert search.status_code == 204 or search.json() == []
        stored = client.http.post(path, content=_body([metadata], bulk), headers=headers)
        assert stored.status_code == 200, stored.text
    finally:
        client.close()


def test_stow_json_goes_through_the_same_unit_of_work(server: Any) -> None:
    """PS3.18 10.5.3 outcomes as for PS3.10 parts: the same JSON instance sent again builds the
    same bytes (stored again is a duplicate, 200), and one sent to another study's path fails
    with 0xA900 like any instance of another study (409)."""
    original = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    metadata, bulk = _as_json(original)
    for _ in range(2):
        response = _stow(server, _body([metadata], bulk))
        assert response.status_code == 200, response.text
        assert referenced(response) == [original.SOPInstanceUID]
    other_study = _stow(server, _body([metadata], bulk), study="1.2.3.4")
    assert other_study.status_code == 409
    assert failed(other_study) == [(original.SOPInstanceUID, 0xA900)]
