"""The planner: SQL → API calls (method, path, query, body), checked through a recording
transport; paging, AWAIT polling, and errors naming what is missing."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from dicomql.errors import ApiError, ProgrammingError
from dicomql.sql.engine import Engine
from tests.support.sqltest import SEED, Recorder

PAIRS_FILE = Path(__file__).parent / "fixtures" / "planned_calls.txt"


def pairs() -> list[tuple[str, list[str]]]:
    blocks = []
    for block in PAIRS_FILE.read_text().split("\n\n"):
        lines = [ln for ln in block.strip().splitlines() if ln and not ln.startswith("#")]
        if lines:
            blocks.append((lines[0], lines[1:]))
    return blocks


def describe(recorder: Recorder) -> list[str]:
    described = []
    for call in recorder.calls:
        text = f"{call.method} {call.path}"
        if call.query:
            text += " ?" + urlencode(call.query)
        if call.body is not None:
            text += " " + json.dumps(call.body)
        described.append(text)
    return described


@pytest.mark.parametrize(("sql", "expected"), pairs(), ids=[sql[:60] for sql, _ in pairs()])
def test_statement_plans_exactly_these_calls(
    recording_engine: Engine, recorder: Recorder, sql: str, expected: list[str]
) -> None:
    recording_engine.execute(sql)
    assert describe(recorder) == expected


STORE = {"projectsId": "p", "locationsId": "l", "datasetsId": "d", "dicomStoresId": "s"}


@pytest.mark.parametrize(
    ("seed", "variables", "path", "body"),
    [
        (
            "exec:deidentify",
            {
                "destinationStore": "projects/p/locations/l/datasets/d/dicomStores/out",
                "config": {"dicom": {"filterProfile": "MINIMAL_KEEP_LIST_PROFILE"}},
                "gcsConfigUri": "",
                "filterConfig": "",
            },
            "/v1/projects/p/locations/l/datasets/d/dicomStores/s:deidentify",
            {
                "destinationStore": "projects/p/locations/l/datasets/d/dicomStores/out",
                "config": {"dicom": {"filterProfile": "MINIMAL_KEEP_LIST_PROFILE"}},
            },
        ),
        (
            "exec:set_blob_storage_settings",
            {"filterConfig": "", "blobStorageSettings": '{"blobStorageClass": "ARCHIVE"}'},
            "/v1/projects/p/locations/l/datasets/d/dicomStores/s:setBlobStorageSettings",
            {"blobStorageSettings": {"blobStorageClass": "ARCHIVE"}},
        ),
        (
            "exec:import",
            {"gcsSource": {"uri": "gs://b/**.dcm"}, "blobStorageSettings": ""},
            "/v1/projects/p/locations/l/datasets/d/dicomStores/s:import",
            {"gcsSource": {"uri": "gs://b/**.dcm"}},
        ),
        (
            "exec:export",
            {"gcsDestination": "", "bigqueryDestination": {"tableUri": "bq://p.d.t"}},
            "/v1/projects/p/locations/l/datasets/d/dicomStores/s:export",
            {"bigqueryDestination": {"tableUri": "bq://p.d.t"}},
        ),
    ],
)
def test_seed_exec_bodies_fill_json_placeholders_with_json_and_drop_empty_ones(
    recording_engine: Engine,
    recorder: Recorder,
    seed: str,
    variables: dict[str, object],
    path: str,
    body: dict[str, object],
) -> None:
    recording_engine.execute(SEED[seed], {**STORE, **variables})
    [call] = recorder.calls
    assert (call.method, call.path, call.body) == ("POST", path, body)


def test_store_instances_seed_sends_the_decoded_bytes_with_its_content_type(
    recording_engine: Engine, recorder: Recorder
) -> None:
    variables = {**STORE, "contentType": "application/dicom", "data": "AAEC/w==", "extensions": ""}
    recording_engine.execute(SEED["exec:store_instances"], variables)
    [call] = recorder.calls
    assert call.path == "/v1/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb/studies"
    assert (call.content_type, call.body) == ("application/dicom", b"\x00\x01\x02\xff")


def operation(done: bool, **extra: object) -> dict[str, object]:
    return {
        "name": "projects/p/locations/l/datasets/d/operations/42",
        "metadata": {"counter": {"success": "1" if done else "0"}},
        "done": done,
        **extra,
    }


def test_await_polls_the_operation_until_done_and_returns_its_response(
    recorder: Recorder, recording_engine: Engine
) -> None:
    states = iter([operation(False), operation(True, response={"@type": "x", "name": "out"})])
    recorder.responses[("POST", "/v1/projects/p/locations/l/datasets/d/dicomStores/s:export")] = (
        lambda request: httpx.Response(200, json=operation(False))
    )
    recorder.responses[("GET", "/v1/projects/p/locations/l/datasets/d/operations/42")] = (
        lambda request: httpx.Response(200, json=next(states))
    )
    seen: list[dict[str, object]] = []
    recording_engine.on_progress = seen.append
    result = recording_engine.execute(
        "EXEC /*+ AWAIT */ google.healthcare.dicom_stores.export @projectsId='p', "
        "@locationsId='l', @datasetsId='d', @dicomStoresId='s' @@json='{}'"
    )
    assert result.records() == [{"name": "out"}]
    assert [op["done"] for op in seen] == [False, False, True]
    assert [c.method for c in recorder.calls] == ["POST", "GET", "GET"]


def test_await_raises_the_operation_error(recorder: Recorder, recording_engine: Engine) -> None:
    failed = operation(True, error={"code": 1, "message": "cancelled by user"})
    recorder.responses[("POST", "/v1/projects/p/locations/l/datasets/d/dicomStores/s:export")] = (
        lambda request: httpx.Response(200, json=failed)
    )
    with pytest.raises(ApiError) as caught:
        recording_engine.execute(
            "EXEC /*+ AWAIT */ google.healthcare.dicom_stores.export @projectsId='p', "
            "@locationsId='l', @datasetsId='d', @dicomStoresId='s'"
        )
    # The operation's final counters follow its message.
    assert (caught.value.status, caught.value.message) == (
        "CANCELLED",
        "cancelled by user (1 succeeded, 0 failed)",
    )


def test_without_await_an_operation_is_returned_as_one_row(
    recorder: Recorder, recording_engine: Engine
) -> None:
    recorder.responses[("POST", "/v1/projects/p/locations/l/datasets/d/dicomStores/s:export")] = (
        lambda request: httpx.Response(200, json=operation(False))
    )
    result = recording_engine.execute(
        "EXEC google.healthcare.dicom_stores.export @projectsId='p', @locationsId='l', "
        "@datasetsId='d', @dicomStoresId='s'"
    )
    assert result.records()[0]["name"].endswith("/operations/42")
    assert result.records()[0]["done"] is False


def paged(request: httpx.Request) -> httpx.Response:
    token = request.url.params.get("pageToken")
    page = int(token) if token else 0
    return httpx.Response(
        200, json={"dicomStores": [{"name": f"s{page}"}], "nextPageToken": str(page + 1)}
    )


LIST = (
    "SELECT name FROM google.healthcare.dicom_stores WHERE projectsId = 'p' "
    "AND locationsId = 'l' AND datasetsId = 'd'"
)


def test_list_follows_next_page_token_up_to_the_page_limit(
    recorder: Recorder, recording_engine: Engine
) -> None:
    recorder.responses[("GET", "/v1/projects/p/locations/l/datasets/d/dicomStores")] = paged
    result = recording_engine.execute(LIST)
    assert len(result.rows) == 20
    assert [dict(c.query).get("pageToken") for c in recorder.calls[:3]] == [None, "1", "2"]


def test_page_limit_is_configurable(recorder: Recorder, recording_engine: Engine) -> None:
    recorder.responses[("GET", "/v1/projects/p/locations/l/datasets/d/dicomStores")] = paged
    recording_engine.page_limit = 3
    assert [r[0] for r in recording_engine.execute(LIST).rows] == ["s0", "s1", "s2"]


@pytest.mark.parametrize("status", [403, 429, 503])
def test_api_errors_propagate_instead_of_empty_results(
    recorder: Recorder, recording_engine: Engine, status: int
) -> None:
    recorder.responses[("GET", "/v1/projects/p/locations/l/datasets/d/dicomStores")] = (
        lambda request: httpx.Response(status, text="<html>busy</html>")
    )
    with pytest.raises(ApiError) as caught:
        recording_engine.execute(LIST)
    assert caught.value.code == status


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        (
            "SELECT name FROM google.healthcare.dicom_stores WHERE projectsId = 'p'",
            "missing required parameters locationsId, datasetsId",
        ),
        (
            "SELECT name FROM google.healthcare.dicom_stores WHERE projectsId = 'p' "
            "AND locationsId = 'l' AND datasetsId = ''",
            "missing required parameter datasetsId",
        ),
        (
            "DELETE FROM google.healthcare.dicom_stores "
            "WHERE projectsId = 'p' AND locationsId = 'l'",
            "missing required parameters datasetsId, dicomStoresId",
        ),
        (
            "EXEC google.healthcare.dicom_stores.export @projectsId='p'",
            "missing required parameters locationsId, datasetsId, dicomStoresId",
        ),
        (
            "SELECT * FROM google.healthcare.dicom_store",
            "did you mean 'google.healthcare.dicom_stores'",
        ),
        (
            "EXEC google.healthcare.dicom_stores.serch_for_studies",
            "did you mean 'search_for_studies'",
        ),
        (
            "EXEC google.healthcare.dicom_stores.export @projectsId='p', @locationsId='l', "
            "@datasetsId='d', @dicomStoresId='s', @nmae='x'",
            "unknown parameter 'nmae'",
        ),
        (
            "INSERT INTO google.healthcare.dicom_stores (data__lables, projectsId, locationsId, "
            "datasetsId) SELECT '{}', 'p', 'l', 'd'",
            "did you mean 'data__labels'",
        ),
        (
            "SELECT nmae FROM google.healthcare.dicom_stores WHERE projectsId = 'p' "
            "AND locationsId = 'l' AND datasetsId = 'd'",
            "unknown column 'nmae' in google.healthcare.dicom_stores; did you mean 'name'?",
        ),
        (
            "SELECT * FROM google.healthcare.studies WHERE projectsId = 'p'",
            "missing required parameters locationsId, datasetsId, dicomStoresId for SELECT on "
            "google.healthcare.studies",
        ),
        ("SELECT '{{ missing }}'", "template variable 'missing' has no value"),
    ],
)
def test_programming_errors_name_what_is_wrong(
    recording_engine: Engine, sql: str, message: str
) -> None:
    with pytest.raises(ProgrammingError, match=None) as caught:
        recording_engine.execute(sql)
    assert message in str(caught.value)


def test_execute_refuses_two_statements(recording_engine: Engine) -> None:
    with pytest.raises(ProgrammingError, match="use execute_script"):
        recording_engine.execute("SHOW SERVICES; SHOW SERVICES")


def test_execute_script_runs_each_statement_including_a_final_one_without_semicolon(
    recording_engine: Engine,
) -> None:
    results = list(recording_engine.execute_script("SHOW SERVICES;\nSELECT 1 AS one\n"))
    assert [r.kind for r in results] == ["show", "select"]
    assert results[1].rows == [(1,)]


def test_join_equality_feeds_one_call_per_distinct_value(
    recorder: Recorder, recording_engine: Engine
) -> None:
    recorder.responses[("GET", "/v1/projects/p/locations/l/datasets")] = lambda request: (
        httpx.Response(200, json={"datasets": [{"name": "a"}, {"name": "b"}, {"name": "a"}]})
    )
    recording_engine.execute(
        "SELECT s.name FROM google.healthcare.datasets AS d "
        "JOIN google.healthcare.dicom_stores AS s ON s.datasetsId = d.name "
        "AND s.projectsId = 'p' AND s.locationsId = 'l' "
        "WHERE d.projectsId = 'p' AND d.locationsId = 'l'"
    )
    assert describe(recorder) == [
        "GET /v1/projects/p/locations/l/datasets",
        "GET /v1/projects/p/locations/l/datasets/a/dicomStores",
        "GET /v1/projects/p/locations/l/datasets/b/dicomStores",
    ]
