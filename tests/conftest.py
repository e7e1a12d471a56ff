"""Shared fixtures: the index backends (SQLite and PostgreSQL), the embedded service in-process,
and the same service behind a real uvicorn server on a loopback port."""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from dicomql.provider.transports import InProcessTransport
from dicomql.service.app import create_app
from dicomql.service.config import ServiceConfig
from dicomql.store.index import Index, sqlite_url
from tests.support.ids import set_id
from tests.support.ports import free_port


def pytest_make_parametrize_id(config: pytest.Config, val: object, argname: str) -> str | None:
    """Sets in test IDs are spelled sorted (tests.support.ids)."""
    if isinstance(val, (set, frozenset)):
        return set_id(val)
    return None


POSTGRES_URL = os.environ.get(
    "DICOMQL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _postgres_reachable() -> str | None:
    """None if PostgreSQL answers, else the reason it does not."""
    import psycopg

    try:
        with psycopg.connect(POSTGRES_URL.replace("+psycopg", ""), connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {POSTGRES_URL} is not reachable: {exc}".strip()


_POSTGRES_PROBLEM: list[str | None] = []


def postgres_problem() -> str | None:
    if not _POSTGRES_PROBLEM:
        _POSTGRES_PROBLEM.append(_postgres_reachable())
    return _POSTGRES_PROBLEM[0]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    problem = postgres_problem()
    if problem:
        pytest.skip(problem)
    import psycopg

    schema = f"dq_{secrets.token_hex(6)}"
    plain = POSTGRES_URL.replace("+psycopg", "")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """The index backend: None (SQLite in the data dir) or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def index_url(tmp_path: Path, database_url: str | None) -> str:
    """The index's URL on each backend, for tests that open it (or a second handle) themselves."""
    return database_url or sqlite_url(tmp_path)


@pytest.fixture
def index(index_url: str) -> Iterator[Index]:
    opened = Index.open(index_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def service_config(
    request: pytest.FixtureRequest, tmp_path: Path, database_url: str | None
) -> ServiceConfig:
    # Small instances are kept in the index by default (store/inline_blobs.py); a test about
    # blob files asks for every instance to be one.
    files_only = request.node.get_closest_marker("blob_files") is not None
    return ServiceConfig(
        data_dir=tmp_path / "data",
        database_url=database_url,
        import_roots=import_roots_for(tmp_path),
        inline_blob_bytes=0 if files_only else ServiceConfig.inline_blob_bytes,
    )


def import_roots_for(tmp_path: Path) -> tuple[Path, ...]:
    """The folders the tests' imports read from and exports write to: the test's own temporary
    folder and pydicom's test files (which tests import directly)."""
    import pydicom.data

    return (tmp_path, Path(pydicom.data.__file__).parent)


@pytest.fixture
def embedded(service_config: ServiceConfig) -> Iterator[httpx.Client]:
    """An httpx client answered by the embedded service in this process."""
    transport = InProcessTransport(create_app(service_config))
    with httpx.Client(transport=transport, base_url="http://embedded") as client:
        yield client


class LiveServer:
    """The service on a real uvicorn server in a background thread, on a loopback port."""

    def __init__(self, config: ServiceConfig) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # As `dicomql serve --host 127.0.0.1` configures it (Host allow-list, forwarded headers).
        self.config = replace(config, bind_host="127.0.0.1")
        self._server = uvicorn.Server(
            uvicorn.Config(
                create_app(self.config),
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                access_log=False,
                lifespan="on",
                proxy_headers=False,
            )
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


@pytest.fixture
def live_server(service_config: ServiceConfig) -> Iterator[LiveServer]:
    server = LiveServer(service_config).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_live_server() -> Iterator[Callable[[ServiceConfig], LiveServer]]:
    """Start live servers with configurations of the test's choosing; all stop afterwards."""
    servers: list[LiveServer] = []

    def start(config: ServiceConfig) -> LiveServer:
        servers.append(LiveServer(config).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    """An httpx client of the live server."""
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        yield client


@pytest.fixture
def healthcare(live_server: LiveServer) -> Iterator[Any]:
    """google-api-python-client's Cloud Healthcare v1 service, pointed at the live server.

    Built from the discovery document bundled with the client (static_discovery: no network).
    """
    import google.auth.credentials
    import googleapiclient.discovery

    service = googleapiclient.discovery.build(
        "healthcare",
        "v1",
        client_options={"api_endpoint": live_server.url},
        credentials=google.auth.credentials.AnonymousCredentials(),
        static_discovery=True,
    )
    with service:  # closes its httplib2 connections
        yield service
