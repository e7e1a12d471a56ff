"""``dicomql viewer install``: OHIF's prebuilt viewer from the npm registry, verified and
prepared to be served at /viewer/.

The package ``@ohif/app`` carries the built viewer in ``dist/``. With npm on the PATH the tarball
comes through ``npm pack`` (so the user's npm settings apply: registry mirror, proxy, auth);
without it, straight from the registry over HTTPS. Either way its SHA-512 must equal the
registry's ``dist.integrity`` before a byte is unpacked. The build names "/" as its base, so
the few files that spell the base (index.html, the webpack runtimes, a stylesheet) are rewritten
for /viewer/. The folder is filled under a temporary name and renamed into place at the end,
so an interrupted install leaves no half-viewer behind; a lock on the parent folder makes a
second install at the same moment wait, then find the first one's viewer. docs/viewer.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from dicomql.viewer.dist import BASE_PATH, MARKER

PACKAGE = "@ohif/app"
DEFAULT_REGISTRY = "https://registry.npmjs.org/"
_VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?")
_DIST = "package/dist/"
# What the build spells for its base "/", and what it becomes under BASE_PATH.
_INDEX_URLS = re.compile(r'((?:src|href)=")/(?!/)')
_CSS_URLS = re.compile(r"url\(/(?!/)")
_WEBPACK_BASE = '__webpack_require__.p = "/";'
_NETWORK_TIMEOUT = 30.0
# npm's codes for a registry it cannot reach (Node's socket errors, npm's own E5xx).
_NETWORK_ERRORS = (
    "ENOTFOUND",
    "EAI_AGAIN",
    "ECONNREFUSED",
    "ECONNRESET",
    "ETIMEDOUT",
    "ENETUNREACH",
    "EHOSTUNREACH",
    "E500",
    "E502",
    "E503",
    "E504",
)


class InstallError(Exception):
    """The viewer could not be installed; the message says why and what to do."""


class RegistryUnreachable(InstallError):
    """The npm registry could not be reached (no network, a proxy, DNS)."""


@dataclass(frozen=True)
class Release:
    """One published version of the package: where its tarball is and what it must hash to."""

    version: str
    tarball: str
    integrity: str  # Subresource Integrity: "sha512-<base64>"


Progress = Callable[[int, int | None], None]  # bytes so far, total (None: unknown)


def check_version(version: str) -> str:
    """An exact version (3.13.2, 3.14.0-beta.6); a range would make the install unrepeatable."""
    if not _VERSION.fullmatch(version):
        raise InstallError(
            f"{version!r} is not an exact version of {PACKAGE} (e.g. 3.13.2); "
            f"`npm view {PACKAGE} versions` lists them"
        )
    return version


def registry() -> str:
    """The registry npm itself would use ($npm_config_registry), else the public one."""
    # npm's own spelling is lower case; it reads the upper-case one too.
    url = os.environ.get("npm_config_registry") or os.environ.get("NPM_CONFIG_REGISTRY")  # noqa: SIM112
    return (url or DEFAULT_REGISTRY).rstrip("/") + "/"


def release_from_registry(version: str, registry_url: str | None = None) -> Release:
    """The release's metadata, read from the registry over HTTPS."""
    import httpx

    url = f"{registry_url or registry()}{PACKAGE}/{version}"
    try:
        response = httpx.get(url, timeout=_NETWORK_TIMEOUT, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise RegistryUnreachable(
            f"cannot reach the npm registry ({url}): {exc}. Check the network (or a proxy), "
            "or install OHIF yourself and give its folder to `dicomql serve --viewer-dir`"
        ) from exc
    if response.status_code == 404:
        raise InstallError(
            f"{PACKAGE} has no version {version}; `npm view {PACKAGE} versions` lists them"
        )
    if response.status_code >= 500:
        raise RegistryUnreachable(f"the npm registry answered {response.status_code} for {url}")
    if response.status_code != 200:
        raise InstallError(f"the npm registry answered {response.status_code} for {url}")
    return _release(version, response.json())


def release_from_npm(version: str, npm: str) -> Release:
    """The release's metadata through ``npm view`` (the user's npm settings apply)."""
    result = _run_npm([npm, "view", f"{PACKAGE}@{version}", "dist", "--json"])
    return _release(version, {"dist": json.loads(result.stdout or "null")})


def _release(version: str, document: object) -> Release:
    dist = document.get("dist") if isinstance(document, dict) else None
    if not isinstance(dist, dict) or not dist.get("tarball") or not dist.get("integrity"):
        raise InstallError(
            f"the registry's record of {PACKAGE}@{version} names no tarball with an integrity"
        )
    return Release(version, str(dist["tarball"]), str(dist["integrity"]))


def download(release: Release, into: Path, progress: Progress | None = None) -> Path:
    """The release's tarball, streamed from the registry into the folder ``into``."""
    import httpx

    path = into / f"ohif-app-{release.version}.tgz"
    try:
        with (
            httpx.stream(
                "GET", release.tarball, timeout=_NETWORK_TIMEOUT, follow_redirects=True
            ) as response,
            path.open("wb") as out,
        ):
            if response.status_code != 200:
                raise InstallError(
                    f"the npm registry answered {response.status_code} for {release.tarball}"
                )
            length = response.headers.get("content-length")
            total = int(length) if length and length.isdigit() else None
            done = 0
            for chunk in response.iter_bytes(1 << 20):
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    except httpx.HTTPError as exc:
        raise RegistryUnreachable(
            f"downloading {release.tarball} failed: {exc}; check the network and try again"
        ) from exc
    return path


def pack_with_npm(release: Release, npm: str, into: Path) -> Path:
    """The release's tarball through ``npm pack`` (npm's cache, proxy and mirror apply)."""
    result = _run_npm(
        [npm, "pack", f"{PACKAGE}@{release.version}", "--json", "--pack-destination", str(into)]
    )
    try:
        filename = json.loads(result.stdout)[0]["filename"]
    except (ValueError, LookupError, TypeError) as exc:
        raise InstallError(f"`npm pack` printed no tarball name: {result.stdout[:200]!r}") from exc
    # npm < 9 names scoped tarballs "ohif-app-…", later ones too; the path is what it printed.
    path = into / Path(filename).name
    if not path.is_file():
        raise InstallError(f"`npm pack` reported {filename}, which is not in {into}")
    return path


def _run_npm(command: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"`{' '.join(command[:3])}` failed: {exc}") from exc
    if result.returncode == 0:
        return result
    detail = result.stderr + result.stdout
    if "E404" in detail:
        version = command[2].rpartition("@")[2]
        raise InstallError(
            f"{PACKAGE} has no version {version}; `npm view {PACKAGE} versions` lists them"
        )
    if any(code in detail for code in _NETWORK_ERRORS):
        raise RegistryUnreachable(
            f"npm cannot reach its registry ({registry()}): check the network (or a proxy); "
            f"npm said: {_last_line(detail)}"
        )
    raise InstallError(f"`{' '.join(command[:3])}` failed: {_last_line(detail)}")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def verify(tarball: Path, integrity: str) -> None:
    """Check the tarball against the registry's Subresource Integrity string (sha512)."""
    expected = [
        entry.partition("-")[2].split("?")[0]
        for entry in integrity.split()
        if entry.startswith("sha512-")
    ]
    if not expected:
        raise InstallError(f"the registry gives no sha512 integrity for the tarball: {integrity}")
    digest = hashlib.sha512()
    with tarball.open("rb") as source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
    actual = base64.b64encode(digest.digest()).decode()
    if actual not in expected:
        raise InstallError(
            f"the downloaded tarball's sha512 ({actual}) is not the registry's ({expected[0]}): "
            "it was altered or cut short; nothing was installed"
        )


def unpack_dist(tarball: Path, into: Path) -> int:
    """The regular files under ``package/dist/`` into ``into``; how many.

    Only plain files and folders, by relative paths that stay inside ``into``: a tarball is
    verified, but is still not trusted to write elsewhere (links, ``..``, devices).
    """
    count = 0
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            if not member.name.startswith(_DIST) or not member.isfile():
                continue
            relative = Path(member.name[len(_DIST) :])
            if relative.is_absolute() or ".." in relative.parts or not relative.parts:
                raise InstallError(f"the tarball holds an unsafe path: {member.name!r}")
            target = into / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None  # a regular file
            with source, target.open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            count += 1
    if not (into / "index.html").is_file():
        raise InstallError(f"the tarball has no {_DIST}index.html: not a prebuilt OHIF viewer")
    return count


def relocate(folder: Path, base: str = BASE_PATH) -> None:
    """Rewrite the build's base "/" as ``base`` where the build spells it.

    OHIF's published build is made for the site root: index.html loads ``/app.bundle…js``, the
    webpack runtimes fetch chunks, workers and wasm from ``"/"``, a stylesheet names a font at
    ``/…woff2``. An OHIF built with ``PUBLIC_URL=/viewer/`` would differ in exactly these.
    """
    index = folder / "index.html"
    text = index.read_text(encoding="utf-8")
    text = text.replace('window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{base}"')
    index.write_text(_INDEX_URLS.sub(rf"\1{base}", text), encoding="utf-8")
    runtime_base = f'__webpack_require__.p = "{base}";'
    for script in folder.glob("*.js"):
        _rewrite(script, lambda text: text.replace(_WEBPACK_BASE, runtime_base))
    for sheet in folder.glob("*.css"):
        _rewrite(sheet, lambda text: _CSS_URLS.sub(f"url({base}", text))


def _rewrite(path: Path, change: Callable[[str], str]) -> None:
    text = path.read_text(encoding="utf-8", errors="surrogateescape")
    changed = change(text)
    if changed != text:
        path.write_text(changed, encoding="utf-8", errors="surrogateescape")


def install(
    version: str,
    target: Path,
    *,
    npm: str | None,
    force: bool = False,
    progress: Progress | None = None,
    status: Callable[[str], None] = lambda _message: None,
) -> Path:
    """Install ``@ohif/app@version``'s viewer into ``target``; the folder.

    Raises:
        InstallError: the version is unknown, the download fails its integrity check, the
            tarball is not a viewer; ``RegistryUnreachable`` when the registry cannot be reached.
    """
    check_version(version)
    if (target / MARKER).is_file() and not force:
        status(f"OHIF {version} is already installed in {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _installing(target):
        # Another install may have finished while this one waited for the lock.
        if (target / MARKER).is_file() and not force:
            status(f"OHIF {version} is already installed in {target}")
            return target
        _install(version, target, npm=npm, progress=progress, status=status)
    return target


@contextmanager
def _installing(target: Path) -> Iterator[None]:
    """Held by one install into ``target``'s folder at a time (two CI jobs or test workers at
    once would otherwise both move a folder into place, and one rename find the other's there)."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; installs there are not run concurrently
        yield
        return
    # The parent folder itself is locked: no lock file is left behind.
    folder = os.open(target.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # releases the lock


def _install(
    version: str,
    target: Path,
    *,
    npm: str | None,
    progress: Progress | None,
    status: Callable[[str], None],
) -> None:
    with tempfile.TemporaryDirectory(prefix=".ohif-", dir=target.parent) as scratch:
        work = Path(scratch)
        if npm:
            status(f"asking npm for {PACKAGE}@{version}")
            release = release_from_npm(version, npm)
            status(f"npm pack {PACKAGE}@{version}")
            tarball = pack_with_npm(release, npm, work)
        else:
            status(f"asking {registry()} for {PACKAGE}@{version}")
            release = release_from_registry(version)
            tarball = download(release, work, progress)
        status("checking the tarball's sha512 against the registry's integrity")
        verify(tarball, release.integrity)
        status("unpacking dist/")
        staged = work / "dist"
        staged.mkdir()
        files = unpack_dist(tarball, staged)
        tarball.unlink()
        relocate(staged)
        marker = {
            "package": PACKAGE,
            "version": version,
            "integrity": release.integrity,
            "base": BASE_PATH,
            "files": files,
        }
        _write(staged / MARKER, json.dumps(marker, indent=2) + "\n")
        if target.exists():
            # The old folder leaves with the scratch directory; the rename below is atomic.
            target.rename(work / "replaced")
        staged.rename(target)


def _write(path: Path, text: str) -> None:
    out: IO[str]
    with path.open("w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
