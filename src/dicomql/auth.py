"""Request authentication as ``httpx.Auth`` flows: a static bearer token, and google-auth
credentials that refresh before they expire and once more after a 401."""

from __future__ import annotations

import threading
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from dicomql.errors import OperationalError

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

# The scope Cloud Healthcare API calls need (Google's API reference lists cloud-healthcare
# and cloud-platform; cloud-platform is what gcloud's ADC carries).
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer <token>`` on every request (``dicomql serve --auth-token``)."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


class GoogleAuth(httpx.Auth):
    """Google credentials (service account, user, ADC) as an httpx auth flow.

    The token is refreshed when google-auth says it is no longer valid (expired, or about to
    be), and once more when the API answers 401 — a token revoked or rotated early — after which
    the request is sent again. Token refreshes go through ``refresh_http`` so that a test can
    serve them from the same fake transport as the API.
    """

    requires_request_body = True

    def __init__(self, credentials: Credentials, refresh_http: httpx.Client | None = None) -> None:
        self.credentials = credentials
        self._refresh_http = refresh_http
        self._lock = threading.Lock()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self._apply(request, force_refresh=False)
        response = yield request
        if response.status_code == 401:
            response.read()
            try:
                self._apply(request, force_refresh=True)
            except OperationalError:
                return  # the 401 stands; the client reports it as UNAUTHENTICATED
            yield request

    def _apply(self, request: httpx.Request, *, force_refresh: bool) -> None:
        with self._lock:
            if force_refresh or not self.credentials.valid:
                self._refresh()
            headers: dict[str, str] = {}
            self.credentials.apply(headers)
        request.headers.update(headers)

    def _refresh(self) -> None:
        import google.auth.exceptions

        try:
            self.credentials.refresh(_RefreshRequest(self._http()))
        except google.auth.exceptions.GoogleAuthError as exc:
            raise OperationalError(f"could not refresh Google credentials: {exc}") from exc

    def _http(self) -> httpx.Client:
        if self._refresh_http is None:
            self._refresh_http = httpx.Client(timeout=30)
        return self._refresh_http

    def close(self) -> None:
        if self._refresh_http is not None:
            self._refresh_http.close()


class _RefreshResponse:
    """google.auth.transport.Response over an httpx response."""

    def __init__(self, response: httpx.Response) -> None:
        self.status = response.status_code
        self.headers = dict(response.headers)
        self.data = response.content


class _RefreshRequest:
    """google.auth.transport.Request over httpx, so token refreshes need no extra HTTP library.

    google-auth calls it as ``request(url, method, body, headers, timeout)`` and expects
    ``status``, ``headers`` and ``data`` back; failures must be ``TransportError``.
    """

    def __init__(self, http: httpx.Client) -> None:
        self._http = http

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> _RefreshResponse:
        import google.auth.exceptions

        try:
            response = self._http.request(
                method, url, content=body, headers=headers, timeout=timeout or 30
            )
        except httpx.HTTPError as exc:
            raise google.auth.exceptions.TransportError(str(exc)) from exc
        return _RefreshResponse(response)


def load_google_credentials(path: str | None) -> Credentials:
    """Credentials from a key file (service-account or authorized-user JSON), or ADC.

    Raises:
        OperationalError: no credentials were found, or the file is not a credentials file.
    """
    import google.auth
    import google.auth.exceptions

    try:
        if path is not None:
            credentials, _ = google.auth.load_credentials_from_file(
                path, scopes=[CLOUD_PLATFORM_SCOPE]
            )
        else:
            credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    except google.auth.exceptions.GoogleAuthError as exc:
        where = f"from {path}" if path else "(Application Default Credentials)"
        raise OperationalError(f"could not load Google credentials {where}: {exc}") from exc
    return credentials
