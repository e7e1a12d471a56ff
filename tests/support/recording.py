"""Connections whose every request is recorded: to the embedded service in this process (the
real service answers), or to the Google double (Google's cloud is the one thing faked)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import httpx

from dicomql.config import ConnectionConfig
from dicomql.dbapi import Connection
from dicomql.provider.backends import LazyTransport, open_http
from tests.support.google_double import GoogleDouble


class RecordingTransport(httpx.BaseTransport):
    """Passes each request on to ``inner`` and keeps it."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def embedded_connection(data_dir: Path) -> tuple[Connection, RecordingTransport]:
    """A DB-API connection to the embedded service over ``data_dir``, recorded."""
    config = ConnectionConfig.build(data_dir=data_dir, environ={})
    recording = RecordingTransport(LazyTransport(config))
    return Connection(config, http=open_http(config, transport=recording)), recording


def google_connection(double: GoogleDouble) -> Connection:
    """A DB-API connection to Google's API (with a static token), answered by ``double``."""
    config = ConnectionConfig.build(backend="google", token="ya29.static", environ={})
    return Connection(config, http=open_http(config, transport=double.transport))


def segments(request: httpx.Request) -> list[str]:
    """The request's path as the server splits it: raw segments, each percent-decoded."""
    raw = request.url.raw_path.split(b"?", 1)[0].decode("ascii")
    return [unquote(piece) for piece in raw.lstrip("/").split("/")]


def instance_uids(connection: Connection, store: str) -> list[str]:
    """SOP Instance UIDs in the store that ``store`` names (``@projectsId='p', …``), by QIDO."""
    cursor = connection.execute(f"EXEC google.healthcare.dicom_stores.search_for_instances {store}")
    columns = [d[0] for d in cursor.description or []]
    if "SOPInstanceUID" not in columns:  # no instance, no columns
        return []
    return [row[columns.index("SOPInstanceUID")] for row in cursor.fetchall()]
