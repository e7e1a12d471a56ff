"""The local stand-in for export's ``bigqueryDestination``: one row of flattened DICOM metadata
per instance in a DuckDB table, ``{data_dir}/bigquery/{project}.duckdb``, schema = the BigQuery
dataset, table = the BigQuery table (GoogleCloudHealthcareV1DicomBigQueryDestination)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
from pydicom.datadict import keyword_for_tag
from sqlalchemy import select

from dicomql.service.lro import (
    FAILED_PRECONDITION,
    PAGE,
    RESPONSE_TYPE,
    count_selected,
    iter_selected,
    require_store_pk,
    selection_paths,
)
from dicomql.service.workers import (
    OperationCancelledError,
    OperationContext,
    OperationFailedError,
)
from dicomql.store.schema import instances

# BigQuery ids: datasets are letters, digits and underscores; tables also allow dashes here (no
# spaces, to keep the DuckDB identifiers plain). Projects may be domain-scoped ("example.com:p").
_TABLE_URI = re.compile(
    r"bq://(?P<project>[A-Za-z0-9][A-Za-z0-9.:\-]{0,127})\.(?P<dataset>[A-Za-z0-9_]{1,1024})"
    r"\.(?P<table>[A-Za-z0-9_\-]{1,1024})"
)
DISPOSITIONS = ("WRITE_EMPTY", "WRITE_TRUNCATE", "WRITE_APPEND")

# Every table has the UIDs, and the columns Google's export adds to the DICOM keywords (Cloud
# Healthcare "BigQuery schema" of DICOM exports); Type is CREATE for an export (DELETE rows come
# from streaming). DICOM keyword columns are VARCHAR.
_BASE_COLUMNS = {
    "StudyInstanceUID": "VARCHAR",
    "SeriesInstanceUID": "VARCHAR",
    "SOPInstanceUID": "VARCHAR",
    "Type": "VARCHAR",
    # BigQuery TIMESTAMP is UTC; DuckDB's TIMESTAMP (naive, UTC) reads back without pytz.
    "LastUpdated": "TIMESTAMP",
    "StorageClass": "VARCHAR",
    "BlobStorageSize": "BIGINT",
}
# Rows of a running export wait in a staging table keyed by instance pk, so that a resumed
# operation can drop what it wrote after its checkpoint and the target changes in one commit.
_PK = "_dicomql_pk"
# One writer per DuckDB file at a time: DuckDB allows one read-write process and serialises
# conflicting transactions by failing them, so workers of this process take turns.
_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


@dataclass(frozen=True)
class TableUri:
    project: str
    dataset: str
    table: str


def parse_table_uri(uri: Any) -> TableUri:
    """``bq://projectId.bqDatasetId.tableId`` split into its parts.

    Raises:
        ValueError: any other form.
    """
    match = _TABLE_URI.fullmatch(uri) if isinstance(uri, str) else None
    if match is None:
        raise ValueError(
            f"Invalid bigqueryDestination.tableUri {uri!r}: give bq://projectId.datasetId.tableId"
            " (dataset: letters, digits, underscores; table: also dashes)."
        )
    return TableUri(match["project"], match["dataset"], match["table"])


def write_disposition(destination: dict[str, Any]) -> str:
    """The effective disposition: ``writeDisposition`` wins over the deprecated ``force``
    (force=true is WRITE_TRUNCATE, false WRITE_EMPTY); unspecified is WRITE_EMPTY.

    Raises:
        ValueError: an unknown disposition.
    """
    value = destination.get("writeDisposition") or "WRITE_DISPOSITION_UNSPECIFIED"
    if value == "WRITE_DISPOSITION_UNSPECIFIED":
        return "WRITE_TRUNCATE" if destination.get("force") is True else "WRITE_EMPTY"
    if value not in DISPOSITIONS:
        raise ValueError(
            f'Invalid bigqueryDestination.writeDisposition "{value}": give one of'
            f" {', '.join(DISPOSITIONS)}."
        )
    return str(value)


def database_path(data_dir: Path, project: str) -> Path:
    return data_dir / "bigquery" / f"{project}.duckdb"


def flatten(dicom_json: dict[str, Any]) -> dict[str, str]:
    """Top-level attributes by keyword as BigQuery export names its columns: a single value as
    text, several values or a sequence as JSON text. Private and unknown tags have no keyword
    and are left out, as is bulk data given by reference."""
    row: dict[str, str] = {}
    for tag, attribute in dicom_json.items():
        keyword = _keyword(tag)
        if keyword is None:
            continue
        value = _value(attribute)
        if value is not None:
            row[keyword] = value if isinstance(value, str) else json.dumps(value)
    return row


def _keyword(tag: str) -> str | None:
    try:
        keyword = keyword_for_tag(int(tag, 16))
    except ValueError:
        return None
    return keyword or None


def _value(attribute: dict[str, Any]) -> Any:
    """PS3.18 F.2 JSON of one attribute → a scalar string, a list, or None when empty."""
    if "InlineBinary" in attribute:
        return attribute["InlineBinary"]
    values = attribute.get("Value")
    if not values:
        return None
    if attribute.get("vr") == "SQ":
        return [_nested(item) for item in values]
    if attribute.get("vr") == "PN":
        values = [
            value.get("Alphabetic", "") if isinstance(value, dict) else value for value in values
        ]
    if len(values) == 1:
        return None if values[0] is None else str(values[0])
    return values


def _nested(item: dict[str, Any]) -> dict[str, Any]:
    nested = {}
    for tag, attribute in (item or {}).items():
        keyword = _keyword(tag)
        value = _value(attribute)
        if keyword is not None and value is not None:
            nested[keyword] = value
    return nested


def _lock(path: Path) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(path, threading.Lock())


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
    rows = _row_count(db, uri.dataset, uri.table)
    if rows:
        raise OperationFailedError(
            FAILED_PRECONDITION,
            f"Table bq://{uri.project}.{uri.dataset}.{uri.table} already has {rows} rows and the"
            " writeDisposition is WRITE_EMPTY; use WRITE_TRUNCATE or WRITE_APPEND.",
        )


def _add_columns(
    db: duckdb.DuckDBPyConnection, target: str, have: list[str], want: dict[str, str]
) -> None:
    present = set(have)
    for name, kind in want.items():
        if name not in present:
            db.execute(f"ALTER TABLE {target} ADD COLUMN {_quote(name)} {kind}")
            present.add(name)


def _pages(rows: Iterator[Any]) -> Iterator[list[Any]]:
    page: list[Any] = []
    for row in rows:
        page.append(row)
        if len(page) == PAGE:
            yield page
            page = []
    if page:
        yield page


def run_bigquery_export(ctx: OperationContext) -> dict[str, Any]:
    """Export the selected instances' metadata; the target table changes only at the end, in
    one DuckDB transaction, so a failed export leaves it as it was."""
    store_pk = require_store_pk(ctx)
    destination = ctx.request["body"]["bigqueryDestination"]
    uri = parse_table_uri(destination.get("tableUri"))
    disposition = write_disposition(destination)
    source_store = ctx.request.get("store") if destination.get("includeSourceStore") else None
    paths = selection_paths(ctx)
    after = int(ctx.checkpoint or 0)
    path = database_path(ctx.service.config.data_dir, uri.project)
    path.parent.mkdir(parents=True, exist_ok=True)
    with ctx.service.index.connect() as conn:
        ctx.set_pending(count_selected(conn, store_pk, ctx.request.get("scope", {}), paths, after))
    with _lock(path):
        try:
            db = duckdb.connect(str(path))
        except duckdb.Error as exc:  # e.g. another process holds the file's write lock
            raise OperationFailedError(
                FAILED_PRECONDITION, f"Cannot open the local BigQuery stand-in {path}: {exc}"
            ) from exc
        with db:
            _export(ctx, db, uri, disposition, source_store, store_pk, paths, after)
    return {"@type": RESPONSE_TYPE + "dicom.ExportDicomDataResponse"}


def _export(
    ctx: OperationContext,
    db: duckdb.DuckDBPyConnection,
    uri: TableUri,
    disposition: str,
    source_store: str | None,
    store_pk: int,
    paths: list[tuple[str, str | None, str | None]] | None,
    after: int,
) -> None:
    service, scope = ctx.service, ctx.request.get("scope", {})
    schema, staging = _quote(uri.dataset), _quote(f"_dicomql_staging_{ctx.claim.operation_pk}")
    db.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    if disposition == "WRITE_EMPTY":
        _require_empty(db, uri)  # fail before the work; checked again when committing
    base = ", ".join(f"{_quote(name)} {kind}" for name, kind in _BASE_COLUMNS.items())
    db.execute(f"CREATE TABLE IF NOT EXISTS main.{staging} ({_quote(_PK)} BIGINT, {base})")
    # Rows a crashed run wrote after its last checkpoint are written again below.
    db.execute(f"DELETE FROM main.{staging} WHERE {_quote(_PK)} > ?", [after])
    columns = _columns(db, "main", staging[1:-1])
    try:
        selected = iter_selected(service.index.connect, store_pk, scope, paths, after)
        for page in _pages(selected):
            ctx.check()
            rows = _page_rows(service, page, source_store)
            columns = _stage(db, staging, columns, rows)
            ctx.progress(success=len(rows), checkpoint=page[-1].pk)
        db.execute("BEGIN TRANSACTION")
        try:
            _publish(db, uri, disposition, staging, columns)
            db.execute(f"DROP TABLE main.{staging}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    except (OperationFailedError, OperationCancelledError, duckdb.Error) as exc:
        # The operation ends here: nothing resumes it, so its staged rows go. (On a worker
        # stopping, they stay for the operation's next run.)
        db.execute(f"DROP TABLE IF EXISTS main.{staging}")
        if isinstance(exc, duckdb.Error):
            # e.g. a WRITE_APPEND table whose column types cannot take the values.
            raise OperationFailedError(
                FAILED_PRECONDITION,
                f"Cannot write bq://{uri.project}.{uri.dataset}."
                f"{uri.table} in the local stand-in: {exc}",
            ) from exc
        raise


def _stage(
    db: duckdb.DuckDBPyConnection, staging: str, columns: list[str], rows: list[dict[str, Any]]
) -> list[str]:
    """Append a page of rows to the staging table in one transaction; its columns after."""
    wanted = dict.fromkeys((name for row in rows for name in row), "VARCHAR")
    db.execute("BEGIN TRANSACTION")
    try:
        _add_columns(db, f"main.{staging}", columns, wanted)
        for row in rows:
            names = list(row)
            db.execute(
                f"INSERT INTO main.{staging} ({', '.join(map(_quote, names))})"
                f" VALUES ({', '.join('?' * len(names))})",
                [row[name] for name in names],
            )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return _columns(db, "main", staging[1:-1])


def _page_rows(service: Any, page: list[Any], source_store: str | None) -> list[dict[str, Any]]:
    query = select(
        instances.c.pk,
        instances.c.attributes,
        instances.c.storage_class,
        instances.c.size_bytes,
        instances.c.create_time,
    ).where(instances.c.pk.in_([row.pk for row in page]))
    with service.index.connect() as conn:
        found = {row.pk: row for row in conn.execute(query)}
    rows = []
    for selected in page:
        stored = found.get(selected.pk)
        if stored is None:  # deleted since it was selected
            continue
        row: dict[str, Any] = {_PK: selected.pk, **flatten(stored.attributes or {})}
        # The UIDs come from the index, so every row has them even if attributes lack them.
        row["StudyInstanceUID"] = selected.study_instance_uid
        row["SeriesInstanceUID"] = selected.series_instance_uid
        row["SOPInstanceUID"] = selected.sop_instance_uid
        row["Type"] = "CREATE"
        row["LastUpdated"] = _utc(stored.create_time)
        row["StorageClass"] = stored.storage_class
        row["BlobStorageSize"] = stored.size_bytes
        if source_store is not None:
            row["SourceStore"] = source_store
        rows.append(row)
    return rows


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def _publish(
    db: duckdb.DuckDBPyConnection, uri: TableUri, disposition: str, staging: str, columns: list[str]
) -> None:
    schema, table = uri.dataset, uri.table
    target = f"{_quote(schema)}.{_quote(table)}"
    names = [name for name in columns if name != _PK]
    found = db.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
        [staging[1:-1]],
    ).fetchall()
    kinds = {name: kind for name, kind in found if name != _PK}
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
        f" ORDER BY {_quote(_PK)}"
    )
