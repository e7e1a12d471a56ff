"""``dicomql serve --viewer``: the OHIF viewer at /viewer/, on the API's own origin.

- ``/viewer/app-config.js`` is generated for each request from the index: one OHIF DICOMweb data
  source per DICOM store (or the one ``--viewer-store`` names), so a store created while the
  server runs shows up at the next page load.
- Any other path under /viewer/ is a file of the installed build, or, when it names no file
  (``/viewer/viewer?StudyInstanceUIDs=…``: a route of OHIF's single-page app), its index.html.
- With a token (``--auth-token``) the browser cannot add ``Authorization`` to a navigation, a
  script tag or OHIF's requests. ``/viewer/login`` takes the token once and sets a session cookie
  (HttpOnly, SameSite=Strict) holding an HMAC of it; :class:`ViewerSessionMiddleware` treats that
  cookie as the bearer token on requests the browser marks ``Sec-Fetch-Site: same-origin``, and
  on no other (a page on another origin or port of the same site cannot use it). OHIF's build
  itself is public code and served without a token; the stores' names (in app-config.js) and
  their data are not.

docs/viewer.md says what a user does and why.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import mimetypes
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from dicomql.service.config import ServiceConfig
from dicomql.service.context import service_of
from dicomql.service.errors import InvalidArgument, NotFound, Unauthenticated
from dicomql.service.security import public_origin
from dicomql.store import resources as store
from dicomql.store.names import dicom_store_name, dicomweb_name
from dicomql.viewer.dist import BASE_PATH

PREFIX = BASE_PATH.rstrip("/")  # "/viewer"
COOKIE = "dicomql_viewer"
# OHIF lists its data sources in a menu; past this many, name one with --viewer-store.
MAX_DATA_SOURCES = 500
_MAX_LOGIN_BODY = 8192
_MEDIA_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".wasm": "application/wasm",
    ".css": "text/css",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".woff2": "font/woff2",
}


def routes(config: ServiceConfig) -> list[BaseRoute]:
    """The viewer's routes, or none without ``--viewer``."""
    if config.viewer is None:
        return []
    return [
        Route(PREFIX, _to_viewer, methods=["GET", "HEAD"]),
        Mount(
            PREFIX,
            routes=[
                Route("/app-config.js", app_config, methods=["GET", "HEAD"]),
                Route("/login", login, methods=["GET", "POST"]),
                Route("/logout", logout, methods=["POST"]),
                Route("/{path:path}", asset, methods=["GET", "HEAD"]),
            ],
        ),
    ]


def is_viewer_path(path: str) -> bool:
    """Whether a request path is the viewer's (which checks the token itself, as it must let the
    public build and the login page through)."""
    return path == PREFIX or path.startswith(BASE_PATH)


def session_value(token: str) -> str:
    """The cookie's value: an HMAC of the token, so the cookie is not the token itself (it
    still grants what the token grants, to same-origin requests)."""
    return hmac.new(token.encode(), b"dicomql viewer session v1", hashlib.sha256).hexdigest()


class ViewerSessionMiddleware:
    """Turn the viewer's session cookie into the bearer token, for same-origin requests only.

    Runs before authentication and the audit log, which then see the request as one carrying
    the token. ``Sec-Fetch-Site`` is set by the browser and cannot be set by a page; a request
    from another origin, or from a browser that does not send it, gets nothing from the cookie.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.cookie = session_value(token).encode()
        self.authorization = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers: list[tuple[bytes, bytes]] = scope["headers"]
            names = {name for name, _ in headers}
            if (
                b"authorization" not in names
                and (b"sec-fetch-site", b"same-origin") in headers
                and self._has_session(headers)
            ):
                scope = {**scope, "headers": [*headers, (b"authorization", self.authorization)]}
        await self.app(scope, receive, send)

    def _has_session(self, headers: list[tuple[bytes, bytes]]) -> bool:
        return any(
            hmac.compare_digest(value, self.cookie)
            for name, header in headers
            if name == b"cookie"
            for value in _cookie_values(header, COOKIE.encode())
        )


def _cookie_values(header: bytes, name: bytes) -> list[bytes]:
    values = []
    for pair in header.split(b";"):
        key, equals, value = pair.strip().partition(b"=")
        if equals and key == name:
            values.append(value.strip())
    return values


def _authorized(request: Request) -> bool:
    token = service_of(request).config.auth_token
    if token is None:
        return True
    supplied = request.headers.get("authorization", "").encode()
    return hmac.compare_digest(supplied, f"Bearer {token}".encode())


def _has_session(request: Request) -> bool:
    """A session cookie or the token: enough to be shown the viewer rather than the login page
    (the page itself is public; its data still needs a same-origin request)."""
    token = service_of(request).config.auth_token
    if token is None or _authorized(request):
        return True
    value = request.cookies.get(COOKIE, "").encode()
    return hmac.compare_digest(value, session_value(token).encode())


async def _to_viewer(request: Request) -> Response:
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(BASE_PATH + query, status_code=307)


async def asset(request: Request) -> Response:
    """A file of the build, else (a path naming no file, an OHIF route) its index.html."""
    folder = _folder(request)
    relative = request.path_params["path"]
    parts = [part for part in relative.split("/") if part]
    if any(part in (".", "..") or "\\" in part or "\x00" in part for part in parts):
        raise NotFound("No such file in the viewer.")
    if parts:
        candidate = folder.joinpath(*parts)
        if candidate.is_file() and candidate.resolve().is_relative_to(folder.resolve()):
            return FileResponse(candidate, media_type=_media_type(candidate))
        if "." in parts[-1]:
            # A missing script or image: a 404, not the page (which a browser would run as JS).
            raise NotFound(f"No file {relative} in the viewer.")
    if not _has_session(request):
        target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        return RedirectResponse(f"{BASE_PATH}login?next={target}", status_code=303)
    return FileResponse(
        folder / "index.html",
        media_type="text/html; charset=utf-8",
        headers={"Cache-Control": "no-cache"},
    )


def _folder(request: Request) -> Path:
    settings = service_of(request).config.viewer
    assert settings is not None  # the routes exist only with --viewer
    return settings.folder


def _media_type(path: Path) -> str:
    return (
        _MEDIA_TYPES.get(path.suffix)
        or mimetypes.guess_type(path.name)[0]
        or "application/octet-stream"
    )


async def app_config(request: Request) -> Response:
    """OHIF's ``window.config``: a DICOMweb data source per DICOM store."""
    if not _authorized(request):
        raise Unauthenticated(
            f"Sign in to the viewer at {BASE_PATH}login, or send the bearer token."
        )
    service = service_of(request)
    chosen = service.config.viewer.store if service.config.viewer else None

    def read() -> list[tuple[str, str, str, str]]:
        with service.index.connect() as conn:
            return store.all_dicom_store_names(conn, MAX_DATA_SOURCES)

    if chosen is not None:
        parts = chosen.strip("/").split("/")
        names = [(parts[1], parts[3], parts[5], parts[7])]
    else:
        names = await to_thread.run_sync(read)
    config = viewer_config(public_origin(request), names)
    body = "/* Generated by dicomql serve --viewer for this server's DICOM stores. */\n"
    body += f"window.config = {json.dumps(config, indent=2)};\n"
    return Response(
        body, media_type="text/javascript; charset=utf-8", headers={"Cache-Control": "no-store"}
    )


def viewer_config(origin: str, stores: list[tuple[str, str, str, str]]) -> dict[str, Any]:
    """OHIF's configuration for these stores, whose DICOMweb roots are under ``origin``.

    >>> config = viewer_config("http://127.0.0.1:8080", [("p", "l", "d", "s")])
    >>> source = config["dataSources"][0]
    >>> source["sourceName"], source["configuration"]["qidoRoot"]
    ('p:l:d:s', 'http://127.0.0.1:8080/v1/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb')
    """
    projects = {(project, location) for project, location, _, _ in stores}
    sources = []
    for project, location, dataset, dicom_store in stores:
        name = dicom_store_name(project, location, dataset, dicom_store)
        root = f"{origin}/v1/{dicomweb_name(name)}"
        friendly = f"{dataset}/{dicom_store}"
        if len(projects) > 1:
            friendly = f"{project}/{location}/{friendly}"
        sources.append(
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": f"{project}:{location}:{dataset}:{dicom_store}",
                "configuration": {
                    "friendlyName": friendly,
                    "name": "dicomql",
                    "wadoUriRoot": root,
                    "qidoRoot": root,
                    "wadoRoot": root,
                    "qidoSupportsIncludeField": True,
                    "imageRendering": "wadors",
                    "thumbnailRendering": "wadors",
                    "enableStudyLazyLoad": True,
                    "supportsFuzzyMatching": True,
                    "supportsWildcard": True,
                    "staticWado": False,
                    "singlepart": "bulkdata,video",
                    "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
                    "omitQuotationForMultipartRequest": True,
                },
            }
        )
    return {
        "routerBasename": PREFIX,
        "showStudyList": True,
        "extensions": [],
        "modes": [],
        "customizationService": {},
        # The same origin as the API: there is no cross-origin isolation to warn about.
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "investigationalUseDialog": {"option": "never"},
        "strictZSpacingForVolumeViewport": True,
        "maxNumberOfWebWorkers": 3,
        "maxNumRequests": {"interaction": 100, "thumbnail": 75, "prefetch": 25},
        "defaultDataSourceName": sources[0]["sourceName"] if sources else None,
        "dataSources": sources,
    }


async def login(request: Request) -> Response:
    """Take the server's token once and keep it as a same-origin session cookie."""
    token = service_of(request).config.auth_token
    target = _safe_next(request.query_params.get("next", BASE_PATH))
    if token is None:
        return RedirectResponse(target, status_code=303)
    if request.method == "GET":
        return _login_page(target, None)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_LOGIN_BODY:
            raise InvalidArgument("The sign-in form is too large.")
    fields = parse_qs(body.decode("utf-8", "replace"))
    supplied = (fields.get("token") or [""])[0].strip()
    target = _safe_next((fields.get("next") or [target])[0])
    if not hmac.compare_digest(supplied.encode(), token.encode()):
        return _login_page(target, "That is not this server's token.", status=401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        session_value(token),
        path="/",
        httponly=True,
        samesite="strict",
        secure=public_origin(request).startswith("https:"),
    )
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse(f"{BASE_PATH}login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


def _safe_next(target: str) -> str:
    """Only a path of the viewer, never another site (``//evil``, ``/\\evil``)."""
    if target.startswith(BASE_PATH) and "\\" not in target and not target.startswith("//"):
        return target
    return BASE_PATH


def _login_page(target: str, problem: str | None, status: int = 200) -> HTMLResponse:
    note = f'<p class="problem">{html.escape(problem)}</p>' if problem else ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dicomql viewer: sign in</title>
<style>body{{font-family:sans-serif;background:#090c29;color:#eee;display:grid;
place-items:center;height:100vh;margin:0}}form{{display:grid;gap:.6em;min-width:18em}}
input{{padding:.5em;font-size:1em}}.problem{{color:#f88}}</style></head>
<body><form method="post" action="{BASE_PATH}login">
<h1>dicomql viewer</h1>{note}
<input type="text" name="username" value="dicomql" autocomplete="username" hidden>
<label for="token">This server's token (--auth-token)</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus>
<input type="hidden" name="next" value="{html.escape(target)}">
<button type="submit">Open the viewer</button>
</form></body></html>
"""
    return HTMLResponse(
        page,
        status_code=status,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "form-action 'self'; frame-ancestors 'none'",
        },
    )
