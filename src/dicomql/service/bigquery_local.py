"""The local stand-in for BigQuery: one row of flattened DICOM metadata per instance in a
DuckDB table, ``{data_dir}/bigquery/{project}.duckdb``, schema = the BigQuery dataset, table = the
BigQuery table. Export stages its rows and publishes them in one transaction; streaming appends."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from dicomql.google_api import Code
from dicomql.service.bigquery_destination import TableUri, refuse_rows
from dicomql.service.bigquery_rows import BASE_COLUMNS, column_type
from dicomql.service.workers import OperationCancelledError, OperationFailedError
from dicomql.store.locks import ProcessLock

# Rows of a running export wait in a staging table keyed by instance pk, so that a resumed
# operation can drop what it wrote after its checkpoint and the target changes in one commit.
ROW_KEY = "_dicomql_pk"
# One writer per DuckDB file at a time: DuckDB allows one read-write process and serialises
# conflicting transactions by failing them, so workers take turns, across the processes of
# `serve --processes N` too (a file lock beside the database).
_LOCKS: dict[Path, ProcessLock] = {}
_LOCKS_GUARD = threading.Lock()


def database_path(data_dir: Path, project: str) -> Path:
    return data_dir / "bigquery" / f"{project}.duckdb"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """The database file's lock, held for the block. Its lock file is closed once no thread
    holds it (opened again next time) rather than left open for the process's life."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(path)
        if lock is None:
            lock = _LOCKS[path] = ProcessLock(path.with_name(path.name + ".lock"))
    try:
        with lock:
            yield
    finally:
        lock.close()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _columns(db: duckdb.DuckDBPyConnection, schema: str, table: str) -> list[str]:
    rows = db.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        [schema, table],
    ).fetchall()
    return [row[0] for row in rows]


def _row_count(db: duckdb.DuckDBPyConnection, schema: str, table: str) -> int:
    if not _columns(db, schema, table):
        return 0
    found = db.execute(f"SELECT count(*) FROM {_quote(schema)}.{_quote(table)}").fetchone()
    return int(found[0]) if found else 0


def _require_empty(db: duckdb.DuckDBPyConnection, uri: TableUri) -> None:
    refuse_rows(uri, _row_count(db, uri.dataset, uri.table))


def _add_columns(
    db: duckdb.DuckDBPyConnection, target: str, have: list[str], want: dict[str, str]
) -> None:
    present = set(have)
    for name, kind in want.items():
        if name not in present:
            db.execute(f"ALTER TABLE {target} ADD COLUMN {_quote(name)} {kind}")
            present.add(name)


@contextmanager
def _opened(data_dir: Path, project: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """The project's stand-in file, opened under its lock."""
    path = database_path(data_dir, project)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        try:
            db = duckdb.connect(str(path))
        except duckdb.Error as exc:  # e.g. another process holds the file's write lock
            raise OperationFailedError(
                Code.FAILED_PRECONDITION, f"Cannot open the local BigQuery stand-in {path}: {exc}"
            ) from exc
        with db:
            yield db


@contextmanager
def _transaction(db: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One DuckDB transaction: committed when the block ends, rolled back if it raises."""
    db.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def export(
    data_dir: Path,
    uri: TableUri,
    disposition: str,
    staging_table: str,
    after: int,
    pages: Iterator[list[dict[str, Any]]],
) -> None:
    """Write an export's rows (each keyed by :data:`ROW_KEY`) to the stand-in's table: staged
    a page at a time in ``staging_table``, which a resumed export keeps up to ``after``, then
    published in one DuckDB transaction, so a failed export leaves the table as it was."""
    with _opened(data_dir, uri.project) as db:
        schema, staging = _quote(uri.dataset), _quote(staging_table)
        db.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        if disposition == "WRITE_EMPTY":
            _require_empty(db, uri)  # fail before the work; checked again when committing
        base = ", ".join(f"{_quote(name)} {kind}" for name, kind in BASE_COLUMNS.items())
        db.execute(f"CREATE TABLE IF NOT EXISTS main.{staging} ({_quote(ROW_KEY)} BIGINT, {base})")
        # Rows a crashed run wrote after its last checkpoint are written again below.
        db.execute(f"DELETE FROM main.{staging} WHERE {_quote(ROW_KEY)} > ?", [after])
        columns = _columns(db, "main", staging[1:-1])
        try:
            for rows in pages:
                columns = _stage(db, staging, columns, rows)
            with _transaction(db):
                _publish(db, uri, disposition, staging, columns)
                db.execute(f"DROP TABLE main.{staging}")
        except (OperationFailedError, OperationCancelledError, duckdb.Error) as exc:
            # The operation ends here: nothing resumes it, so its staged rows go. (On a worker
            # stopping, they stay for the operation's next run.)
            db.execute(f"DROP TABLE IF EXISTS main.{staging}")
            if isinstance(exc, duckdb.Error):
                # e.g. a WRITE_APPEND table whose column types cannot take the values.
                raise OperationFailedError(
                    Code.FAILED_PRECONDITION,
                    f"Cannot write bq://{uri.project}.{uri.dataset}."
                    f"{uri.table} in the local stand-in: {exc}",
                ) from exc
            raise


def _stage(
    db: duckdb.DuckDBPyConnection, staging: str, columns: list[str], rows: list[dict[str, Any]]
) -> list[str]:
    """Append a page of rows to the staging table in one transaction; its columns after."""
    wanted = {name: column_type(name) for row in rows for name in row if name != ROW_KEY}
    with _transaction(db):
        _add_columns(db, f"main.{staging}", columns, wanted)
        _insert_rows(db, f"main.{staging}", rows)
    return _columns(db, "main", staging[1:-1])


def append_rows(data_dir: Path, uri: TableUri, rows: list[dict[str, Any]]) -> None:
    """Append rows to the local table in one DuckDB transaction (``streamConfigs``): the table
    is created if missing and gains the columns new rows bring ("The destination's table schema
    will be automatically updated in case a new instance's data is incompatible").

    Raises:
        duckdb.Error: the file is locked by another process, or a value does not fit a column
            an earlier row created with another type; the caller retries or gives up.
    """
    path = database_path(data_dir, uri.project)
    path.parent.mkdir(parents=True, exist_ok=True)
    schema, target = _quote(uri.dataset), f"{_quote(uri.dataset)}.{_quote(uri.table)}"
    wanted: dict[str, str] = dict.fromkeys(BASE_COLUMNS, "")
    wanted.update({name: "" for row in rows for name in row})
    wanted = {name: column_type(name) for name in wanted}
    with _locked(path), duckdb.connect(str(path)) as db:
        db.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        with _transaction(db):
            have = _columns(db, uri.dataset, uri.table)
            if not have:
                definition = ", ".join(f"{_quote(name)} {kind}" for name, kind in wanted.items())
                db.execute(f"CREATE TABLE {target} ({definition})")
            else:
                _add_columns(db, target, have, wanted)
            _insert_rows(db, target, rows)


def _insert_rows(db: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]]) -> None:
    # Rows may name different columns (attributes differ between instances).
    for row in rows:
        names = list(row)
        db.execute(
            f"INSERT INTO {table} ({', '.join(map(_quote, names))})"
            f" VALUES ({', '.join('?' * len(names))})",
            [row[name] for name in names],
        )


def _publish(
    db: duckdb.DuckDBPyConnection, uri: TableUri, disposition: str, staging: str, columns: list[str]
) -> None:
    schema, table = uri.dataset, uri.table
    target = f"{_quote(schema)}.{_quote(table)}"
    names = [name for name in columns if name != ROW_KEY]
    found = db.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
        [staging[1:-1]],
    ).fetchall()
    kinds = {name: kind for name, kind in found if name != ROW_KEY}
    if disposition == "WRITE_EMPTY":
        _require_empty(db, uri)
    if disposition == "WRITE_TRUNCATE":
        db.execute(f"DROP TABLE IF EXISTS {target}")
    existing = _columns(db, schema, table)
    if not existing:
        definition = ", ".join(f"{_quote(name)} {kinds[name]}" for name in names)
        db.execute(f"CREATE TABLE {target} ({definition})")
    else:
        # WRITE_APPEND: columns new to the table are added (BigQuery's ALLOW_FIELD_ADDITION).
        _add_columns(db, target, existing, kinds)
    listed = ", ".join(map(_quote, names))
    db.execute(
        f"INSERT INTO {target} ({listed}) SELECT {listed} FROM main.{staging}"
        f" ORDER BY {_quote(ROW_KEY)}"
    )
