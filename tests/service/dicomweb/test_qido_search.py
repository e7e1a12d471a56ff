"""QIDO-RS end to end: every matching rule at every level, each with a hit and a miss, over HTTP
against the embedded service holding instances stored through STOW-RS (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.dicomweb import DICOMWEB, read_multipart
from tests.support.ids import set_id
from tests.support.qido_corpus import (
    A1,
    A1_1,
    A1_2,
    A2,
    A2_1,
    B1,
    B1_1,
    BACKENDS,
    C1,
    C1_1,
    D1,
    D1_1,
    A,
    B,
    C,
    D,
    embedded_with_corpus,
    index_url,
)


@pytest.fixture(scope="module", params=BACKENDS)
def qido(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """One store holding the corpus, shared by this module's read-only tests."""
    with index_url(request.param) as url:
        data_dir: Path = tmp_path_factory.mktemp("qido") / "data"
        yield from embedded_with_corpus(data_dir, url)


UID_KEY = {"studies": "0020000D", "series": "0020000E", "instances": "00080018"}


def found(client: httpx.Client, path: str, params: dict[str, str] | None = None) -> set[str]:
    response = client.get(f"{DICOMWEB}/{path}", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    level = path.rsplit("/", 1)[-1]
    return {match[UID_KEY[level]]["Value"][0] for match in response.json()}


STUDY_CASES = [
    # single value matching (PS3.4 C.2.2.2.1)
    ({"PatientID": "PID-A"}, {A}),
    ({"PatientID": "PID-Z"}, set()),
    ({"00100020": "PID-B"}, {B}),
    ({"PatientID": "pid-a"}, set()),  # IDs are case-sensitive
    ({"AccessionNumber": "ACC100"}, {A}),
    ({"AccessionNumber": "ACC1"}, set()),
    ({"StudyDate": "20200115"}, {A}),
    ({"StudyDate": "20200116"}, set()),
    # UID list matching (C.2.2.2.2), comma or backslash separated
    ({"StudyInstanceUID": A}, {A}),
    ({"StudyInstanceUID": f"{A},{B}"}, {A, B}),
    ({"StudyInstanceUID": f"{A}\\{C}"}, {A, C}),
    ({"StudyInstanceUID": "9.9.9,9.9.8"}, set()),
    ({"0020000D": B}, {B}),
    # wildcard matching (C.2.2.2.4)
    ({"PatientID": "PID-*"}, {A, B}),
    ({"PatientID": "pid-?"}, {C}),
    ({"PatientID": "X*"}, set()),
    ({"AccessionNumber": "ACC?00"}, {A, B}),
    ({"AccessionNumber": "ACC3*"}, set()),
    ({"AccessionNumber": "*9"}, {C}),
    # range matching (C.2.2.2.5), open at either end
    ({"StudyDate": "20200101-"}, {A, B}),
    ({"StudyDate": "-20200101"}, {C, D}),
    ({"StudyDate": "20190101-20201231"}, {A, C}),
    ({"StudyDate": "20200115-20200115"}, {A}),
    ({"StudyDate": "20220101-"}, set()),
    # person names: case-insensitive, whole name unless wildcards or fuzzymatching
    ({"PatientName": "doe^john"}, {A}),
    ({"PatientName": "DOE^JOHN"}, {A}),
    ({"PatientName": "Doe*"}, {A}),
    ({"PatientName": "MÜLLER^jürgen"}, {C}),
    ({"PatientName": "Doe"}, set()),
    ({"PatientName": "*ann?"}, {B}),
    # a name with ideographic and phonetic groups matches on its alphabetic group, or whole
    ({"PatientName": "yamada^tarou"}, {D}),
    ({"PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう"}, {D}),
    ({"PatientName": "yamada"}, set()),
    ({"ReferringPhysicianName": "house^gregory"}, {A}),
    ({"ReferringPhysicianName": "house"}, set()),
    # fuzzymatching: every query token is a prefix of a name token (Cloud Healthcare)
    ({"PatientName": "jo", "fuzzymatching": "true"}, {A}),
    ({"PatientName": "Do", "fuzzymatching": "true"}, {A}),
    ({"PatientName": "ohn", "fuzzymatching": "true"}, set()),
    ({"PatientName": "jo^do", "fuzzymatching": "true"}, {A}),
    ({"PatientName": "jo sm", "fuzzymatching": "true"}, set()),
    ({"PatientName": "JÜR", "fuzzymatching": "true"}, {C}),
    ({"PatientName": "山田", "fuzzymatching": "true"}, {D}),
    ({"PatientName": "たろ", "fuzzymatching": "true"}, {D}),
    ({"PatientName": "田", "fuzzymatching": "true"}, set()),
    ({"ReferringPhysicianName": "wil", "fuzzymatching": "true"}, {B}),
    ({"ReferringPhysicianName": "gre", "fuzzymatching": "true"}, {A}),
    ({"ReferringPhysicianName": "ann", "fuzzymatching": "true"}, set()),
    # several criteria all apply
    ({"PatientID": "PID-A", "StudyDate": "20200101-"}, {A}),
    ({"PatientID": "PID-A", "StudyDate": "20210101-"}, set()),
    # no criteria: everything (within the default limit)
    ({}, {A, B, C, D}),
    # universal matching (empty value) does not filter
    ({"PatientID": ""}, {A, B, C, D}),
]


def case_id(value: object) -> str:
    """Criteria as they read; sets sorted, as the conftest hook spells them (tests.support.ids)."""
    return set_id(value) if isinstance(value, set) else str(value)


@pytest.mark.parametrize(("params", "expected"), STUDY_CASES, ids=case_id)
def test_study_search_matches(
    qido: httpx.Client, params: dict[str, str], expected: set[str]
) -> None:
    assert found(qido, "studies", params) == expected


SERIES_CASES = [
    ("series", {"Modality": "CT"}, {A1, C1}),
    ("series", {"Modality": "MR"}, {A2, D1}),
    ("series", {"Modality": "XA"}, set()),
    ("series", {"00080060": "US"}, {B1}),
    ("series", {"Modality": "?R"}, {A2, D1}),
    ("series", {"SeriesInstanceUID": f"{A1},{B1}"}, {A1, B1}),
    ("series", {"SeriesInstanceUID": "9.9"}, set()),
    ("series", {"PatientID": "PID-A"}, {A1, A2}),
    ("series", {"PatientID": "PID-A", "Modality": "US"}, set()),
    ("series", {"StudyDate": "-20200201"}, {A1, A2, C1, D1}),
    ("series", {"PatientName": "smi", "fuzzymatching": "true"}, {B1}),
    ("series", {"StudyInstanceUID": C}, {C1}),
    ("series", {}, {A1, A2, B1, C1, D1}),
    (f"studies/{A}/series", {}, {A1, A2}),
    (f"studies/{A}/series", {"Modality": "CT"}, {A1}),
    (f"studies/{B}/series", {"Modality": "CT"}, set()),
    (f"studies/{A}/series", {"SeriesInstanceUID": B1}, set()),
    ("studies/9.9.9/series", {}, set()),
]


@pytest.mark.parametrize(("path", "params", "expected"), SERIES_CASES, ids=case_id)
def test_series_search_matches(
    qido: httpx.Client, path: str, params: dict[str, str], expected: set[str]
) -> None:
    assert found(qido, path, params) == expected


INSTANCE_CASES = [
    ("instances", {"SOPInstanceUID": A1_1}, {A1_1}),
    ("instances", {"SOPInstanceUID": f"{A1_1}\\{C1_1}"}, {A1_1, C1_1}),
    ("instances", {"SOPInstanceUID": "9.9"}, set()),
    ("instances", {"00080018": B1_1}, {B1_1}),
    ("instances", {"Modality": "CT"}, {A1_1, A1_2, C1_1}),
    ("instances", {"Modality": "NM"}, set()),
    ("instances", {"PatientID": "PID-B"}, {B1_1}),
    ("instances", {"PatientName": "smith^anna"}, {B1_1}),
    ("instances", {"PatientName": "an", "fuzzymatching": "true"}, {B1_1}),
    ("instances", {"StudyDate": "20211231-"}, {B1_1}),
    ("instances", {"SeriesInstanceUID": A2}, {A2_1}),
    ("instances", {"AccessionNumber": "ACC*", "Modality": "MR"}, {A2_1}),
    ("instances", {}, {A1_1, A1_2, A2_1, B1_1, C1_1, D1_1}),
    (f"studies/{A}/instances", {}, {A1_1, A1_2, A2_1}),
    (f"studies/{A}/instances", {"Modality": "MR"}, {A2_1}),
    (f"studies/{B}/instances", {"Modality": "MR"}, set()),
    (f"studies/{A}/series/{A1}/instances", {}, {A1_1, A1_2}),
    (f"studies/{A}/series/{A1}/instances", {"SOPInstanceUID": A1_2}, {A1_2}),
    (f"studies/{A}/series/{A1}/instances", {"SOPInstanceUID": A2_1}, set()),
    (f"studies/{B}/series/{A1}/instances", {}, set()),
]


@pytest.mark.parametrize(("path", "params", "expected"), INSTANCE_CASES, ids=case_id)
def test_instance_search_matches(
    qido: httpx.Client, path: str, params: dict[str, str], expected: set[str]
) -> None:
    assert found(qido, path, params) == expected


def search(client: httpx.Client, path: str, **params: str) -> list[dict]:
    response = client.get(f"{DICOMWEB}/{path}", params=params)
    assert response.status_code == 200, response.text
    results: list[dict] = response.json()
    return results


def value(result: dict, tag: str) -> object:
    return result[tag]["Value"][0]


def test_study_results_carry_the_default_attributes_and_counters(qido: httpx.Client) -> None:
    (study,) = search(qido, "studies", PatientID="PID-A")
    assert value(study, "00100010") == {"Alphabetic": "Doe^John"}
    assert value(study, "00100020") == "PID-A"
    assert value(study, "00100030") == "19700101"
    assert value(study, "00100040") == "O"
    assert value(study, "00080020") == "20200115"
    assert value(study, "00080030") == "101500"
    assert value(study, "00080050") == "ACC100"
    assert value(study, "00080090") == {"Alphabetic": "House^Gregory"}
    assert value(study, "00200010") == "S1"
    assert value(study, "00080005") == "ISO_IR 192"
    assert value(study, "00080056") == "ONLINE"
    assert study["00080061"]["Value"] == ["CT", "MR"]  # ModalitiesInStudy
    assert value(study, "00201206") == 2  # NumberOfStudyRelatedSeries
    assert value(study, "00201208") == 3  # NumberOfStudyRelatedInstances
    assert value(study, "00081190") == f"{DICOMWEB}/studies/{A}"
    assert "00081030" not in study  # StudyDescription only on request
    assert "00080060" not in study  # series-level attributes are not study results


def test_series_results_in_a_study_leave_out_the_study_attributes(qido: httpx.Client) -> None:
    results = search(qido, f"studies/{A}/series", Modality="CT")
    (series,) = results
    assert value(series, "0020000E") == A1
    assert value(series, "0020000D") == A
    assert value(series, "00080060") == "CT"
    assert value(series, "00200011") == 1
    assert value(series, "0008103E") == "CT series"
    assert value(series, "00201209") == 2  # NumberOfSeriesRelatedInstances
    assert value(series, "00081190") == f"{DICOMWEB}/studies/{A}/series/{A1}"
    assert "00100010" not in series


def test_series_results_across_studies_carry_their_study_attributes(qido: httpx.Client) -> None:
    (series,) = search(qido, "series", Modality="US")
    assert value(series, "00100020") == "PID-B"
    assert value(series, "0020000D") == B
    assert value(series, "00201208") == 1
    # The series' own RetrieveURL, not the study's.
    assert value(series, "00081190").endswith(f"/studies/{B}/series/{B1}")


def test_instance_results_carry_the_default_instance_attributes(qido: httpx.Client) -> None:
    (instance,) = search(qido, f"studies/{A}/series/{A1}/instances", SOPInstanceUID=A1_2)
    assert value(instance, "00080016") == "1.2.840.10008.5.1.4.1.1.2"
    assert value(instance, "00080018") == A1_2
    assert value(instance, "00200013") == 2
    assert value(instance, "00280010") == 2
    assert value(instance, "00280011") == 2
    assert value(instance, "00280100") == 16
    assert value(instance, "0020000E") == A1
    assert value(instance, "00081190") == (f"{DICOMWEB}/studies/{A}/series/{A1}/instances/{A1_2}")
    assert "00100020" not in instance  # scoped to a series: no patient attributes


def test_matched_attributes_are_returned(qido: httpx.Client) -> None:
    (series,) = search(qido, f"studies/{A}/series", Modality="MR")
    assert value(series, "00080060") == "MR"
    (instance,) = search(qido, f"studies/{A}/instances", PatientID="PID-A", Modality="MR")
    assert value(instance, "00100020") == "PID-A"
    assert value(instance, "00080060") == "MR"


@pytest.mark.parametrize(
    ("path", "includefield", "tag", "expected"),
    [
        ("studies", "StudyDescription", "00081030", "Head CT"),
        ("studies", "00081030", "00081030", "Head CT"),
        ("studies", "all", "00081030", "Head CT"),
        (f"studies/{A}/series", "Manufacturer", "00080070", "dicomql"),
        (f"studies/{A}/series", "SeriesDescription,Manufacturer", "00080070", "dicomql"),
        (f"studies/{A}/series/{A1}/instances", "ImageType", "00080008", "ORIGINAL"),
        (f"studies/{A}/series/{A1}/instances", "all", "00080008", "ORIGINAL"),
        ("instances", "StudyDescription", "00081030", "Head CT"),
    ],
)
def test_includefield_adds_attributes_from_the_stored_dicom_json(
    qido: httpx.Client, path: str, includefield: str, tag: str, expected: str
) -> None:
    results = search(qido, path, includefield=includefield, limit="1")
    assert value(results[0], tag) == expected
    assert tag not in search(qido, path, limit="1")[0]


def test_paging_with_limit_and_offset_visits_every_result_once_in_a_stable_order(
    qido: httpx.Client,
) -> None:
    everything = [value(r, "00080018") for r in search(qido, "instances")]
    assert len(everything) == 6
    pages = []
    for offset in range(0, 6, 2):
        response = qido.get(f"{DICOMWEB}/instances", params={"limit": "2", "offset": str(offset)})
        pages.append(
            (response.headers.get("warning"), [value(r, "00080018") for r in response.json()])
        )
    assert [uid for _, page in pages for uid in page] == everything
    # A page cut short says more can be requested; the last page does not.
    assert [warning is not None for warning, _ in pages] == [True, True, False]
    assert "additional results" in (pages[0][0] or "")


def test_a_limit_over_the_maximum_is_clamped_with_a_warning(qido: httpx.Client) -> None:
    response = qido.get(f"{DICOMWEB}/studies", params={"limit": "5001"})
    assert response.status_code == 200
    assert len(response.json()) == 4
    assert response.headers["warning"].startswith("299 embedded: ")
    assert "maximum limit of 5000" in response.headers["warning"]


def test_an_offset_past_the_end_is_an_empty_page(qido: httpx.Client) -> None:
    assert search(qido, "studies", offset="4") == []


def test_no_match_is_200_with_an_empty_array(qido: httpx.Client) -> None:
    response = qido.get(f"{DICOMWEB}/studies", params={"PatientID": "nobody"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/dicom+json")
    assert response.json() == []
    assert "warning" not in response.headers


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("studies", {"NoSuchAttribute": "x"}, "Unknown DICOM attribute 'NoSuchAttribute'"),
        ("studies", {"StudyDescription": "x"}, "StudyDescription is not a supported search"),
        ("studies", {"Modality": "CT"}, "Modality is an attribute of the series level"),
        (f"studies/{A}/series", {"SOPInstanceUID": "1"}, "SOPInstanceUID is an attribute"),
        ("studies", {"StudyDate": "2020-01-01"}, "StudyDate"),
        ("series", {"limit": "many"}, "limit must be a non-negative integer"),
        ("instances", {"offset": "1000001"}, "offset must be at most 1000000"),
        ("studies", {"includefield": "Bogus"}, "Unknown DICOM attribute 'Bogus'"),
        ("studies", {"fuzzymatching": "maybe"}, "fuzzymatching must be true or false"),
    ],
)
def test_bad_queries_are_400_in_googles_error_shape(
    qido: httpx.Client, path: str, params: dict[str, str], message: str
) -> None:
    response = qido.get(f"{DICOMWEB}/{path}", params=params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 400
    assert error["status"] == "INVALID_ARGUMENT"
    assert message in error["message"]


def test_searching_a_missing_store_is_404(qido: httpx.Client) -> None:
    response = qido.get("/v1/projects/p/locations/l/datasets/d/dicomStores/nope/dicomWeb/studies")
    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"


def test_results_come_as_dicom_xml_parts_when_accept_asks_for_xml(qido: httpx.Client) -> None:
    response = qido.get(
        f"{DICOMWEB}/studies",
        params={"PatientID": "PID-*"},
        headers={"Accept": 'multipart/related; type="application/dicom+xml"'},
    )
    assert response.status_code == 200
    parts = read_multipart(response.headers["content-type"], response.content)
    assert len(parts) == 2
    assert all(headers["content-type"] == "application/dicom+xml" for headers, _ in parts)
    assert (
        b'<DicomAttribute tag="00100020" vr="LO" keyword="PatientID">'
        b'<Value number="1">PID-A</Value>' in parts[0][1]
    )


def test_an_unsupported_accept_is_406(qido: httpx.Client) -> None:
    response = qido.get(f"{DICOMWEB}/studies", headers={"Accept": "image/png"})
    assert response.status_code == 406
    assert "application/dicom+json" in response.json()["error"]["message"]
