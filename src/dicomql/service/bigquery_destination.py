"""Export's ``bigqueryDestination`` (GoogleCloudHealthcareV1DicomBigQueryDestination): the
table URI, the write disposition, and WRITE_EMPTY's refusal, alike for real BigQuery and the
local stand-in."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dicomql.google_api import Code
from dicomql.service.workers import OperationFailedError

# BigQuery ids: datasets are letters, digits and underscores; tables also allow dashes here (no
# spaces, to keep the DuckDB identifiers plain). Projects may be domain-scoped ("example.com:p").
_TABLE_URI = re.compile(
    r"bq://(?P<project>[A-Za-z0-9][A-Za-z0-9.:\-]{0,127})\.(?P<dataset>[A-Za-z0-9_]{1,1024})"
    r"\.(?P<table>[A-Za-z0-9_\-]{1,1024})"
)
DISPOSITIONS = ("WRITE_EMPTY", "WRITE_TRUNCATE", "WRITE_APPEND")


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


def refuse_rows(uri: TableUri, rows: int) -> None:
    """WRITE_EMPTY: a table that already has rows fails the export, in BigQuery or the stand-in."""
    if rows:
        raise OperationFailedError(
            Code.FAILED_PRECONDITION,
            f"Table bq://{uri.project}.{uri.dataset}.{uri.table} already has {rows} rows and the"
            " writeDisposition is WRITE_EMPTY; use WRITE_TRUNCATE or WRITE_APPEND.",
        )
