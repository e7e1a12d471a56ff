"""QIDO-RS (PS3.18 10.6): searching a store's studies, series and instances.

Results are ``application/dicom+json`` (or ``multipart/related; type="application/dicom+xml"``
when the Accept header asks for XML, PS3.18 10.6.3). No match is ``200 []``, as Cloud Healthcare
answers (PS3.18 allows 204; Google's API returns an empty array). Results are in index order
(the order instances were stored). A page cut short by ``limit`` carries a ``Warning: 299``
header saying more results can be requested; a ``limit`` above the maximum is clamped with a
``Warning: 299`` saying so. Searching below a study or series that does not exist is a search
with no matches (``200 []``), not a 404: the path's UIDs are matching keys (PS3.18 10.6.1).
Bad parameters are 400 INVALID_ARGUMENT naming the problem; a missing store is 404. A search
whose index query runs past the statement timeout (``ServiceConfig.statement_timeout_seconds``)
is cancelled and answered 504 DEADLINE_EXCEEDED.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response

from dicomql.dicom.attributes import Level
from dicomql.dicom.qido import QueryError, parse_search
from dicomql.service.conformance import conformance_of
from dicomql.service.context import service_of
from dicomql.service.dicomweb.multipart import parse_accept
from dicomql.service.dicomweb.paths import dicomweb_url, require_store
from dicomql.service.dicomweb.responses import (
    DICOM_XML,
    DicomJsonResponse,
    DicomXmlResponse,
    MultipartRelatedResponse,
)
from dicomql.service.errors import DeadlineExceeded, InvalidArgument, NotAcceptable
from dicomql.store import search as index_search

_JSON_TYPES = frozenset({"application/dicom+json", "application/json", "*/*", "application/*"})


def response_format(request: Request) -> str:
    """``"json"`` or ``"xml"`` from the Accept header (PS3.18 8.7.3), else 406."""
    accepted = parse_accept(request.headers.get("accept"))
    if not accepted:
        return "json"
    for media in accepted:
        if media.type in _JSON_TYPES:
            return "json"
        if media.type == DICOM_XML:
            return "xml"
        if media.type == "multipart/related" and media.params.get("type", "") in (DICOM_XML, ""):
            return "xml"
    offered = ", ".join(sorted({m.type for m in accepted}))
    raise NotAcceptable(
        f"None of the requested media types ({offered}) is supported; search results are"
        f' application/dicom+json or multipart/related; type="{DICOM_XML}".'
    )


def dicom_json_results(
    results: list[dict[str, Any]], fmt: str, headers: dict[str, str] | None = None
) -> Response:
    if fmt == "xml":
        parts = (
            ({"Content-Type": DICOM_XML}, [bytes(DicomXmlResponse(result).body)])
            for result in results
        )
        return MultipartRelatedResponse(parts, part_type=DICOM_XML, headers=headers)
    return DicomJsonResponse(results, headers=headers)


def _endpoint(level: Level) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        fmt = response_format(request)
        try:
            query = parse_search(
                request.query_params.multi_items(),
                level,
                standard=conformance_of(request).standard_search_keys,
            )
        except QueryError as exc:
            raise InvalidArgument(str(exc)) from exc
        params = request.path_params
        scope = index_search.Scope(params.get("study"), params.get("series"))
        service = service_of(request)
        base = dicomweb_url(request)
        host = request.url.netloc or "dicomql"

        def run() -> Response:
            # One worker-thread hop and one connection for the store lookup, the query and the
            # serialisation, which would otherwise block the event loop for large pages.
            with service.index.connect() as conn:
                store = require_store(conn, params)
                timeout = service.config.statement_timeout_seconds
                try:
                    result = index_search.search(
                        conn, store.pk, query, scope, base, timeout=timeout
                    )
                except index_search.QueryTimeout as exc:
                    raise DeadlineExceeded(
                        f"The search did not finish within the statement timeout ({timeout:g} "
                        "seconds); narrow it with more specific matching keys or a smaller "
                        "limit."
                    ) from exc
            response = dicom_json_results(result.matches, fmt)
            warnings = [f'299 {host}: "{text}"' for text in query.warnings]
            if result.more:
                warnings.append(
                    f'299 {host}: "There are additional results that can be requested."'
                )
            for warning in warnings:
                response.headers.append("Warning", warning)
            return response

        return await to_thread.run_sync(run)

    endpoint.__name__ = f"search_for_{level.value.lower()}"
    return endpoint


search_for_studies = _endpoint(Level.STUDY)
search_for_series = _endpoint(Level.SERIES)
search_for_instances = _endpoint(Level.INSTANCE)
