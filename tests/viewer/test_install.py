"""``dicomql viewer install`` against a loopback npm registry serving a small @ohif/app-shaped
tarball: the integrity check, the unpacking of dist/ only, the rewrite for /viewer/, and the
errors a user meets (unknown version, registry unreachable, altered tarball)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dicomql.cli import main
from dicomql.viewer.dist import MARKER, viewer_problem

INDEX = (
    '<!doctype html><html><head><script>window.PUBLIC_URL="/"</script>'
    '<script src="/app-config.js"></script><link href="/app.bundle.css" rel="stylesheet">'
    '<link href="https://cdn.example/x.css"></head><body></body>'
    '<script defer src="/app.bundle.abc.js"></script></html>'
)
BUNDLE = '(() => {\n__webpack_require__.p = "/";\n})();\nconsole.log("/not-a-base");\n'


def tarball(members: dict[str, bytes], *, link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if link is not None:
            info = tarfile.TarInfo(link)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            archive.addfile(info)
    return buffer.getvalue()


def viewer_tarball() -> bytes:
    return tarball(
        {
            "package/package.json": b'{"name": "@ohif/app"}',
            "package/dist/index.html": INDEX.encode(),
            "package/dist/app.bundle.abc.js": BUNDLE.encode(),
            "package/dist/app.bundle.css": b"@font-face{src:url(/font.woff2)}a{b:url(//x/y)}",
            "package/dist/assets/logo.svg": b"<svg/>",
            "package/README.md": b"not served",
        }
    )


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


class Registry:
    """A loopback npm registry with one version of @ohif/app."""

    def __init__(self, data: bytes, version: str = "3.13.2") -> None:
        self.data = data
        self.claimed = integrity(data)
        self.downloads = 0
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                dist = {
                    "tarball": f"{registry.url}@ohif/app/-/app-{version}.tgz",
                    "integrity": registry.claimed,
                    "shasum": hashlib.sha1(registry.data).hexdigest(),
                }
                manifest = {"name": "@ohif/app", "version": version, "dist": dist}
                if self.path == f"/@ohif/app/{version}":
                    body = json.dumps(manifest).encode()
                elif self.path.lower() in ("/@ohif%2fapp", "/@ohif/app"):
                    # The packument npm reads.
                    body = json.dumps(
                        {
                            "name": "@ohif/app",
                            "dist-tags": {"latest": version},
                            "versions": {version: manifest},
                        }
                    ).encode()
                elif self.path == f"/@ohif/app/-/app-{version}.tgz":
                    registry.downloads += 1
                    body = registry.data
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=30)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    served = Registry(viewer_tarball())
    monkeypatch.setenv("npm_config_registry", served.url)
    try:
        yield served
    finally:
        served.close()


def install(*args: str) -> Any:
    return CliRunner().invoke(main, ["viewer", "install", "--no-npm", *args])


def test_install_unpacks_dist_and_rewrites_it_for_viewer(registry: Registry, tmp_path: Path):
    result = install("--data-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    folder = tmp_path / "ohif" / "3.13.2"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "app.bundle.abc.js",
        "app.bundle.css",
        "assets/logo.svg",
        MARKER,
        "index.html",
    ]
    index = (folder / "index.html").read_text()
    assert 'window.PUBLIC_URL="/viewer/"' in index
    assert 'src="/viewer/app-config.js"' in index
    assert 'src="/viewer/app.bundle.abc.js"' in index
    assert 'href="/viewer/app.bundle.css"' in index
    assert 'href="https://cdn.example/x.css"' in index  # other origins untouched
    bundle = (folder / "app.bundle.abc.js").read_text()
    assert '__webpack_require__.p = "/viewer/";' in bundle
    assert '"/not-a-base"' in bundle
    assert (folder / "app.bundle.css").read_text() == (
        "@font-face{src:url(/viewer/font.woff2)}a{b:url(//x/y)}"
    )
    marker = json.loads((folder / MARKER).read_text())
    assert marker["version"] == "3.13.2"
    assert marker["integrity"] == registry.claimed
    assert viewer_problem(folder) is None
    # A second run finds it installed and leaves it be.
    again = install("--data-dir", str(tmp_path))
    assert again.exit_code == 0
    assert "already installed" in again.output


def test_installs_at_the_same_moment_leave_one_viewer_downloaded_once(
    registry: Registry, tmp_path: Path
):
    """Two CI jobs, or two test workers, installing into one data directory at once: each
    returns the installed viewer, and the second waits for the first instead of racing it."""
    from dicomql.viewer.install import install as install_viewer

    target = tmp_path / "ohif" / "3.13.2"
    start = threading.Barrier(4)
    failures: list[BaseException] = []

    def one() -> None:
        start.wait()
        try:
            install_viewer("3.13.2", target, npm=None)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert viewer_problem(target) is None
    assert registry.downloads == 1
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".ohif-")] == []


def test_install_through_npm(registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """With npm installed, `npm pack` fetches the tarball (npm's registry setting applies)."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed (Debian: apt-get install npm)")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    result = CliRunner().invoke(main, ["viewer", "install", "--dir", str(tmp_path / "ohif")])
    assert result.exit_code == 0, result.output
    assert "npm pack @ohif/app@3.13.2" in result.output
    assert 'PUBLIC_URL="/viewer/"' in (tmp_path / "ohif" / "index.html").read_text()
    unknown = CliRunner().invoke(
        main, ["viewer", "install", "--version", "3.0.99", "--dir", str(tmp_path / "other")]
    )
    assert unknown.exit_code == 1
    assert "has no version 3.0.99" in unknown.output


def test_a_tarball_that_differs_from_the_registrys_integrity_is_not_installed(
    registry: Registry, tmp_path: Path
):
    registry.claimed = integrity(b"something else")
    result = install("--dir", str(tmp_path / "ohif"))
    assert result.exit_code == 1
    assert "sha512" in result.output and "nothing was installed" in result.output
    assert not (tmp_path / "ohif").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no scratch folder left behind


def test_an_unknown_version_is_named(registry: Registry, tmp_path: Path):
    result = install("--version", "3.0.99", "--dir", str(tmp_path / "ohif"))
    assert result.exit_code == 1
    assert "has no version 3.0.99" in result.output
    assert "npm view @ohif/app versions" in result.output


def test_a_version_range_is_refused(tmp_path: Path):
    result = install("--version", "^3.13", "--dir", str(tmp_path / "ohif"))
    assert result.exit_code == 1
    assert "not an exact version" in result.output


def test_an_unreachable_registry_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from tests.support.ports import free_port

    monkeypatch.setenv("npm_config_registry", f"http://127.0.0.1:{free_port()}/")
    result = install("--dir", str(tmp_path / "ohif"))
    assert result.exit_code == 1
    assert "cannot reach the npm registry" in result.output
    assert "--viewer-dir" in result.output


def test_a_tarball_with_a_link_or_no_viewer_is_refused(registry: Registry, tmp_path: Path):
    registry.data = tarball({"package/dist/index.html": b"x"}, link="package/dist/evil")
    registry.claimed = integrity(registry.data)
    result = install("--dir", str(tmp_path / "a"))
    assert result.exit_code == 0, result.output  # the link is skipped, never followed
    assert not (tmp_path / "a" / "evil").exists()
    registry.data = tarball({"package/dist/../../escape.html": b"x"})
    registry.claimed = integrity(registry.data)
    result = install("--dir", str(tmp_path / "b"))
    assert result.exit_code == 1
    assert "unsafe path" in result.output
    assert not (tmp_path / "escape.html").exists()
    registry.data = tarball({"package/lib/index.js": b"x"})
    registry.claimed = integrity(registry.data)
    result = install("--dir", str(tmp_path / "c"))
    assert result.exit_code == 1
    assert "no package/dist/index.html" in result.output
