"""Helpers for the reliability tests: a ``dicomql serve`` subprocess that can be killed and
restarted, generated instances, STOW bodies, and checks of the data directory against the index."""

from __future__ import annotations

import io
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import create_engine, select

from dicomql.service.config import ServiceConfig
from dicomql.store.schema import instance_blobs, instances
from tests.support.dicomweb import multipart
from tests.support.ports import free_port

DICOMQL = Path(sys.executable).with_name("dicomql")
LOCATION = "/v1/projects/p/locations/l"
DATASET = f"{LOCATION}/datasets/d"
STORE = f"{DATASET}/dicomStores/s"
DICOMWEB = f"{STORE}/dicomWeb"
CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
ANY_SYNTAX = {"accept": "application/dicom; transfer-syntax=*"}


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A URL of the test PostgreSQL whose search_path is a fresh schema (skips if unreachable);
    for module-scoped fixtures, where conftest's function-scoped ``postgres_url`` cannot serve."""
    import psycopg

    base = os.environ.get(
        "DICOMQL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    plain = base.replace("+psycopg", "")
    schema = f"dq_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(plain, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL is not reachable: {exc}")
    try:
        yield f"{base}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


# ``dicomql serve`` exactly (its click entry point), run once the parent says go.
_PAUSED_SERVE = (
    "import os, sys; import dicomql.cli, dicomql.service.app; "
    "open(os.environ['DICOMQL_TEST_READY_FILE'], 'w').close(); sys.stdin.readline(); "
    "dicomql.cli.main(sys.argv[1:], prog_name='dicomql')"
)


class ServerProcess:
    """``dicomql serve`` as a child process on a fixed loopback port, killable and restartable
    on the same data directory and database.

    ``processes`` is its ``--processes``: 1 (the default here: quicker and deterministic), or
    N server processes under a supervising parent, all in one process group of their own so
    that :meth:`kill` can SIGKILL every one at once.
    """

    def __init__(
        self, data_dir: Path, database_url: str | None, *extra: str, processes: int = 1
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            str(DICOMQL),
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(data_dir),
            "--processes",
            str(processes),
        ]
        if database_url:
            self.command += ["--database-url", database_url]
        self.command += list(extra)
        self.process: subprocess.Popen[bytes] | None = None
        self._ready: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"serve-{self.port}.log"
        self._ready_file = data_dir.parent / f"serve-{self.port}.ready"

    def prepare(self) -> None:
        """Spawn the next server process now, paused after its imports (seconds on a busy
        machine), so that a restart after a kill takes only the service's own start-up."""
        if self._ready is None:
            self._ready_file.unlink(missing_ok=True)
            with open(self.log, "ab") as log:
                self._ready = subprocess.Popen(
                    [sys.executable, "-c", _PAUSED_SERVE, *self.command[1:]],
                    stdin=subprocess.PIPE,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "DICOMQL_TEST_READY_FILE": str(self._ready_file)},
                    start_new_session=True,
                )

    def wait_prepared(self, timeout: float = 60) -> None:
        """Block until the prepared process has finished importing."""
        deadline = time.monotonic() + timeout
        while not self._ready_file.exists():
            assert self._ready is not None and self._ready.poll() is None, self.log.read_text()
            if time.monotonic() > deadline:
                raise AssertionError("the prepared server process did not finish importing")
            time.sleep(0.02)

    def start(self, timeout: float = 60) -> ServerProcess:
        """Run ``dicomql serve`` (in the prepared process) and wait until it answers."""
        self.prepare()
        assert self._ready is not None and self._ready.stdin is not None
        self.process, self._ready = self._ready, None
        self.process.stdin.write(b"go\n")  # type: ignore[union-attr]
        self.process.stdin.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while True:
                if self.process.poll() is not None:
                    raise AssertionError(f"dicomql serve exited: {self.log.read_text()[-3000:]}")
                try:
                    # 401: up, and asking for the --auth-token it was given.
                    if client.get(LOCATION).status_code in (200, 401):
                        return self
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError("dicomql serve did not answer in time")
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL to the parent and every server process: nothing is flushed, no shutdown hook
        runs."""
        if self.process is not None and self.process.poll() is None:
            children = self.server_processes()
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            wait_gone(children)
            # The kernel may drop the last reference to a socket shared by several killed
            # processes a moment after they are gone (seen here); a restart needs the port.
            _wait_port_free(self.port)

    def server_processes(self) -> list[int]:
        """The process ids of the server processes under the parent (none with one process)."""
        assert self.process is not None
        return self.server_processes_of(self.process.pid)

    @staticmethod
    def server_processes_of(parent: int) -> list[int]:
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:
                continue  # gone meanwhile
            if int(text[text.rindex(")") + 2 :].split()[1]) == parent:
                children.append(int(stat.parent.name))
        return sorted(children)

    def stop(self) -> None:
        if self._ready is not None:
            self._ready.kill()
            self._ready.wait()
            self._ready = None
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def errors_logged(self) -> str:
        """Tracebacks in the server log (a 500 leaves one)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text if "Traceback" in text else ""


def peak_rss(pid: int) -> int:
    """The peak resident set size of process ``pid`` so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll ``predicate`` until it returns something true (returned), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def wait_gone(pids: list[int], timeout: float = 30) -> None:
    """Block until none of ``pids`` is alive (a SIGKILLed process is reaped by init)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
        if not alive:
            return
        assert time.monotonic() < deadline, f"processes {alive} still alive"
        time.sleep(0.02)


def _wait_port_free(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
                return
            except OSError:
                assert time.monotonic() < deadline, f"port {port} still in use"
        time.sleep(0.02)


def _zombie(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return text[text.rindex(")") + 2] == "Z"


def create_dataset_and_store(client: httpx.Client, store: str = "s") -> None:
    """Dataset ``d`` and DICOM store ``store`` through the admin API."""
    response = client.post(f"{LOCATION}/datasets", params={"datasetId": "d"}, json={})
    assert response.status_code in (200, 409), response.text
    response = client.post(f"{DATASET}/dicomStores", params={"dicomStoreId": store}, json={})
    assert response.status_code in (200, 409), response.text


def make_instance(
    study: str, series: str, sop: str, *, seed: int = 0, modality: str = "CT", rows: int = 4
) -> bytes:
    """A small explicit-VR-little-endian CT instance as PS3.10 bytes; ``seed`` varies the pixels,
    ``rows`` (a multiple of 4) sets its size: rows × rows 16-bit pixels."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CT_SOP_CLASS
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.SOPClassUID = CT_SOP_CLASS
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.PatientName = f"Doe^Patient{seed % 7}"
    ds.PatientID = f"P{seed % 5}"
    ds.Modality = modality
    ds.StudyDate = "20240102"
    ds.Rows = ds.Columns = rows
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = bytes((seed + n) % 256 for n in range(32)) * (rows * rows // 16)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def stow(client: httpx.Client, parts: list[bytes], path: str = DICOMWEB) -> httpx.Response:
    body, content_type = multipart(parts)
    # JSON asked for: without an Accept the service answers XML, as Google's does.
    headers = {"content-type": content_type, "accept": "application/dicom+json"}
    return client.post(f"{path}/studies", content=body, headers=headers)


def referenced(response: httpx.Response) -> list[str]:
    """SOPInstanceUIDs of the ReferencedSOPSequence of a STOW response."""
    items = response.json().get("00081199", {}).get("Value", [])
    return [item["00081155"]["Value"][0] for item in items]


def qido_instances(client: httpx.Client, path: str = DICOMWEB) -> list[tuple[str, str, str]]:
    """(study, series, instance) UIDs of every instance QIDO lists, paged with offset."""
    found: list[tuple[str, str, str]] = []
    while True:
        response = client.get(f"{path}/instances", params={"limit": 1000, "offset": len(found)})
        assert response.status_code in (200, 204), response.text
        page = response.json() if response.status_code == 200 and response.content else []
        found += [
            (
                item["0020000D"]["Value"][0],
                item["0020000E"]["Value"][0],
                item["00080018"]["Value"][0],
            )
            for item in page
        ]
        if len(page) < 1000:
            return found


def inline_blob_keys(data_dir: Path, database_url: str | None) -> set[str]:
    """Keys of the instances whose bytes the index keeps (store/inline_blobs.py)."""
    url = database_url or f"sqlite:///{data_dir / 'index.sqlite3'}"
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            query = select(instances.c.blob_key).join(
                instance_blobs, instance_blobs.c.instance_pk == instances.c.pk
            )
            return set(conn.execute(query).scalars())
    finally:
        engine.dispose()


def stored_blobs(
    data_dir: Path, database_url: str | None = None, blob_root: Path | None = None
) -> list[str]:
    """Keys of every stored blob: the files under ``blob_root`` (``data_dir/blobs`` by
    default; temporaries excluded) and the instances kept in the index, a key listed twice
    if it is both (which would be an orphan file)."""
    root = blob_root or data_dir / "blobs"
    files = [
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file() and path.parent != root / "tmp"
    ]
    return sorted(files + list(inline_blob_keys(data_dir, database_url)))


def stored_blobs_of(config: ServiceConfig) -> list[str]:
    """:func:`stored_blobs` of a service's configuration."""
    return stored_blobs(config.data_dir, config.database_url, config.blob_root)


def temporary_files(data_dir: Path) -> list[Path]:
    return [path for path in (data_dir / "blobs" / "tmp").glob("*") if path.is_file()]


def indexed_blob_keys(data_dir: Path, database_url: str | None) -> set[str]:
    url = database_url or f"sqlite:///{data_dir / 'index.sqlite3'}"
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {row.blob_key for row in conn.execute(select(instances.c.blob_key))}
    finally:
        engine.dispose()


def crafted_instance(uid: str, seed: int) -> bytes:
    """An instance whose three UIDs are ``uid`` byte for byte (pydicom would refuse to write an
    invalid UID, so a valid placeholder of the same length is swapped in the encoded bytes)."""
    raw = uid.encode()
    length = len(raw) + len(raw) % 2
    placeholders = [(str(n) * length)[:length] for n in (1, 2, 3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns of a UID over 64 characters
        data = make_instance(*placeholders, seed=seed)
    padded = raw + b"\x00" * (length - len(raw))
    for placeholder in placeholders:
        data = data.replace(placeholder.encode(), padded)
    return data
