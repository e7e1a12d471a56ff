"""A lock shared by the threads of one process and by every process that opens the same file.

``dicomql serve --processes N`` runs N processes on one data directory: what a ``threading.Lock``
serialised before (SQLite writers, a DuckDB file) must now be serialised across processes too.
``flock`` does that and is released by the kernel when its process dies, so a SIGKILLed process
never leaves it held. The threads of one process first queue on a ``threading.RLock``, so at most
one of them waits in ``flock`` and the lock passes between them without a system call.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType
from typing import IO

try:
    import fcntl
except ImportError:  # Windows: no flock; one process per data directory, as before
    fcntl = None  # type: ignore[assignment]


class ProcessLock:
    """An exclusive lock on ``path`` (created if missing), reentrant in the thread that holds it.

    Use as a context manager. The file is opened lazily and again after a fork: a child that
    inherited its parent's open file would share the parent's ``flock`` instead of contending.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._threads = threading.RLock()
        self._depth = 0  # guarded by _threads
        self._file: IO[bytes] | None = None
        self._pid = 0

    def __enter__(self) -> ProcessLock:
        self._threads.acquire()
        if self._depth == 0 and fcntl is not None:
            try:
                fcntl.flock(self._opened(), fcntl.LOCK_EX)
            except BaseException:
                self._threads.release()
                raise
        self._depth += 1
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self._depth -= 1
        try:
            if self._depth == 0 and fcntl is not None and self._file is not None:
                fcntl.flock(self._file, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        """Close the file unless a thread holds the lock (then it closes with the process)."""
        if not self._threads.acquire(blocking=False):
            return
        try:
            if self._depth == 0 and self._file is not None:
                self._file.close()
                self._file = None
        finally:
            self._threads.release()

    def _opened(self) -> IO[bytes]:
        if self._file is None or self._pid != os.getpid():
            # After a fork the inherited file object is left alone (closing it would not
            # release the parent's lock anyway); this process opens its own.
            self._file = open(self.path, "ab")  # noqa: SIM115 - held for the process's life
            self._pid = os.getpid()
        return self._file
