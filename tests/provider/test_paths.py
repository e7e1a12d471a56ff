"""Path parameters cannot change which resource a request targets: ``..``, ``.``, ``/``,
``%2F``, ``?``, ``#``, control characters are refused with an error naming the parameter, in a
literal, a ``{{ var }}`` or a DB-API ``:name``, on the embedded backend and towards Google; what
an ID may hold is percent-encoded. httpx resolves dot segments, so before this an instance
DELETE with ``..`` deleted the whole series and a store DELETE the whole dataset."""

from __future__ import annotations

import doctest
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from pydicom import dcmread
from pydicom.data import get_testdata_file

from dicomql.cli import main
from dicomql.dbapi import Connection
from dicomql.errors import ProgrammingError
from dicomql.provider import paths
from dicomql.provider.client import Client
from dicomql.provider.registry import Registry
from tests.support.google_double import GoogleDouble
from tests.support.recording import (
    RecordingTransport,
    embedded_connection,
    google_connection,
    instance_uids,
    segments,
)

REGISTRY = Registry.load()
STORES = REGISTRY.resource("google.healthcare.dicom_stores")
CT = dcmread(get_testdata_file("CT_small.dcm"))
STUDY, SERIES, INSTANCE = (
    str(CT.StudyInstanceUID),
    str(CT.SeriesInstanceUID),
    str(CT.SOPInstanceUID),
)
SCOPE = "projectsId = 'p' AND locationsId = 'l' AND datasetsId = 'ds'"
STORE = "@projectsId='p', @locationsId='l', @datasetsId='ds', @dicomStoresId='s'"
UIDS = f"studiesId = '{STUDY}' AND seriesId = '{SERIES}'"

HOSTILE = [
    "..",
    ".",
    "../..",
    "a/../..",
    "a/b",
    "%2E%2E",
    "..%2F..",
    "%2F",
    "s?x=1",
    "s#frag",
    "s\\..",
    "s\x00",
    "s\nx",
    " ",
    "s:deidentify",
    "\u202e..",
]


# --- the rule, unit by unit ---


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_flat_value_is_refused_naming_the_parameter_and_value(value: str) -> None:
    with pytest.raises(ProgrammingError) as caught:
        paths.segment("google.healthcare.instances.delete", "instancesId", value)
    message = str(caught.value)
    assert "path parameter instancesId of google.healthcare.instances.delete" in message
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in value)
    assert f"'{shown}'" in message


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("1.2.840.10008", "1.2.840.10008"),
        ("a_b-c.d", "a_b-c.d"),
        ("größe", "gr%C3%B6%C3%9Fe"),
        ("日本", "%E6%97%A5%E6%9C%AC"),
        ("...", "..."),
        (42, "42"),
    ],
)
def test_an_id_of_googles_characters_is_percent_encoded(value: Any, encoded: str) -> None:
    assert paths.segment("m", "datasetsId", value) == encoded


def test_a_domain_scoped_project_and_a_frame_list_keep_their_separators() -> None:
    assert paths.segment("m", "projectsId", "example.com:my-project") == "example.com:my-project"
    assert paths.segment("m", "framesId", "1,3,5") == "1,3,5"
    with pytest.raises(ProgrammingError, match="':' is not allowed"):
        paths.segment("m", "dicomStoresId", "s:export")


def test_a_bulkdata_path_may_hold_several_segments_but_no_dot_segment() -> None:
    assert paths.segment("m", "bulkdataId1", "0/00181072") == "0/00181072"
    with pytest.raises(ProgrammingError, match="dot segment"):
        paths.segment("m", "bulkdataId1", "../../..")


def test_a_value_that_is_not_one_string_is_refused() -> None:
    with pytest.raises(ProgrammingError, match="must be one string or integer"):
        paths.segment("m", "datasetsId", ["a", "b"])


@pytest.mark.parametrize(
    "name",
    [
        "projects/p/locations/l/datasets/ds",  # a dataset's name where a store's belongs
        "projects/p/locations/l/datasets/ds/dicomStores/..",
        "projects/p/locations/l/datasets/ds/dicomStores/s/../..",
        "projects/p/locations/l/datasets/ds/dicomStores/s%2F..",
        "projects/p/locations/l/datasets/ds/dicomStores/s:export",
        "projects/p/locations/l/datasets/ds/dicomStores/s/",
    ],
)
def test_a_resource_name_that_is_not_one_of_the_methods_is_refused(name: str) -> None:
    recording = RecordingTransport(httpx.MockTransport(lambda r: httpx.Response(200, json={})))
    http = httpx.Client(transport=recording, base_url="http://embedded")
    with pytest.raises(ProgrammingError, match="path parameter name of"):
        Client(http).call(STORES.method("delete"), {"name": name})
    assert recording.requests == []


def test_a_dicomweb_path_is_checked_against_the_methods_pattern() -> None:
    pattern = "^studies/[^/]+/series/[^/]+/instances/[^/]+$"
    assert paths.reserved("m", "dicomWebPath", "studies/1.2/series/3/instances/4", pattern) == (
        "studies/1.2/series/3/instances/4"
    )
    for value in ("studies/1.2/series/3/instances/..", "studies/1.2/series/3", "studies/1?x"):
        with pytest.raises(ProgrammingError, match="dicomWebPath"):
            paths.reserved("m", "dicomWebPath", value, pattern)


# --- the attack, end to end ---


def _in_sql(value: str, how: str) -> tuple[str, dict[str, Any] | None]:
    """``value`` as SQL text written literally, as a {{ var }} template, or as a :name."""
    if how == "literal":
        return "'" + value.replace("'", "''") + "'", None
    if how == "template":
        return "'{{ hostile }}'", {"hostile": value}
    return ":hostile", {"hostile": value}


HOW = ["literal", "template", "parameter"]


@pytest.fixture
def stored(tmp_path: Path) -> Iterator[tuple[Connection, RecordingTransport]]:
    """Dataset ds with store s holding CT_small (one study, one series, one instance)."""
    connection, recording = embedded_connection(tmp_path / "data")
    with connection:
        cursor = connection.cursor()
        cursor.execute(
            "INSERT /*+ AWAIT */ INTO google.healthcare.datasets "
            "(projectsId, locationsId, datasetId) SELECT 'p', 'l', 'ds'"
        )
        cursor.execute(
            "INSERT INTO google.healthcare.dicom_stores "
            "(projectsId, locationsId, datasetsId, dicomStoreId) SELECT 'p', 'l', 'ds', 's'"
        )
        cursor.execute(
            f"EXEC google.healthcare.dicom_stores.store_instances {STORE}, @path=:path",
            {"path": get_testdata_file("CT_small.dcm")},
        )
        assert cursor.fetchall()[0][0] == "stored"
        recording.requests.clear()
        yield connection, recording


def _instances(connection: Connection) -> list[str]:
    return instance_uids(connection, STORE)


def _datasets(connection: Connection) -> list[str]:
    cursor = connection.execute(
        "SELECT name FROM google.healthcare.datasets WHERE projectsId = 'p' AND locationsId = 'l'"
    )
    return [row[0] for row in cursor.fetchall()]


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("value", ["..", ".", "../..", "%2E%2E", "x/..", "..?", "#", ""])
def test_an_instance_delete_with_a_hostile_id_leaves_the_series_intact(
    stored: tuple[Connection, RecordingTransport], value: str, how: str
) -> None:
    connection, recording = stored
    text, parameters = _in_sql(value, how)
    with pytest.raises(ProgrammingError, match="instancesId"):
        connection.execute(
            f"DELETE FROM google.healthcare.instances WHERE {SCOPE} AND dicomStoresId = 's' "
            f"AND {UIDS} AND instancesId = {text}",
            parameters,
        )
    assert recording.requests == []
    assert _instances(connection) == [INSTANCE]


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("value", ["..", ".", "s/..", "%2F..", "s?", "s\x00", " "])
def test_a_store_delete_with_a_hostile_id_leaves_the_dataset_intact(
    stored: tuple[Connection, RecordingTransport], value: str, how: str
) -> None:
    connection, recording = stored
    text, parameters = _in_sql(value, how)
    with pytest.raises(ProgrammingError, match="dicomStoresId"):
        connection.execute(
            f"DELETE FROM google.healthcare.dicom_stores WHERE {SCOPE} AND dicomStoresId = {text}",
            parameters,
        )
    assert recording.requests == []
    assert _datasets(connection) == ["projects/p/locations/l/datasets/ds"]
    assert _instances(connection) == [INSTANCE]


def test_a_series_delete_with_a_hostile_uid_leaves_the_study_intact(
    stored: tuple[Connection, RecordingTransport],
) -> None:
    connection, recording = stored
    with pytest.raises(ProgrammingError, match="seriesId"):
        connection.execute(
            f"DELETE FROM google.healthcare.series WHERE {SCOPE} AND dicomStoresId = 's' "
            f"AND studiesId = '{STUDY}' AND seriesId = '..'"
        )
    assert recording.requests == []
    assert _instances(connection) == [INSTANCE]


def test_a_valid_instance_delete_still_deletes_exactly_that_instance(
    stored: tuple[Connection, RecordingTransport],
) -> None:
    connection, recording = stored
    connection.execute(
        f"DELETE FROM google.healthcare.instances WHERE {SCOPE} AND dicomStoresId = 's' "
        f"AND {UIDS} AND instancesId = :uid",
        {"uid": INSTANCE},
    )
    (request,) = recording.requests
    assert request.method == "DELETE"
    assert segments(request)[-6:] == ["studies", STUDY, "series", SERIES, "instances", INSTANCE]
    assert _instances(connection) == []


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("value", ["..", ".", "s/..", "%2E%2E"])
def test_towards_google_a_hostile_id_sends_no_request(value: str, how: str) -> None:
    double = GoogleDouble(lambda request: httpx.Response(200, json={}))
    text, parameters = _in_sql(value, how)
    with google_connection(double) as connection:
        with pytest.raises(ProgrammingError, match="instancesId"):
            connection.execute(
                f"DELETE FROM google.healthcare.instances WHERE {SCOPE} AND dicomStoresId = 's' "
                f"AND {UIDS} AND instancesId = {text}",
                parameters,
            )
        with pytest.raises(ProgrammingError, match="dicomStoresId"):
            connection.execute(
                f"DELETE FROM google.healthcare.dicom_stores WHERE {SCOPE} "
                f"AND dicomStoresId = {text}",
                parameters,
            )
    assert double.api_requests == []


def test_doctests() -> None:
    failures, _ = doctest.testmod(paths)
    assert failures == 0


def test_a_hostile_var_on_the_command_line_is_refused_and_the_dataset_kept(tmp_path: Path) -> None:
    def run(*args: str) -> Any:
        return CliRunner().invoke(main, [*args, "--data-dir", str(tmp_path / "cli")])

    created = run(
        "exec",
        "INSERT /*+ AWAIT */ INTO google.healthcare.datasets (projectsId, locationsId, datasetId) "
        "SELECT 'p', 'l', 'ds'; INSERT INTO google.healthcare.dicom_stores (projectsId, "
        "locationsId, datasetsId, dicomStoreId) SELECT 'p', 'l', 'ds', 's';",
    )
    assert created.exit_code == 0, created.output
    refused = run(
        "exec",
        f"DELETE FROM google.healthcare.dicom_stores WHERE {SCOPE} AND dicomStoresId = {{{{ s }}}}",
        "--var",
        "s=..",
    )
    assert refused.exit_code == 1
    assert "invalid value '..' for path parameter dicomStoresId" in refused.stderr
    listed = run(
        "exec",
        f"SELECT name FROM google.healthcare.dicom_stores WHERE {SCOPE}",
        "-o",
        "json",
    )
    assert listed.exit_code == 0, listed.output
    assert '"projects/p/locations/l/datasets/ds/dicomStores/s"' in listed.stdout
