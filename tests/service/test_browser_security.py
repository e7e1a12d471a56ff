"""A hostile web page in a real browser (headless Chromium, driven by Playwright) against a
token-less server on loopback: it can neither read nor delete through fetch() unless the
operator names its origin with --cors-origin, and DNS rebinding meets the Host allow-list.
docs/security.md states the threat model."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from playwright.sync_api import Browser, sync_playwright

from dicomql.service.config import ServiceConfig
from tests.support.dicomweb import STORE_PATH, create_store

if TYPE_CHECKING:  # conftest names differ by folder: never imported at run time (tests/ports.py)
    from tests.conftest import LiveServer

DATASETS = "/v1/projects/p/locations/l/datasets"

# What a page does to a server it should not reach: read the dataset list, delete a store.
ATTACK = """<!doctype html><title>attack</title><pre id="result"></pre><script>
async function attempt(method, url) {
  try {
    const response = await fetch(url, {method});
    return "read " + response.status + " " + (await response.text());
  } catch (error) {
    return "failed " + error.name;
  }
}
(async () => {
  const list = await attempt("GET", "%(api)s%(datasets)s");
  const remove = await attempt("DELETE", "%(api)s%(store)s");
  document.getElementById("result").textContent = JSON.stringify({list, remove});
})();
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium installed (Debian: apt-get install chromium); .ci/run installs it")


@pytest.fixture
def database_url() -> None:
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium()
    with sync_playwright() as playwright:
        # Browsers resolve *.localhost themselves; the rebinding test maps a real-looking name.
        launched = playwright.chromium.launch(
            executable_path=executable,
            args=["--host-resolver-rules=MAP attacker.invalid 127.0.0.1"],
        )
        try:
            yield launched
        finally:
            launched.close()


class PageServer:
    """A web page on another loopback origin (another port), as a site the user visits."""

    def __init__(self) -> None:
        self.html = b""
        page = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page.html)))
                self.end_headers()
                self.wfile.write(page.html)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=30)


@pytest.fixture
def page_server() -> Iterator[PageServer]:
    server = PageServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def serve(
    tmp_path: Path, start_live_server: Callable[[ServiceConfig], LiveServer]
) -> Callable[..., LiveServer]:
    def start(**settings: Any) -> LiveServer:
        config = ServiceConfig(data_dir=tmp_path / "data", **settings)
        create_store(config)
        return start_live_server(config)

    return start


def attack(browser: Browser, page_server: PageServer, api: str) -> dict[str, str]:
    """Open the attacking page and return what its fetch() calls got."""
    page_server.html = (ATTACK % {"api": api, "datasets": DATASETS, "store": STORE_PATH}).encode()
    page = browser.new_page()
    try:
        page.goto(page_server.origin + "/")
        page.wait_for_function("document.getElementById('result').textContent !== ''")
        result: dict[str, str] = json.loads(page.text_content("#result") or "{}")
        return result
    finally:
        page.close()


def test_a_page_on_another_origin_can_neither_read_nor_delete(
    browser: Browser, serve: Callable[..., LiveServer], page_server: PageServer
) -> None:
    server = serve()
    result = attack(browser, page_server, server.url)
    # fetch() rejects with a TypeError when CORS refuses: the page learns nothing.
    assert result == {"list": "failed TypeError", "remove": "failed TypeError"}
    with httpx.Client(base_url=server.url) as http:
        assert http.get(STORE_PATH).status_code == 200  # the store is still there


def test_the_origin_named_by_cors_origin_can_read(
    browser: Browser, serve: Callable[..., LiveServer], page_server: PageServer
) -> None:
    server = serve(cors_origins=(page_server.origin,))
    result = attack(browser, page_server, server.url)
    assert result["list"].startswith("read 200 "), result
    assert json.loads(result["list"].removeprefix("read 200 "))["datasets"][0]["name"] == (
        "projects/p/locations/l/datasets/d"
    )


def test_dns_rebinding_meets_the_host_allow_list(
    browser: Browser, serve: Callable[..., LiveServer]
) -> None:
    server = serve()
    page = browser.new_page()
    try:
        # attacker.invalid now resolves to 127.0.0.1, as after a rebinding: the page is
        # same-origin with the server, and only the Host header tells them apart.
        response = page.goto(f"http://attacker.invalid:{server.port}{DATASETS}")
        assert response is not None
        assert response.status == 403
        assert "--allowed-host" in response.json()["error"]["message"]
    finally:
        page.close()
