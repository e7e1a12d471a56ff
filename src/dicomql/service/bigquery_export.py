"""Export to ``bigqueryDestination``: the long-running handler that reads the selected
instances a page at a time, shapes each as a row (``service.bigquery_rows``) and writes the pages
to real BigQuery (``service.bigquery_google``) or to the local DuckDB stand-in
(``service.bigquery_local``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dicomql.google_api import EXPORT_DICOM_DATA_RESPONSE, Code
from dicomql.service import bigquery_local
from dicomql.service.bigquery_destination import (
    TableUri,
    parse_table_uri,
    refuse_rows,
    write_disposition,
)
from dicomql.service.bigquery_google import BigQueryError, GoogleBigQuery
from dicomql.service.bigquery_local import ROW_KEY
from dicomql.service.bigquery_rows import instance_row
from dicomql.service.lro import (
    require_store_pk,
    selection_paths,
)
from dicomql.service.workers import OperationContext, OperationFailedError
from dicomql.store.selections import PAGE, ResourcePath, count_selected, iter_selected, stored_facts


def run_bigquery_export(ctx: OperationContext) -> dict[str, Any]:
    """Export the selected instances' metadata to real BigQuery when it is reachable
    (``service.bigquery_google``), else to the local stand-in (``service.bigquery_local``)."""
    store_pk = require_store_pk(ctx)
    destination = ctx.request["body"]["bigqueryDestination"]
    uri = parse_table_uri(destination.get("tableUri"))
    disposition = write_disposition(destination)
    source_store = ctx.request.get("store") if destination.get("includeSourceStore") else None
    paths = selection_paths(ctx)
    after = int(ctx.checkpoint or 0)
    with ctx.service.index.connect() as conn:
        ctx.set_pending(count_selected(conn, store_pk, ctx.request.get("scope", {}), paths, after))
    pages = _row_pages(ctx, store_pk, paths, after, source_store)
    google = GoogleBigQuery.connect(ctx.service.config.endpoints)
    if google is not None:
        _export_to_bigquery(google, uri, disposition, after, pages)
    else:
        staging = f"_dicomql_staging_{ctx.claim.operation_pk}"
        bigquery_local.export(ctx.service.config.data_dir, uri, disposition, staging, after, pages)
    return {"@type": EXPORT_DICOM_DATA_RESPONSE}


def _export_to_bigquery(
    google: GoogleBigQuery,
    uri: TableUri,
    disposition: str,
    after: int,
    pages: Iterator[list[dict[str, Any]]],
) -> None:
    """Export to real BigQuery: the disposition is applied once, before the first row, then
    rows are appended a page at a time. Unlike the stand-in, a failed export may leave the
    pages it appended (streaming inserts are not transactional); a resumed one goes on after
    its checkpoint."""
    try:
        if after == 0 and disposition == "WRITE_EMPTY":
            refuse_rows(uri, google.row_count(uri))
        if after == 0 and disposition == "WRITE_TRUNCATE":
            google.drop(uri)
        for rows in pages:
            for row in rows:
                del row[ROW_KEY]
            if rows:
                google.append(uri, rows)
    except BigQueryError as exc:
        raise OperationFailedError(Code.FAILED_PRECONDITION, str(exc)) from exc


def _row_pages(
    ctx: OperationContext,
    store_pk: int,
    paths: list[ResourcePath] | None,
    after: int,
    source_store: str | None,
) -> Iterator[list[dict[str, Any]]]:
    """The selected instances' rows a page at a time, after ``after``; a page's progress (and
    checkpoint) is reported once the consumer has written it and asks for the next."""
    scope = ctx.request.get("scope", {})
    selected = iter_selected(ctx.service.index.connect, store_pk, scope, paths, after)
    for page in _pages(selected):
        ctx.check()
        rows = _page_rows(ctx.service, page, source_store)
        yield rows
        ctx.progress(success=len(rows), checkpoint=page[-1].pk)


def _pages(rows: Iterator[Any]) -> Iterator[list[Any]]:
    page: list[Any] = []
    for row in rows:
        page.append(row)
        if len(page) == PAGE:
            yield page
            page = []
    if page:
        yield page


def _page_rows(service: Any, page: list[Any], source_store: str | None) -> list[dict[str, Any]]:
    with service.index.connect() as conn:
        found = stored_facts(conn, [row.pk for row in page])
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
        row[ROW_KEY] = selected.pk
        rows.append(row)
    return rows
