"""WADO-RS metadata (PS3.18 10.4.1.1.2): the DICOM JSON of every instance of a study, a series
or one instance, streamed as one JSON array with BulkDataURIs absolute to this request's base."""

from __future__ import annotations

from collections.abc import Iterator

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from dicomql.service.dicomweb.multipart import parse_accept
from dicomql.service.dicomweb.paths import StoreContext, resolve_store
from dicomql.service.dicomweb.responses import DICOM_JSON
from dicomql.service.errors import NotAcceptable, NotFound
from dicomql.store import search as index_search

_ACCEPTED = frozenset({DICOM_JSON, "application/json", "*/*", "application/*", ""})


def _check_accept(request: Request) -> None:
    accepted = parse_accept(request.headers.get("accept"))
    if accepted and not any(media.type in _ACCEPTED for media in accepted):
        raise NotAcceptable(
            "Metadata is available as application/dicom+json only;"
            f" the request accepts {request.headers.get('accept')}."
        )


async def _resolve(
    request: Request,
) -> tuple[StoreContext, int, int | None, int | None]:
    """The store and the pks of the study, series and instance in the path, or 404."""
    _check_accept(request)
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


def _json_array(
    context: StoreContext, study_pk: int, series_pk: int | None, instance_pk: int | None
) -> Iterator[bytes]:
    """The array written element by element from a streamed query (runs in a worker thread)."""
    with context.service.index.connect() as conn:
        first = True
        for text in index_search.instance_metadata(
            conn,
            context.base_url,
            study_pk=study_pk,
            series_pk=series_pk,
            instance_pk=instance_pk,
        ):
            yield (b"[" if first else b",") + text.encode("utf-8")
            first = False
        yield b"[]" if first else b"]"


async def retrieve_metadata(request: Request) -> Response:
    context, study_pk, series_pk, instance_pk = await _resolve(request)
    return StreamingResponse(
        _json_array(context, study_pk, series_pk, instance_pk), media_type=DICOM_JSON
    )


routes: list[BaseRoute] = [
    Route(
        "/studies/{study:rid}/metadata",
        retrieve_metadata,
        methods=["GET"],
        name="dicomweb:study-metadata",
    ),
    Route(
        "/studies/{study:rid}/series/{series:rid}/metadata",
        retrieve_metadata,
        methods=["GET"],
        name="dicomweb:series-metadata",
    ),
    Route(
        "/studies/{study:rid}/series/{series:rid}/instances/{instance:rid}/metadata",
        retrieve_metadata,
        methods=["GET"],
        name="dicomweb:instance-metadata",
    ),
]
