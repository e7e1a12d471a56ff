"""Hostile values in every path parameter and template position of SQL statements: every request
the client sends targets exactly the resource the statement names, and a ``{{ var }}`` inside a
JSON string of ``@@json`` or a ``data__`` value cannot add request fields. On the embedded backend
(the real service answers, and a guarded instance must survive every example) and towards
Google's API (the recording double; Google's cloud is the one thing faked)."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.data import get_testdata_file

from dicomql.dbapi import Connection
from dicomql.errors import Error, ProgrammingError
from tests.support.google_double import GoogleDouble
from tests.support.recording import (
    RecordingTransport,
    embedded_connection,
    google_connection,
    instance_uids,
    segments,
)

HOSTILE_IDS = [
    "..", ".", "", " ", "../..", "a/..", "a/b", "/", "%2F", "%2E%2E", "..%2F..", "%2e",
    "s?x=1", "?", "#", "s#f", "s\\..", "\x00", "s\n", "\t", "\u202e", "s:export",
    "s:deidentify", "．．", "s%00", "a b", "'", "''", '"', "--", "/*", "*/", ";", ":v0",
]  # fmt: skip
INJECTIONS = [
    'x", "filterConfig": {"resourcePathsGcsUri": "file:///etc/passwd"}, "y": "',
    '"}, "extra": {"a": "',
    '\\", "extra": 1, "z": "\\',
    "\\",
    "'",
    "' OR 1=1 --",
    "{{ v0 }}",
    "}}",
    '"',
    "\n\t\x00",
]
# The guarded instance: half the statements aim at it with a hostile value in some slot.
GUARD_STORE = "@projectsId='guard', @locationsId='l', @datasetsId='ds', @dicomStoresId='s'"
CT = dcmread(get_testdata_file("CT_small.dcm"))
GUARDED_INSTANCE = str(CT.SOPInstanceUID)
GUARDED = {
    "projectsId": "guard",
    "locationsId": "l",
    "datasetsId": "ds",
    "dicomStoresId": "s",
    "studiesId": str(CT.StudyInstanceUID),
    "seriesId": str(CT.SeriesInstanceUID),
    "instancesId": GUARDED_INSTANCE,
}


def _id_character(character: str, extra: str) -> bool:
    return character in extra or unicodedata.category(character)[0] in "LN"


def path_safe(value: str, parameter: str) -> bool:
    """Google's rule for an ID in a path: [\\p{L}\\p{N}_\\-\\.]+ (and ':' in a project), and not
    a dot segment."""
    extra = "_-.:" if parameter == "projectsId" else "_-."
    return value not in ("", ".", "..") and all(_id_character(c, extra) for c in value)


valid_ids = st.text(
    alphabet=st.one_of(st.characters(categories=["L", "N"]), st.sampled_from("_-.")),
    min_size=1,
    max_size=12,
)
hostile_ids = st.one_of(st.sampled_from(HOSTILE_IDS), st.text(max_size=8))
texts = st.one_of(st.sampled_from(INJECTIONS), st.text(max_size=16))
positions = st.sampled_from(["literal", "quoted template", "bare template", "parameter"])

# Path parameters of each statement, in URL order, and what follows them.
SCOPE = ["projectsId", "locationsId", "datasetsId"]
STORE = [*SCOPE, "dicomStoresId"]
UIDS = ["studiesId", "seriesId", "instancesId"]
COLLECTIONS = {
    "projectsId": "projects",
    "locationsId": "locations",
    "datasetsId": "datasets",
    "dicomStoresId": "dicomStores",
    "studiesId": "studies",
    "seriesId": "series",
    "instancesId": "instances",
}


@dataclass(frozen=True)
class Kind:
    """One statement shape: SQL with ``«parameter»`` slots, and the request it must send."""

    sql: str
    path: list[str]  # path parameters in URL order
    method: str
    suffix: list[str] = field(default_factory=list)  # segments after the last ID
    verb: str = ""  # a custom verb on the last ID: ":export"
    query: dict[str, str] = field(default_factory=dict)  # query parameter ← slot
    body: str | None = None  # "labels" | "export" | "deidentify": the template's JSON body
    list_if_empty: str | None = None  # a SELECT whose last ID empty means "list"


def _where(names: list[str]) -> str:
    return " AND ".join(f"{name} = «{name}»" for name in names)


def _at(names: list[str]) -> str:
    return ", ".join(f"@{name}=«{name}»" for name in names)


KINDS = {
    "select store": Kind(
        f"SELECT name FROM google.healthcare.dicom_stores WHERE {_where(STORE)}",
        STORE, "GET", list_if_empty="dicomStoresId",
    ),
    "select dataset": Kind(
        f"SELECT name FROM google.healthcare.datasets WHERE {_where(SCOPE)}",
        SCOPE, "GET", list_if_empty="datasetsId",
    ),
    "insert store": Kind(
        "INSERT INTO google.healthcare.dicom_stores (projectsId, locationsId, datasetsId, "
        "dicomStoreId) SELECT «projectsId», «locationsId», «datasetsId», «query»",
        SCOPE, "POST", suffix=["dicomStores"], query={"dicomStoreId": "query"},
    ),
    "update store": Kind(
        "UPDATE google.healthcare.dicom_stores SET data__labels = "
        """'{"env": "v-{{ text }}"}' WHERE """ + _where(STORE),
        STORE, "PATCH", body="labels",
    ),
    "delete store": Kind(
        f"DELETE FROM google.healthcare.dicom_stores WHERE {_where(STORE)}", STORE, "DELETE"
    ),
    "delete dataset": Kind(
        f"DELETE FROM google.healthcare.datasets WHERE {_where(SCOPE)}", SCOPE, "DELETE"
    ),
    "delete study": Kind(
        f"DELETE FROM google.healthcare.studies WHERE {_where([*STORE, 'studiesId'])}",
        [*STORE, "studiesId"], "DELETE",
    ),
    "delete series": Kind(
        f"DELETE FROM google.healthcare.series WHERE {_where([*STORE, *UIDS[:2]])}",
        [*STORE, *UIDS[:2]], "DELETE",
    ),
    "delete instance": Kind(
        f"DELETE FROM google.healthcare.instances WHERE {_where([*STORE, *UIDS])}",
        [*STORE, *UIDS], "DELETE",
    ),
    "select instance metadata": Kind(
        f"SELECT * FROM google.healthcare.instances_metadata WHERE {_where([*STORE, *UIDS])}",
        [*STORE, *UIDS], "GET", suffix=["metadata"],
    ),
    "search series": Kind(
        f"EXEC google.healthcare.dicom_stores.search_for_series {_at(STORE)}, @Modality=«query»",
        STORE, "GET", suffix=["series"], query={"Modality": "query"},
    ),
    "export": Kind(
        f"EXEC google.healthcare.dicom_stores.export {_at(STORE)} "
        """@@json='{"gcsDestination": {"uriPrefix": "gs://b/{{ text }}"}}'""",
        STORE, "POST", verb=":export", body="export",
    ),
    "deidentify dataset": Kind(
        f"EXEC google.healthcare.datasets.deidentify {_at(SCOPE)} "
        """@@json='{"destinationDataset": "projects/p/locations/l/datasets/{{ text }}"}'""",
        SCOPE, "POST", verb=":deidentify", body="deidentify",
    ),
}  # fmt: skip


def expected_body(kind: Kind, text: str) -> Any:
    if kind.body == "labels":
        return {"labels": {"env": f"v-{text}"}}
    if kind.body == "export":
        return {"gcsDestination": {"uriPrefix": f"gs://b/{text}"}}
    if kind.body == "deidentify":
        return {"destinationDataset": f"projects/p/locations/l/datasets/{text}"}
    return None


def expected_path(kind: Kind, values: dict[str, str]) -> list[str]:
    path = ["v1"]
    names = kind.path
    if kind.list_if_empty and values[kind.list_if_empty] == "":
        names = names[:-1]  # "" means not set: the list method of the parent
    for name in names:
        path += [COLLECTIONS[name], values[name]]
    if kind.list_if_empty and values[kind.list_if_empty] == "":
        path.append(COLLECTIONS[kind.list_if_empty])
    if (kind.path[-1] == "dicomStoresId" and kind.suffix) or kind.path[-1] in UIDS:
        path.insert(path.index("dicomStores") + 2, "dicomWeb")
    path += kind.suffix
    path[-1] += kind.verb
    return path


def slot(name: str, value: str, position: str, parameters: dict[str, Any]) -> str:
    """``value`` written into the statement at ``position``."""
    if position == "literal":
        return "'" + value.replace("'", "''") + "'"
    parameters[name] = value
    if position == "quoted template":
        return f"'{{{{ {name} }}}}'"
    if position == "bare template":
        return f"{{{{ {name} }}}}"
    return f":{name}"


@st.composite
def statements(draw: st.DrawFn) -> tuple[Kind, dict[str, str], str, str, dict[str, Any]]:
    """(kind, slot values, text value, SQL, DB-API parameters)."""
    kind = KINDS[draw(st.sampled_from(sorted(KINDS)))]
    values = {name: draw(valid_ids) for name in [*kind.path, "query"]}
    if draw(st.booleans()):
        # Aim at the guarded instance (its store, dataset …), a hostile value in some slot.
        values.update({name: GUARDED[name] for name in kind.path})
    # At most two hostile slots, so that a third of the statements are all valid and sent.
    for name in draw(st.sets(st.sampled_from(sorted(values)), max_size=2)):
        values[name] = draw(hostile_ids)
    text = draw(texts)
    parameters: dict[str, Any] = {"text": text}
    filled = {}
    for index, (name, value) in enumerate(values.items()):
        position = draw(positions)
        if position == "literal" and "{{" in value:
            position = "parameter"  # a literal "{{ x }}" is a template the user wrote
        filled[name] = slot(f"v{index}", value, position, parameters)
    sql = re.sub(r"«(\w+)»", lambda match: filled[match.group(1)], kind.sql)
    return kind, values, text, sql, parameters


def check(
    connection: Connection,
    requests: list[httpx.Request],
    kind: Kind,
    values: dict[str, str],
    text: str,
    sql: str,
    parameters: dict[str, Any],
) -> None:
    """Run the statement; every request it sends is the one the statement names."""
    path_values = {name: values[name] for name in kind.path}
    optional = kind.list_if_empty
    safe = all(
        path_safe(value, name) or (name == optional and value == "")
        for name, value in path_values.items()
    )
    event("hostile path value" if not safe else "valid path values")
    before = len(requests)
    try:
        connection.execute(sql, parameters)
    except ProgrammingError as exc:
        assert not safe or requests[before:], f"{sql!r} {parameters!r}: refused: {exc}"
    except Error:
        pass  # the API refused (404, 400): the request is checked below
    sent = requests[before:]
    if not safe:
        assert sent == [], f"{sql!r} {parameters!r} sent {[str(r.url) for r in sent]}"
        return
    assert sent, f"{sql!r} {parameters!r} sent nothing"
    for request in sent:
        assert request.method == kind.method
        assert segments(request) == expected_path(kind, values), (sql, parameters, request.url)
        for query, name in kind.query.items():
            assert request.url.params.get_list(query) == ([values[name]] if values[name] else [])
        body = expected_body(kind, text)
        if body is not None:
            assert json.loads(request.content) == body


PROPERTY = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Connection, Any]]:
    """The embedded service, recorded, holding a guarded dataset, store and instance."""
    connection, recording = embedded_connection(tmp_path_factory.mktemp("hostile") / "data")
    with connection:
        connection.execute(
            "INSERT /*+ AWAIT */ INTO google.healthcare.datasets "
            "(projectsId, locationsId, datasetId) SELECT 'guard', 'l', 'ds'"
        )
        connection.execute(
            "INSERT INTO google.healthcare.dicom_stores (projectsId, locationsId, datasetsId, "
            "dicomStoreId) SELECT 'guard', 'l', 'ds', 's'"
        )
        connection.execute(
            f"EXEC google.healthcare.dicom_stores.store_instances {GUARD_STORE}, @path=:path",
            {"path": get_testdata_file("CT_small.dcm")},
        )
        yield connection, recording


def guarded_instances(connection: Connection) -> list[str]:
    return instance_uids(connection, GUARD_STORE)


@PROPERTY
@given(statement=statements())
def test_every_request_to_the_embedded_service_targets_the_named_resource(
    embedded: tuple[Connection, RecordingTransport], statement: Any
) -> None:
    connection, recording = embedded
    kind, values, text, sql, parameters = statement
    aimed = all(values[name] == GUARDED[name] for name in kind.path[:3])
    # A valid statement naming the guarded resources would rightly change them.
    assume(not aimed or not all(path_safe(values[name], name) for name in kind.path))
    check(connection, recording.requests, kind, values, text, sql, parameters)
    assert guarded_instances(connection) == [GUARDED_INSTANCE]


def google_answer(request: httpx.Request) -> httpx.Response:
    if "/dicomWeb/" in request.url.path and request.method == "GET":
        return httpx.Response(200, json=[], headers={"Content-Type": "application/dicom+json"})
    return httpx.Response(200, json={})


@pytest.fixture(scope="module")
def google() -> Iterator[tuple[Connection, GoogleDouble]]:
    double = GoogleDouble(google_answer)
    with google_connection(double) as connection:
        yield connection, double


@PROPERTY
@given(statement=statements())
def test_every_request_to_google_targets_the_named_resource(
    google: tuple[Connection, GoogleDouble], statement: Any
) -> None:
    connection, double = google
    kind, values, text, sql, parameters = statement
    check(connection, double.requests, kind, values, text, sql, parameters)


# --- the template attack of the issue, pinned ---

FILTER_INJECTION = 'out", "config": {"dicom": {"filterProfile": "DEIDENTIFY_TAG_CONTENTS"}}, "x": "'


@pytest.mark.parametrize("how", ["template variable", "DB-API parameter"])
def test_a_quote_in_a_template_value_adds_no_field_to_the_request(
    embedded: tuple[Connection, RecordingTransport], how: str
) -> None:
    connection, recording = embedded
    before = len(recording.requests)
    sql = (
        "EXEC google.healthcare.datasets.deidentify @projectsId='guard', @locationsId='l', "
        "@datasetsId='ds' @@json='{\"destinationDataset\": "
        '"projects/guard/locations/l/datasets/{{ dest }}"}\''
    )
    with pytest.raises(Error):  # the service refuses the odd dataset ID (400)
        if how == "template variable":
            connection.engine.execute(sql, variables={"dest": FILTER_INJECTION})
        else:
            connection.execute(sql, {"dest": FILTER_INJECTION})
    (request,) = recording.requests[before:]
    assert json.loads(request.content) == {
        "destinationDataset": f"projects/guard/locations/l/datasets/{FILTER_INJECTION}"
    }
    assert guarded_instances(connection) == [GUARDED_INSTANCE]
