"""STOW-RS outcomes: status codes, the store response's sequences, and what the index holds."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from dicomql.service.config import ServiceConfig
from tests.support.dicomweb import (
    DICOMWEB,
    DicomWebClient,
    failed,
    make_instance,
    multipart,
    referenced,
    values_resembling_a_deep_nest,
    with_64_bit_values,
)

STUDY, SERIES = "1.2.826.0.1.1", "1.2.826.0.1.1.1"
A = make_instance(STUDY, SERIES, "1.2.826.0.1.1.1.1", seed=1)
A_CHANGED = make_instance(STUDY, SERIES, "1.2.826.0.1.1.1.1", seed=2)  # same UIDs, other pixels
B = make_instance(STUDY, SERIES, "1.2.826.0.1.1.1.2", seed=3)
OTHER_STUDY = make_instance("1.2.826.0.1.2", "1.2.826.0.1.2.1", "1.2.826.0.1.2.1.1")
NO_SOP_UID = make_instance(STUDY, SERIES, "1.2.826.0.1.1.1.9").replace(
    b"1.2.826.0.1.1.1.9", b"                 "
)
GARBAGE = b"this is not DICOM at all" * 10


@dataclass
class Case:
    before: list[bytes]  # stored first (must all succeed)
    parts: list[bytes]
    status: int
    stored: list[str]
    failures: list[tuple[str | None, int]]
    instances_after: int
    study: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


CASES = {
    "new instances are stored": Case(
        [], [A, B], 200, [_uid := "1.2.826.0.1.1.1.1", "1.2.826.0.1.1.1.2"], [], 2
    ),
    "an identical instance again succeeds without a copy": Case([A], [A], 200, [_uid], [], 1),
    "same UIDs with other bytes is a 0x0110 conflict": Case(
        [A], [A_CHANGED], 409, [], [(_uid, 0x0110)], 1
    ),
    "a study UID contradicting the path fails the instance": Case(
        [], [OTHER_STUDY], 409, [], [("1.2.826.0.1.2.1.1", 0xA900)], 0, study=STUDY
    ),
    # PS3.18 Table 10.5.3-1: nothing stored "due to bad syntax" is 400, not 409.
    "a part that is not DICOM fails with 0xC000": Case([], [GARBAGE], 400, [], [(None, 0xC000)], 0),
    "an instance without SOPInstanceUID fails with 0xC000": Case(
        [], [NO_SOP_UID], 400, [], [(None, 0xC000)], 0
    ),
    "unreadable and conflicting parts together are 409 (a mixture of reasons)": Case(
        [A], [GARBAGE, A_CHANGED], 409, [], [(None, 0xC000), (_uid, 0x0110)], 1
    ),
    "a mixed request stores what it can and answers 202": Case(
        [A],
        [B, GARBAGE, A_CHANGED, A],
        202,
        ["1.2.826.0.1.1.1.2", _uid],
        [(None, 0xC000), (_uid, 0x0110)],
        2,
    ),
    "the same instance twice in one request is stored once": Case(
        [], [A, A], 200, [_uid, _uid], [], 1
    ),
    "a conflict inside one request fails the later part": Case(
        [], [A, A_CHANGED], 202, [_uid], [(_uid, 0x0110)], 1
    ),
    "storing into the study of the path succeeds": Case([], [A], 200, [_uid], [], 1, study=STUDY),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_stow_outcome(client: DicomWebClient, case: Case) -> None:
    if case.before:
        assert client.stow(case.before).status_code == 200
    response = client.stow(case.parts, study=case.study)
    assert response.status_code == case.status, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    assert referenced(response) == case.stored
    assert failed(response) == case.failures
    if case.failures:
        assert "Warning" in response.headers
    metrics = client.http.get(f"{DICOMWEB}/studies/{STUDY}:getStudyMetrics")
    if case.instances_after:
        assert metrics.json()["instanceCount"] == str(case.instances_after)
    else:
        assert metrics.status_code == 404


def test_referenced_items_carry_class_and_retrieve_url(client: DicomWebClient) -> None:
    response = client.stow([A])
    body = response.json()
    item = body["00081199"]["Value"][0]
    assert item["00081150"]["Value"] == ["1.2.840.10008.5.1.4.1.1.2"]
    instance_url = item["00081190"]["Value"][0]
    assert instance_url.endswith(f"{DICOMWEB}/studies/{STUDY}/series/{SERIES}/instances/{_uid}")
    assert body["00081190"]["Value"][0].endswith(f"{DICOMWEB}/studies/{STUDY}")
    assert client.http.get(instance_url).status_code == 200


def test_sv_and_uv_values_are_stored_and_served_as_numbers(client: DicomWebClient) -> None:
    """Before, the structure walk read SV's and UV's lengths as 2 bytes, lost its place, and
    refused these as nested more than 64 deep (0xC000)."""
    signed, unsigned = values_resembling_a_deep_nest("q"), [2**63 + 7, 0]
    response = client.stow([with_64_bit_values(B, signed, unsigned)])
    assert response.status_code == 200, response.headers.get("warning")
    metadata = client.http.get(f"{DICOMWEB}/studies/{STUDY}/metadata").json()
    assert metadata[0]["00720082"] == {"vr": "SV", "Value": signed}
    assert metadata[0]["00720083"] == {"vr": "UV", "Value": unsigned}


def test_single_part_application_dicom_is_stored(client: DicomWebClient) -> None:
    response = client.http.post(
        f"{DICOMWEB}/studies",
        content=A,
        headers={"content-type": "application/dicom", "accept": "application/dicom+json"},
    )
    assert response.status_code == 200
    assert referenced(response) == [_uid]


@pytest.mark.parametrize("accept", [None, "*/*", "application/*"])
def test_store_response_is_xml_without_a_json_accept_as_googles_is(
    client: DicomWebClient, accept: str | None
) -> None:
    # Google's service answers STOW in application/dicom+xml unless JSON is asked for; its
    # dcmweb CLI parses the XML (issue 15 item 14). httpx sends "*/*" when none is given.
    body, content_type = multipart([A])
    headers = {"content-type": content_type}
    if accept is not None:
        headers["accept"] = accept
    response = client.http.post(f"{DICOMWEB}/studies", content=body, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/dicom+xml")
    assert _uid.encode() in response.content


@pytest.mark.parametrize(
    "accept", ["application/dicom+json", "application/json", "application/dicom+json, */*"]
)
def test_store_response_is_json_when_asked_for(client: DicomWebClient, accept: str) -> None:
    response = client.stow([A], accept=accept)
    assert response.headers["content-type"].startswith("application/dicom+json")
    assert referenced(response) == [_uid]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", "application/dicom"),
        (GARBAGE, "application/dicom"),
        (b"\x00" * 128 + b"DICM", "application/dicom"),  # a preamble and nothing after it
    ],
    ids=["empty", "not DICOM", "truncated Part 10"],
)
def test_unreadable_single_part_body_is_400(
    client: DicomWebClient, body: bytes, content_type: str
) -> None:
    response = client.http.post(
        f"{DICOMWEB}/studies",
        content=body,
        headers={"content-type": content_type, "accept": "application/dicom+json"},
    )
    assert response.status_code == 400, response.text  # PS3.18 Table 10.5.3-1
    assert [reason for _, reason in failed(response)] == [0xC000]


def test_failed_item_names_the_sop_class_and_instance_the_file_has(
    client: DicomWebClient,
) -> None:
    # PS3.18 10.5.3: a Failed SOP Sequence item has ReferencedSOPClassUID and
    # ReferencedSOPInstanceUID; a file that names itself but lacks its StudyInstanceUID is
    # refused with both.
    sop_uid = "1.2.826.0.1.1.1.7"
    study = "1.2.826.0.1.99"  # appears nowhere else in the file
    no_study = make_instance(study, SERIES, sop_uid).replace(study.encode(), b" " * len(study))
    response = client.stow([no_study])
    assert response.status_code == 400
    item = response.json()["00081198"]["Value"][0]
    assert item["00081155"]["Value"] == [sop_uid]
    assert item["00081150"]["Value"] == ["1.2.840.10008.5.1.4.1.1.2"]
    assert item["00081197"]["Value"] == [0xC000]


def test_store_response_is_xml_when_accept_asks(client: DicomWebClient) -> None:
    response = client.stow([A], accept="application/dicom+xml")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/dicom+xml")
    referenced_sequence = b'<DicomAttribute tag="00081199" vr="SQ" keyword="ReferencedSOPSequence">'
    assert referenced_sequence in response.content
    assert _uid.encode() in response.content


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/json",
        'multipart/related; type="application/dicom+xml"; boundary=x',
    ],
)
def test_wrong_content_type_is_415_in_google_shape(
    client: DicomWebClient, content_type: str
) -> None:
    response = client.http.post(
        f"{DICOMWEB}/studies", content=b"x", headers={"content-type": content_type}
    )
    assert response.status_code == 415
    error = response.json()["error"]
    assert error["code"] == 415 and error["status"] == "INVALID_ARGUMENT" and error["message"]


@pytest.mark.blob_files
def test_truncated_multipart_body_is_400_and_leaves_nothing(
    client: DicomWebClient, service_config: ServiceConfig
) -> None:
    body, content_type = multipart([A, B])
    response = client.http.post(
        f"{DICOMWEB}/studies",
        content=body[: len(body) - len(B) // 2],
        headers={"content-type": content_type},
    )
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    # A was complete and is stored; the cut-off B left no blob and no journal entry behind.
    blobs = [p for p in (service_config.blob_root / "instances").rglob("*") if p.is_file()]
    assert len(blobs) == 1
    assert not list((service_config.blob_root / "tmp").iterdir())
    metrics = client.http.get(f"{DICOMWEB}/studies/{STUDY}:getStudyMetrics").json()
    assert metrics["instanceCount"] == "1"


def test_empty_multipart_body_is_400(client: DicomWebClient) -> None:
    response = client.stow([])
    assert response.status_code == 400


def test_store_of_unknown_dicom_store_is_404(client: DicomWebClient) -> None:
    body, content_type = multipart([A])
    response = client.http.post(
        "/v1/projects/p/locations/l/datasets/d/dicomStores/nope/dicomWeb/studies",
        content=body,
        headers={"content-type": content_type},
    )
    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"


@pytest.mark.blob_files
def test_failed_and_duplicate_parts_leave_no_blobs(
    client: DicomWebClient, service_config: ServiceConfig
) -> None:
    client.stow([A])
    client.stow([A, A_CHANGED, GARBAGE, OTHER_STUDY], study=STUDY)
    blobs = [p for p in (service_config.blob_root / "instances").rglob("*") if p.is_file()]
    assert len(blobs) == 1


def test_a_request_spanning_several_index_batches_keeps_every_result_in_order(
    client: DicomWebClient,
) -> None:
    uids = [f"{SERIES}.{n + 10}" for n in range(40)]
    parts = [make_instance(STUDY, SERIES, uid, seed=n) for n, uid in enumerate(uids)]
    parts.insert(17, GARBAGE)
    response = client.stow(parts)
    assert response.status_code == 202
    assert referenced(response) == uids
    assert failed(response) == [(None, 0xC000)]
    metrics = client.http.get(f"{DICOMWEB}/studies/{STUDY}:getStudyMetrics").json()
    assert metrics["instanceCount"] == "40"


def test_warning_text_is_printable_ascii_whatever_the_message_holds() -> None:
    # A refusal's message may quote what a file holds; a Warning header must still encode.
    from dicomql.service.dicomweb.store import warning_text

    text = warning_text('UID "1.2.\u00fc" bad\n\u738b' + "x" * 400)
    assert text.startswith("UID '1.2.\\xfc' bad \\u738b")
    assert len(text) == 300 and text.isascii() and text.isprintable()
