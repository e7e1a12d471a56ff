"""The DB-API end to end: SQL string → cursor → embedded service (SQLite and PostgreSQL index)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import dicomql
from dicomql import dbapi

PARENT = "projectsId = 'p' AND locationsId = 'us' AND datasetsId = 'ds'"
STORES = f"SELECT name, labels FROM google.healthcare.dicom_stores WHERE {PARENT}"
CREATE_STORE = (
    "INSERT INTO google.healthcare.dicom_stores "
    "(data__labels, projectsId, locationsId, datasetsId, dicomStoreId) "
    "SELECT :labels, 'p', 'us', 'ds', :store"
)


@pytest.fixture
def connection(tmp_path: Path, database_url: str | None) -> Iterator[dbapi.Connection]:
    with dicomql.connect(tmp_path / "data", database_url=database_url) as connection:
        connection.execute(
            "INSERT /*+ AWAIT */ INTO google.healthcare.datasets "
            "(projectsId, locationsId, datasetId) SELECT 'p', 'us', 'ds'"
        )
        yield connection


def test_select_describes_columns_and_fetches_rows(connection: dbapi.Connection) -> None:
    cursor = connection.cursor()
    cursor.execute(CREATE_STORE, {"labels": '{"env": "dev"}', "store": "s1"})
    cursor.execute(CREATE_STORE, {"labels": '{"env": "prod"}', "store": "s2"})

    cursor.execute(STORES + " ORDER BY name")

    assert [d[0] for d in cursor.description] == ["name", "labels"]
    assert all(len(d) == 7 for d in cursor.description)
    assert cursor.description[0][1] == dbapi.STRING
    assert cursor.rowcount == 2
    first = cursor.fetchone()
    assert first is not None
    assert first[0] == "projects/p/locations/us/datasets/ds/dicomStores/s1"
    assert json.loads(first[1]) == {"env": "dev"}
    assert [row[0].rsplit("/", 1)[1] for row in cursor.fetchall()] == ["s2"]
    assert cursor.fetchone() is None


def test_named_parameters_are_bound_as_literals_not_sql(connection: dbapi.Connection) -> None:
    cursor = connection.cursor()
    cursor.execute(CREATE_STORE, {"labels": '{"env": "dev"}', "store": "s1"})

    cursor.execute(STORES + " AND name LIKE :pattern", {"pattern": "%' OR '1'='1"})
    assert cursor.fetchall() == []

    cursor.execute(STORES + " AND name LIKE :pattern", {"pattern": "%/s1"})
    assert len(cursor.fetchall()) == 1


def test_template_variables_come_from_params_and_the_connection(
    tmp_path: Path,
) -> None:
    with dicomql.connect(tmp_path / "data", variables={"project": "p"}) as connection:
        cursor = connection.execute(
            "INSERT /*+ AWAIT */ INTO google.healthcare.datasets (projectsId, locationsId, "
            "datasetId) SELECT '{{ project }}', '{{ location }}', 'ds'",
            {"location": "eu"},
        )
        assert cursor.rowcount == 1
        cursor.execute(
            "SELECT name FROM google.healthcare.datasets "
            "WHERE projectsId = '{{ project }}' AND locationsId = 'eu'"
        )
        assert cursor.fetchall() == [("projects/p/locations/eu/datasets/ds",)]


def test_executemany_runs_once_per_mapping_and_sums_rowcount(
    connection: dbapi.Connection,
) -> None:
    cursor = connection.cursor()
    cursor.executemany(CREATE_STORE, [{"labels": "{}", "store": f"s{i}"} for i in range(3)])
    assert cursor.rowcount == 3
    cursor.execute(STORES)
    assert sorted(row[0][-2:] for row in cursor) == ["s0", "s1", "s2"]


def test_fetchmany_honours_arraysize_and_size(connection: dbapi.Connection) -> None:
    cursor = connection.cursor()
    cursor.execute("SHOW METHODS IN google.healthcare.dicom_stores")
    total = cursor.rowcount
    assert total > 5
    cursor.arraysize = 2
    assert len(cursor.fetchmany()) == 2
    assert len(cursor.fetchmany(3)) == 3
    assert len(cursor.fetchall()) == total - 5
    assert cursor.fetchmany() == []


def test_api_error_is_raised_not_shown_as_zero_rows(connection: dbapi.Connection) -> None:
    cursor = connection.cursor()
    with pytest.raises(dicomql.ApiError) as caught:
        cursor.execute(STORES.replace("'ds'", "'missing'"))
    assert caught.value.code == 404
    assert caught.value.status == "NOT_FOUND"
    assert cursor.description is None


def test_missing_parameter_and_non_mapping_params_are_programming_errors(
    connection: dbapi.Connection,
) -> None:
    cursor = connection.cursor()
    with pytest.raises(dicomql.ProgrammingError, match="store"):
        cursor.execute(CREATE_STORE, {"labels": "{}"})
    with pytest.raises(dicomql.ProgrammingError, match="mapping"):
        cursor.execute(CREATE_STORE, ("{}", "s1"))  # type: ignore[arg-type]


def test_syntax_error_names_line_and_column(connection: dbapi.Connection) -> None:
    with pytest.raises(dicomql.SQLSyntaxError) as caught:
        connection.cursor().execute("SELECT name\nFROMM google.healthcare.dicom_stores")
    assert caught.value.line >= 1


def test_fetch_without_a_result_set_is_an_error(connection: dbapi.Connection) -> None:
    cursor = connection.cursor()
    with pytest.raises(dicomql.ProgrammingError):
        cursor.fetchall()
    cursor.execute(f"DELETE FROM google.healthcare.datasets WHERE {PARENT}")
    assert cursor.description is None
    with pytest.raises(dicomql.ProgrammingError):
        cursor.fetchone()


def test_commit_is_a_no_op_and_rollback_is_not_supported(
    connection: dbapi.Connection,
) -> None:
    connection.commit()
    with pytest.raises(dicomql.NotSupportedError):
        connection.rollback()


def test_closed_connection_and_cursor_refuse_work(tmp_path: Path) -> None:
    connection = dicomql.connect(tmp_path / "data")
    cursor = connection.cursor()
    cursor.close()
    with pytest.raises(dicomql.InterfaceError):
        cursor.execute("SHOW SERVICES")
    connection.close()
    connection.close()  # closing twice is harmless
    with pytest.raises(dicomql.InterfaceError):
        connection.cursor()


def test_statements_that_need_no_api_call_do_not_start_the_embedded_service(
    tmp_path: Path,
) -> None:
    with dicomql.connect(tmp_path / "data") as connection:
        connection.execute("SHOW RESOURCES IN google.healthcare")
        connection.execute("DESCRIBE google.healthcare.dicom_stores")
    assert not (tmp_path / "data").exists()


def test_data_survives_reconnecting(tmp_path: Path) -> None:
    with dicomql.connect(tmp_path / "data") as connection:
        connection.execute(
            "INSERT /*+ AWAIT */ INTO google.healthcare.datasets "
            "(projectsId, locationsId, datasetId) SELECT 'p', 'us', 'kept'"
        )
    with dicomql.connect(tmp_path / "data") as connection:
        cursor = connection.execute(
            "SELECT name FROM google.healthcare.datasets WHERE projectsId = 'p' "
            "AND locationsId = 'us'"
        )
        assert cursor.fetchall() == [("projects/p/locations/us/datasets/kept",)]


def test_module_globals_follow_pep_249() -> None:
    assert dicomql.apilevel == "2.0"
    assert dicomql.paramstyle == "named"
    assert dicomql.threadsafety == 1
    assert dbapi.NUMBER == "integer"
    assert dbapi.JSON == "object"
    assert dbapi.STRING != "integer"


def test_connect_keeps_blobs_at_blob_url_and_runs_the_workers_asked_for(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    from dicomql.provider.backends import LazyTransport

    shared = tmp_path / "shared"
    upload = tmp_path / "in"
    upload.mkdir()
    # 154 KB: a file (smaller instances are kept in the index, store/inline_blobs.py).
    (upload / "j2k.dcm").write_bytes(Path(get_testdata_file("examples_jpeg2k.dcm")).read_bytes())
    with dicomql.connect(tmp_path / "data", blob_url=f"file://{shared}", workers=0) as connection:
        connection.execute(
            "INSERT /*+ AWAIT */ INTO google.healthcare.datasets "
            "(projectsId, locationsId, datasetId) SELECT 'p', 'us', 'ds'"
        )
        connection.execute(CREATE_STORE, {"labels": "{}", "store": "s"})
        stored = connection.execute(
            "EXEC google.healthcare.dicom_stores.store_instances @projectsId='p', "
            f"@locationsId='us', @datasetsId='ds', @dicomStoresId='s', @path='{upload}'"
        )
        assert [row[0] for row in stored.fetchall()] == ["stored"]
        # The service this connection started: the workers it was given, none.
        transport = connection._http._transport  # type: ignore[attr-defined]
        assert isinstance(transport, LazyTransport)
        service = transport._transport._app.state.service  # type: ignore[union-attr]
        assert service.workers.workers == 0
    blobs = [path for path in shared.rglob("*") if path.is_file()]
    assert len(blobs) == 1 and blobs[0].read_bytes() == (upload / "j2k.dcm").read_bytes()
    assert not (tmp_path / "data" / "blobs").exists()


def test_connect_refuses_a_blob_url_no_backend_serves_and_workers_for_an_endpoint(
    tmp_path: Path,
) -> None:
    with pytest.raises(dicomql.InterfaceError, match="blob URL must start with"):
        dicomql.connect(tmp_path / "data", blob_url="ftp://host/blobs")
    with pytest.raises(dicomql.InterfaceError, match="embedded backend"):
        dicomql.connect(endpoint="http://127.0.0.1:1", workers=1)
