"""Backends: the one ``httpx.Client`` a connection talks through — the embedded service in this
process, any Cloud Healthcare API endpoint (``dicomql serve``), or Google's."""

from __future__ import annotations

import threading

import httpx

from dicomql._version import __version__
from dicomql.auth import BearerAuth, GoogleAuth, load_google_credentials
from dicomql.config import EMBEDDED, GOOGLE, ConnectionConfig

EMBEDDED_BASE_URL = "http://embedded"
USER_AGENT = f"dicomql/{__version__}"


class LazyTransport(httpx.BaseTransport):
    """Builds the embedded service on the first request.

    Opening the service (index, recovery, workers) costs far more than a statement that needs
    no API call (SHOW, DESCRIBE); this keeps those, and ``dicomql exec`` start-up, fast.
    """

    def __init__(self, config: ConnectionConfig) -> None:
        self._config = config
        self._transport: httpx.BaseTransport | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _open(self) -> httpx.BaseTransport:
        with self._lock:
            if self._closed:
                raise RuntimeError("the embedded service was closed")
            if self._transport is None:
                from dicomql.provider.transports import InProcessTransport
                from dicomql.service.app import create_app
                from dicomql.service.config import ServiceConfig

                assert self._config.data_dir is not None  # ConnectionConfig checks it
                service_config = ServiceConfig(
                    data_dir=self._config.data_dir,
                    database_url=self._config.database_url,
                    conformance=self._config.conformance,
                    import_roots=self._config.import_roots,
                    blob_url=self._config.blob_url,
                    workers=self._config.workers,
                    endpoints=self._config.endpoints,
                )
                self._transport = InProcessTransport(create_app(service_config))
            return self._transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        transport = self._transport or self._open()
        return transport.handle_request(request)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._transport is not None:
                self._transport.close()


def open_http(
    config: ConnectionConfig, *, transport: httpx.BaseTransport | None = None
) -> httpx.Client:
    """The HTTP client for ``config``'s backend; the caller closes it.

    Args:
        config: which backend, and how to authenticate to it.
        transport: answer requests with this transport instead (Google's token endpoint too);
            tests use it to record what would be sent to Google.

    Raises:
        OperationalError: Google credentials could not be loaded.
    """
    headers = {"User-Agent": USER_AGENT}
    timeout = httpx.Timeout(config.timeout)
    if config.backend == EMBEDDED:
        return httpx.Client(
            transport=transport or LazyTransport(config),
            base_url=EMBEDDED_BASE_URL,
            headers=headers,
            timeout=timeout,
        )
    auth: httpx.Auth | None = None
    if config.backend == GOOGLE and not config.token:
        credentials = load_google_credentials(
            str(config.credentials) if config.credentials else None
        )
        refresh_http = httpx.Client(transport=transport, timeout=timeout) if transport else None
        auth = GoogleAuth(credentials, refresh_http)
    elif config.token:
        auth = BearerAuth(config.token)
    assert config.endpoint is not None  # ConnectionConfig checks it
    return httpx.Client(
        transport=transport,
        base_url=config.endpoint,
        auth=auth,
        headers=headers,
        timeout=timeout,
    )
