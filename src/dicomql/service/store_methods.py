"""The long-running DICOM store methods' endpoints: ``dicomStores.{import, export, deidentify,
setBlobStorageSettings}`` and ``:setBlobStorageSettings`` on a study, series or instance. Each
validates its request, records an Operation, wakes the worker pool and answers the Operation at
once; the handlers (``service.handlers.default_handlers``) do the work.

Also the ``setBlobStorageSettings`` handler: it changes index rows only (the embedded service
keeps every blob on one local disk; the class is what ``:getStorageInfo`` reports)."""

from __future__ import annotations

import secrets
from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse

from dicomql import google_api
from dicomql.dicom.deid.config import DeidentifyConfigError, parse_request
from dicomql.google_api import SET_BLOB_STORAGE_SETTINGS_RESPONSE
from dicomql.service import bigquery_destination, lro
from dicomql.service.bodies import json_body, query_params
from dicomql.service.datasets import service_of
from dicomql.service.dicom_stores import require_dicom_store
from dicomql.service.errors import InvalidArgument, NotFound
from dicomql.service.exporter import target_syntax
from dicomql.service.validation import validate_path_ids
from dicomql.service.workers import OperationContext
from dicomql.store import names
from dicomql.store.operations import create_operation, now, operation_resource
from dicomql.store.selections import count_selected, iter_selected
from dicomql.store.storage_classes import set_storage_class

METHOD = "healthcare.projects.locations.datasets.dicomStores."
_BATCH = 500


def _scope(request: Request) -> dict[str, str | None]:
    params = request.path_params
    return {level: params.get(level) for level in ("study", "series", "instance")}


async def _start(
    request: Request, api_method: str, body: dict[str, Any], extra: dict[str, Any] | None = None
) -> JSONResponse:
    """Record the operation for the store of the path and hand it to the workers."""
    service = service_of(request)
    params = request.path_params
    project, location, dataset = params["project"], params["location"], params["dataset"]
    dicom_store = params["dicom_store"]
    store_name = names.dicom_store_name(project, location, dataset, dicom_store)
    scope = _scope(request)
    target = store_name
    if scope["study"] is not None:
        path = names.dicomweb_path(scope["study"], scope["series"], scope["instance"])
        target = f"{names.dicomweb_name(store_name)}/{path}"

    def write() -> dict[str, Any]:
        with service.index.begin() as conn:
            store = require_dicom_store(conn, project, location, dataset, dicom_store)
            payload = {
                "store": store_name,
                "store_pk": store.pk,
                "scope": scope,
                "body": body,
                **(extra or {}),
            }
            row = create_operation(
                conn, store.dataset_pk, api_method, request=payload, target=target
            )
        name = names.operation_name(project, location, dataset, row.operation_id)
        return operation_resource(row, name)

    resource = await to_thread.run_sync(write)
    if service.workers is not None:
        service.workers.wake()
    return JSONResponse(resource)


async def _body(request: Request, schema: str, method: str) -> dict[str, Any]:
    validate_path_ids(request.path_params)
    query_params(request, METHOD + method)
    service = service_of(request)
    return await json_body(request, schema, "", service.config.max_request_bytes)


def _storage_class(settings: Any, field: str, *, required: bool) -> str | None:
    value = (settings or {}).get("blobStorageClass")
    if value in (None, "", "BLOB_STORAGE_CLASS_UNSPECIFIED"):
        if required:
            raise InvalidArgument(
                f"{field}.blobStorageClass is required: one of {', '.join(lro.STORAGE_CLASSES)}."
            )
        return None
    if value not in lro.STORAGE_CLASSES:
        raise InvalidArgument(
            f'Invalid {field}.blobStorageClass "{value}": one of {", ".join(lro.STORAGE_CLASSES)}.'
        )
    return str(value)


def _check_uri(uri: Any, field: str) -> str:
    if not isinstance(uri, str) or not uri:
        raise InvalidArgument(f"{field} is required.")
    if "\x00" in uri:
        raise InvalidArgument(f"{field} contains a NUL character.")
    if "://" not in uri and not uri.startswith("/"):
        raise InvalidArgument(
            f'Invalid {field} "{uri}": give gs://bucket/path, file:///path or an absolute path.'
        )
    return uri


async def import_dicom_data(request: Request) -> JSONResponse:
    body = await _body(request, "ImportDicomDataRequest", "import")
    _check_uri((body.get("gcsSource") or {}).get("uri"), "gcsSource.uri")
    _storage_class(body.get("blobStorageSettings"), "blobStorageSettings", required=False)
    return await _start(request, google_api.IMPORT_DICOM_DATA, body)


async def export_dicom_data(request: Request) -> JSONResponse:
    body = await _body(request, "ExportDicomDataRequest", "export")
    bigquery = body.get("bigqueryDestination")
    if bigquery:
        # Real BigQuery when it is reachable, else a local DuckDB table (bigquery_export.py).
        _check_bigquery(bigquery)
        _check_filter(body)
        return await _start(request, google_api.EXPORT_DICOM_DATA, body)
    destination = body.get("gcsDestination") or {}
    _check_uri(destination.get("uriPrefix"), "gcsDestination.uriPrefix")
    try:
        target_syntax(destination.get("mimeType"))
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from exc
    _check_filter(body)
    return await _start(request, google_api.EXPORT_DICOM_DATA, body)


def _check_bigquery(destination: Any) -> None:
    if not isinstance(destination, dict):
        raise InvalidArgument("bigqueryDestination must be an object.")
    if destination.get("schemaJson"):
        raise InvalidArgument(
            "bigqueryDestination.schemaJson is not supported by the embedded service: it writes"
            " the flattened schema (one column per DICOM keyword)."
        )
    try:
        bigquery_destination.parse_table_uri(destination.get("tableUri"))
        bigquery_destination.write_disposition(destination)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from exc


def _check_filter(body: dict[str, Any]) -> None:
    uri = (body.get("filterConfig") or {}).get("resourcePathsGcsUri")
    if uri:
        _check_uri(uri, "filterConfig.resourcePathsGcsUri")


async def set_blob_storage_settings(request: Request) -> JSONResponse:
    method = "setBlobStorageSettings"
    if "study" in request.path_params:
        method = "dicomWeb.studies.setBlobStorageSettings"
    body = await _body(request, "SetBlobStorageSettingsRequest", method)
    _storage_class(body.get("blobStorageSettings"), "blobStorageSettings", required=True)
    _check_filter(body)
    scope = _scope(request)
    if scope["study"] is not None:
        await to_thread.run_sync(_require_scope, request, scope)
    return await _start(request, google_api.SET_BLOB_STORAGE_SETTINGS, body)


def _require_scope(request: Request, scope: dict[str, str | None]) -> None:
    """A study, series or instance path must name something that exists (404 otherwise)."""
    service = service_of(request)
    params = request.path_params
    with service.index.connect() as conn:
        store = require_dicom_store(
            conn, params["project"], params["location"], params["dataset"], params["dicom_store"]
        )
        found = count_selected(conn, store.pk, scope, None)
    if not found:
        path = request.url.path.split("/dicomWeb/", 1)[-1].rsplit(":", 1)[0]
        raise NotFound(f"{path} not found in the DICOM store.")


async def deidentify_dicom_store(request: Request) -> JSONResponse:
    body = await _body(request, "DeidentifyDicomStoreRequest", "deidentify")
    try:
        parsed = parse_request(body)
    except DeidentifyConfigError as exc:
        raise InvalidArgument(f"Invalid DeidentifyDicomStoreRequest: {exc}") from exc
    if parsed.resource_paths_gcs_uri:
        _check_uri(parsed.resource_paths_gcs_uri, "filterConfig.resourcePathsGcsUri")
    params = request.path_params
    source = names.dicom_store_name(
        params["project"], params["location"], params["dataset"], params["dicom_store"]
    )
    parts = parsed.destination_store.split("/")
    project, location, dataset, store_id = parts[1], parts[3], parts[5], parts[7]
    if (project, location) != (params["project"], params["location"]):
        raise InvalidArgument(
            "destinationStore must be in the same project and location as the source store"
            " (de-identifying across locations is not supported)."
        )
    if parsed.destination_store == source:
        raise InvalidArgument("destinationStore must differ from the source DICOM store.")
    service = service_of(request)

    def destination_pk() -> int:
        # DeidentifyDicomStoreRequest.destinationStore: "The destination dataset and DICOM
        # store must exist."
        with service.index.connect() as conn:
            row = require_dicom_store(conn, project, location, dataset, store_id)
        pk: int = row.pk
        return pk

    pk = await to_thread.run_sync(destination_pk)
    # The operation's secret: kept with the request so that a resumed operation maps UIDs,
    # shifts dates and hashes exactly as the first attempt did.
    extra = {"destination_pk": pk, "operation_key": secrets.token_hex(32)}
    return await _start(request, google_api.DEIDENTIFY_DICOM_STORE, body, extra)


def run_set_blob_storage_settings(ctx: OperationContext) -> dict[str, Any]:
    store_pk = lro.require_store_pk(ctx)
    storage_class = ctx.request["body"]["blobStorageSettings"]["blobStorageClass"]
    paths = lro.selection_paths(ctx)
    scope = ctx.request.get("scope", {})
    index = ctx.service.index
    with index.connect() as conn:
        ctx.set_pending(count_selected(conn, store_pk, scope, paths))
    batch: list[int] = []
    selected = iter_selected(index.connect, store_pk, scope, paths)
    while True:
        row = next(selected, None)
        if row is not None:
            batch.append(row.pk)
        if batch and (row is None or len(batch) >= _BATCH):
            moment = now()
            with index.begin() as conn:
                set_storage_class(conn, store_pk, batch, storage_class, moment)
            ctx.progress(success=len(batch))
            batch = []
        if row is None:
            break
    return {"@type": SET_BLOB_STORAGE_SETTINGS_RESPONSE}
