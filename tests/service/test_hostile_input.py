"""Hostile DICOMweb and JSON input answered with a 4xx in Google's shape, never a 500: sequences
nested beyond the limit, a non-ASCII failure message in headers and XML, and JSON numbers of
100,000 digits (see docs/reliability.md, "Limits")."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian

from dicomql.dicom.limits import (
    MAX_FUZZY_TOKENS,
    MAX_INFLATED_BYTES,
    MAX_QIDO_UIDS,
    MAX_QIDO_VALUE_CHARS,
    MAX_SEQUENCE_DEPTH,
)
from dicomql.dicom.structure import DEFLATED, LimitExceeded, inflated
from dicomql.service.config import ServiceConfig
from tests.support import deflated
from tests.support.dicomweb import DICOMWEB, DicomWebClient, create_store, failed, make_instance
from tests.support.reliability import stored_blobs_of, stow

LOCATION = "/v1/projects/p/locations/l"


def nested(depth: int) -> tuple[bytes, str]:
    """An instance with a ContentSequence nested ``depth`` deep (undefined lengths), written
    byte by byte: pydicom's own writer recurses too and cannot produce it; and its study UID."""
    base = make_instance()
    study = str(dcmread(io.BytesIO(base)).StudyInstanceUID)
    position = base.index(b"\xe0\x7f\x10\x00")  # (7FE0,0010) comes after (0040,A730)
    body = b"\x08\x00\x00\x01SH\x02\x00X "
    for _ in range(depth):
        body = (
            b"\x40\x00\x30\xa7SQ\x00\x00\xff\xff\xff\xff"
            + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
            + body
            + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
            + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
        )
    return base[:position] + body + base[position:], study


@pytest.fixture
def client(tmp_path: Path, database_url: str | None) -> Iterator[DicomWebClient]:
    opened = DicomWebClient(ServiceConfig(data_dir=tmp_path / "data", database_url=database_url))
    try:
        yield opened
    finally:
        opened.close()


def assert_google_error(response: httpx.Response, code: int) -> str:
    assert response.status_code == code, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["status"] == "INVALID_ARGUMENT"
    return str(error["message"])


@pytest.mark.parametrize("depth", [MAX_SEQUENCE_DEPTH + 1, 200, 3000])
def test_sequences_nested_beyond_the_limit_are_refused_at_stow_and_nothing_is_stored(
    client: DicomWebClient, depth: int
) -> None:
    data, study = nested(depth)
    response = client.stow([data])
    assert response.status_code in (400, 409)
    assert [reason for _, reason in failed(response)] == [0xC000]
    assert f"nested more than {MAX_SEQUENCE_DEPTH} deep" in response.headers["warning"]
    assert client.http.get(f"{DICOMWEB}/studies", params={"StudyInstanceUID": study}).json() == []


def test_sequences_nested_to_the_limit_are_stored_and_read_back_on_every_path(
    client: DicomWebClient,
) -> None:
    data, study = nested(MAX_SEQUENCE_DEPTH)
    assert client.stow([data]).status_code == 200
    metadata = client.http.get(f"{DICOMWEB}/studies/{study}/metadata")
    assert metadata.status_code == 200
    item = metadata.json()[0]["0040A730"]
    for _ in range(MAX_SEQUENCE_DEPTH - 1):
        item = item["Value"][0]["0040A730"]
    assert item["Value"][0]["00080100"]["Value"] == ["X"]
    found = client.http.get(
        f"{DICOMWEB}/instances", params={"StudyInstanceUID": study, "includefield": "all"}
    )
    assert found.status_code == 200 and "0040A730" in found.json()[0]
    implicit = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2'
    wado = client.http.get(f"{DICOMWEB}/studies/{study}", headers={"accept": implicit})
    assert wado.status_code == 200


def test_a_non_ascii_failure_message_gives_well_formed_headers_json_and_xml(
    client: DicomWebClient,
) -> None:
    # A StudyInstanceUID with non-ASCII text (in the file, not the path) is echoed in the
    # failure message, which goes into the Warning header.
    # pydicom refuses to write such a UI value: the bytes are replaced in place (same length).
    data = make_instance(study="1.2.34567").replace(b"1.2.34567", "1.2.中56".encode())
    for accept in ("application/dicom+json", "application/dicom+xml"):
        response = client.stow([data], study="1.2.3", accept=accept)
        assert response.status_code in (400, 409), response.text
        assert response.headers["warning"].isascii()
        assert "is not a valid UID" in response.headers["warning"]
    assert response.text.startswith("<?xml")


def test_a_non_uid_study_path_is_refused_before_storing(client: DicomWebClient) -> None:
    response = client.stow([make_instance()], study="1.2.中")
    assert_google_error(response, 400)
    assert client.http.get(f"{DICOMWEB}/studies").json() == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"timeZone": ' + b"1" * 100_000 + b"}",
        b'{"labels": {"a": ' + b"9" * 5_000 + b"}}",
        b"[" * 100_000,
    ],
    ids=["100k-digit-integer", "5k-digit-integer-nested", "deep-array"],
)
def test_json_bodies_with_hostile_numbers_or_nesting_are_invalid_argument(
    client: DicomWebClient, body: bytes
) -> None:
    response = client.http.post(f"{LOCATION}/datasets", params={"datasetId": "x"}, content=body)
    message = assert_google_error(response, 400)
    assert message.startswith("Invalid JSON payload received.")
    response = client.http.post(
        f"{LOCATION}/datasets/d/dicomStores", params={"dicomStoreId": "x"}, content=body
    )
    assert_google_error(response, 400)


def deflate_bomb(inflated_extra: int) -> bytes:
    return deflated.deflate_bomb(make_instance(), inflated_extra)


def test_a_deflated_instance_inflating_beyond_the_cap_is_refused_at_stow(
    client: DicomWebClient,
) -> None:
    bomb = deflate_bomb(MAX_INFLATED_BYTES + 1024 * 1024)
    assert len(bomb) < 1024 * 1024  # a few hundred KB on the wire
    response = client.stow([bomb])
    assert [reason for _, reason in failed(response)] == [0xC000]
    assert f"inflates to more than {MAX_INFLATED_BYTES} bytes" in response.headers["warning"]
    assert client.http.get(f"{DICOMWEB}/instances").json() == []
    small = deflate_bomb(1024 * 1024)  # the same shape within the cap is stored
    assert client.stow([small]).status_code == 200


@pytest.mark.parametrize("damage", deflated.DAMAGES)
def test_a_damaged_deflated_instance_is_refused_at_stow_and_the_server_goes_on(
    service_config: ServiceConfig,
    live_server,  # type: ignore[no-untyped-def]
    damage: str,
) -> None:
    """Before, zlib's error escaped the parse: a 500 INTERNAL."""
    create_store(service_config)
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        response = stow(http, [deflated.damaged_deflated(damage)])
        assert response.status_code == 400, response.text  # PS3.18 Table 10.5.3-1
        assert [reason for _, reason in failed(response)] == [0xC000]
        assert "while decompressing data" in response.headers["warning"]
        assert http.get(f"{DICOMWEB}/instances").json() == []  # nothing stored
        assert stored_blobs_of(service_config) == []
        # The same connection goes on: the intact instance is stored.
        assert stow(http, [deflated.intact_deflated()]).status_code == 200
        assert len(http.get(f"{DICOMWEB}/instances").json()) == 1


def test_fuzzy_matching_with_too_many_name_tokens_is_invalid_argument(
    client: DicomWebClient,
) -> None:
    assert client.stow([make_instance(patient_name="Doe^John")]).status_code == 200
    many = " ".join(f"t{number}" for number in range(200))
    response = client.http.get(
        f"{DICOMWEB}/studies", params={"PatientName": many, "fuzzymatching": "true"}
    )
    message = assert_google_error(response, 400)
    assert f"at most {MAX_FUZZY_TOKENS} name tokens, not 200" in message
    within = " ".join(["do"] * 300 + ["jo"])  # repeated tokens count once
    response = client.http.get(
        f"{DICOMWEB}/studies", params={"PatientName": within, "fuzzymatching": "true"}
    )
    assert response.status_code == 200 and len(response.json()) == 1


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("PatientName", "A" * (MAX_QIDO_VALUE_CHARS + 1), f"at most {MAX_QIDO_VALUE_CHARS}"),
        ("PatientID", "*" + "x" * 10_000, f"at most {MAX_QIDO_VALUE_CHARS} characters"),
        ("StudyInstanceUID", "1." + "2" * 5_000, f"at most {MAX_QIDO_VALUE_CHARS} characters"),
        (
            "StudyInstanceUID",
            "\\".join(f"1.2.{n}" for n in range(MAX_QIDO_UIDS + 1)),
            f"at most {MAX_QIDO_UIDS} UIDs, not {MAX_QIDO_UIDS + 1}",
        ),
    ],
)
def test_qido_values_beyond_the_limits_are_invalid_argument_naming_the_limit(
    client: DicomWebClient, name: str, value: str, reason: str
) -> None:
    response = client.http.get(f"{DICOMWEB}/instances", params={name: value})
    message = assert_google_error(response, 400)
    assert message.startswith(f"{name}: ") and reason in message


def test_qido_values_within_the_limits_are_searched(client: DicomWebClient) -> None:
    data = make_instance(patient_name="Doe^John")
    study = str(dcmread(io.BytesIO(data)).StudyInstanceUID)
    assert client.stow([data]).status_code == 200
    uids = [f"1.2.{n}" for n in range(MAX_QIDO_UIDS - 1)] + [study]
    response = client.http.get(f"{DICOMWEB}/studies", params={"StudyInstanceUID": ",".join(uids)})
    assert response.status_code == 200 and len(response.json()) == 1
    longest = "Doe^John" + "*" * (MAX_QIDO_VALUE_CHARS - len("Doe^John"))
    response = client.http.get(f"{DICOMWEB}/studies", params={"PatientName": longest})
    assert response.status_code == 200 and len(response.json()) == 1


def test_a_stored_deflated_instance_is_served_inflated_by_default(
    client: DicomWebClient,
) -> None:
    path = get_testdata_file("image_dfl.dcm")
    original = dcmread(path)
    assert original.file_meta.TransferSyntaxUID == DEFLATED
    assert client.stow([Path(path).read_bytes()]).status_code == 200
    url = (
        f"{DICOMWEB}/studies/{original.StudyInstanceUID}/series/{original.SeriesInstanceUID}"
        f"/instances/{original.SOPInstanceUID}"
    )
    response = client.http.get(url, headers={"accept": "application/dicom"})
    assert response.status_code == 200
    assert response.headers["content-type"].endswith(f"transfer-syntax={ExplicitVRLittleEndian}")
    served = dcmread(io.BytesIO(response.content))
    assert served.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert served.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    assert served == original
    assert served.PixelData == original.PixelData


def test_inflating_for_retrieval_holds_one_chunk_at_a_time_and_stops_at_the_cap() -> None:
    within = deflate_bomb(MAX_INFLATED_BYTES - 1024 * 1024)
    chunks = [len(chunk) for chunk in inflated(io.BytesIO(within))]
    assert sum(chunks) > MAX_INFLATED_BYTES - 1024 * 1024
    assert max(chunks) <= 1024 * 1024
    served = dcmread(io.BytesIO(b"".join(inflated(io.BytesIO(within)))))
    assert served.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert len(served[0x7FE10010].value) == MAX_INFLATED_BYTES - 1024 * 1024
    beyond = deflate_bomb(MAX_INFLATED_BYTES + 1024 * 1024)
    with pytest.raises(LimitExceeded, match="inflates to more than"):
        for _ in inflated(io.BytesIO(beyond)):
            pass
