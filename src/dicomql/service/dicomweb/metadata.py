"""WADO-RS metadata (PS3.18 10.4.1.1.2): the DICOM JSON of every instance of a study, a series
or one instance, streamed as one JSON array with BulkDataURIs absolute to this request's base."""

from __future__ import annotations

import json
from collections.abc import Iterator

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from dicomql.dicom.xmlmodel import native_dicom_model
from dicomql.service.conformance import conformance_of
from dicomql.service.dicomweb.multipart import parse_accept
from dicomql.service.dicomweb.paths import StoreContext, resolve_store
from dicomql.service.dicomweb.responses import (
    DICOM_JSON,
    DICOM_XML,
    MultipartRelatedResponse,
    Part,
)
from dicomql.service.errors import NotAcceptable, NotFound
from dicomql.store import search as index_search

_ACCEPTED = frozenset({DICOM_JSON, "application/json", "*/*", "application/*", ""})


def _format(request: Request) -> str:
    """``json``, or ``xml`` for ``multipart/related; type="application/dicom+xml"`` (PS3.18
    Table 10.4.4-1, Required) under the standard profile; Google serves JSON only (406)."""
    accepted = parse_accept(request.headers.get("accept"))
    xml = conformance_of(request).metadata_xml
    for media in accepted:
        if media.type in _ACCEPTED:
            return "json"
        part_type = media.params.get("type", "").lower()
        if xml and media.type == "multipart/related" and part_type == DICOM_XML:
            return "xml"
    if not accepted:
        return "json"
    also = ' or multipart/related; type="application/dicom+xml"' if xml else " only"
    raise NotAcceptable(
        f"Metadata is available as application/dicom+json{also};"
        f" the request accepts {request.headers.get('accept')}."
    )


async def _resolve(
    request: Request,
) -> tuple[StoreContext, int, int | None, int | None]:
    """The store and the pks of the study, series and instance in the path, or 404."""
    context = await resolve_store(request)
    params = request.path_params
    study, series, instance = params["study"], params.get("series"), params.get("instance")

    def lookup() -> tuple[int, int | None, int | None]:
        with context.service.index.connect() as conn:
            study_pk = index_search.find_study_pk(conn, context.store_pk, study)
            if study_pk is None:
                raise NotFound(f"Study {context.study_name(study)} not found.")
            if series is None:
                return study_pk, None, None
            series_pk = index_search.find_series_pk(conn, study_pk, series)
            if series_pk is None:
                raise NotFound(f"Series {context.series_name(study, series)} not found.")
            if instance is None:
                return study_pk, series_pk, None
            instance_pk = index_search.find_instance_pk(conn, series_pk, instance)
            if instance_pk is None:
                name = context.instance_name(study, series, instance)
                raise NotFound(f"Instance {name} not found.")
            return study_pk, series_pk, instance_pk

    study_pk, series_pk, instance_pk = await to_thread.run_sync(lookup)
    return context, study_pk, series_pk, instance_pk


def _stored_metadata(
    context: StoreContext, study_pk: int, series_pk: int | None, instance_pk: int | None
) -> Iterator[str]:
    """Each selected instance's stored DICOM JSON, from a streamed query (in a worker thread)."""
    with context.service.index.connect() as conn:
        yield from index_search.instance_metadata(
            conn,
            context.base_url,
            study_pk=study_pk,
            series_pk=series_pk,
            instance_pk=instance_pk,
        )


def _json_array(
    context: StoreContext, study_pk: int, series_pk: int | None, instance_pk: int | None
) -> Iterator[bytes]:
    """The array written element by element as the instances stream."""
    first = True
    for text in _stored_metadata(context, study_pk, series_pk, instance_pk):
        yield (b"[" if first else b",") + text.encode("utf-8")
        first = False
    yield b"[]" if first else b"]"


def _xml_parts(
    context: StoreContext, study_pk: int, series_pk: int | None, instance_pk: int | None
) -> Iterator[Part]:
    """One Native DICOM Model part per instance (PS3.19), from the same stored JSON."""
    for text in _stored_metadata(context, study_pk, series_pk, instance_pk):
        xml = native_dicom_model(json.loads(text)).encode("utf-8")
        yield {"Content-Type": f"{DICOM_XML}; charset=utf-8"}, [xml]


async def retrieve_metadata(request: Request) -> Response:
    fmt = _format(request)
    context, study_pk, series_pk, instance_pk = await _resolve(request)
    if fmt == "xml":
        return MultipartRelatedResponse(
            _xml_parts(context, study_pk, series_pk, instance_pk), part_type=DICOM_XML
        )
    return StreamingResponse(
        _json_array(context, study_pk, series_pk, instance_pk), media_type=DICOM_JSON
    )
