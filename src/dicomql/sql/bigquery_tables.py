"""The BigQuery stand-in's tables in SQL: ``FROM "bq://project.dataset.table"`` reads the DuckDB
table an export or stream of the embedded service wrote (``{data_dir}/bigquery/{project}.duckdb``,
schema = dataset, table = table; docs/operations.md) into the statement's workspace, where it
joins the API's tables."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
from pathlib import Path
from typing import Any

from sqlglot import exp

from dicomql.errors import ProgrammingError
from dicomql.sql.relational import Workspace

PREFIX = "bq://"
# The export's own table URI grammar (projects may be domain-scoped: "example.com:p").
_URI = re.compile(
    r"bq://(?P<project>[A-Za-z0-9][A-Za-z0-9.:\-]{0,127})\.(?P<dataset>[A-Za-z0-9_]{1,1024})"
    r"\.(?P<table>[A-Za-z0-9_\-]{1,1024})"
)


def load_tables(tree: exp.Expression, workspace: Workspace, folder: Path | None) -> None:
    """Replace every ``"bq://…"`` table of ``tree`` by a workspace table holding its rows.

    Raises:
        ProgrammingError: a malformed URI, no stand-in here (not the embedded backend), or no
            such table.
    """
    for table in list(tree.find_all(exp.Table)):
        if not table.name.startswith(PREFIX) or table.args.get("db"):
            continue
        match = _URI.fullmatch(table.name)
        if match is None:
            raise ProgrammingError(
                f"expected a BigQuery table as bq://project.dataset.table, got '{table.name}'"
            )
        if folder is None:
            raise ProgrammingError(
                f"{table.name}: BigQuery stand-in tables are read on the embedded backend "
                "(--data-dir), where exports and streams write them"
            )
        columns, rows = _read(folder, match["project"], match["dataset"], match["table"])
        temp = f"_bigquery_{workspace.next_id()}"
        workspace.load(temp, columns, rows, label=table.name)
        alias = table.alias or match["table"]
        table.replace(
            exp.Table(
                this=exp.to_identifier(temp), alias=exp.TableAlias(this=exp.to_identifier(alias))
            )
        )


def _read(
    folder: Path, project: str, dataset: str, table: str
) -> tuple[list[str], list[dict[str, Any]]]:
    import duckdb

    path = folder / f"{project}.duckdb"
    if not path.is_file():
        raise ProgrammingError(f"no BigQuery stand-in for project '{project}' ({path})")
    try:
        with duckdb.connect(str(path)) as db:
            cursor = db.execute(f'SELECT * FROM "{dataset}"."{table}"')
            columns = [d[0] for d in cursor.description or []]
            records = cursor.fetchall()
    except duckdb.CatalogException as exc:
        first = str(exc).splitlines()[0]
        raise ProgrammingError(f"no table bq://{project}.{dataset}.{table} ({first})") from exc
    except duckdb.Error as exc:
        raise ProgrammingError(f"cannot read bq://{project}.{dataset}.{table}: {exc}") from exc
    return columns, [
        {c: _sqlite_value(v) for c, v in zip(columns, record, strict=True)} for record in records
    ]


def _sqlite_value(value: Any) -> Any:
    """DuckDB values as SQLite keeps them: dates and times as ISO text (they sort), lists and
    structs as JSON text, decimals as REAL."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, list | dict):
        return json.dumps(value, default=str)
    return value
