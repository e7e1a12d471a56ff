"""Cloud Healthcare's DICOMweb metric verbs: ``:getStudyMetrics``, ``:getSeriesMetrics`` and
``…/instances/{i}:getStorageInfo`` (int64 values travel as JSON strings)."""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dicomql.service.dicomweb.paths import StoreContext, resolve_store
from dicomql.service.errors import NotFound
from dicomql.store.instances import (
    find_instances,
    find_series,
    find_study,
    instance_structured_size,
    series_structured_size,
    study_structured_size,
)
from dicomql.store.operations import rfc3339


def _study_metrics(context: StoreContext, study: str) -> dict[str, Any] | None:
    with context.service.index.connect() as conn:
        row = find_study(conn, context.store_pk, study)
        if row is None:
            return None
        # Structured storage: the DICOM JSON the index keeps for the study and what it holds.
        structured = study_structured_size(conn, row.pk)
    return {
        "study": context.study_name(study),
        "seriesCount": str(row.number_of_series),
        "instanceCount": str(row.number_of_instances),
        "structuredStorageSizeBytes": str(structured),
        "blobStorageSizeBytes": str(row.size_bytes),
    }


def _series_metrics(context: StoreContext, study: str, series_uid: str) -> dict[str, Any] | None:
    with context.service.index.connect() as conn:
        row = find_series(conn, context.store_pk, study, series_uid)
        if row is None:
            return None
        structured = series_structured_size(conn, row.pk)
    return {
        "series": context.series_name(study, series_uid),
        "instanceCount": str(row.number_of_instances),
        "structuredStorageSizeBytes": str(structured),
        "blobStorageSizeBytes": str(row.size_bytes),
    }


def _storage_info(context: StoreContext, params: dict[str, str]) -> dict[str, Any] | None:
    study, series_uid, instance = params["study"], params["series"], params["instance"]
    with context.service.index.connect() as conn:
        rows = find_instances(conn, context.store_pk, study, series_uid, instance)
        if not rows:
            return None
        row = rows[0]
        structured = instance_structured_size(conn, row.pk)
    blob: dict[str, Any] = {"sizeBytes": str(row.size_bytes), "storageClass": row.storage_class}
    if row.storage_class_update_time is not None:
        blob["storageClassUpdateTime"] = rfc3339(row.storage_class_update_time)
    return {
        "referencedResource": context.instance_name(study, series_uid, instance),
        "blobStorageInfo": blob,
        "structuredStorageInfo": {"sizeBytes": str(structured)},
    }


async def get_study_metrics(request: Request) -> Response:
    context = await resolve_store(request)
    study = request.path_params["study"]
    body = await to_thread.run_sync(_study_metrics, context, study)
    if body is None:
        raise NotFound(f"Study {study} not found in {context.name}.")
    return JSONResponse(body)


async def get_series_metrics(request: Request) -> Response:
    context = await resolve_store(request)
    study, series_uid = request.path_params["study"], request.path_params["series"]
    body = await to_thread.run_sync(_series_metrics, context, study, series_uid)
    if body is None:
        raise NotFound(f"Series {series_uid} of study {study} not found in {context.name}.")
    return JSONResponse(body)


async def get_storage_info(request: Request) -> Response:
    context = await resolve_store(request)
    body = await to_thread.run_sync(_storage_info, context, dict(request.path_params))
    if body is None:
        raise NotFound(f"Instance {request.path_params['instance']} not found in {context.name}.")
    return JSONResponse(body)
