"""Access: every route demands the bearer token when one is set, ``dicomql serve`` will not listen
beyond loopback without one, and SQL template values cannot change a statement's meaning."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from starlette.routing import BaseRoute, Mount, Route

from dicomql.cli import main
from dicomql.provider.client import Client
from dicomql.provider.transports import InProcessTransport
from dicomql.service.app import create_app
from dicomql.service.config import ServiceConfig
from dicomql.service.routes import routes
from dicomql.sql.engine import Engine
from tests.support.reliability import DICOMQL, LOCATION, free_port

TOKEN = "s3cret-token"
SAMPLE = {
    "project": "p",
    "location": "l",
    "dataset": "d",
    "dicom_store": "s",
    "operation": "1",
    "study": "1.2.3",
    "series": "1.2.3.4",
    "instance": "1.2.3.4.5",
    "frames": "1",
    "frame": "1",
    "path": "00100010",
}


def _walk(route_list: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, concrete path) of every route, through Mounts recursively."""
    for route in route_list:
        if isinstance(route, Mount):
            yield from _walk(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            path = re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: SAMPLE[m.group(1)], prefix + route.path)
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    yield method, path


ROUTES = sorted(set(_walk(routes)))


def _is_google_unauthenticated(response: httpx.Response) -> bool:
    error = response.json().get("error", {})
    return (
        response.status_code == 401
        and error.get("code") == 401
        and error.get("status") == "UNAUTHENTICATED"
        and bool(error.get("message"))
    )


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    config = ServiceConfig(data_dir=tmp_path_factory.mktemp("guarded") / "data", auth_token=TOKEN)
    transport = InProcessTransport(create_app(config))
    with httpx.Client(transport=transport, base_url="http://embedded") as client:
        yield client


def test_the_route_walk_covers_admin_dicomweb_and_operations() -> None:
    paths = {path for _, path in ROUTES}
    assert len(ROUTES) >= 35
    assert any(path.endswith("/dicomWeb/studies") for path in paths)
    assert any(path.endswith("/operations/1:cancel") for path in paths)
    assert any(path.endswith(":getDICOMStoreMetrics") for path in paths)


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_answers_401_in_googles_shape_without_the_token(
    guarded: httpx.Client, method: str, path: str
) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
        response = guarded.request(method, path, headers=headers, content=b"{}")
        assert _is_google_unauthenticated(response), (headers, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
    allowed = guarded.request(
        method, path, headers={"authorization": f"Bearer {TOKEN}"}, content=b"{}"
    )
    assert allowed.status_code != 401, allowed.text
    assert allowed.status_code < 500, allowed.text


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.org"])
def test_serve_refuses_a_non_loopback_address_without_a_token(host: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["serve", "--host", host, "--data-dir", str(tmp_path)],
        env={"DICOMQL_AUTH_TOKEN": None},
    )
    assert result.exit_code == 2
    assert "refusing to serve" in result.output
    assert not (tmp_path / "index.sqlite3").exists()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["flag", "file", "environment"])
def test_serve_on_all_interfaces_with_a_token_requires_it(how: str, tmp_path: Path) -> None:
    port = free_port()
    command = [str(DICOMQL), "serve", "--host", "0.0.0.0", "--port", str(port)]
    command += ["--data-dir", str(tmp_path / "data")]
    env = {k: v for k, v in os.environ.items() if k != "DICOMQL_AUTH_TOKEN"}
    if how == "flag":
        command += ["--auth-token", TOKEN]
    elif how == "file":
        (tmp_path / "token").write_text(TOKEN + "\n")
        command += ["--auth-token-file", str(tmp_path / "token")]
    else:
        env["DICOMQL_AUTH_TOKEN"] = TOKEN
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, "dicomql serve exited"
                try:
                    response = client.get(LOCATION)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            assert _is_google_unauthenticated(response)
            authorized = client.get(LOCATION, headers={"authorization": f"Bearer {TOKEN}"})
            assert authorized.status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)


# --- SQL templating -------------------------------------------------------------------------

HOSTILE = ["' OR 1=1 --", "'); DROP TABLE dicom_stores; --", "x' UNION SELECT 1 --", "a\\'b"]


@pytest.fixture
def engine(embedded: httpx.Client) -> Engine:
    return Engine(Client(embedded))


@pytest.mark.parametrize("value", HOSTILE)
def test_a_template_value_stays_one_literal_value(engine: Engine, value: str) -> None:
    scope = {"p": "p", "l": "l"}
    engine.execute(
        "INSERT /*+ AWAIT */ INTO google.healthcare.datasets (projectsId, locationsId, datasetId)"
        " SELECT '{{ p }}', '{{ l }}', 'ds'",
        variables=scope,
    )
    for store in ("a", "b"):
        engine.execute(
            "INSERT INTO google.healthcare.dicom_stores (projectsId, locationsId, datasetsId,"
            " dicomStoreId) SELECT '{{ p }}', '{{ l }}', 'ds', '{{ s }}'",
            variables={**scope, "s": store},
        )
    select = (
        "SELECT name FROM google.healthcare.dicom_stores WHERE projectsId = '{{ p }}'"
        " AND locationsId = '{{ l }}' AND datasetsId = 'ds' AND name = '{{ v }}'"
    )
    result = engine.execute(select, variables={**scope, "v": value})
    assert list(result.rows) == []  # the value is compared, not executed: nothing matches
    # Unquoted placeholders become quoted literals too.
    unquoted = select.replace("'{{ v }}'", "{{ v }}")
    assert list(engine.execute(unquoted, variables={**scope, "v": value}).rows) == []
    everything = engine.execute(
        "SELECT name FROM google.healthcare.dicom_stores WHERE projectsId = 'p'"
        " AND locationsId = 'l' AND datasetsId = 'ds'"
    )
    assert len(list(everything.rows)) == 2  # nothing was dropped
