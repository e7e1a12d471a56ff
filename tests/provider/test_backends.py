"""Backends: what reaches Google (recorded), ``dicomql serve`` over loopback with and without a
token, and the embedded service; and how a connection's configuration is resolved.

Google's cloud is faked with a recording ``httpx.MockTransport`` (the one thing that may be
faked); the credentials are a real service-account key generated in the test, whose token
refresh the same transport serves.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

import dicomql
from dicomql.config import GOOGLE_ENDPOINT, ConnectionConfig
from dicomql.dbapi import Connection
from dicomql.errors import ApiError, InterfaceError
from dicomql.provider.backends import open_http
from dicomql.service.config import ServiceConfig
from tests.support.google_double import TOKEN_URI, GoogleDouble, google_error, service_account_key

STORE = "v1/projects/my-project/locations/us-central1/datasets/ds/dicomStores"
WHERE = "projectsId = 'my-project' AND locationsId = 'us-central1' AND datasetsId = 'ds'"


def fake_google_api(request: httpx.Request) -> httpx.Response:
    path = request.url.path.lstrip("/")
    if request.method == "GET" and path == f"{STORE}/st":
        return httpx.Response(200, json={"name": path[3:], "labels": {"env": "prod"}})
    if request.method == "POST" and path == STORE:
        name = f"{path[3:]}/{request.url.params['dicomStoreId']}"
        return httpx.Response(200, json={"name": name, **json.loads(request.content)})
    if request.method == "GET" and path == f"{STORE}/st/dicomWeb/studies":
        study = {"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}
        return httpx.Response(200, json=[study], headers={"Content-Type": "application/dicom+json"})
    return google_error(404, "NOT_FOUND", f"no {path}")


def google_connection(tmp_path: Path, double: GoogleDouble) -> Connection:
    key = service_account_key(tmp_path / "key.json")
    config = ConnectionConfig.build(backend="google", credentials=key)
    return Connection(config, http=open_http(config, transport=double.transport))


def test_google_backend_sends_authorized_requests_to_the_healthcare_api(tmp_path: Path) -> None:
    double = GoogleDouble(fake_google_api)
    with google_connection(tmp_path, double) as connection:
        cursor = connection.cursor()
        cursor.execute(
            f"SELECT name, labels FROM google.healthcare.dicom_stores WHERE {WHERE} "
            "AND dicomStoresId = 'st'"
        )
        assert cursor.fetchall() == [
            (f"{STORE[3:]}/st", '{"env": "prod"}'),
        ]
        cursor.execute(
            "INSERT INTO google.healthcare.dicom_stores (data__labels, projectsId, locationsId, "
            "datasetsId, dicomStoreId) SELECT '{\"env\": \"dev\"}', 'my-project', "
            "'us-central1', 'ds', 'st2'"
        )

    assert [str(r.url) for r in double.token_requests] == [TOKEN_URI]
    get, post = double.api_requests
    assert get.method == "GET"
    assert str(get.url) == f"{GOOGLE_ENDPOINT}{STORE}/st"
    assert get.headers["Authorization"] == "Bearer ya29.first"
    assert get.content == b""
    assert get.headers["User-Agent"] == f"dicomql/{dicomql.__version__}"
    assert post.method == "POST"
    assert str(post.url) == f"{GOOGLE_ENDPOINT}{STORE}?dicomStoreId=st2"
    assert post.headers["Authorization"] == "Bearer ya29.first"
    assert post.headers["Content-Type"] == "application/json"
    assert json.loads(post.content) == {"labels": {"env": "dev"}}


def test_google_backend_sends_dicomweb_searches_as_qido_requests(tmp_path: Path) -> None:
    double = GoogleDouble(fake_google_api)
    with google_connection(tmp_path, double) as connection:
        cursor = connection.execute(
            "EXEC google.healthcare.dicom_stores.search_for_studies @projectsId='my-project', "
            "@locationsId='us-central1', @datasetsId='ds', @dicomStoresId='st', "
            "@PatientID='PAT 1', @limit=5"
        )
        assert cursor.fetchall() == [("1.2.3",)]
    (search,) = double.api_requests
    assert search.method == "GET"
    assert search.url.copy_with(query=None) == f"{GOOGLE_ENDPOINT}{STORE}/st/dicomWeb/studies"
    assert list(search.url.params.multi_items()) == [("PatientID", "PAT 1"), ("limit", "5")]
    assert search.headers["Accept"] == "application/dicom+json"
    assert search.headers["Authorization"] == "Bearer ya29.first"


def test_google_backend_retries_once_after_401_with_a_fresh_token(tmp_path: Path) -> None:
    answers = [google_error(401, "UNAUTHENTICATED", "revoked")]

    def api(request: httpx.Request) -> httpx.Response:
        return answers.pop(0) if answers else fake_google_api(request)

    double = GoogleDouble(api)
    with google_connection(tmp_path, double) as connection:
        cursor = connection.execute(
            f"SELECT name FROM google.healthcare.dicom_stores WHERE {WHERE} "
            "AND dicomStoresId = 'st'"
        )
        assert cursor.rowcount == 1
    assert [r.headers["Authorization"] for r in double.api_requests] == [
        "Bearer ya29.first",
        "Bearer ya29.second",
    ]


def test_google_errors_surface_as_api_errors_with_googles_status(tmp_path: Path) -> None:
    double = GoogleDouble(
        lambda request: google_error(403, "PERMISSION_DENIED", "healthcare.dicomStores.get")
    )
    with google_connection(tmp_path, double) as connection, pytest.raises(ApiError) as caught:
        connection.execute(
            f"SELECT name FROM google.healthcare.dicom_stores WHERE {WHERE} "
            "AND dicomStoresId = 'st'"
        )
    assert (caught.value.code, caught.value.status) == (403, "PERMISSION_DENIED")


@pytest.fixture
def service_config(tmp_path: Path) -> ServiceConfig:
    """The live server of these tests demands a token."""
    return ServiceConfig(data_dir=tmp_path / "served", auth_token="s3cret")


def test_endpoint_backend_with_the_right_token_reaches_the_server(live_server: Any) -> None:
    with dicomql.connect(endpoint=live_server.url, token="s3cret") as connection:
        connection.execute(
            "INSERT /*+ AWAIT */ INTO google.healthcare.datasets "
            "(projectsId, locationsId, datasetId) SELECT 'p', 'us', 'ds'"
        )
        cursor = connection.execute(
            "SELECT name FROM google.healthcare.datasets WHERE projectsId='p' AND locationsId='us'"
        )
        assert cursor.fetchall() == [("projects/p/locations/us/datasets/ds",)]


def test_endpoint_backend_with_a_wrong_token_is_unauthenticated(live_server: Any) -> None:
    with (
        dicomql.connect(endpoint=live_server.url, token="wrong") as connection,
        pytest.raises(ApiError) as caught,
    ):
        connection.execute(
            "SELECT name FROM google.healthcare.datasets WHERE projectsId='p' AND locationsId='us'"
        )
    assert (caught.value.code, caught.value.status) == (401, "UNAUTHENTICATED")


def closed_port_url() -> str:
    """A loopback URL on which nothing listens (the port is bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_unreachable_endpoint_is_a_transport_error() -> None:
    with (
        dicomql.connect(endpoint=closed_port_url()) as connection,
        pytest.raises(dicomql.TransportError),
    ):
        connection.execute(
            "SELECT name FROM google.healthcare.datasets WHERE projectsId='p' AND locationsId='us'"
        )


def test_embedded_backend_creates_its_data_dir_on_first_api_call(tmp_path: Path) -> None:
    config = ConnectionConfig.build(data_dir=tmp_path / "data")
    with open_http(config) as http:
        assert not (tmp_path / "data").exists()
        response = http.get("/v1/projects/p/locations/us/datasets")
        assert response.status_code == 200
        assert (tmp_path / "data" / "index.sqlite3").exists()


def test_config_resolves_the_backend_from_what_is_given(tmp_path: Path) -> None:
    empty: dict[str, str] = {}
    assert (
        ConnectionConfig.build(environ=empty).data_dir
        == Path("~/.local/share/dicomql").expanduser()
    )
    env = {"DICOMQL_DATA_DIR": str(tmp_path)}
    assert ConnectionConfig.build(environ=env).data_dir == tmp_path
    env = {"DICOMQL_ENDPOINT": "http://127.0.0.1:9", "DICOMQL_TOKEN": "t"}
    config = ConnectionConfig.build(environ=env)
    assert (config.backend, config.endpoint, config.token) == (
        "endpoint",
        "http://127.0.0.1:9",
        "t",
    )
    # An explicit data dir wins over an endpoint in the environment.
    assert ConnectionConfig.build(data_dir=tmp_path, environ=env).backend == "embedded"
    google = ConnectionConfig.build(backend="google", environ=empty)
    assert (google.backend, google.endpoint) == ("google", GOOGLE_ENDPOINT)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data_dir": "d", "endpoint": "http://x"},
        {"data_dir": "d", "token": "t"},
        {"endpoint": "http://x", "credentials": "k.json"},
        {"backend": "aws"},
        {"page_limit": 0},
    ],
)
def test_contradictory_settings_are_interface_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(InterfaceError):
        ConnectionConfig.build(environ={}, **kwargs)  # type: ignore[arg-type]
