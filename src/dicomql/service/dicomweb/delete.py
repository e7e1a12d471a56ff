"""DICOMweb deletion (Cloud Healthcare's ``studies.delete``, ``series.delete``,
``instances.delete``): index rows go in one transaction, blobs after commit."""

from __future__ import annotations

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from dicomql.service.dicomweb.paths import StoreContext, resolve_store
from dicomql.service.errors import NotFound
from dicomql.service.names import operation_name
from dicomql.store.instances import delete_instances, find_instances
from dicomql.store.operations import (
    create_operation,
    finish_operation,
    operation_resource,
)
from dicomql.store.resources import release_blobs

_API = "google.cloud.healthcare.v1.dicomweb.DicomWebService"
_DELETE_METHODS = {"Study": f"{_API}.DeleteStudy", "Series": f"{_API}.DeleteSeries"}


def _delete(
    context: StoreContext, study: str, series: str | None, instance: str | None, level: str
) -> dict | None:
    """Delete and, for a study or series, record a done Operation; None if nothing matched."""
    service = context.service
    with service.index.begin() as conn:
        rows = find_instances(conn, context.store_pk, study, series, instance)
        if not rows:
            return None
        keys = delete_instances(conn, context.store_pk, [row.pk for row in rows])
        operation = None
        if level in _DELETE_METHODS:
            target = context.study_name(study)
            if series is not None:
                target = context.series_name(study, series)
            created = create_operation(
                conn, context.dataset_pk, _DELETE_METHODS[level], target=target,
                pending=len(rows),
            )
            finish_operation(conn, created.pk, response={})
            conn.execute(
                created.__table__.update() if False else _success(created.pk, len(rows))
            )
            operation = created
    release_blobs(service.index, service.blobs, keys)
    if operation is None:
        return {}
    with service.index.connect() as conn:
        from dicomql.store.resources import find_operation

        row = find_operation(conn, context.dataset_pk, operation.operation_id)
    params = context.store
    del params
    return operation_resource(row, _operation_name(context, operation.operation_id))
