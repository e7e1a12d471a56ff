"""Routes of projects.locations.datasets.operations: get, list and cancel.

Choices where Google's documentation is silent:
- ``list`` returns operations oldest first and supports ``filter`` on ``done`` (``done=true``,
  ``NOT done=true``) and ``metadata.apiMethodName`` only; other filters are a 400.
- ``cancel`` of an operation that is already done succeeds and changes nothing (google.longrunning:
  cancellation is best effort, and the operation keeps its result). On a running one it sets
  ``cancelRequested``; the worker running it stops and finishes it with error code 1 (CANCELLED).
"""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse

from dicomql.service.bodies import json_body, query_params
from dicomql.service.datasets import require_dataset, service_of
from dicomql.service.errors import InvalidArgument, NotFound
from dicomql.service.label_filter import parse_filter
from dicomql.service.paging import decode_token, encode_token, page_size
from dicomql.service.validation import dataset_path
from dicomql.store import names
from dicomql.store import resources as store
from dicomql.store.operations import operation_resource

METHOD = "healthcare.projects.locations.datasets.operations."
_SCAN_BATCH = 500


async def get_operation(request: Request) -> JSONResponse:
    service = service_of(request)
    project, location, dataset = dataset_path(request.path_params)
    operation = request.path_params["operation"]
    query_params(request, METHOD + "get")
    name = names.operation_name(project, location, dataset, operation)

    def read() -> dict[str, Any]:
        with service.index.connect() as conn:
            parent = require_dataset(conn, project, location, dataset)
            row = store.find_operation(conn, parent.pk, operation)
        if row is None:
            raise NotFound(f"Operation {name} not found.")
        return operation_resource(row, name)

    return JSONResponse(await to_thread.run_sync(read))


def _filterable(resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "done": resource.get("done", False),
        "metadata": {"apiMethodName": resource["metadata"].get("apiMethodName")},
    }


async def list_operations(request: Request) -> JSONResponse:
    service = service_of(request)
    project, location, dataset = dataset_path(request.path_params)
    params = query_params(request, METHOD + "list")
    if params.get("returnPartialSuccess"):
        # The discovery document: only meaningful across collections; UNIMPLEMENTED otherwise.
        raise InvalidArgument("returnPartialSuccess is not supported for a single dataset.")
    size = page_size(params.get("pageSize"))
    text = params.get("filter", "")
    predicate = parse_filter(text, fields=("done", "metadata"), map_fields=("metadata",))
    context = f"{names.dataset_name(project, location, dataset)}/operations\n{text}"
    after = decode_token(params.get("pageToken"), context)
    if after is not None and not isinstance(after, int):
        raise InvalidArgument(f'Invalid page token "{params["pageToken"]}".')

    def read() -> dict[str, Any]:
        page: list[dict[str, Any]] = []
        more = False
        last_pk = after
        with service.index.connect() as conn:
            parent = require_dataset(conn, project, location, dataset)
            cursor = after
            while not more:
                rows = store.list_operations(conn, parent.pk, cursor, _SCAN_BATCH)
                for row in rows:
                    name = names.operation_name(project, location, dataset, row.operation_id)
                    resource = operation_resource(row, name)
                    if not predicate(_filterable(resource)):
                        continue
                    if len(page) == size:
                        more = True
                        break
                    page.append(resource)
                    last_pk = row.pk
                if len(rows) < _SCAN_BATCH:
                    break
                cursor = rows[-1].pk
        result: dict[str, Any] = {}
        if page:  # proto3 JSON leaves out an empty repeated field
            result["operations"] = page
        if more and last_pk is not None:
            result["nextPageToken"] = encode_token(last_pk, context)
        return result

    return JSONResponse(await to_thread.run_sync(read))


async def cancel_operation(request: Request) -> JSONResponse:
    service = service_of(request)
    project, location, dataset = dataset_path(request.path_params)
    operation = request.path_params["operation"]
    query_params(request, METHOD + "cancel")
    await json_body(request, "CancelOperationRequest", "", service.config.max_request_bytes)
    name = names.operation_name(project, location, dataset, operation)

    def write() -> None:
        with service.index.begin() as conn:
            parent = require_dataset(conn, project, location, dataset)
            row = store.find_operation(conn, parent.pk, operation)
            if row is None:
                raise NotFound(f"Operation {name} not found.")
            store.request_cancel(conn, row.pk)

    await to_thread.run_sync(write)
    return JSONResponse({})
