"""``dicomql serve``: N server processes on one listening socket, and the parent that keeps them.

The parent binds the port, prints the start banner and starts N processes. Each is a whole server
(its own index connections, operation workers, janitor and event deliverer), exactly as N
``dicomql serve`` on one index would be (docs/deployment.md); the kernel gives each new
connection to one of the processes accepting on the shared socket. The parent never opens the
index: it only starts, watches and stops the processes.

- A process that dies (a crash, the OOM killer, SIGKILL) is logged with how it ended and
  replaced at once; one that keeps dying within seconds of its start is replaced after a pause
  that doubles up to 30 s.
- A process whose start-up fails (the index unreachable, a failed migration) stops the whole
  server with exit status 3, as one process would: the next one would fail the same way.
- SIGTERM or SIGINT to the parent is passed to every process. Each stops accepting, finishes the
  requests in flight, stops its workers and deliverer (what they held is taken over through its
  lease by the next start or another server) and exits 0; then the parent exits 0.
- A process whose parent vanished (SIGKILL) drains and exits the same way, freeing the port.

``--processes 1`` runs the server in the parent itself, with the same signals and exit status.

Not uvicorn's own ``workers=`` supervisor: it kills a process that does not answer its health
ping within 5 s (a busy one on a loaded machine), logs a death only at INFO, lets a drained
process die of the re-raised SIGTERM instead of exiting 0, and needs the app as an import string
with the configuration passed through the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

from dicomql.service.config import ServiceConfig

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger(__name__)

# uvicorn's exit status of a server whose application failed to start (uvicorn.config).
STARTUP_FAILURE = 3
# A process that lived less than this is restarted after a back-off, not at once.
_QUICK_DEATH_SECONDS = 10.0
_MAX_RESTART_PAUSE = 30.0
# How often a server process checks that its parent is still there.
_PARENT_CHECK_SECONDS = 0.5
_BACKLOG = 2048  # uvicorn's default
# Read by prometheus-client when it is first imported (not imported here for that reason).
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True)
class ServeSettings:
    """How ``dicomql serve`` listens and how many processes it runs, built once by the CLI.

    Attributes:
        host, port: the address to listen on (port 0: any free port, shown in the banner).
        processes: server processes sharing the port.
        log_level: uvicorn's log level.
        uvicorn: further ``uvicorn.Config`` options (e.g. ``forwarded_allow_ips``).
    """

    host: str
    port: int
    processes: int = 1
    log_level: str = "warning"
    uvicorn: Mapping[str, Any] = field(default_factory=dict)


def default_processes() -> int:
    """The CPUs this process may run on (a container's or taskset's limit), else all cores."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def bind(settings: ServeSettings) -> socket.socket:
    """The listening socket every server process accepts on.

    Raises:
        OSError: the address is taken or cannot be bound.
    """
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.host, settings.port))
        # Listening now queues connections that arrive while the processes start.
        sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def bind_metrics(api: socket.socket, port: int, *, listen: bool = True) -> socket.socket:
    """The ``--metrics-port`` socket of one server process, on the API's host. Each process
    binds its own with SO_REUSEPORT (the kernel spreads scrapes over them; any process sums
    every process's counters), so the parent, which never opens the index, serves none. The
    CLI binds it once without listening first, to refuse a port taken by another program.

    Raises:
        OSError: the port is taken by a program not using SO_REUSEPORT as this user.
    """
    sock = socket.socket(api.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((api.getsockname()[0], port))
        if listen:
            sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def serve(
    config: ServiceConfig, settings: ServeSettings, sock: socket.socket, *, banner: IO[str]
) -> int:
    """Run the server on ``sock`` until SIGTERM or SIGINT; the exit status.

    Prints the start banner to ``banner`` first.
    """
    banner.write(start_banner(config, settings, sock))
    banner.flush()
    if settings.processes == 1:
        return run_server(config, settings, sock)
    with metrics_directory():
        # Imported before starting processes, so that forked ones begin with it loaded; after
        # the metrics directory is set, which prometheus-client reads when imported.
        import dicomql.service.app  # noqa: F401

        return Supervisor(config, settings, sock).run()


@contextlib.contextmanager
def metrics_directory() -> Iterator[None]:
    """Where N server processes keep their Prometheus counters, for any of them to sum at a
    scrape (prometheus-client's multiprocess mode). The operator's ``PROMETHEUS_MULTIPROC_DIR``
    if set, emptied first (files left by an earlier run would be counted again); else a fresh
    temporary directory, removed at the end."""
    given = os.environ.get(MULTIPROCESS_DIR)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob("*.db"):
            leftover.unlink()
        _multiprocess_values()
        yield
        return
    with tempfile.TemporaryDirectory(prefix="dicomql-metrics-") as created:
        os.environ[MULTIPROCESS_DIR] = created
        _multiprocess_values()
        try:
            yield
        finally:
            del os.environ[MULTIPROCESS_DIR]


def _multiprocess_values() -> None:
    """prometheus-client picks file-backed values when first imported, if the directory is set
    by then; it may have been imported earlier (by a caller of ``serve``). Choosing again makes
    every value created from now on file-backed: dicomql's metrics all have labels, so none is
    created before a request counts it."""
    from prometheus_client import values

    values.ValueClass = values.get_value_class()


def start_banner(config: ServiceConfig, settings: ServeSettings, sock: socket.socket) -> str:
    """One short block: where to connect, where the data is, and who may."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if config.database_url:
        from sqlalchemy.engine import make_url

        url = make_url(config.database_url)
        backend = "PostgreSQL" if url.get_backend_name() == "postgresql" else url.get_backend_name()
        index = f"{backend} {url.render_as_string(hide_password=True)}"
    else:
        index = f"SQLite {config.data_dir / 'index.sqlite3'}"
    blobs = config.blob_url or f"files in {config.blob_root}"
    token = "required (Authorization: Bearer)" if config.auth_token else "not required"
    cpus = default_processes()
    return (
        f"dicomql serve: http://{shown}:{port}\n"
        f"  data:      {config.data_dir}\n"
        f"  index:     {index}\n"
        f"  blobs:     {blobs}\n"
        f"  processes: {settings.processes} ({cpus} CPU{'s' if cpus != 1 else ''} available)\n"
        f"  token:     {token}\n"
        + (f"  dimse:     {config.dimse.describe()}\n" if config.dimse else "")
        + (f"  viewer:    http://{shown}:{port}/viewer/\n" if config.viewer else "")
        + (
            f"  metrics:   http://{shown}:{config.metrics_port}/metrics (no token)\n"
            if config.metrics_port
            else ""
        )
    )


def run_server(config: ServiceConfig, settings: ServeSettings, sock: socket.socket) -> int:
    """One server on ``sock`` in this process until SIGTERM or SIGINT; the exit status."""
    import uvicorn

    from dicomql.service.app import create_app

    server = _quiet_server_class()(
        uvicorn.Config(
            create_app(config),
            log_level=settings.log_level,
            access_log=False,
            **settings.uvicorn,
        )
    )

    def drain(_signal: int, _frame: FrameType | None) -> None:
        server.should_exit = True

    # uvicorn installs its own handlers while it serves and, once drained, raises the signal
    # again against the handlers it found: these, so a drained server exits 0 instead of
    # dying of the signal. They also cover a signal that arrives before uvicorn's are in place.
    signal.signal(signal.SIGTERM, drain)
    signal.signal(signal.SIGINT, drain)
    sockets = [sock]
    if config.metrics_port:
        sockets.append(bind_metrics(sock, config.metrics_port))
    server.run(sockets=sockets)  # sys.exit(STARTUP_FAILURE) if the app's start-up fails
    return 0


def _quiet_server_class() -> type[uvicorn.Server]:
    import uvicorn  # here, not at the top: the CLI's cold start should not pay for it

    class QuietServer(uvicorn.Server):
        """uvicorn's server, waking once a second while idle instead of ten times.

        uvicorn's main loop sleeps 0.1 s between looks at ``should_exit`` (and refreshes the
        Date header every tenth look): about 1.5 ms of CPU a second per idle process. Here it
        waits up to a second, and setting ``should_exit`` (a signal, a drain) ends the wait at
        once, so stopping is as quick as before.
        """

        # asyncio, not anyio: uvicorn's loop is asyncio, and should_exit is set from signal
        # handlers, which only loop.call_soon_threadsafe may wake from (anyio's from_thread
        # would block, in the loop's own thread).
        _exit_asked: asyncio.Event | None = None
        _loop: asyncio.AbstractEventLoop | None = None

        @property
        def should_exit(self) -> bool:
            return bool(self.__dict__.get("_should_exit", False))

        @should_exit.setter
        def should_exit(self, value: bool) -> None:
            self.__dict__["_should_exit"] = value
            loop, asked = self._loop, self._exit_asked
            if value and loop is not None and asked is not None:
                with contextlib.suppress(RuntimeError):  # the loop has closed
                    loop.call_soon_threadsafe(asked.set)

        async def main_loop(self) -> None:
            # Started: what start-up made (modules, SQLAlchemy's tables and compiled
            # statements, pydicom's dictionaries, the app) lives as long as the process. Out of
            # the cyclic GC's way, whose full collections walked all ~130,000 objects again
            # (~55 ms of CPU each, a few every few hundred C-STOREs; docs/performance.md).
            gc.freeze()
            self._exit_asked = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            counter = 0
            should_exit = await self.on_tick(counter)
            while not should_exit:
                # Every look is a whole second: on_tick refreshes the Date header each time.
                counter = (counter + 10) % 864000
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._exit_asked.wait(), 1.0)
                should_exit = await self.on_tick(counter)

    return QuietServer


def _server_process(
    config: ServiceConfig, settings: ServeSettings, sock: socket.socket, parent: int
) -> None:
    """The body of a server process started by the :class:`Supervisor` (process ``parent``)."""
    # Not the parent's handlers (inherited through fork): until the server's own are in
    # place, a signal simply ends this process, which has nothing in flight yet.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(_run_watched(config, settings, sock, parent))


def _run_watched(
    config: ServiceConfig, settings: ServeSettings, sock: socket.socket, parent: int
) -> int:
    # A SIGKILLed parent cannot pass SIGTERM on: each process notices it is orphaned (its
    # parent id changes) and drains as if told to.
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_CHECK_SECONDS)
        log.warning("the dicomql serve parent process %d is gone; stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="dicomql-parent-watch", daemon=True).start()
    return run_server(config, settings, sock)


@dataclass
class _Slot:
    """One of the N places a server process runs in, and its history of quick deaths."""

    process: BaseProcess | None = None
    started: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None


class Supervisor:
    """Starts ``settings.processes`` server processes on ``sock``, replaces those that die, and
    passes SIGTERM/SIGINT on; see the module's docstring."""

    def __init__(self, config: ServiceConfig, settings: ServeSettings, sock: socket.socket):
        self.config = config
        self.settings = settings
        self.sock = sock
        # fork on Linux: a new process starts with everything imported, in milliseconds. The
        # parent holds no threads, connections or locks to inherit. Elsewhere, spawn.
        self._context = (
            multiprocessing.get_context("fork")
            if sys.platform == "linux"
            else multiprocessing.get_context("spawn")
        )
        self._slots = [_Slot() for _ in range(settings.processes)]
        self._signals: list[int] = []
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)

    def run(self) -> int:
        previous = {
            number: signal.signal(number, self._on_signal)
            for number in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for slot in self._slots:
                self._start(slot)
            status = self._watch()
            drained = self._stop()
            return status or (0 if drained else 1)
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
            os.close(self._wake_read)
            os.close(self._wake_write)
            self.sock.close()

    def _on_signal(self, number: int, _frame: FrameType | None) -> None:
        self._signals.append(number)
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_write, b"\0")

    def _start(self, slot: _Slot) -> None:
        process = self._context.Process(
            target=_server_process,
            args=(self.config, self.settings, self.sock, os.getpid()),
            name="dicomql-serve",
        )
        process.start()
        slot.process, slot.started, slot.restart_at = process, time.monotonic(), None

    def _watch(self) -> int:
        """Until a signal or a failed start-up: replace dead processes. The exit status."""
        while not self._signals:
            self._wait(self._next_restart())
            if self._signals:
                return 0
            now = time.monotonic()
            for slot in self._slots:
                process = slot.process
                if process is not None and process.exitcode is not None:
                    process.join()
                    _forget_metrics_of(process)
                    slot.process = None
                    if process.exitcode == STARTUP_FAILURE:
                        log.error(
                            "dicomql serve: server process %d failed to start; stopping",
                            process.pid,
                        )
                        return STARTUP_FAILURE
                    self._schedule_restart(slot, process, now)
                if slot.process is None and slot.restart_at is not None and slot.restart_at <= now:
                    self._start(slot)
        return 0

    def _schedule_restart(self, slot: _Slot, process: BaseProcess, now: float) -> None:
        if now - slot.started < _QUICK_DEATH_SECONDS:
            slot.quick_deaths += 1
        else:
            slot.quick_deaths = 0
        # The first death is replaced at once; a process that keeps dying young, after 1, 2,
        # 4 … 30 s, so that a crash loop does not take the machine.
        pause = 0.0
        if slot.quick_deaths > 1:
            pause = min(_MAX_RESTART_PAUSE, 2.0 ** (slot.quick_deaths - 2))
        slot.restart_at = now + pause
        log.warning(
            "dicomql serve: server process %d %s; starting another%s",
            process.pid,
            describe_exit(process.exitcode),
            f" in {pause:g} s" if pause else "",
        )

    def _next_restart(self) -> float | None:
        due = [slot.restart_at for slot in self._slots if slot.restart_at is not None]
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _wait(self, timeout: float | None) -> None:
        sentinels = [slot.process.sentinel for slot in self._slots if slot.process is not None]
        ready = wait([*sentinels, self._wake_read], timeout)
        if self._wake_read in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_read, 64)

    def _stop(self) -> bool:
        """Tell every process to drain and wait until all have exited. The first word is
        always SIGTERM: after Ctrl-C in a terminal the processes already had SIGINT, and a
        second SIGINT makes uvicorn stop waiting for requests in flight. Signals the parent
        receives while they drain are passed on as they are (a second Ctrl-C forces).

        Returns:
            whether every process exited 0 (a drained server does).
        """
        self.sock.close()  # the processes hold their own copies
        running = [slot.process for slot in self._slots if slot.process is not None]
        stopping = list(running)
        self._send(running, signal.SIGTERM)
        passed_on = len(self._signals)
        while running:
            ready = wait([*(process.sentinel for process in running), self._wake_read])
            if self._wake_read in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_read, 64)
            for number in self._signals[passed_on:]:
                self._send(running, number)
            passed_on = len(self._signals)
            for process in running:
                if process.sentinel in ready:
                    process.join()
            running = [process for process in running if process.exitcode is None]
        failed = [process for process in stopping if process.exitcode != 0]
        for process in failed:
            log.error(
                "dicomql serve: server process %d %s while stopping",
                process.pid,
                describe_exit(process.exitcode),
            )
        return not failed

    @staticmethod
    def _send(processes: list[BaseProcess], number: int) -> None:
        for process in processes:
            if process.exitcode is None and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, number)


def _forget_metrics_of(process: BaseProcess) -> None:
    """Drop a dead process's live gauges from the metrics (its counters stay: they count what
    it did)."""
    if process.pid is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(process.pid)


def describe_exit(exitcode: int | None) -> str:
    """``exited with status 1``, ``was killed by SIGKILL``."""
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name}"
    return f"exited with status {exitcode}"
