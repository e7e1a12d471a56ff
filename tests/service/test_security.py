"""The web trust boundary (docs/security.md): a Host allow-list against DNS rebinding, CORS only
for named origins, absolute URLs that a Host or forwarded header cannot steer, and one
Authorization header. Each test sends what an attacker would, to a real server on loopback."""

from __future__ import annotations

import doctest
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from click.testing import CliRunner

import dicomql.service.security
from dicomql.cli import main
from dicomql.provider.transports import InProcessTransport
from dicomql.service.app import create_app
from dicomql.service.config import ServiceConfig
from tests.support.dicomweb import DICOMWEB, STORE_PATH, create_store, make_instance, multipart

if TYPE_CHECKING:  # conftest names differ by folder: never imported at run time (tests/ports.py)
    from tests.conftest import LiveServer

DATASETS = "/v1/projects/p/locations/l/datasets"
PAGE_ORIGIN = "http://127.0.0.1:9"  # a web page on another loopback origin


@pytest.fixture
def database_url() -> None:
    """Nothing here depends on the index backend; SQLite is enough."""
    return None


Serve = Callable[..., "LiveServer"]


@pytest.fixture
def serve(tmp_path: Path, start_live_server: Callable[[ServiceConfig], LiveServer]) -> Serve:
    """Start a live server on 127.0.0.1 with store ``s`` and these ServiceConfig settings."""

    def start(**settings: Any) -> LiveServer:
        config = ServiceConfig(data_dir=tmp_path / "data", **settings)
        create_store(config)
        return start_live_server(config)

    return start


def stow(client: httpx.Client, **headers: str) -> httpx.Response:
    body, content_type = multipart([make_instance()])
    return client.post(
        f"{DICOMWEB}/studies",
        content=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json", **headers},
    )


def retrieve_url(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    (item,) = response.json()["00081199"]["Value"]
    url: str = item["00081190"]["Value"][0]
    return url


def test_security_doctests() -> None:
    failures, tried = doctest.testmod(dicomql.service.security)
    assert tried and not failures


# --- 1. Host allow-list (DNS rebinding) ----------------------------------------------------------


def test_a_rebound_host_name_is_refused_and_nothing_is_read_or_stored(serve: Serve) -> None:
    server = serve()
    with httpx.Client(base_url=server.url) as http:
        listing = http.get(DATASETS, headers={"Host": f"attacker.invalid:{server.port}"})
        assert listing.status_code == 403
        error = listing.json()["error"]
        assert error["status"] == "PERMISSION_DENIED"
        assert "--allowed-host" in error["message"]
        assert "datasets" not in listing.text
        stored = stow(http, Host="attacker.invalid:443")
        assert stored.status_code == 403
        assert http.get(f"{DICOMWEB}/instances").json() == []


@pytest.mark.parametrize("host", [":8080", "", "attacker.invalid", "127.0.0.1.nip.io", "[::2]"])
def test_hosts_that_do_not_name_the_loopback_server_are_refused(serve: Serve, host: str) -> None:
    server = serve()
    with httpx.Client(base_url=server.url) as http:
        response = http.get(DATASETS, headers={"Host": host})
    assert response.status_code == 403, host
    assert response.json()["error"]["code"] == 403


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost", "viewer.localhost", "LOCALHOST"])
def test_the_loopback_names_are_allowed(serve: Serve, name: str) -> None:
    server = serve()
    with httpx.Client(base_url=server.url) as http:
        response = http.get(DATASETS, headers={"Host": f"{name}:{server.port}"})
    assert response.status_code == 200, response.text


def test_allowed_host_lets_a_name_in_and_its_subdomains_with_a_wildcard(serve: Serve) -> None:
    server = serve(allowed_hosts=("pacs.example.org", "*.lab.example.org"))
    with httpx.Client(base_url=server.url) as http:
        for host in ("pacs.example.org", "ct.lab.example.org:8443", "localhost"):
            assert http.get(DATASETS, headers={"Host": host}).status_code == 200, host
        for host in ("example.org", "lab.example.org.attacker.invalid"):
            assert http.get(DATASETS, headers={"Host": host}).status_code == 403, host


@pytest.mark.parametrize(
    ("settings", "host", "status"),
    [
        # On a wider address the operator's names are unknown until given (Ollama, Jupyter).
        ({"bind_host": "0.0.0.0"}, "pacs.lan", 200),
        ({"bind_host": "0.0.0.0", "allowed_hosts": ("pacs.lan",)}, "pacs.lan", 200),
        ({"bind_host": "0.0.0.0", "allowed_hosts": ("pacs.lan",)}, "attacker.invalid", 403),
        ({"bind_host": "192.0.2.7", "allowed_hosts": ("pacs.lan",)}, "192.0.2.7:8080", 200),
        ({"bind_host": "::1"}, "[::1]:8080", 200),
        ({"bind_host": "::1"}, "attacker.invalid", 403),
        # The public URL's host is a name the server is served under.
        (
            {"bind_host": "127.0.0.1", "public_url": "https://dicom.example.org"},
            "dicom.example.org",
            200,
        ),
        # In-process (the SQL front end's embedded backend) no other program can connect.
        ({}, "embedded", 200),
    ],
)
def test_where_the_host_allow_list_applies(
    tmp_path: Path, settings: dict[str, object], host: str, status: int
) -> None:
    config = ServiceConfig(data_dir=tmp_path, **settings)  # type: ignore[arg-type]
    with (
        InProcessTransport(create_app(config)) as transport,
        httpx.Client(transport=transport, base_url=f"http://{host}") as http,
    ):
        assert http.get(DATASETS, headers={"Host": host}).status_code == status


# --- 1. CORS ------------------------------------------------------------------------------------


def preflight(
    http: httpx.Client, origin: str, method: str = "DELETE", **headers: str
) -> httpx.Response:
    return http.options(
        f"{STORE_PATH}",
        headers={"Origin": origin, "Access-Control-Request-Method": "DELETE", **headers},
    )


def test_no_origin_gets_cors_headers_by_default(serve: Serve) -> None:
    server = serve()
    with httpx.Client(base_url=server.url) as http:
        answer = preflight(http, PAGE_ORIGIN, **{"Access-Control-Request-Private-Network": "true"})
        assert answer.status_code == 403
        assert "--cors-origin" in answer.json()["error"]["message"]
        assert not [h for h in answer.headers if h.startswith("access-control-")]
        read = http.get(DATASETS, headers={"Origin": PAGE_ORIGIN})
        assert "access-control-allow-origin" not in read.headers
        assert http.get(STORE_PATH).status_code == 200  # the preflight deleted nothing


def test_a_named_origin_gets_cors_and_private_network_access_and_others_do_not(
    serve: Serve,
) -> None:
    server = serve(cors_origins=("http://localhost:3000",))
    pna = {"Access-Control-Request-Private-Network": "true"}
    with httpx.Client(base_url=server.url) as http:
        allowed = preflight(http, "http://localhost:3000", **pna)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert "DELETE" in allowed.headers["access-control-allow-methods"]
        assert allowed.headers["access-control-allow-private-network"] == "true"
        read = http.get(DATASETS, headers={"Origin": "http://localhost:3000"})
        assert read.headers["access-control-allow-origin"] == "http://localhost:3000"

        other = preflight(http, PAGE_ORIGIN, **pna)
        assert other.status_code == 403
        assert not [h for h in other.headers if h.startswith("access-control-")]
        read = http.get(DATASETS, headers={"Origin": PAGE_ORIGIN})
        assert "access-control-allow-origin" not in read.headers


def test_cors_for_every_origin_needs_a_token(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["serve", "--data-dir", str(tmp_path), "--cors-origin", "*"])
    assert result.exit_code == 2
    assert "--cors-origin '*'" in result.output and "--auth-token" in result.output


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--cors-origin", "localhost:3000"),
        ("--cors-origin", "http://localhost:3000/viewer"),
        ("--public-url", "dicom.example.org"),
        ("--forwarded-allow-ips", "10.0.0.0/33"),
        ("--allowed-host", "http://pacs.lan"),
    ],
)
def test_malformed_web_settings_are_refused_naming_the_flag(
    tmp_path: Path, flag: str, value: str
) -> None:
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path), flag, value])
    assert result.exit_code == 2
    assert flag in result.output


# --- 2. Absolute URLs ---------------------------------------------------------------------------


def test_retrieve_urls_name_the_allowed_host_the_client_used(serve: Serve) -> None:
    server = serve()
    with httpx.Client(base_url=f"http://localhost:{server.port}") as http:
        url = retrieve_url(stow(http))
    assert url.startswith(f"http://localhost:{server.port}{DICOMWEB}/studies/")


def test_public_url_builds_every_absolute_url_whatever_the_request_says(serve: Serve) -> None:
    public = "https://pacs.example.org/dicom"
    server = serve(public_url=public)
    with httpx.Client(base_url=server.url) as http:
        url = retrieve_url(stow(http, **{"X-Forwarded-Host": "attacker.invalid"}))
        assert url.startswith(f"{public}{DICOMWEB}/studies/")
        study = url.split("/studies/")[1].split("/")[0]
        (found,) = http.get(f"{DICOMWEB}/studies").json()
        assert found["00081190"]["Value"] == [f"{public}{DICOMWEB}/studies/{study}"]
        (metadata,) = http.get(f"{DICOMWEB}/studies/{study}/metadata").json()
        assert metadata["7FE00010"]["BulkDataURI"].startswith(f"{public}{DICOMWEB}/studies/")


@pytest.mark.parametrize(
    "headers",
    [
        {"Forwarded": 'for=198.51.100.4;proto=https;host="dicom.example.org"'},
        # Each proxy appends: the last element is the one the trusted proxy wrote.
        {"Forwarded": "host=attacker.invalid, for=198.51.100.4;proto=https;host=dicom.example.org"},
        {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "dicom.example.org"},
    ],
)
def test_a_trusted_proxy_forwards_the_public_scheme_and_host(
    serve: Serve, headers: dict[str, str]
) -> None:
    server = serve()  # the default trusts loopback peers, as uvicorn does
    with httpx.Client(base_url=server.url) as http:
        url = retrieve_url(stow(http, **headers))
    assert url.startswith(f"https://dicom.example.org{DICOMWEB}/studies/")


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(serve: Serve) -> None:
    server = serve(forwarded_allow_ips=("10.0.0.1",))
    with httpx.Client(base_url=server.url) as http:
        url = retrieve_url(
            stow(http, Forwarded="proto=https;host=attacker.invalid", **{"X-Forwarded-Host": "x"})
        )
    assert url.startswith(f"{server.url}{DICOMWEB}/studies/")


def test_a_malformed_forwarded_host_is_not_copied_into_urls(serve: Serve) -> None:
    server = serve()
    with httpx.Client(base_url=server.url) as http:
        url = retrieve_url(stow(http, **{"X-Forwarded-Host": "evil.invalid/path?x=<script>"}))
    assert url.startswith(f"{server.url}{DICOMWEB}/studies/")


def test_in_process_urls_are_paths_not_a_made_up_host(tmp_path: Path) -> None:
    config = ServiceConfig(data_dir=tmp_path)
    create_store(config)
    with (
        InProcessTransport(create_app(config)) as transport,
        httpx.Client(transport=transport, base_url="http://embedded") as http,
    ):
        url = retrieve_url(stow(http))
    assert url.startswith(f"{DICOMWEB}/studies/")


def test_urls_end_their_prefix_at_the_store_when_a_dataset_is_named_dicomweb(
    tmp_path: Path,
) -> None:
    config = ServiceConfig(data_dir=tmp_path, bind_host="127.0.0.1")
    datasets = "/v1/projects/p/locations/l/datasets"
    store = f"{datasets}/dicomWeb/dicomStores/s"
    with (
        InProcessTransport(create_app(config)) as transport,
        httpx.Client(transport=transport, base_url="http://localhost:8080") as http,
    ):
        created = http.post(datasets, params={"datasetId": "dicomWeb"})
        assert created.status_code == 200, created.text
        created = http.post(f"{datasets}/dicomWeb/dicomStores", params={"dicomStoreId": "s"})
        assert created.status_code == 200, created.text
        body, content_type = multipart([make_instance(study="1.2.3")])
        response = http.post(
            f"{store}/dicomWeb/studies",
            content=body,
            headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        )
        assert retrieve_url(response).startswith(
            f"http://localhost:8080{store}/dicomWeb/studies/1.2.3/"
        )


# --- 3. One Authorization header ----------------------------------------------------------------


@pytest.mark.parametrize("token", ["s3cret", None])
def test_two_authorization_headers_are_refused_whatever_their_order(
    serve: Serve, token: str | None
) -> None:
    server = serve(auth_token=token)
    right, wrong = "Bearer s3cret", "Bearer wrong"
    with httpx.Client(base_url=server.url) as http:
        for pair in ([wrong, right], [right, wrong], [right, right]):
            response = http.get(DATASETS, headers=[("Authorization", value) for value in pair])
            assert response.status_code == 400, pair
            assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
            assert "more than one Authorization" in response.json()["error"]["message"]
        assert http.get(DATASETS, headers={"Authorization": right}).status_code == 200
