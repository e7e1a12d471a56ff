"""Routes of projects.locations.datasets.dicomStores: create, get, list (with a label filter),
patch, delete and getDICOMStoreMetrics."""

from __future__ import annotations

import re
from typing import Any

from anyio import to_thread
from sqlalchemy import Connection, Row
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import JSONResponse

from dicomql.service.bodies import json_body, query_params
from dicomql.service.datasets import require_dataset, service_of
from dicomql.service.errors import AlreadyExists, InvalidArgument, NotFound
from dicomql.service.label_filter import Predicate, parse_filter
from dicomql.service.paging import decode_token, encode_token, page_size
from dicomql.service.validation import (
    dataset_path,
    parse_update_mask,
    validate_labels,
    validate_resource_id,
)
from dicomql.store import names
from dicomql.store import resources as store

METHOD = "healthcare.projects.locations.datasets.dicomStores."
# DicomStore fields a patch may name (discovery document, DicomStore schema; name is identity).
UPDATABLE = ("labels", "notificationConfig", "notificationConfigs", "streamConfigs")
# Pub/Sub topic names are scoped to a project (NotificationConfig.pubsubTopic).
_TOPIC = re.compile(r"projects/[^/]+/topics/[^/]+")
# A BigQuery table as the Healthcare API names one: bq://PROJECT_ID.BQ_DATASET_ID.BQ_TABLE_ID.
_TABLE_URI = re.compile(r"bq://[^.]+\.[^.]+\.[^.]+")
# How many stores to read per query while a filter skips non-matching ones.
_SCAN_BATCH = 500


def require_dicom_store(
    conn: Connection, project: str, location: str, dataset: str, dicom_store: str
) -> Row:
    """The store's row, or NotFound naming the missing dataset or store."""
    row = store.find_dicom_store(conn, project, location, dataset, dicom_store)
    if row is None:
        require_dataset(conn, project, location, dataset)
        name = names.dicom_store_name(project, location, dataset, dicom_store)
        raise NotFound(f"DICOM store {name} not found.")
    return row


def _locked_store(
    conn: Connection, project: str, location: str, dataset: str, dicom_store: str
) -> Row:
    """The store's row under its lock, as of the lock (a patch or delete that committed
    meanwhile is seen), or NotFound."""
    row = require_dicom_store(conn, project, location, dataset, dicom_store)
    if not store.lock_dicom_store(conn, row.pk):
        raise NotFound(
            f"DICOM store {names.dicom_store_name(project, location, dataset, dicom_store)}"
            " not found."
        )
    return require_dicom_store(conn, project, location, dataset, dicom_store)


def dicom_store_resource(row: Row, project: str, location: str, dataset: str) -> dict[str, Any]:
    name = names.dicom_store_name(project, location, dataset, row.store_id)
    return {"name": name, **row.resource}


def _checked_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The stored part of a DicomStore body, after Google's rules on labels and destinations."""
    resource = {key: value for key, value in body.items() if key != "name"}
    if "labels" in resource:
        resource["labels"] = validate_labels(resource["labels"])
    topic = resource.get("notificationConfig", {}).get("pubsubTopic")
    if topic:
        _check_topic(topic, "notification_config.pubsub_topic")
    for i, config in enumerate(resource.get("notificationConfigs", [])):
        _check_topic(config.get("pubsubTopic", ""), f"notification_configs[{i}].pubsub_topic")
    seen: set[str] = set()
    for i, config in enumerate(resource.get("streamConfigs", [])):
        table_uri = config.get("bigqueryDestination", {}).get("tableUri", "")
        if not _TABLE_URI.fullmatch(table_uri):
            raise InvalidArgument(
                f'Invalid stream_configs[{i}].bigquery_destination.table_uri "{table_uri}":'
                " it must be bq://PROJECT_ID.BQ_DATASET_ID.BQ_TABLE_ID."
            )
        # DicomStore.streamConfigs: "Each config must contain a unique destination."
        if table_uri in seen:
            raise InvalidArgument(
                f'Invalid stream_configs[{i}]: the destination "{table_uri}" is already used by'
                " another stream config; each config must contain a unique destination."
            )
        seen.add(table_uri)
    return resource


def _check_topic(topic: str, field: str) -> None:
    if not _TOPIC.fullmatch(topic):
        raise InvalidArgument(
            f'Invalid {field} "{topic}": it must be a Pub/Sub topic name of the form'
            " projects/PROJECT_ID/topics/TOPIC_ID."
        )


async def create_dicom_store(request: Request) -> JSONResponse:
    service = service_of(request)
    project, location, dataset = dataset_path(request.path_params)
    params = query_params(request, METHOD + "create")
    store_id = validate_resource_id(params.get("dicomStoreId"), "dicomStoreId")
    body = await json_body(request, "DicomStore", "dicom_store", service.config.max_request_bytes)
    resource = _checked_fields(body)
    name = names.dicom_store_name(project, location, dataset, store_id)

    def write() -> dict[str, Any]:
        try:
            with service.index.begin() as conn:
                parent = require_dataset(conn, project, location, dataset)
                if store.find_dicom_store(conn, project, location, dataset, store_id):
                    raise AlreadyExists(f"DICOM store {name} already exists.")
                row = store.insert_dicom_store(conn, parent.pk, store_id, resource)
        except IntegrityError as exc:
            # A concurrent request won the race: it created the same store (unique key), or
            # deleted the dataset (foreign key). Say which, as of now.
            with service.index.connect() as conn:
                require_dataset(conn, project, location, dataset)
            raise AlreadyExists(f"DICOM store {name} already exists.") from exc
        return dicom_store_resource(row, project, location, dataset)

    return JSONResponse(await to_thread.run_sync(write))


async def get_dicom_store(request: Request) -> JSONResponse:
    service = service_of(request)
    project, location, dataset = dataset_path(request.path_params)
    dicom_store = request.path_params["dicom_store"]
    query_params(request, METHOD + "get")

    def read() -> dict[str, Any]:
        with service.index.connect() as conn:
            row = require_dicom_store(conn, project, location, dataset, dicom_store)
        return dicom_store_resource(row, project, location, dataset)

    return JSONResponse(await to_thread.run_sync(read))


async def list_dicom_stores(request: Request) -> JSONResponse:
    service = service_of(request)
    project, location, dataset = dataset_path(request.path_params)
    params = query_params(request, METHOD + "list")
    size = page_size(params.get("pageSize"))
    text = params.get("filter", "")
    predicate = parse_filter(text)
    context = f"{names.dataset_name(project, location, dataset)}\n{text}"
    after = decode_token(params.get("pageToken"), context)
    if after is not None and not isinstance(after, str):
        raise InvalidArgument(f'Invalid page token "{params["pageToken"]}".')

    def read() -> dict[str, Any]:
        with service.index.connect() as conn:
            parent = require_dataset(conn, project, location, dataset)
            page, more = _matching_stores(conn, parent.pk, after, size, predicate, bool(text))
        result: dict[str, Any] = {}
        if page:  # proto3 JSON leaves out an empty repeated field
            result["dicomStores"] = [
                dicom_store_resource(row, project, location, dataset) for row in page
            ]
        if more:
            result["nextPageToken"] = encode_token(page[-1].store_id, context)
        return result

    return JSONResponse(await to_thread.run_sync(read))


def _matching_stores(
    conn: Connection,
    dataset_pk: int,
    after: str | None,
    size: int,
    predicate: Predicate,
    filtered: bool,
) -> tuple[list[Row], bool]:
    """One page of stores that satisfy ``predicate``, and whether more follow.

    Labels live in the resource JSON, which SQLite and PostgreSQL query differently, so the
    filter runs here over stores read in ID order; a page never needs more than one pass.
    """
    page: list[Row] = []
    batch = max(_SCAN_BATCH, size + 1) if filtered else size + 1
    cursor = after
    while True:
        rows = store.list_dicom_stores(conn, dataset_pk, cursor, batch)
        for row in rows:
            if predicate(row.resource):
                if len(page) == size:
                    return page, True
                page.append(row)
        if len(rows) < batch:
            return page, False
        cursor = rows[-1].store_id


async def patch_dicom_store(request: Request) -> JSONResponse:
    service = service_of(request)
    project, location, dataset = dataset_path(request.path_params)
    dicom_store = request.path_params["dicom_store"]
    params = query_params(request, METHOD + "patch")
    paths = parse_update_mask(params.get("updateMask"), UPDATABLE)
    body = await json_body(request, "DicomStore", "dicom_store", service.config.max_request_bytes)
    # FieldMask semantics: a masked field absent from the body is cleared.
    changes = _checked_fields({path: body[path] for path in paths if path in body})

    def write() -> dict[str, Any]:
        with service.index.begin() as conn:
            row = _locked_store(conn, project, location, dataset, dicom_store)
            resource = {key: value for key, value in row.resource.items() if key not in paths}
            resource.update(changes)
            store.update_dicom_store(conn, row.pk, resource)
        name = names.dicom_store_name(project, location, dataset, dicom_store)
        return {"name": name, **resource}

    return JSONResponse(await to_thread.run_sync(write))


async def delete_dicom_store(request: Request) -> JSONResponse:
    service = service_of(request)
    project, location, dataset = dataset_path(request.path_params)
    dicom_store = request.path_params["dicom_store"]
    query_params(request, METHOD + "delete")

    def write() -> None:
        with service.index.begin() as conn:
            row = _locked_store(conn, project, location, dataset, dicom_store)
            keys = store.delete_dicom_store(conn, row.pk)
        store.release_blobs(service.index, service.blobs, keys)

    await to_thread.run_sync(write)
    return JSONResponse({})


async def get_dicom_store_metrics(request: Request) -> JSONResponse:
    service = service_of(request)
    project, location, dataset = dataset_path(request.path_params)
    dicom_store = request.path_params["dicom_store"]
    query_params(request, METHOD + "getDICOMStoreMetrics")

    def read() -> dict[str, Any]:
        with service.index.connect() as conn:
            row = require_dicom_store(conn, project, location, dataset, dicom_store)
            metrics = store.dicom_store_metrics(conn, row.pk)
        result: dict[str, Any] = {
            "name": names.dicom_store_name(project, location, dataset, dicom_store)
        }
        # int64 travels as a JSON string; proto3 JSON leaves out zero values, as Google does.
        result.update({key: str(value) for key, value in metrics.items() if value})
        return result

    return JSONResponse(await to_thread.run_sync(read))
