"""The local stand-in for export's ``bigqueryDestination``: one row of flattened DICOM metadata
per instance in a DuckDB table, ``{data_dir}/bigquery/{project}.duckdb``, schema = the BigQuery
dataset, table = the BigQuery table (GoogleCloudHealthcareV1DicomBigQueryDestination)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
from pydicom.datadict import dictionary_VM, dictionary_VR, keyword_for_tag, tag_for_keyword
from sqlalchemy import select

from dicomql.google_api import EXPORT_DICOM_DATA_RESPONSE, Code
from dicomql.service.bigquery_google import BigQueryError, GoogleBigQuery
from dicomql.service.lro import (
    PAGE,
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
from dicomql.store.locks import ProcessLock
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
# from streaming). DICOM keyword columns are typed by VR (see flatten).
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
# conflicting transactions by failing them, so workers take turns, across the processes of
# `serve --processes N` too (a file lock beside the database).
_LOCKS: dict[Path, ProcessLock] = {}
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


def flatten(dicom_json: dict[str, Any]) -> dict[str, Any]:
    """Top-level attributes by keyword, typed as Google's BigQuery DICOM schema types them
    (Cloud Healthcare "Understanding the BigQuery DICOM schema"): DA as a date, TM as a time, DT
    as a timestamp, DS/FL/FD as floats, IS/SS/US/SL/UL/SV/UV as integers, PN as a record,
    sequences as JSON, everything else as text; a list where the dictionary's VM allows several
    values (see :func:`column_type`). Private and unknown tags have no keyword and are left out,
    as is bulk data given by reference; a value that does not parse as its VR becomes NULL."""
    row: dict[str, Any] = {}
    for tag, attribute in dicom_json.items():
        found = _keyword(tag)
        if found is None:
            continue
        keyword, vm = found
        value = _typed(attribute, repeated=vm != "1")
        if value is not None:
            row[keyword] = value
    return row


# VR → DuckDB type of one value (Google's table: String, Date, Time, Timestamp, Struct (Record),
# Floating point, Integer, and a Record for sequences, kept here as JSON).
_VR_TYPES = {
    "DA": "DATE",
    "TM": "TIME",
    "DT": "TIMESTAMP",
    "DS": "DOUBLE",
    "FL": "DOUBLE",
    "FD": "DOUBLE",
    "IS": "BIGINT",
    "SS": "BIGINT",
    "US": "BIGINT",
    "SL": "BIGINT",
    "UL": "BIGINT",
    "SV": "BIGINT",
    "UV": "BIGINT",
    "SQ": "JSON",
    # The three component groups of PS3.18 F.2.2's PN object.
    "PN": "STRUCT(Alphabetic VARCHAR, Ideographic VARCHAR, Phonetic VARCHAR)",
}


def column_type(keyword: str) -> str:
    """The DuckDB type of a keyword's column: its VR's type, as a list when the DICOM dictionary
    allows more than one value (BigQuery's REPEATED mode); VARCHAR for other columns.

    >>> column_type("StudyDate"), column_type("PixelSpacing"), column_type("Rows")
    ('DATE', 'DOUBLE[]', 'BIGINT')
    """
    found = _dictionary_entry(keyword)
    if found is None:
        return _BASE_COLUMNS.get(keyword, "VARCHAR")
    vr, vm = found
    kind = _VR_TYPES.get(vr, "VARCHAR")
    if vm != "1" and vr != "SQ":
        kind += "[]"
    return kind


def _dictionary_entry(keyword: str) -> tuple[str, str] | None:
    tag = tag_for_keyword(keyword)
    if tag is None:
        return None
    try:
        # A VR such as "US or SS" (pixel-dependent) is typed by its first choice.
        return dictionary_VR(tag).split(" ")[0], dictionary_VM(tag)
    except KeyError:
        return None


def _keyword(tag: str) -> tuple[str, str] | None:
    try:
        number = int(tag, 16)
        keyword = keyword_for_tag(number)
        return (keyword, dictionary_VM(number)) if keyword else None
    except (ValueError, KeyError):
        return None


def _typed(attribute: dict[str, Any], *, repeated: bool) -> Any:
    """PS3.18 F.2 JSON of one attribute → its column value (None when empty or unparseable)."""
    if "InlineBinary" in attribute:
        return attribute["InlineBinary"]
    values = attribute.get("Value")
    if not values:
        return None
    vr = attribute.get("vr", "")
    if vr == "SQ":
        return json.dumps([_nested(item) for item in values])
    converted = [_convert(vr, value) for value in values]
    if repeated:
        kept = [value for value in converted if value is not None]
        return kept or None
    return converted[0]


def _convert(vr: str, value: Any) -> Any:
    if value is None:
        return None
    if vr == "PN":
        if not isinstance(value, dict):
            return {"Alphabetic": str(value), "Ideographic": None, "Phonetic": None}
        return {group: value.get(group) for group in ("Alphabetic", "Ideographic", "Phonetic")}
    converter = _CONVERTERS.get(vr)
    if converter is None:
        return str(value)
    try:
        return converter(value)
    except (ValueError, TypeError, OverflowError):
        return None


def _date(value: Any) -> date:
    text = str(value).strip().replace(".", "")  # ACR-NEMA "YYYY.MM.DD" still appears
    return datetime.strptime(text[:8], "%Y%m%d").date()


def _time(value: Any) -> time:
    text = str(value).strip().replace(":", "")  # ACR-NEMA "HH:MM:SS"
    whole, _, fraction = text.partition(".")
    hour, minute, second = int(whole[0:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
    micros = int((fraction + "000000")[:6]) if fraction else 0
    return time(hour, minute, min(second, 59), micros)  # a leap second "60" is kept in range


def _timestamp(value: Any) -> datetime:
    """DT (``YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX]``) as naive UTC, as DuckDB's and BigQuery's
    TIMESTAMP hold it; a value without an offset is taken as given."""
    text = str(value).strip()
    offset = None
    if len(text) > 9 and text[-5] in "+-":
        zone, text = text[-5:], text[:-5]
        minutes = int(zone[1:3]) * 60 + int(zone[3:5])
        offset = timezone(timedelta(minutes=minutes if zone[0] == "+" else -minutes))
    whole, _, fraction = text.partition(".")
    fields = [int(whole[0:4])] + [int(whole[i : i + 2]) for i in range(4, min(len(whole), 14), 2)]
    year, month, day, hour, minute, second = fields + [1, 1, 1, 0, 0, 0][len(fields) :]
    micros = int((fraction + "000000")[:6]) if fraction else 0
    moment = datetime(year, month, day, hour, minute, min(second, 59), micros)
    if offset is not None:
        moment = moment.replace(tzinfo=offset).astimezone(UTC).replace(tzinfo=None)
    return moment


_CONVERTERS: dict[str, Any] = {
    "DA": _date,
    "TM": _time,
    "DT": _timestamp,
    "DS": float,
    "FL": float,
    "FD": float,
    "IS": lambda value: int(float(value)) if isinstance(value, str) else int(value),
    "SS": int,
    "US": int,
    "SL": int,
    "UL": int,
    "SV": int,
    "UV": int,
}


def _value(attribute: dict[str, Any]) -> Any:
    """PS3.18 F.2 JSON of one nested attribute → a scalar, a list, or None when empty (the
    items of a sequence column, kept as JSON)."""
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
        found = _keyword(tag)
        value = _value(attribute)
        if found is not None and value is not None:
            nested[found[0]] = value
    return nested


def _lock(path: Path) -> ProcessLock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(path)
        if lock is None:
            lock = _LOCKS[path] = ProcessLock(path.with_name(path.name + ".lock"))
        return lock


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
    _refuse_rows(uri, _row_count(db, uri.dataset, uri.table))


def _refuse_rows(uri: TableUri, rows: int) -> None:
    """WRITE_EMPTY: a table that already has rows fails the export, in BigQuery or the stand-in."""
    if rows:
        raise OperationFailedError(
            Code.FAILED_PRECONDITION,
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
    with ctx.service.index.connect() as conn:
        ctx.set_pending(count_selected(conn, store_pk, ctx.request.get("scope", {}), paths, after))
    google = GoogleBigQuery.connect()
    if google is not None:
        _export_to_bigquery(ctx, google, uri, disposition, source_store, store_pk, paths, after)
        return {"@type": EXPORT_DICOM_DATA_RESPONSE}
    path = database_path(ctx.service.config.data_dir, uri.project)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock(path):
        try:
            db = duckdb.connect(str(path))
        except duckdb.Error as exc:  # e.g. another process holds the file's write lock
            raise OperationFailedError(
                Code.FAILED_PRECONDITION, f"Cannot open the local BigQuery stand-in {path}: {exc}"
            ) from exc
        with db:
            _export(ctx, db, uri, disposition, source_store, store_pk, paths, after)
    return {"@type": EXPORT_DICOM_DATA_RESPONSE}


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
                Code.FAILED_PRECONDITION,
                f"Cannot write bq://{uri.project}.{uri.dataset}."
                f"{uri.table} in the local stand-in: {exc}",
            ) from exc
        raise


def _export_to_bigquery(
    ctx: OperationContext,
    google: GoogleBigQuery,
    uri: TableUri,
    disposition: str,
    source_store: str | None,
    store_pk: int,
    paths: list[tuple[str, str | None, str | None]] | None,
    after: int,
) -> None:
    """Export to real BigQuery: the disposition is applied once, before the first row, then
    rows are appended a page at a time. Unlike the stand-in, a failed export may leave the
    pages it appended (streaming inserts are not transactional); a resumed one goes on after
    its checkpoint."""
    try:
        if after == 0 and disposition == "WRITE_EMPTY":
            _refuse_rows(uri, google.row_count(uri))
        if after == 0 and disposition == "WRITE_TRUNCATE":
            google.drop(uri)
        scope = ctx.request.get("scope", {})
        selected = iter_selected(ctx.service.index.connect, store_pk, scope, paths, after)
        for page in _pages(selected):
            ctx.check()
            rows = _page_rows(ctx.service, page, source_store)
            for row in rows:
                del row[_PK]
            if rows:
                google.append(uri, rows)
            ctx.progress(success=len(rows), checkpoint=page[-1].pk)
    except BigQueryError as exc:
        raise OperationFailedError(Code.FAILED_PRECONDITION, str(exc)) from exc


def _stage(
    db: duckdb.DuckDBPyConnection, staging: str, columns: list[str], rows: list[dict[str, Any]]
) -> list[str]:
    """Append a page of rows to the staging table in one transaction; its columns after."""
    wanted = {name: column_type(name) for row in rows for name in row if name != _PK}
    db.execute("BEGIN TRANSACTION")
    try:
        _add_columns(db, f"main.{staging}", columns, wanted)
        _insert_rows(db, f"main.{staging}", rows)
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
        row = instance_row(
            stored.attributes or {},
            study_instance_uid=selected.study_instance_uid,
            series_instance_uid=selected.series_instance_uid,
            sop_instance_uid=selected.sop_instance_uid,
            last_updated=stored.create_time,
            storage_class=stored.storage_class,
            size=stored.size_bytes,
            source_store=source_store,
        )
        row[_PK] = selected.pk
        rows.append(row)
    return rows


def instance_row(
    attributes: dict[str, Any],
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    last_updated: datetime | None,
    storage_class: str,
    size: int,
    source_store: str | None = None,
) -> dict[str, Any]:
    """One instance's table row, as export and streaming both write it: the flattened metadata
    and the columns Google adds (Type, LastUpdated, StorageClass, BlobStorageSize, and
    SourceStore with ``includeSourceStore``)."""
    row: dict[str, Any] = flatten(attributes)
    # The UIDs come from the index, so every row has them even if attributes lack them.
    row["StudyInstanceUID"] = study_instance_uid
    row["SeriesInstanceUID"] = series_instance_uid
    row["SOPInstanceUID"] = sop_instance_uid
    row["Type"] = "CREATE"
    row["LastUpdated"] = _utc(last_updated)
    row["StorageClass"] = storage_class
    row["BlobStorageSize"] = size
    if source_store is not None:
        row["SourceStore"] = source_store
    return row


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
    wanted: dict[str, str] = dict.fromkeys(_BASE_COLUMNS, "")
    wanted.update({name: "" for row in rows for name in row})
    wanted = {name: column_type(name) for name in wanted}
    with _lock(path), duckdb.connect(str(path)) as db:
        db.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        db.execute("BEGIN TRANSACTION")
        try:
            have = _columns(db, uri.dataset, uri.table)
            if not have:
                definition = ", ".join(f"{_quote(name)} {kind}" for name, kind in wanted.items())
                db.execute(f"CREATE TABLE {target} ({definition})")
            else:
                _add_columns(db, target, have, wanted)
            _insert_rows(db, target, rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def _insert_rows(db: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]]) -> None:
    # Rows may name different columns (attributes differ between instances).
    for row in rows:
        names = list(row)
        db.execute(
            f"INSERT INTO {table} ({', '.join(map(_quote, names))})"
            f" VALUES ({', '.join('?' * len(names))})",
            [row[name] for name in names],
        )


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
