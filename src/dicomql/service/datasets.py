"""Routes of projects.locations.datasets: create (a done Operation), get, list, patch, delete."""

from __future__ import annotations

import re
import zoneinfo
from functools import cache
from typing import Any

from anyio import to_thread
from sqlalchemy import Connection, Row
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import JSONResponse

from dicomql import google_api
from dicomql.service.bodies import json_body, query_params
from dicomql.service.context import Service, service_of
from dicomql.service.errors import AlreadyExists, InvalidArgument, NotFound
from dicomql.service.paging import decode_token, encode_token, page_size
from dicomql.service.validation import (
    parse_update_mask,
    validate_path_ids,
    validate_resource_id,
)
from dicomql.store import names
from dicomql.store import operations as operation_store
from dicomql.store import resources as store

METHOD = "healthcare.projects.locations.datasets."
# Dataset fields a patch may name. encryptionSpec is fixed at creation (Healthcare API docs:
# "the encryption settings cannot be changed after the dataset is created").
UPDATABLE = ("timeZone",)
DEFAULT_TIME_ZONE = "UTC"
# EncryptionSpec.kmsKeyName names a Cloud KMS key (Healthcare API, "Using CMEK").
_KMS_KEY = re.compile(
    r"projects/[^/\x00]+/locations/[^/\x00]+/keyRings/[^/\x00]+/cryptoKeys/[^/\x00]+"
)


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) | {DEFAULT_TIME_ZONE}


def require_dataset(conn: Connection, project: str, location: str, dataset: str) -> Row:
    """The dataset's row, or NotFound naming it."""
    row = store.find_dataset(conn, project, location, dataset)
    if row is None:
        name = names.dataset_name(project, location, dataset)
        raise NotFound(f"Dataset {name} not found.")
    return row


def dataset_resource(row: Row, project: str, location: str) -> dict[str, Any]:
    return {"name": names.dataset_name(project, location, row.dataset_id), **row.resource}


def _checked_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The stored part of a Dataset body: a valid IANA time zone (empty means UTC)."""
    resource = {key: value for key, value in body.items() if key != "name"}
    time_zone = resource.get("timeZone") or DEFAULT_TIME_ZONE
    # Checked against the list of IANA names, not by loading: ZoneInfo("America") opens a
    # directory and a long name overflows the file system's limit.
    if time_zone not in _time_zones():
        raise InvalidArgument(
            f'Invalid time zone "{time_zone[:80]}": it must be an IANA time zone name such as'
            ' "America/New_York", or empty for UTC.'
        )
    resource["timeZone"] = time_zone
    key = resource.get("encryptionSpec", {}).get("kmsKeyName")
    if key is not None and not _KMS_KEY.fullmatch(key):
        raise InvalidArgument(
            f'Invalid encryption_spec.kms_key_name "{key}": it must be a Cloud KMS key name of'
            " the form projects/*/locations/*/keyRings/*/cryptoKeys/*."
        )
    return resource


def _path(request: Request) -> tuple[str, str]:
    validate_path_ids(request.path_params)
    return request.path_params["project"], request.path_params["location"]


async def create_dataset(request: Request) -> JSONResponse:
    service = service_of(request)
    project, location = _path(request)
    params = query_params(request, METHOD + "create")
    dataset_id = validate_resource_id(params.get("datasetId"), "datasetId")
    body = await json_body(request, "Dataset", "dataset", service.config.max_request_bytes)
    resource = _checked_fields(body)
    operation = await to_thread.run_sync(_create, service, project, location, dataset_id, resource)
    return JSONResponse(operation)


def _create(
    service: Service, project: str, location: str, dataset_id: str, resource: dict[str, Any]
) -> dict[str, Any]:
    name = names.dataset_name(project, location, dataset_id)
    try:
        with service.index.begin() as conn:
            if store.find_dataset(conn, project, location, dataset_id) is not None:
                raise AlreadyExists(f"Dataset {name} already exists.")
            row = store.insert_dataset(conn, project, location, dataset_id, resource)
            # Creating a dataset is instant here, but the API returns an Operation; record it
            # already done so operations.get and operations.list find it like any other.
            operation = operation_store.create_operation(
                conn, row.pk, google_api.CREATE_DATASET, target=name
            )
            response = {"@type": google_api.DATASET, **dataset_resource(row, project, location)}
            operation_store.finish_operation(conn, operation.pk, response=response)
            finished = store.find_operation(conn, row.pk, operation.operation_id)
    except IntegrityError as exc:  # a concurrent create won the race
        raise AlreadyExists(f"Dataset {name} already exists.") from exc
    assert finished is not None
    operation_name = names.operation_name(project, location, dataset_id, finished.operation_id)
    return operation_store.operation_resource(finished, operation_name)


async def get_dataset(request: Request) -> JSONResponse:
    service = service_of(request)
    project, location = _path(request)
    query_params(request, METHOD + "get")
    dataset = request.path_params["dataset"]

    def read() -> dict[str, Any]:
        with service.index.connect() as conn:
            return dataset_resource(
                require_dataset(conn, project, location, dataset), project, location
            )

    return JSONResponse(await to_thread.run_sync(read))


async def list_datasets(request: Request) -> JSONResponse:
    service = service_of(request)
    project, location = _path(request)
    params = query_params(request, METHOD + "list")
    size = page_size(params.get("pageSize"))
    context = names.location_name(project, location)
    after = decode_token(params.get("pageToken"), context)
    if after is not None and not isinstance(after, str):
        raise InvalidArgument(f'Invalid page token "{params["pageToken"]}".')

    def read() -> dict[str, Any]:
        with service.index.connect() as conn:
            rows = store.list_datasets(conn, project, location, after, size + 1)
        page = [dataset_resource(row, project, location) for row in rows[:size]]
        result: dict[str, Any] = {}
        if page:  # proto3 JSON leaves out an empty repeated field
            result["datasets"] = page
        if len(rows) > size:
            result["nextPageToken"] = encode_token(rows[size - 1].dataset_id, context)
        return result

    return JSONResponse(await to_thread.run_sync(read))


async def patch_dataset(request: Request) -> JSONResponse:
    service = service_of(request)
    project, location = _path(request)
    dataset = request.path_params["dataset"]
    params = query_params(request, METHOD + "patch")
    paths = parse_update_mask(params.get("updateMask"), UPDATABLE)
    body = await json_body(request, "Dataset", "dataset", service.config.max_request_bytes)

    def write() -> dict[str, Any]:
        with service.index.begin() as conn:
            row = require_dataset(conn, project, location, dataset)
            if not store.lock_dataset(conn, row.pk):  # deleted meanwhile
                raise NotFound(
                    f"Dataset {names.dataset_name(project, location, dataset)} not found."
                )
            row = require_dataset(conn, project, location, dataset)  # as of the lock
            resource = dict(row.resource)
            for path in paths:
                resource[path] = body.get(path)
            resource = _checked_fields(resource)
            store.update_dataset(conn, row.pk, resource)
        return {"name": names.dataset_name(project, location, dataset), **resource}

    return JSONResponse(await to_thread.run_sync(write))


async def delete_dataset(request: Request) -> JSONResponse:
    service = service_of(request)
    project, location = _path(request)
    dataset = request.path_params["dataset"]
    query_params(request, METHOD + "delete")

    def write() -> None:
        with service.index.begin() as conn:
            row = require_dataset(conn, project, location, dataset)
            if not store.lock_dataset(conn, row.pk):  # deleted meanwhile
                raise NotFound(
                    f"Dataset {names.dataset_name(project, location, dataset)} not found."
                )
            keys = store.delete_dataset(conn, row.pk)
        store.release_blobs(service.index, service.blobs, keys)

    await to_thread.run_sync(write)
    return JSONResponse({})
