"""DICOMweb deletion (Cloud Healthcare's ``studies.delete``, ``series.delete``,
``instances.delete``): index rows go in one transaction, blobs after commit."""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dicomql.google_api import DELETE_SERIES, DELETE_STUDY
from dicomql.service.dicomweb.paths import StoreContext, resolve_store
from dicomql.service.errors import NotFound
from dicomql.store.instances import delete_instances, find_instances, lock_store
from dicomql.store.names import operation_name
from dicomql.store.operations import (
    add_progress,
    create_operation,
    finish_operation,
    operation_resource,
)
from dicomql.store.resources import find_operation, release_blobs

# Cloud Healthcare: deleting a study or series is a long-running operation; dicomql finishes it
# before answering, so the Operation comes back done. Deleting an instance answers ``{}``.
_OPERATION_METHODS = {"Study": DELETE_STUDY, "Series": DELETE_SERIES}


def _delete(context: StoreContext, params: dict[str, Any], level: str) -> dict[str, Any] | None:
    """Delete what the path names; the Operation (or ``{}``), or None if nothing matched."""
    service = context.service
    study, series = params["study"], params.get("series")
    operation_id = None
    with service.index.begin() as conn:
        lock_store(conn, context.store_pk)  # against concurrent ingest (see lock_store)
        rows = find_instances(conn, context.store_pk, study, series, params.get("instance"))
        if not rows:
            return None
        keys = delete_instances(conn, context.store_pk, [row.pk for row in rows])
        if level in _OPERATION_METHODS:
            target = context.study_name(study)
            if series is not None:
                target = context.series_name(study, series)
            created = create_operation(
                conn,
                context.dataset_pk,
                _OPERATION_METHODS[level],
                target=target,
                pending=len(rows),
            )
            add_progress(conn, created.pk, success=len(rows))
            finish_operation(conn, created.pk, response={})
            operation_id = created.operation_id
    # After commit: the deleted rows no longer reference these blobs (they are journaled, so a
    # crash here leaves them to recovery).
    release_blobs(service.index, service.blobs, keys)
    if operation_id is None:
        return {}
    with service.index.connect() as conn:
        row = find_operation(conn, context.dataset_pk, operation_id)
    assert row is not None
    name = operation_name(params["project"], params["location"], params["dataset"], operation_id)
    return operation_resource(row, name)


_RETRIES = 8


def _delete_retrying(
    context: StoreContext, params: dict[str, Any], level: str
) -> dict[str, Any] | None:
    """:func:`_delete`, retried when PostgreSQL picks it as a deadlock victim (40P01) or
    serialization failure (40001) against a concurrent STOW updating the same counters, or when
    a concurrent delete of the same instance journaled its blob first (IntegrityError); the
    retry then finds what is left. Found by tests/reliability/test_concurrency.py."""
    for attempt in range(_RETRIES):
        try:
            return _delete(context, params, level)
        except IntegrityError:
            if attempt == _RETRIES - 1:
                raise
        except DBAPIError as exc:
            code = getattr(exc.orig, "sqlstate", None)
            if code not in ("40P01", "40001") or attempt == _RETRIES - 1:
                raise
    raise AssertionError("unreachable")


async def delete_resource(request: Request) -> Response:
    context = await resolve_store(request)
    params = dict(request.path_params)
    level = "Instance" if "instance" in params else "Series" if "series" in params else "Study"
    body = await to_thread.run_sync(_delete_retrying, context, params, level)
    if body is None:
        raise NotFound(f"{level} not found: {request.url.path.split('/dicomWeb/', 1)[-1]}")
    return JSONResponse(body)
