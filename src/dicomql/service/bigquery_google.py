"""Real BigQuery for ``bigqueryDestination`` (export) and ``streamConfigs`` (streaming), through
google-cloud-bigquery (the ``cloud`` extra, imported lazily).

Used when the library is installed and either Application Default Credentials exist or
``DICOMQL_BIGQUERY_ENDPOINT`` names a BigQuery-compatible endpoint (an emulator, reached without
credentials); otherwise export and streaming write the local DuckDB stand-in
(``service/bigquery_local.py``). Rows have the same flattened columns either way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dicomql.config import Endpoints
    from dicomql.service.bigquery_destination import TableUri


# DuckDB column types (bigquery_rows.column_type) → BigQuery field types.
_BIGQUERY_TYPES = {
    "VARCHAR": "STRING",
    "DATE": "DATE",
    "TIME": "TIME",
    "TIMESTAMP": "TIMESTAMP",
    "DOUBLE": "FLOAT",
    "BIGINT": "INTEGER",
    "JSON": "JSON",
}


class BigQueryError(Exception):
    """BigQuery refused a request or some rows; the message says which table and why."""


class GoogleBigQuery:
    """One BigQuery client and the few table operations export and streaming need."""

    def __init__(self, client: Any) -> None:
        self.client = client

    @classmethod
    def connect(cls, endpoints: Endpoints) -> GoogleBigQuery | None:
        """A client (of ``endpoints.bigquery_endpoint`` when it names one), or None when the
        library or credentials are missing (use the stand-in)."""
        try:
            import google.auth
            import google.auth.exceptions
            from google.cloud import bigquery
        except ImportError:
            return None
        endpoint = endpoints.bigquery_endpoint
        if endpoint:
            from google.api_core.client_options import ClientOptions
            from google.auth.credentials import AnonymousCredentials

            return cls(
                bigquery.Client(
                    project=endpoints.bigquery_project,
                    credentials=AnonymousCredentials(),
                    client_options=ClientOptions(api_endpoint=endpoint),
                )
            )
        try:
            credentials, project = google.auth.default()
        except google.auth.exceptions.DefaultCredentialsError:
            return None
        return cls(bigquery.Client(credentials=credentials, project=project))

    def row_count(self, uri: TableUri) -> int:
        """Rows in the table (0 when it does not exist): WRITE_EMPTY's check."""
        from google.api_core import exceptions

        try:
            table = self.client.get_table(_table_id(uri))
        except exceptions.NotFound:
            return 0
        except exceptions.GoogleAPIError as exc:
            raise BigQueryError(f"BigQuery {_table_id(uri)}: {exc}") from exc
        return int(table.num_rows or 0)

    def drop(self, uri: TableUri) -> None:
        """WRITE_TRUNCATE: the table goes, and the next append creates it with fresh columns."""
        from google.api_core import exceptions

        try:
            self.client.delete_table(_table_id(uri), not_found_ok=True)
        except exceptions.GoogleAPIError as exc:
            raise BigQueryError(f"BigQuery {_table_id(uri)}: {exc}") from exc

    def append(self, uri: TableUri, rows: list[dict[str, Any]]) -> None:
        """Append rows, creating the table or adding the columns the rows bring, as Cloud
        Healthcare does ("The server creates a new table … if the specified table does not
        exist"; "the destination's table schema will be automatically updated")."""
        from google.api_core import exceptions
        from google.cloud import bigquery

        # Here, not at the top: pydicom's dictionary costs start-up that a service without
        # BigQuery should not pay (docs/dbapi.md).
        from dicomql.service.bigquery_rows import column_type

        table_id = _table_id(uri)
        wanted = {name: column_type(name) for row in rows for name in row}
        try:
            try:
                table = self.client.get_table(table_id)
            except exceptions.NotFound:
                schema = [_field(bigquery, name, kind) for name, kind in wanted.items()]
                table = self.client.create_table(bigquery.Table(table_id, schema=schema))
            known = {field.name for field in table.schema}
            added = [_field(bigquery, n, k) for n, k in wanted.items() if n not in known]
            if added:
                table.schema = [*table.schema, *added]
                table = self.client.update_table(table, ["schema"])
            errors = self.client.insert_rows_json(table, [_json_ready(row) for row in rows])
        except exceptions.GoogleAPIError as exc:
            raise BigQueryError(f"BigQuery {table_id}: {exc}") from exc
        if errors:
            raise BigQueryError(f"BigQuery {table_id} refused rows: {errors[:3]}")


def _table_id(uri: TableUri) -> str:
    return f"{uri.project}.{uri.dataset}.{uri.table}"


def _field(bigquery: Any, name: str, kind: str) -> Any:
    mode = "NULLABLE"
    if kind.endswith("[]"):
        kind, mode = kind[:-2], "REPEATED"
    if kind.startswith("STRUCT("):
        parts = [part.split()[0] for part in kind[len("STRUCT(") : -1].split(",")]
        fields = [bigquery.SchemaField(part, "STRING") for part in parts]
        return bigquery.SchemaField(name, "RECORD", mode=mode, fields=fields)
    return bigquery.SchemaField(name, _BIGQUERY_TYPES.get(kind, "STRING"), mode=mode)


def _json_ready(row: dict[str, Any]) -> dict[str, Any]:
    ready: dict[str, Any] = {}
    for name, value in row.items():
        if isinstance(value, list):
            ready[name] = [_scalar(item) for item in value]
        else:
            ready[name] = _scalar(value)
    return ready


def _scalar(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value
