"""DICOM metadata as tables: SELECT on google.healthcare.studies, series and instances over a
store of generated instances — typed values, WHERE terms pushed down as QIDO keys (and still
checked relationally), paging to the end, GROUP BY, joins with dicom_stores, datasets and each
other, EXPLAIN — on the embedded service in-process and over HTTP (a uvicorn server on a
loopback port), and through a recording transport standing in for Google's API (the requests
and their QIDO keys asserted)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dicomql.provider.client import Client
from dicomql.sql.engine import Engine
from tests.support.sqltest import Recorder

STORE = "projectsId = 'proj' AND locationsId = 'us-central1' AND datasetsId = 'ds1'"
AT = "@projectsId='proj', @locationsId='us-central1', @datasetsId='ds1'"
# (PatientID, PatientName, StudyDate, [(Modality, instances), …]) per study.
STUDIES = [
    ("P1", "Doe^John", "20200105", [("CT", 3), ("CT", 1)]),
    ("P1", "Doe^John", "20210310", [("MR", 2)]),
    ("P2", "Roe^Jane", "20190720", [("CT", 1), ("SR", 1)]),
    ("P3", "Smith^Ann", "20221201", [("MR", 5)]),
]


def write_store(folder: Path) -> dict[str, str]:
    """Instances of STUDIES under ``folder``; returns StudyInstanceUID by StudyDate."""
    folder.mkdir(parents=True)
    template = dcmread(get_testdata_file("CT_small.dcm"))
    uids = {}
    index = 0
    for patient_id, name, date, series in STUDIES:
        study = generate_uid()
        uids[date] = study
        for modality, count in series:
            series_uid = generate_uid()
            for number in range(count):
                template.PatientID, template.PatientName = patient_id, name
                template.StudyDate, template.Modality = date, modality
                template.StudyInstanceUID, template.SeriesInstanceUID = study, series_uid
                template.SOPInstanceUID = generate_uid()
                template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
                template.InstanceNumber = number + 1
                template.save_as(folder / f"{index}.dcm")
                index += 1
    return uids


@pytest.fixture
def database_url() -> None:
    """SQLite: the index backends are the service tests' concern."""
    return None


@pytest.fixture(params=["in-process", "http"])
def backend(request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    """The embedded service in this process, or the same service behind a real HTTP server."""
    if request.param == "in-process":
        yield request.getfixturevalue("embedded")
    else:
        yield request.getfixturevalue("http")


@pytest.fixture
def loaded(backend: httpx.Client, tmp_path: Path) -> tuple[Engine, dict[str, str]]:
    engine = Engine(Client(backend), search_page_size=3)
    engine.execute(
        "INSERT /*+ AWAIT */ INTO google.healthcare.datasets (projectsId, locationsId, datasetId)"
        " SELECT 'proj', 'us-central1', 'ds1'"
    )
    uids = write_store(tmp_path / "in")
    for store in ("s", "empty"):
        engine.execute(
            "INSERT INTO google.healthcare.dicom_stores (projectsId, locationsId, datasetsId,"
            f" dicomStoreId) SELECT 'proj', 'us-central1', 'ds1', '{store}'"
        )
    result = engine.execute(
        f"EXEC google.healthcare.dicom_stores.store_instances {AT}, @dicomStoresId='s',"
        f" @path='{tmp_path / 'in'}'"
    )
    assert result.error is None
    return engine, uids


def rows(engine: Engine, sql: str) -> list[dict[str, Any]]:
    return engine.execute(sql).records()


def test_studies_have_typed_values_and_sort_by_date(loaded: tuple[Engine, dict[str, str]]) -> None:
    engine, _ = loaded
    result = rows(
        engine,
        "SELECT PatientID, StudyDate, NumberOfStudyRelatedInstances AS n "
        f"FROM google.healthcare.studies WHERE {STORE} AND dicomStoresId = 's' "
        "ORDER BY StudyDate",
    )
    assert result == [
        {"PatientID": "P2", "StudyDate": "2019-07-20", "n": 2},
        {"PatientID": "P1", "StudyDate": "2020-01-05", "n": 4},
        {"PatientID": "P1", "StudyDate": "2021-03-10", "n": 2},
        {"PatientID": "P3", "StudyDate": "2022-12-01", "n": 5},
    ]
    over = rows(
        engine,
        f"SELECT PatientID FROM google.healthcare.studies WHERE {STORE} AND dicomStoresId = 's' "
        "AND NumberOfStudyRelatedInstances > 3 ORDER BY PatientID",
    )
    assert over == [{"PatientID": "P1"}, {"PatientID": "P3"}]


def test_paging_is_followed_to_the_end(loaded: tuple[Engine, dict[str, str]]) -> None:
    engine, _ = loaded  # three matches a page: thirteen instances are five pages
    result = engine.execute(
        f"SELECT SOPInstanceUID FROM google.healthcare.instances WHERE {STORE} "
        "AND dicomStoresId = 's'"
    )
    assert len({row[0] for row in result.rows}) == 13
    assert result.warnings == []


def test_a_page_cap_stops_early_and_says_so(backend: httpx.Client, tmp_path: Path) -> None:
    engine = Engine(Client(backend), search_page_size=3, page_limit=2)
    engine.execute(
        "INSERT /*+ AWAIT */ INTO google.healthcare.datasets (projectsId, locationsId, datasetId)"
        " SELECT 'proj', 'us-central1', 'ds1'"
    )
    engine.execute(
        "INSERT INTO google.healthcare.dicom_stores (projectsId, locationsId, datasetsId,"
        " dicomStoreId) SELECT 'proj', 'us-central1', 'ds1', 's'"
    )
    write_store(tmp_path / "in")
    engine.execute(
        f"EXEC google.healthcare.dicom_stores.store_instances {AT}, @dicomStoresId='s',"
        f" @path='{tmp_path / 'in'}'"
    )
    result = engine.execute(
        f"SELECT SOPInstanceUID FROM google.healthcare.instances WHERE {STORE} "
        "AND dicomStoresId = 's'"
    )
    assert len(result.rows) == 6
    assert "stopped after 2 pages of 3" in result.warnings[0]


def test_group_by_modality_over_instances(loaded: tuple[Engine, dict[str, str]]) -> None:
    engine, _ = loaded
    result = rows(
        engine,
        "SELECT Modality, COUNT(*) AS n FROM google.healthcare.instances "
        f"WHERE {STORE} AND dicomStoresId = 's' GROUP BY Modality ORDER BY Modality",
    )
    assert result == [
        {"Modality": "CT", "n": 5},
        {"Modality": "MR", "n": 7},
        {"Modality": "SR", "n": 1},
    ]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("PatientID = 'P1'", ["2020-01-05", "2021-03-10"]),
        ("StudyDate BETWEEN '2020-01-01' AND '2021-12-31'", ["2020-01-05", "2021-03-10"]),
        ("StudyDate > '2020-01-05'", ["2021-03-10", "2022-12-01"]),
        ("StudyDate <= '20200105'", ["2019-07-20", "2020-01-05"]),
        ("PatientName LIKE 'Doe%'", ["2020-01-05", "2021-03-10"]),
        ("PatientID = 'P1' AND StudyDate >= '2021-01-01'", ["2021-03-10"]),
        ("PatientID = 'nobody'", []),
    ],
)
def test_where_terms_pushed_down_still_give_exactly_the_matching_studies(
    loaded: tuple[Engine, dict[str, str]], where: str, expected: list[str]
) -> None:
    engine, _ = loaded
    result = rows(
        engine,
        f"SELECT StudyDate FROM google.healthcare.studies WHERE {STORE} AND dicomStoresId = 's' "
        f"AND {where} ORDER BY StudyDate",
    )
    assert [r["StudyDate"] for r in result] == expected


def test_a_uid_list_selects_those_studies(loaded: tuple[Engine, dict[str, str]]) -> None:
    engine, uids = loaded
    wanted = (uids["20190720"], uids["20221201"])
    result = rows(
        engine,
        f"SELECT PatientID FROM google.healthcare.studies WHERE {STORE} AND dicomStoresId = 's' "
        f"AND StudyInstanceUID IN {wanted!r} ORDER BY PatientID",
    )
    assert result == [{"PatientID": "P2"}, {"PatientID": "P3"}]


def test_fuzzy_matching_where_asked(loaded: tuple[Engine, dict[str, str]]) -> None:
    engine, _ = loaded
    sql = (
        f"SELECT DISTINCT PatientID FROM google.healthcare.studies WHERE {STORE} "
        "AND dicomStoresId = 's' AND PatientName = 'jan'"
    )
    assert rows(engine, sql) == []
    assert rows(engine, sql + " AND fuzzymatching = true") == [{"PatientID": "P2"}]


def test_a_store_without_matches_still_has_the_named_columns(
    loaded: tuple[Engine, dict[str, str]],
) -> None:
    engine, _ = loaded
    result = engine.execute(
        f"SELECT PatientID, StudyDate FROM google.healthcare.studies WHERE {STORE} "
        "AND dicomStoresId = 'empty'"
    )
    assert (result.columns, result.rows) == (["PatientID", "StudyDate"], [])


def test_studies_of_every_store_of_a_dataset_join_dicom_stores(
    loaded: tuple[Engine, dict[str, str]],
) -> None:
    engine, _ = loaded
    result = rows(
        engine,
        "SELECT s.dicomStoresId AS store, COUNT(st.StudyInstanceUID) AS studies "
        "FROM google.healthcare.dicom_stores s LEFT JOIN google.healthcare.studies st "
        "ON st.dicomStoresId = s.dicomStoresId AND st.projectsId = 'proj' "
        "AND st.locationsId = 'us-central1' AND st.datasetsId = 'ds1' "
        "WHERE s.projectsId = 'proj' AND s.locationsId = 'us-central1' AND s.datasetsId = 'ds1' "
        "GROUP BY s.dicomStoresId ORDER BY store",
    )
    assert result == [{"store": "empty", "studies": 0}, {"store": "s", "studies": 4}]


def test_series_join_their_studies_and_datasets(loaded: tuple[Engine, dict[str, str]]) -> None:
    engine, _ = loaded
    result = rows(
        engine,
        "SELECT d.datasetsId, st.PatientID, se.Modality, se.NumberOfSeriesRelatedInstances AS n "
        "FROM google.healthcare.datasets d "
        "JOIN google.healthcare.studies st ON st.datasetsId = d.datasetsId "
        "JOIN google.healthcare.series se ON se.StudyInstanceUID = st.StudyInstanceUID "
        "AND se.datasetsId = d.datasetsId "
        "WHERE d.projectsId = 'proj' AND d.locationsId = 'us-central1' "
        "AND st.projectsId = 'proj' AND st.locationsId = 'us-central1' "
        "AND st.dicomStoresId = 's' AND se.projectsId = 'proj' "
        "AND se.locationsId = 'us-central1' AND se.dicomStoresId = 's' AND st.PatientID = 'P1' "
        "ORDER BY n DESC",
    )
    assert result == [
        {"datasetsId": "ds1", "PatientID": "P1", "Modality": "CT", "n": 3},
        {"datasetsId": "ds1", "PatientID": "P1", "Modality": "MR", "n": 2},
        {"datasetsId": "ds1", "PatientID": "P1", "Modality": "CT", "n": 1},
    ]


def test_explain_names_the_requests_and_what_the_server_filters(
    loaded: tuple[Engine, dict[str, str]],
) -> None:
    engine, _ = loaded
    result = engine.execute(
        "EXPLAIN QUERY PLAN SELECT PatientID FROM google.healthcare.studies "
        f"WHERE {STORE} AND dicomStoresId = 's' AND PatientID = 'P1' "
        "AND StudyDate >= '2020-01-01' AND NumberOfStudyRelatedInstances > 3"
    )
    scan, sqlite = result.records()
    assert scan["method"] == "google.healthcare.dicom_stores.search_for_studies"
    assert scan["request"] == (
        "GET /v1/projects/proj/locations/us-central1/datasets/ds1/dicomStores/s/dicomWeb/studies"
        "?PatientID=P1&StudyDate=20200101-&includefield=NumberOfStudyRelatedInstances,"
        "PatientID,StudyDate&limit=3"
    )
    assert "PatientID = 'P1'" in scan["server_filters"]
    assert "NumberOfStudyRelatedInstances" not in scan["server_filters"]
    assert "NumberOfStudyRelatedInstances > 3" in sqlite["relational"]


# --- Google's API: a recording transport stands in for the cloud (it cannot run here) --------

GOOGLE_STUDIES = (
    "/v1/projects/proj/locations/us-central1/datasets/ds1/dicomStores/s/dicomWeb/studies"
)


def study_json(patient_id: str, date: str, count: int) -> dict[str, Any]:
    return {
        "00100020": {"vr": "LO", "Value": [patient_id]},
        "00080020": {"vr": "DA", "Value": [date]},
        "00201208": {"vr": "IS", "Value": [count]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^J", "Ideographic": "ド^J"}]},
    }


def test_google_requests_carry_the_qido_keys_and_page_with_offset(
    recorder: Recorder, recording_engine: Engine
) -> None:
    pages = [
        [study_json("P1", "20200105", 4)] * 2,
        [study_json("P1", "20210310", 301)],
    ]

    def answer(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params.get("offset", "0"))
        page = pages[offset // 2] if offset // 2 < len(pages) else []
        return httpx.Response(
            200, content=json.dumps(page), headers={"content-type": "application/dicom+json"}
        )

    recorder.responses[("GET", GOOGLE_STUDIES)] = answer
    engine = Engine(recording_engine.client, search_page_size=2)
    result = engine.execute(
        f"SELECT PatientName, PatientName_Ideographic, StudyDate, "
        "NumberOfStudyRelatedInstances AS n FROM google.healthcare.studies "
        f"WHERE {STORE} AND dicomStoresId = 's' AND PatientID = 'P1' "
        "AND StudyDate BETWEEN '2020-01-01' AND '2021-12-31' "
        "AND NumberOfStudyRelatedInstances > 300"
    )
    assert result.records() == [
        {
            "PatientName": "Doe^J",
            "PatientName_Ideographic": "ド^J",
            "StudyDate": "2021-03-10",
            "n": 301,
        }
    ]
    assert [c.path for c in recorder.calls] == [GOOGLE_STUDIES, GOOGLE_STUDIES]
    first, second = (dict(c.query) for c in recorder.calls)
    assert first == {
        "PatientID": "P1",
        "StudyDate": "20200101-20211231",
        "includefield": "NumberOfStudyRelatedInstances,PatientID,PatientName,StudyDate",
        "limit": "2",
    }
    assert second == {**first, "offset": "2"}


def test_describe_gives_the_columns_with_their_sql_types(recording_engine: Engine) -> None:
    result = recording_engine.execute("DESCRIBE google.healthcare.instances")
    types = {row[0]: row[1] for row in result.rows}
    assert types["StudyDate"] == "DATE"
    assert types["NumberOfStudyRelatedInstances"] == "INTEGER"
    assert types["SOPInstanceUID"] == "TEXT"
    assert "a QIDO search key" in dict((r[0], r[2]) for r in result.rows)["Modality"]


def test_the_search_method_is_the_tables_select_and_answers_to_both_generations_names(
    recorder: Recorder, recording_engine: Engine
) -> None:
    methods = recording_engine.execute("SHOW METHODS IN google.healthcare.studies").records()
    assert {"MethodName": "search_for_studies", "SQLVerb": "SELECT"}.items() <= next(
        m for m in methods if m["MethodName"] == "search_for_studies"
    ).items()
    recording_engine.execute(
        "EXEC google.healthcare.studies.projects_locations_datasets_dicomStores_searchForStudies "
        "@projectsId='proj', @locationsId='us-central1', @datasetsId='ds1', @dicomStoresId='s',"
        " @PatientID='P1'"
    )
    (call,) = recorder.calls
    assert (call.path, call.query) == (GOOGLE_STUDIES, [("PatientID", "P1")])


@pytest.mark.parametrize(
    "module",
    [
        "dicomql.sql.metadata",
        "dicomql.sql.qido_keys",
        "dicomql.sql.stow_report",
        "dicomql.sql.engine",
    ],
)
def test_doctests(module: str) -> None:
    import doctest
    import importlib

    failures, tried = doctest.testmod(importlib.import_module(module))
    assert (failures, tried > 0) == (0, True)


def test_a_join_on_study_uids_sends_the_studies_uids_as_a_uid_list(
    recorder: Recorder, recording_engine: Engine
) -> None:
    def studies(request: httpx.Request) -> httpx.Response:
        page = [
            {"0020000D": {"vr": "UI", "Value": [uid]}, "00100020": {"vr": "LO", "Value": ["P1"]}}
            for uid in ("1.2.3", "1.2.4")
        ]
        return httpx.Response(200, json=page, headers={"content-type": "application/dicom+json"})

    def series(request: httpx.Request) -> httpx.Response:
        page = [
            {
                "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
                "00080060": {"vr": "CS", "Value": ["MR"]},
            }
        ]
        return httpx.Response(200, json=page, headers={"content-type": "application/dicom+json"})

    recorder.responses[("GET", GOOGLE_STUDIES)] = studies
    recorder.responses[("GET", GOOGLE_STUDIES.replace("/studies", "/series"))] = series
    result = recording_engine.execute(
        "SELECT st.StudyInstanceUID, se.Modality FROM google.healthcare.studies st "
        "JOIN google.healthcare.series se ON se.StudyInstanceUID = st.StudyInstanceUID "
        f"WHERE st.{STORE.replace(' AND ', ' AND st.')} AND st.dicomStoresId = 's' "
        f"AND se.{STORE.replace(' AND ', ' AND se.')} AND se.dicomStoresId = 's' "
        "AND st.PatientID = 'P1'"
    )
    assert result.rows == [("1.2.3", "MR")]
    studies_call, series_call = recorder.calls
    assert ("PatientID", "P1") in studies_call.query
    assert ("StudyInstanceUID", "1.2.3,1.2.4") in series_call.query


def test_a_left_join_of_series_keeps_every_study(loaded: tuple[Engine, dict[str, str]]) -> None:
    engine, _ = loaded
    result = rows(
        engine,
        "SELECT st.StudyDate, se.Modality FROM google.healthcare.studies st "
        "LEFT JOIN google.healthcare.series se ON se.StudyInstanceUID = st.StudyInstanceUID "
        f"AND se.{STORE.replace(' AND ', ' AND se.')} AND se.dicomStoresId = 's' "
        "AND se.Modality = 'SR' "
        f"WHERE st.{STORE.replace(' AND ', ' AND st.')} AND st.dicomStoresId = 's' "
        "ORDER BY st.StudyDate",
    )
    assert [(r["StudyDate"], r["Modality"]) for r in result] == [
        ("2019-07-20", "SR"),
        ("2020-01-05", None),
        ("2021-03-10", None),
        ("2022-12-01", None),
    ]


@pytest.mark.parametrize(
    ("where", "limits"),
    [
        ("PatientID = 'P1' LIMIT 3 OFFSET 2", [("2", None), ("2", "2"), ("1", "4")]),
        ("PatientName LIKE 'Doe%' LIMIT 3", [("2", None), ("2", "2"), ("2", "4")]),
    ],
)
def test_a_limit_goes_to_the_server_only_when_its_matches_are_exactly_the_rows(
    recorder: Recorder, recording_engine: Engine, where: str, limits: list[tuple[str, Any]]
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        asked = int(request.url.params["limit"])
        page = [study_json("P1", "20200105", 1)] * asked
        offset = int(request.url.params.get("offset", "0"))
        page = page if offset < 4 else page[:1]  # five matches in all
        return httpx.Response(
            200, content=json.dumps(page), headers={"content-type": "application/dicom+json"}
        )

    recorder.responses[("GET", GOOGLE_STUDIES)] = answer
    engine = Engine(recording_engine.client, search_page_size=2)
    result = engine.execute(
        f"SELECT PatientID FROM google.healthcare.studies WHERE {STORE} AND dicomStoresId = 's' "
        f"AND {where}"
    )
    asked = [(dict(c.query)["limit"], dict(c.query).get("offset")) for c in recorder.calls]
    assert asked == limits
    assert len(result.rows) == 3
