"""The API client: turns a registry method and its parameters into one HTTP request, and an
error response or transport failure into dicomql's errors (the only place that happens)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import httpx

from dicomql.errors import ApiError, ProgrammingError, TransportError
from dicomql.google_api import read_error, status_of_http
from dicomql.provider import paths
from dicomql.provider.registry import Method

_TEMPLATE_VARIABLE = re.compile(r"\{(\+?)([\w.]+)\}")


class Client:
    """Calls Cloud Healthcare API methods over one ``httpx.Client``.

    The transport decides who answers: Google, ``dicomql serve``, or the embedded service
    in-process. Everything above this class sees only dicomql errors.
    """

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    @property
    def base_url(self) -> str:
        return str(self.http.base_url)

    def call(
        self,
        method: Method,
        params: Mapping[str, Any],
        body: Any = None,
        *,
        content: bytes | Iterable[bytes] | None = None,
        content_type: str | None = None,
        accept: str | None = None,
        check: bool = True,
    ) -> httpx.Response:
        """Send one request for ``method`` and return its (successful) response.

        ``params`` holds the flat path parameters (``projectsId`` …) or the discovery ones
        (``name``, ``parent`` …), plus query parameters; anything else is sent as a query
        parameter too (DICOMweb search keys such as ``PatientID``). ``check=False`` returns
        an error response instead of raising (STOW answers 409 with a DICOM JSON body).

        Raises:
            ProgrammingError: a path parameter is missing, or its value could address another
                resource (``..``, ``/``, a character no resource ID has).
            ApiError: the API answered with an error status.
            TransportError: no answer (connection refused, timeout, TLS).
        """
        path, query = self.url_for(method, params)
        headers: dict[str, str] = {}
        if accept:
            headers["Accept"] = accept
        if content_type:
            headers["Content-Type"] = content_type
        request_content: bytes | Iterable[bytes] | None = content
        if content is None and body is not None:
            request_content = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        url = "/" + path
        with _translate_errors(method.http_method, url):
            response = self.http.request(
                method.http_method,
                url,
                params=tuple(query),  # httpx types its list form as list[tuple[str, Any]] only
                content=request_content,
                headers=headers,
            )
        if check and response.is_error:
            raise api_error(response)
        return response

    def url_for(
        self, method: Method, params: Mapping[str, Any]
    ) -> tuple[str, list[tuple[str, str]]]:
        """The request path (without leading slash) and query pairs for ``method``."""
        flat_names = [p.name for p in method.parameters.values() if p.location == "path"]
        if all(_given(params.get(name)) for name in flat_names):
            template, used = method.flat_path, set(flat_names)
        else:
            template = method.path
            used = {name for _, name in _TEMPLATE_VARIABLE.findall(template)}
            missing = [n for n in used if not _given(params.get(n))]
            if missing:
                # Name the flat (StackQL) spelling: that is what SQL users type.
                absent = [n for n in flat_names if not _given(params.get(n))]
                raise ProgrammingError(
                    f"missing required parameter {', '.join(absent or missing)} "
                    f"for {method.resource}.{method.name}"
                )

        method_id = f"{method.resource}.{method.name}"

        def expand(match: re.Match[str]) -> str:
            reserved, name = match.group(1), match.group(2)
            # RFC 6570: {+name} keeps the '/' of a resource name; {name} is one segment. Both
            # are checked so that no value can address another resource (provider/paths.py).
            if reserved:
                pattern = method.discovery_parameters.get(name, {}).get("pattern")
                return paths.reserved(method_id, name, params[name], pattern)
            return paths.segment(method_id, name, params[name])

        path = _TEMPLATE_VARIABLE.sub(expand, template)
        query: list[tuple[str, str]] = []
        for name, value in params.items():
            if name in used or not _given(value):
                continue
            for item in value if isinstance(value, list | tuple) else [value]:
                query.append((name, _query_value(item)))
        return path, query


def _given(value: Any) -> bool:
    # StackQL templates render an unset optional as '' — treat it as "not set".
    return value is not None and value != ""


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@contextlib.contextmanager
def _translate_errors(http_method: str, url: str) -> Iterator[None]:
    """httpx's exceptions become TransportError here and nowhere else."""
    try:
        yield
    except httpx.HTTPError as exc:
        raise TransportError(f"{http_method} {url}: {type(exc).__name__}: {exc}") from exc


def api_error(response: httpx.Response) -> ApiError:
    """An ApiError from an error response, whether or not its body is google.rpc.Status."""
    code = response.status_code
    status = status_of_http(code)
    message = response.reason_phrase or ""
    details: list[Any] = []
    try:
        payload = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        payload = None
    error = read_error(payload)
    if error is not None:
        status = error[0] or status
        message = error[1] or message
        details = error[2]
    elif isinstance(payload, dict | list):
        message = json.dumps(payload)[:500]
    elif response.content:
        message = response.text.strip()[:500] or message
    return ApiError(
        code,
        status,
        message,
        details=details,
        method=response.request.method,
        url=str(response.request.url),
    )
