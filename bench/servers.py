"""Server processes under test: start, wait until they answer, read their peak memory, stop.

``dicomql serve`` runs as its own processes so the load client never shares its interpreter.
Peak memory is read two ways (bench/README.md, "Peak memory"): each process's VmHWM, reset
between phases through ``clear_refs``, summed; and the peak of the processes' summed PSS,
sampled by a thread, which does not count pages shared after a fork once per process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType

import httpx

STORE_NAME = "projects/bench/locations/local/datasets/bench/dicomStores/bench"
DICOMWEB_PATH = f"/v1/{STORE_NAME}/dicomWeb"
DIMSE_STORE = STORE_NAME
DIMSE_AE_TITLE = "DICOMQL"


class ServerError(Exception):
    """A server under test did not start, or refused the set-up the benchmark needs."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """A child process serving HTTP on 127.0.0.1:``port``."""

    name = "server"

    def __init__(
        self, command: list[str], port: int, log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.command = command
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServerError(f"{self.name} is not running")
        return self.process.pid

    def start(self, ready_path: str = "/", timeout: float = 60.0) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"{self.name} exited with {self.process.returncode}; "
                    f"see {self.log_path}:\n{self._log_tail()}"
                )
            try:
                httpx.get(self.url + ready_path, timeout=2.0)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise ServerError(f"{self.name} did not answer within {timeout:.0f} s; see {self.log_path}")

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def pids(self) -> list[int]:
        """The server's process and its descendants (``dicomql serve --processes N`` runs N
        server processes under a parent)."""
        return process_tree(self.pid)

    def reset_peak_rss(self) -> bool:
        """Restart VmHWM from the current RSS (Linux ≥ 4.0, ``clear_refs`` value 5)."""
        try:
            for pid in self.pids():
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def cpu_seconds(self) -> float:
        """User + system CPU time the server's processes have used so far, summed (/proc/PID/stat
        fields 14-17: their own and that of children they reaped). CPU per request holds up on a
        loaded machine, where wall time does not."""
        return sum(self.cpu_split())

    def cpu_split(self) -> tuple[float, float]:
        """:meth:`cpu_seconds` as user and system (kernel) time: where two servers differ
        (the kernel's share is mostly their disk writes, connections and thread switches)."""
        user = system = 0
        for pid in self.pids():
            stat = _read(Path(f"/proc/{pid}/stat"))
            if stat:
                # Fields after the command name, which is in parentheses and may hold spaces:
                # utime, stime, cutime, cstime.
                fields = [int(value) for value in stat[stat.rindex(")") + 2 :].split()[11:15]]
                user += fields[0] + fields[2]
                system += fields[1] + fields[3]
        ticks = os.sysconf("SC_CLK_TCK")
        return user / ticks, system / ticks

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM in bytes, from /proc/PID/status, summed over the server's processes."""
        values: dict[str, int] = {"VmRSS": 0, "VmHWM": 0}
        for pid in self.pids():
            for line in _read(Path(f"/proc/{pid}/status")).splitlines():
                key, _, rest = line.partition(":")
                if key in values:
                    values[key] += int(rest.split()[0]) * 1024
        return values

    def sample_peak_pss(self, interval: float = 0.1) -> PssSampler:
        """A sampler of the summed PSS of the server's processes, for a ``with`` block."""
        return PssSampler(self.pids, interval)


def pss_bytes(pids: Iterable[int]) -> int | None:
    """The processes' proportional set sizes summed, in bytes (the Pss line of
    /proc/PID/smaps_rollup, Linux ≥ 4.14), or None when no process's could be read.

    A page mapped by n processes counts 1/n in each, so the sum counts every page once, where
    summed RSS counts the pages a forked worker shares with its parent once per process. A
    process that has exited meanwhile adds nothing."""
    total: int | None = None
    for pid in pids:
        for line in _read(Path(f"/proc/{pid}/smaps_rollup")).splitlines():
            if line.startswith("Pss:"):
                total = (total or 0) + int(line.split()[1]) * 1024
                break
    return total


class PssSampler:
    """The peak of summed PSS over ``pids()`` (looked up again at every sample, so a restarted
    worker is counted), read every ``interval`` seconds by a thread while the ``with`` block
    runs, and once when it starts and ends.

    A lower bound on the true peak: a peak shorter than the interval falls between samples."""

    def __init__(self, pids: Callable[[], list[int]], interval: float = 0.1) -> None:
        self._pids = pids
        self.interval = interval
        self.peak: int | None = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pss-sampler", daemon=True)

    def sample(self) -> None:
        total = pss_bytes(self._pids())
        if total is not None:
            self.samples += 1
            self.peak = total if self.peak is None else max(self.peak, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> PssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def process_tree(root: int) -> list[int]:
    """``root`` and every process descended from it, from the parent ids in /proc/*/stat."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        text = _read(stat)
        if text:
            parents[int(stat.parent.name)] = int(text[text.rindex(")") + 2 :].split()[1])
    tree = [root]
    for pid in tree:
        tree += [child for child, parent in parents.items() if parent == pid]
    return tree


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""  # the process is gone


class DicomqlServer(ServerProcess):
    """``dicomql serve`` on a fresh data directory (SQLite) or a fresh PostgreSQL database."""

    def __init__(
        self,
        name: str,
        data_dir: Path,
        database_url: str | None,
        log_path: Path,
        dimse_port: int | None = None,
    ) -> None:
        port = free_port()
        # ``dicomql serve`` of the interpreter running the benchmark, wherever its venv is.
        command = [sys.executable, "-m", "dicomql.cli", "serve", "--port", str(port)]
        command += ["--data-dir", str(data_dir)]
        if database_url:
            command += ["--database-url", database_url]
        if dimse_port is not None:
            # AE title DICOMQL (the default) serving the store create_store makes after start.
            command += ["--dimse-port", str(dimse_port), "--dimse-store", DIMSE_STORE]
        env = {key: value for key, value in os.environ.items() if not key.startswith("DICOMQL_")}
        super().__init__(command, port, log_path, env=env)
        self.name = name
        self.dicomweb_url = self.url + DICOMWEB_PATH

    def create_store(self) -> None:
        """Create dataset ``bench`` and DICOM store ``bench`` through the admin API."""
        with httpx.Client(
            base_url=self.url + "/v1/projects/bench/locations/local", timeout=60
        ) as http:
            created = http.post("/datasets", params={"datasetId": "bench"}, json={})
            if created.status_code >= 400:
                raise ServerError(
                    f"{self.name}: creating the dataset gave "
                    f"{created.status_code}: {created.text[:300]}"
                )
            _await_operation(http, created.json())
            store = http.post(
                "/datasets/bench/dicomStores", params={"dicomStoreId": "bench"}, json={}
            )
            if store.status_code >= 400:
                raise ServerError(
                    f"{self.name}: creating the DICOM store gave "
                    f"{store.status_code}: {store.text[:300]}"
                )


def _await_operation(http: httpx.Client, operation: dict[str, object]) -> None:
    """datasets.create answers with an Operation; wait until it is done (Cloud Healthcare v1)."""
    name = operation.get("name")
    deadline = time.monotonic() + 60
    while not operation.get("done") and isinstance(name, str) and time.monotonic() < deadline:
        time.sleep(0.05)
        operation = httpx.get(
            f"{http.base_url.scheme}://{http.base_url.netloc.decode()}/v1/{name}", timeout=30
        ).json()
    if operation.get("error"):
        raise ServerError(f"creating the dataset failed: {operation['error']}")
