"""Prepared statements (the ingest's hot path) store what ``Connection.execute`` of the same Core
statement stores, and fail with the same SQLAlchemy errors, on SQLite and PostgreSQL; the JSON
columns' text (orjson) reads back as the values written."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from dicomql.store import resources
from dicomql.store.index import Index, json_text, sqlite_url
from dicomql.store.prepared import Prepared, PreparedSelect, sqlite_execute
from dicomql.store.schema import blob_journal, datasets, series

MOMENT = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


_JOURNAL = Prepared(insert(blob_journal), keys=["blob_key", "create_time"])
_RENAME = Prepared(
    update(datasets)
    .where(datasets.c.pk == bindparam("row"))
    .values(dataset_id=datasets.c.dataset_id + "-renamed", resource=bindparam("resource"))
    .returning(datasets.c.dataset_id)
)


def test_a_prepared_insert_stores_what_core_stores(index: Index) -> None:
    with index.begin() as conn:
        _JOURNAL.run(conn, {"blob_key": "prepared", "create_time": MOMENT})
        conn.execute(insert(blob_journal), {"blob_key": "core", "create_time": MOMENT})
    with index.connect() as conn:
        found = select(blob_journal.c.blob_key, blob_journal.c.create_time)
        times = {key: moment for key, moment in conn.execute(found)}
        texts = conn.exec_driver_sql("SELECT blob_key, CAST(create_time AS TEXT) FROM blob_journal")
        raw = {key: text for key, text in texts}
    assert times["prepared"] == times["core"]
    assert times["prepared"].replace(tzinfo=UTC) == MOMENT
    assert raw["prepared"] == raw["core"]


def test_a_prepared_update_uses_its_literals_processes_json_and_returns_rows(
    index: Index,
) -> None:
    resource = {"name": "Zoë", "labels": {"a": [1, 2.5, None]}}
    with index.begin() as conn:
        pk = conn.execute(
            insert(datasets).returning(datasets.c.pk),
            {
                "project": "p",
                "location": "l",
                "dataset_id": "a",
                "resource": {},
                "create_time": MOMENT,
            },
        ).scalar_one()
        assert _RENAME.rows(conn, {"row": pk, "resource": resource}) == [("a-renamed",)]
        assert _RENAME.scalar(conn, {"row": -1, "resource": resource}) is None
    with index.connect() as conn:
        found = select(datasets.c.dataset_id, datasets.c.resource).where(datasets.c.pk == pk)
        assert tuple(conn.execute(found).one()) == ("a-renamed", resource)


def test_a_collision_raises_sqlalchemys_integrity_error(index: Index) -> None:
    # index_instances retries on IntegrityError (another writer stored the same study first).
    with pytest.raises(IntegrityError), index.begin() as conn:
        _JOURNAL.run(conn, {"blob_key": "twice", "create_time": MOMENT})
        _JOURNAL.run(conn, {"blob_key": "twice", "create_time": MOMENT})
    with index.connect() as conn:
        assert conn.execute(select(blob_journal.c.blob_key)).all() == []


def test_an_insert_leaving_out_a_defaulted_column_is_refused(index: Index) -> None:
    # SQLAlchemy's execution fills in Python-side defaults; a Prepared statement bypasses it.
    keys = [c.key for c in series.columns if not c.primary_key and c.key != "size_bytes"]
    with pytest.raises(ValueError, match="every column with a default"), index.begin() as conn:
        Prepared(insert(series), keys=keys).run(conn, {})


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"a": "Zoë", "b": [1, 2.5]}, '{"a":"Zoë","b":[1,2.5]}'),
        ([float("nan"), float("inf")], "[null,null]"),  # JSON has neither
        ([2**70], "[1180591620717411303424]"),  # beyond orjson's 64 bits: the json module
        ({1: "x"}, '{"1": "x"}'),  # a key that is not text: the json module
    ],
)
def test_json_text_is_compact_json_of_the_value(value: object, text: str) -> None:
    assert json_text(value) == text
    expected = json.loads(json.dumps(value).replace("NaN", "null").replace("Infinity", "null"))
    assert json.loads(json_text(value)) == expected


def test_sqlite_errors_are_sqlalchemys(tmp_path: Path) -> None:
    # As from Connection.execute: callers catch SQLAlchemy's classes and read the original.
    index = Index.open(sqlite_url(tmp_path))
    try:
        with pytest.raises(OperationalError) as caught, index.connect() as conn:
            sqlite_execute(conn, "SELECT * FROM no_such_table")
        assert isinstance(caught.value.orig, sqlite3.OperationalError)
    finally:
        index.close()


def test_a_dicom_store_pk_is_the_row_find_dicom_store_finds(index: Index) -> None:
    with index.begin() as conn:
        dataset = resources.insert_dataset(conn, "p", "l", "ds", {})
        other = resources.insert_dataset(conn, "p", "l", "other", {})
        resources.insert_dicom_store(conn, other.pk, "decoy", {})
        store = resources.insert_dicom_store(conn, dataset.pk, "st", {})
    with index.connect() as conn:
        found = resources.dicom_store_pk(conn, "p", "l", "ds", "st")
        assert found == store.pk == resources.find_dicom_store(conn, "p", "l", "ds", "st").pk
        # Each part of the name counts: another dataset's store, or a name off by one part.
        assert resources.dicom_store_pk(conn, "p", "l", "other", "st") is None
        assert resources.dicom_store_pk(conn, "p", "l", "ds", "decoy") is None
        assert resources.dicom_store_pk(conn, "q", "l", "ds", "st") is None
        assert resources.dicom_store_pk(conn, "p", "m", "ds", "st") is None


_NAMES = PreparedSelect(
    select(datasets.c.dataset_id.label("name"), datasets.c.pk)
    .where(datasets.c.project == bindparam("project"))
    .order_by(datasets.c.pk)
)
_NAMES_IN = PreparedSelect(
    select(datasets.c.dataset_id.label("name"))
    .where(datasets.c.dataset_id.in_(bindparam("names", expanding=True)))
    .order_by(datasets.c.pk)
)
_TIMES = PreparedSelect(select(datasets.c.create_time).where(datasets.c.project == "p"))


def test_a_prepared_select_reads_what_core_reads(index: Index) -> None:
    with index.begin() as conn:
        for name in ("a", "b", "c"):
            resources.insert_dataset(conn, "p", "l", name, {})
        resources.insert_dataset(conn, "q", "l", "d", {})
    with index.connect() as conn:
        for prepared, values in [
            (_NAMES, {"project": "p"}),
            (_NAMES_IN, {"names": ["c", "a", "zz"]}),  # expanding: Connection.execute's
            (_TIMES, {}),  # a DateTime column: SQLAlchemy converts SQLite's text
        ]:
            labels, rows = prepared.select(conn, values)
            result = conn.execute(prepared.statement, values)
            assert labels == list(result.keys())
            assert [tuple(row) for row in rows] == [tuple(row) for row in result]
    assert len(rows) == 3 and all(isinstance(row[0], datetime) for row in rows)


def test_a_query_interrupted_while_its_rows_are_fetched_fails_as_sqlalchemys(
    tmp_path: Path,
) -> None:
    # SQLite computes rows as they are fetched: the first comes with the execution, the
    # interruption (the QIDO statement timeout's progress handler) during the fetch.
    index = Index.open(sqlite_url(tmp_path))
    counting = Prepared(
        text(
            "WITH RECURSIVE numbers(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM numbers"
            " WHERE n < 1000000) SELECT n FROM numbers"
        )
    )
    try:
        with index.connect() as conn:
            calls = []
            dbapi = conn.connection.dbapi_connection
            assert isinstance(dbapi, sqlite3.Connection)
            dbapi.set_progress_handler(lambda: calls.append(1) or len(calls) > 5, 1000)
            with pytest.raises(OperationalError) as caught:
                counting.rows(conn, {})
            dbapi.set_progress_handler(None, 0)
        assert isinstance(caught.value.orig, sqlite3.OperationalError)
        assert "interrupted" in str(caught.value.orig)
    finally:
        index.close()
