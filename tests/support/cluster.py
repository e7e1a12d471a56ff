"""A cluster of ``dicomql serve`` processes for the scale-out tests: N servers on loopback ports
sharing one fresh PostgreSQL database and one S3 bucket.

moto's server stands in for S3 (no real S3 can exist here); it speaks the same REST protocol over
real HTTP on loopback, so the servers' s3fs/aiobotocore run exactly as they would against AWS.
Everything else is real: the ``dicomql serve`` command line, PostgreSQL on 127.0.0.1:5432,
SIGKILL.

Use::

    with start_cluster(tmp_path, servers=3, lease_seconds=3) as cluster:
        cluster[0].http.post(...)          # an httpx.Client of server 0
        cluster[1].kill()                  # SIGKILL
        cluster[1].restart()               # same port, same flags
        rows = cluster.query("SELECT count(*) FROM instances")

or the ``cluster_factory`` fixture (``tests/scaleout/conftest.py``), which also shares one moto
server per test session. Every wait is bounded; the bounds are generous because the CI machine has
two cores shared by many processes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.ports import free_port

DICOMQL = Path(sys.executable).with_name("dicomql")
POSTGRES_URL = os.environ.get(
    "DICOMQL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
# moto accepts any credentials; botocore refuses to sign without some.
S3_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# A URL every server answers with 200 once its lifespan (migrations, recovery, workers) is done.
READY_PATH = "/v1/projects/p/locations/l"
START_TIMEOUT = 120.0  # seconds; imports alone take several on a loaded 2-core machine
STOP_TIMEOUT = 30.0


def _plain(url: str) -> str:
    """The libpq form of a SQLAlchemy psycopg URL."""
    return url.replace("+psycopg", "")


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database (SQLAlchemy URL), dropped afterwards.

    A database rather than a schema: each server process opens its own connections, and a whole
    database also isolates advisory locks' meaning and ``pg_stat_activity`` per test. Skips the
    test, saying why, when PostgreSQL is unreachable.
    """
    import psycopg

    name = f"dq_scaleout_{secrets.token_hex(5)}"
    try:
        with psycopg.connect(_plain(POSTGRES_URL), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE DATABASE {name}")
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} is not reachable: {exc}".strip())
    base, _, _ = POSTGRES_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(_plain(POSTGRES_URL), autocommit=True, connect_timeout=5) as conn:
            # FORCE: a SIGKILLed server's connections may linger until PostgreSQL notices.
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def moto_s3_server(log_dir: Path) -> Iterator[str]:
    """moto's S3 server in a child process on a loopback port; yields its endpoint URL.

    A process, not moto's ThreadedMotoServer: the servers' S3 traffic must not compete with the
    test's own thread for one interpreter lock.
    """
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "moto.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **S3_ENVIRONMENT},
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise AssertionError(f"moto server exited: {(log_dir / 'moto.log').read_text()}")
            try:
                if httpx.get(f"{endpoint}/moto-api/", timeout=5).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("moto server did not answer in time")
            time.sleep(0.1)
        yield endpoint
    finally:
        _terminate(process)


def create_bucket(endpoint: str, bucket: str) -> None:
    httpx.put(f"{endpoint}/{bucket}", timeout=30).raise_for_status()  # S3 CreateBucket


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)


class ClusterServer:
    """One ``dicomql serve`` process of a cluster, on a fixed port kept across restarts."""

    def __init__(self, number: int, command: list[str], env: dict[str, str], log: Path) -> None:
        self.number = number
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [*command, "--port", str(self.port)]
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self._http: httpx.Client | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def spawn(self, extra_args: Sequence[str] = ()) -> None:
        """Start the process without waiting for it to answer (see :meth:`wait_ready`).

        ``extra_args`` are added for this start only; a flag given again overrides the
        cluster's (click keeps the last), e.g. ``("--workers", "0")``.
        """
        if self.alive:
            raise AssertionError(f"server {self.number} is already running")
        command = [*self.command, *extra_args]
        with open(self.log, "ab") as log:
            log.write(f"--- start {' '.join(command)}\n".encode())
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> ClusterServer:
        """Block until the server answers, or fail with the tail of its log."""
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while True:
                if self.process is None or self.process.poll() is not None:
                    raise AssertionError(f"server {self.number} exited:\n{self.log_tail()}")
                try:
                    if client.get(READY_PATH).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"server {self.number} did not answer in {timeout} s:\n{self.log_tail()}"
                    )
                time.sleep(0.05)

    def start(
        self, timeout: float = START_TIMEOUT, extra_args: Sequence[str] = ()
    ) -> ClusterServer:
        self.spawn(extra_args)
        return self.wait_ready(timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, leases stay held until they expire."""
        self._close_http()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM: a clean shutdown (workers give their operations back)."""
        self._close_http()
        if self.process is not None:
            _terminate(self.process)

    def restart(
        self, timeout: float = START_TIMEOUT, extra_args: Sequence[str] = ()
    ) -> ClusterServer:
        """Stop the server if it runs (cleanly), then start it again on the same port, with
        ``extra_args`` added for this start (see :meth:`spawn`)."""
        self.stop()
        return self.start(timeout, extra_args)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"server {self.number} never started"
        return self.process.pid

    # --- talking to it --------------------------------------------------------------------------

    @property
    def http(self) -> httpx.Client:
        """An httpx client of this server (made anew after a kill or restart)."""
        if self._http is None:
            self._http = httpx.Client(base_url=self.url, timeout=60)
        return self._http

    def log_tail(self, characters: int = 4000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text[-characters:]

    def errors_logged(self) -> str:
        """The log if it holds a traceback (an unexpected 500 or a crashed worker), else ''."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text if "Traceback" in text else ""

    def _close_http(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None


class Cluster:
    """N servers, the database URL they share, and the bucket they share."""

    def __init__(
        self,
        servers: list[ClusterServer],
        *,
        database_url: str,
        blob_url: str,
        s3_endpoint: str,
        env: dict[str, str],
    ) -> None:
        self.servers = servers
        self.database_url = database_url
        self.blob_url = blob_url
        self.s3_endpoint = s3_endpoint
        self.env = env

    def __getitem__(self, number: int) -> ClusterServer:
        return self.servers[number]

    def __iter__(self) -> Iterator[ClusterServer]:
        return iter(self.servers)

    def __len__(self) -> int:
        return len(self.servers)

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of one SQL statement on the shared database (for assertions), e.g.
        ``cluster.query("SELECT claimed_by FROM work_items")``; committed."""
        import psycopg

        with psycopg.connect(_plain(self.database_url), autocommit=True) as conn:
            cursor = conn.execute(sql, parameters)  # type: ignore[arg-type]
            return list(cursor.fetchall()) if cursor.description else []

    def blob_keys(self) -> list[str]:
        """Every object under the cluster's blob prefix, as keys relative to it."""
        from dicomql.store.object_blobs import FsspecBlobStore

        store = FsspecBlobStore(self.blob_url, endpoint_url=self.s3_endpoint, **_s3_keys())
        return sorted(
            path[len(store.root) + 1 :]
            for path in store.fs.find(store.root)
            if not path.endswith("/")
        )

    def settled(self, server: ClusterServer) -> bool:
        """Whether PostgreSQL has done all a stopped (SIGSTOP) server asked of it: PostgreSQL has
        read all it sent, and each of its backends waits for it (or for a
        lock: in a transaction, that alone commits nothing). Then what the index says of the
        server's work stays so while it is stopped."""
        ports = _postgres_client_ports(server.pid)
        postgres = int(self.database_url.rpartition(":")[2].partition("/")[0])
        if _sent_to_postgres_unread(ports, postgres):
            return False
        waits = self.query(
            "SELECT wait_event_type FROM pg_stat_activity WHERE client_port = ANY(%(ports)s)",
            {"ports": sorted(ports)},
        )
        return all(wait in ("Client", "Lock") for (wait,) in waits)

    def errors_logged(self) -> str:
        """Every server's log that holds a traceback, concatenated ('' when none does)."""
        return "".join(
            f"--- server {server.number}\n{text}"
            for server in self.servers
            if (text := server.errors_logged())
        )


def _tcp_sockets() -> Iterator[tuple[int, int, int, int, str]]:
    """(local port, remote port, bytes not yet sent on, bytes not yet read, inode) of every TCP
    socket."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            unsent, unread = (int(queue, 16) for queue in fields[4].split(":"))
            local, remote = (int(address.rpartition(":")[2], 16) for address in fields[1:3])
            yield local, remote, unsent, unread, fields[9]


def _postgres_client_ports(pid: int) -> set[int]:
    """The local ports of process ``pid``'s TCP connections (its index's among them)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    return {local for local, *_, inode in _tcp_sockets() if inode in inodes}


def _sent_to_postgres_unread(ports: set[int], postgres: int) -> bool:
    """Whether bytes sent from ``ports`` to PostgreSQL have not all been read by it yet (what
    PostgreSQL sent the other way may wait unread: a stopped client does not read)."""
    return any(
        (local in ports and remote == postgres and unsent)
        or (local == postgres and remote in ports and unread)
        for local, remote, unsent, unread, _ in _tcp_sockets()
    )


def _s3_keys() -> dict[str, str]:
    return {
        "key": S3_ENVIRONMENT["AWS_ACCESS_KEY_ID"],
        "secret": S3_ENVIRONMENT["AWS_SECRET_ACCESS_KEY"],
    }


@contextmanager
def start_cluster(
    work_dir: Path,
    servers: int = 3,
    *,
    workers: int | None = None,
    lease_seconds: float | None = None,
    extra_args: Sequence[str] = (),
    s3_endpoint: str | None = None,
    database_url: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Cluster]:
    """Start ``servers`` × ``dicomql serve`` sharing a fresh PostgreSQL database and an S3 bucket.

    Args:
        work_dir: holds each server's data directory (unused for blobs and index) and its log
            ``server-N.log``.
        workers: ``--workers`` (operation workers per process); the serve default when None.
        lease_seconds: ``--lease-seconds``; the serve default when None.
        extra_args: more ``dicomql serve`` flags, the same for every server.
        s3_endpoint: an S3 endpoint already running (one moto per session); else one is started.
        database_url: a database already made; else a fresh one is made and dropped afterwards.
        env: extra environment variables for the server processes.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        if database_url is None:
            database_url = stack.enter_context(postgres_database())
        if s3_endpoint is None:
            s3_endpoint = stack.enter_context(moto_s3_server(work_dir))
        bucket = f"dq-{secrets.token_hex(6)}"
        create_bucket(s3_endpoint, bucket)
        blob_url = f"s3://{bucket}/blobs"

        # Migrate once before the servers start, so that N fresh servers do not all race to
        # create the schema (they would wait for each other, but it costs start-up time).
        from dicomql.store.index import Index

        Index.open(database_url).close()

        server_env = {
            **os.environ,
            **S3_ENVIRONMENT,
            "DICOMQL_S3_ENDPOINT_URL": s3_endpoint,
            **(env or {}),
        }
        # The test process's own settings must not leak into the servers.
        for name in ("DICOMQL_DATABASE_URL", "DICOMQL_BLOB_URL", "DICOMQL_AUTH_TOKEN"):
            server_env.pop(name, None)
        members: list[ClusterServer] = []
        for number in range(servers):
            command = [
                str(DICOMQL),
                "serve",
                "--data-dir",
                str(work_dir / f"server-{number}"),
                "--database-url",
                database_url,
                "--blob-url",
                blob_url,
                # One process per server: a SIGKILL of a server kills all of it.
                "--processes",
                "1",
                # The tests import from folders of their own under the temporary directory.
                "--import-root",
                tempfile.gettempdir(),
            ]
            if workers is not None:
                command += ["--workers", str(workers)]
            if lease_seconds is not None:
                command += ["--lease-seconds", str(lease_seconds)]
            command += list(extra_args)
            members.append(
                ClusterServer(number, command, server_env, work_dir / f"server-{number}.log")
            )
        cluster = Cluster(
            members,
            database_url=database_url,
            blob_url=blob_url,
            s3_endpoint=s3_endpoint,
            env=server_env,
        )
        try:
            for server in members:  # all at once: start-up is mostly imports
                server.spawn()
            for server in members:
                server.wait_ready()
            yield cluster
        finally:
            for server in members:
                server.stop()
