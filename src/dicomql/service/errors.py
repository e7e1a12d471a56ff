"""Service errors, each declaring its HTTP code and google.rpc.Code name at class level.

One exception handler (registered on :class:`ServiceError`) renders every subclass as Google's
envelope ``{"error": {"code": 404, "message": "...", "status": "NOT_FOUND"}}``.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route

from dicomql.google_api import error_body, status_of_http

log = logging.getLogger("dicomql.service")


class ServiceError(Exception):
    code: int = 500
    status: str = "INTERNAL"

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidArgument(ServiceError):
    code, status = 400, "INVALID_ARGUMENT"


class FailedPrecondition(ServiceError):
    code, status = 400, "FAILED_PRECONDITION"


class OutOfRange(ServiceError):
    code, status = 400, "OUT_OF_RANGE"


class Unauthenticated(ServiceError):
    code, status = 401, "UNAUTHENTICATED"


class PermissionDenied(ServiceError):
    code, status = 403, "PERMISSION_DENIED"


class NotFound(ServiceError):
    code, status = 404, "NOT_FOUND"


class AlreadyExists(ServiceError):
    code, status = 409, "ALREADY_EXISTS"


class Aborted(ServiceError):
    code, status = 409, "ABORTED"


class NotAcceptable(ServiceError):
    # DICOMweb (PS3.18 8.7): no acceptable media type or transfer syntax. google.rpc has no
    # 406 code; Cloud Healthcare reports these as FAILED_PRECONDITION with HTTP 406.
    code, status = 406, "FAILED_PRECONDITION"


class PayloadTooLarge(ServiceError):
    code, status = 413, "INVALID_ARGUMENT"


class UnsupportedMediaType(ServiceError):
    code, status = 415, "INVALID_ARGUMENT"


class ResourceExhausted(ServiceError):
    code, status = 429, "RESOURCE_EXHAUSTED"


class InsufficientStorage(ServiceError):
    # RFC 4918 11.5: the server cannot store what the request needs. Used for a STOW refused
    # whole below the free-space floor (docs/reliability.md, "Full disk").
    code, status = 507, "RESOURCE_EXHAUSTED"


class Cancelled(ServiceError):
    code, status = 499, "CANCELLED"


class Unimplemented(ServiceError):
    code, status = 501, "UNIMPLEMENTED"


class Unavailable(ServiceError):
    code, status = 503, "UNAVAILABLE"


class DeadlineExceeded(ServiceError):
    code, status = 504, "DEADLINE_EXCEEDED"


def error_response(error: ServiceError) -> JSONResponse:
    return JSONResponse(
        error_body(error.code, error.status, error.message, error.details), status_code=error.code
    )


async def handle_service_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return error_response(exc)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = status_of_http(exc.status_code)
    if exc.status_code == 404:
        message = f"The requested URL {request.url.path} was not found on this server."
    elif exc.status_code == 405:
        message = f"Method {request.method} is not supported for {request.url.path}."
    else:
        message = str(exc.detail)
    headers = exc.headers
    if exc.status_code == 405:
        # Starlette names the methods of the first route whose path matched; RFC 9110 15.5.6
        # wants every method the resource serves (GET, HEAD and POST on /studies).
        allowed = _methods_for(request.app.router.routes, request.url.path)
        headers = {**(headers or {}), "Allow": ", ".join(sorted(allowed))}
    return JSONResponse(
        error_body(exc.status_code, status, message), status_code=exc.status_code, headers=headers
    )


def _methods_for(routes: list[BaseRoute], path: str, root_path: str = "") -> set[str]:
    """Every method some route serves at ``path``, through mounts."""
    methods: set[str] = set()
    scope = {"type": "http", "path": path, "root_path": root_path, "method": "OPTIONS"}
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.NONE:
            continue
        if isinstance(route, Mount):
            methods |= _methods_for(route.routes, path, child.get("root_path", root_path))
        elif isinstance(route, Route) and route.methods:
            methods |= route.methods
    return methods


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    # Imported here: this module is loaded before ``serve`` sets up prometheus-client's
    # multiprocess mode, which must precede prometheus-client's import (service.supervisor).
    from dicomql.service.prometheus import count_error

    count_error(exc)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        # The disk filled up under the free-space floor's nose (one huge instance): a clear
        # 507 and one log line, not a traceback per request.
        log.error("%s %s: no space left on device", request.method, request.url.path)
        return error_response(
            InsufficientStorage("Refused: out of resources. The server's disk is full.")
        )
    # A bug, not bad input: log it with its traceback and still answer in Google's shape.
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body(500, "INTERNAL", "Internal error encountered."), status_code=500)
