"""``dicomql serve --viewer`` over HTTP, with a small stand-in for OHIF's build: the files and
the single-page app's routes, the generated app-config.js (one data source per store, new
stores included), and the token: the sign-in page and its same-origin session cookie."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from click.testing import CliRunner

from dicomql.cli import main
from dicomql.service.config import ServiceConfig
from dicomql.service.viewer import COOKIE, session_value
from dicomql.viewer.dist import MARKER, ViewerSettings

if TYPE_CHECKING:  # conftest names differ by folder: never imported at run time
    from tests.conftest import LiveServer

TOKEN = "viewer-test-token"
INDEX = '<!doctype html><script>window.PUBLIC_URL="/viewer/"</script><p>OHIF stand-in</p>'
STORE = "/v1/projects/p/locations/l/datasets/d/dicomStores"


@pytest.fixture
def database_url() -> None:
    return None


@pytest.fixture
def viewer_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "ohif"
    (folder / "assets").mkdir(parents=True)
    (folder / "index.html").write_text(INDEX)
    (folder / "app.bundle.js").write_text("console.log('bundle')")
    (folder / "module.wasm").write_bytes(b"\0asm")
    (folder / "assets" / "logo.svg").write_text("<svg/>")
    (folder / MARKER).write_text('{"version": "test"}')
    (tmp_path / "secret.txt").write_text("outside the viewer")
    return folder


@pytest.fixture
def serve(
    tmp_path: Path,
    viewer_folder: Path,
    start_live_server: Callable[[ServiceConfig], LiveServer],
) -> Callable[..., LiveServer]:
    def start(store: str | None = None, **settings: Any) -> LiveServer:
        config = ServiceConfig(
            data_dir=tmp_path / "data",
            viewer=ViewerSettings(folder=viewer_folder, store=store),
            **settings,
        )
        return start_live_server(config)

    return start


def config_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/javascript")
    match = re.search(r"window\.config = (\{.*\});", response.text, re.S)
    assert match is not None, response.text
    return json.loads(match.group(1))


def create_store(client: httpx.Client, dataset: str, store: str) -> None:
    datasets = "/v1/projects/p/locations/l/datasets"
    if client.get(f"{datasets}/{dataset}").status_code == 404:
        client.post(datasets, params={"datasetId": dataset}).raise_for_status()
    client.post(
        f"{datasets}/{dataset}/dicomStores", params={"dicomStoreId": store}
    ).raise_for_status()


def test_files_and_app_routes(serve: Callable[..., LiveServer]):
    server = serve()
    with httpx.Client(base_url=server.url) as client:
        redirect = client.get("/viewer?patientName=X")
        assert redirect.status_code == 307
        assert redirect.headers["location"] == "/viewer/?patientName=X"
        for route in ("/viewer/", "/viewer/viewer?StudyInstanceUIDs=1.2.3", "/viewer/datasources"):
            page = client.get(route)
            assert page.status_code == 200, route
            assert page.text == INDEX
            assert page.headers["content-type"].startswith("text/html")
        bundle = client.get("/viewer/app.bundle.js")
        assert bundle.text == "console.log('bundle')"
        assert bundle.headers["content-type"].startswith("text/javascript")
        assert client.get("/viewer/module.wasm").headers["content-type"] == "application/wasm"
        assert client.get("/viewer/assets/logo.svg").text == "<svg/>"
        missing = client.get("/viewer/4242.bundle.js")
        assert missing.status_code == 404
        assert missing.json()["error"]["status"] == "NOT_FOUND"
        for escape in ("/viewer/%2e%2e/secret.txt", "/viewer/assets/%2e%2e/%2e%2e/secret.txt"):
            refused = client.get(escape)
            assert refused.status_code == 404, escape
            assert "outside the viewer" not in refused.text


def test_app_config_lists_every_store_including_new_ones(serve: Callable[..., LiveServer]):
    server = serve()
    with httpx.Client(base_url=server.url) as client:
        assert config_of(client.get("/viewer/app-config.js"))["dataSources"] == []
        create_store(client, "d", "s")
        config = config_of(client.get("/viewer/app-config.js"))
        assert config["routerBasename"] == "/viewer"
        assert config["defaultDataSourceName"] == "p:l:d:s"
        (source,) = config["dataSources"]
        settings = source["configuration"]
        root = f"{server.url}{STORE}/s/dicomWeb"
        assert settings["qidoRoot"] == settings["wadoRoot"] == settings["wadoUriRoot"] == root
        assert settings["imageRendering"] == settings["thumbnailRendering"] == "wadors"
        for flag in (
            "enableStudyLazyLoad",
            "supportsFuzzyMatching",
            "qidoSupportsIncludeField",
            "supportsWildcard",
        ):
            assert settings[flag] is True, flag
        # A store created while the server runs is there at the next page load.
        create_store(client, "d", "t")
        create_store(client, "e", "u")
        names = [
            s["sourceName"] for s in config_of(client.get("/viewer/app-config.js"))["dataSources"]
        ]
        assert names == ["p:l:d:s", "p:l:d:t", "p:l:e:u"]
        # The roots work: QIDO through the first data source's root.
        assert client.get(f"{root}/studies").status_code in (200, 204)


def test_viewer_store_names_the_one_store(serve: Callable[..., LiveServer]):
    server = serve(store="projects/p/locations/l/datasets/d/dicomStores/t")
    with httpx.Client(base_url=server.url) as client:
        create_store(client, "d", "s")
        (source,) = config_of(client.get("/viewer/app-config.js"))["dataSources"]
        assert source["sourceName"] == "p:l:d:t"
        assert source["configuration"]["qidoRoot"] == f"{server.url}{STORE}/t/dicomWeb"


def test_with_a_token_the_viewer_signs_in_with_a_same_origin_cookie(
    serve: Callable[..., LiveServer],
):
    server = serve(auth_token=TOKEN)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.url, headers=bearer) as admin:
        create_store(admin, "d", "s")
    with httpx.Client(base_url=server.url) as client:
        # OHIF's build is public; the page itself sends a browser without a session to sign in.
        assert client.get("/viewer/app.bundle.js").status_code == 200
        page = client.get("/viewer/viewer?StudyInstanceUIDs=1.2")
        assert page.status_code == 303
        assert (
            page.headers["location"]
            == "/viewer/login?next=/viewer/viewer%3FStudyInstanceUIDs%3D1.2"
        )
        form = client.get("/viewer/login")
        assert form.status_code == 200 and 'name="token"' in form.text
        # The stores' names and data are not public.
        assert client.get("/viewer/app-config.js").status_code == 401
        assert client.get("/v1/projects/p/locations/l/datasets").status_code == 401
        wrong = client.post("/viewer/login", data={"token": "nope", "next": "/viewer/"})
        assert wrong.status_code == 401
        assert "set-cookie" not in wrong.headers
        signed_in = client.post("/viewer/login", data={"token": TOKEN, "next": "//evil.example/"})
        assert signed_in.status_code == 303
        assert signed_in.headers["location"] == "/viewer/"  # never another site
        cookie = signed_in.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}={session_value(TOKEN)};")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert TOKEN not in cookie

    session = {"Cookie": f"{COOKIE}={session_value(TOKEN)}"}
    same_origin = {**session, "Sec-Fetch-Site": "same-origin"}
    dicomweb = f"{STORE}/s/dicomWeb/studies"
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/viewer/", headers=session).status_code == 200
        assert config_of(client.get("/viewer/app-config.js", headers=same_origin))["dataSources"]
        assert client.get(dicomweb, headers=same_origin).status_code in (200, 204)
        # Not from another origin of the same site, nor from a client that does not say.
        for headers in (session, {**session, "Sec-Fetch-Site": "same-site"}):
            assert client.get(dicomweb, headers=headers).status_code == 401
            assert client.get("/viewer/app-config.js", headers=headers).status_code == 401
        forged = {"Cookie": f"{COOKIE}={session_value('other')}", "Sec-Fetch-Site": "same-origin"}
        assert client.get(dicomweb, headers=forged).status_code == 401
        # The bearer token works as everywhere else.
        assert config_of(client.get("/viewer/app-config.js", headers=bearer))["dataSources"]
        signed_out = client.post("/viewer/logout", headers=same_origin)
        assert signed_out.status_code == 303
        assert f'{COOKIE}=""' in signed_out.headers["set-cookie"]


def test_serve_viewer_without_an_installed_viewer_says_what_to_do(tmp_path: Path):
    result = CliRunner().invoke(
        main, ["serve", "--viewer", "--data-dir", str(tmp_path), "--port", "1"]
    )
    assert result.exit_code == 1
    assert "dicomql viewer install" in result.output
    assert "--viewer-dir" in result.output
    assert str(tmp_path / "ohif") in result.output


def test_serve_viewer_refuses_a_build_for_another_path(tmp_path: Path):
    (tmp_path / "index.html").write_text('<script>window.PUBLIC_URL="/"</script>')
    result = CliRunner().invoke(main, ["serve", "--viewer", "--viewer-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "PUBLIC_URL" in result.output and "dicomql viewer install --dir" in result.output
