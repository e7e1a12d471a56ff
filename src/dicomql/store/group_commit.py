"""Group commit: concurrent write transactions of one process share one commit.

SQLite admits one writer at a time and every commit of a WAL database in ``synchronous=FULL``
waits for an fsync. When several requests want to write at once (four STOW clients journaling
keys and indexing instances), the first becomes the *leader*: it runs its own work and that of
every request queued behind it in one transaction, each under its own savepoint, and commits
once. A request's work is acknowledged only after that commit, so nothing is acknowledged
before it is durable. A failing work rolls back only its savepoint and is raised to its own
caller; a failing commit is raised to every caller of the group.

PostgreSQL writers run in parallel and the server groups WAL flushes itself, so there each work
simply runs in its own transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection

T = TypeVar("T")

# Works one transaction takes at most, so one commit's latency stays bounded.
_MAX_GROUP = 16


class _Work(Generic[T]):
    def __init__(self, work: Callable[[Connection], T]) -> None:
        self.work = work
        self.done = threading.Event()
        self.lead = False  # woken to lead the next group rather than with a result
        self.result: Any = None
        self.error: BaseException | None = None

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        result: T = self.result
        return result


class GroupCommit:
    """Runs write transactions of one :class:`~dicomql.store.index.Index`, grouped on SQLite.

    Args:
        begin: opens a write transaction (``Index.begin``), committed when its block ends.
        grouped: whether to share commits (SQLite); otherwise each work has its own.
    """

    def __init__(
        self, begin: Callable[[], AbstractContextManager[Connection]], *, grouped: bool
    ) -> None:
        self._begin = begin
        self._grouped = grouped
        self._lock = threading.Lock()
        self._queue: list[_Work[Any]] = []
        self._leading = False

    def run(self, work: Callable[[Connection], T]) -> T:
        """``work(conn)`` inside a write transaction, committed before this returns."""
        if not self._grouped:
            with self._begin() as conn:
                return work(conn)
        item: _Work[T] = _Work(work)
        with self._lock:
            self._queue.append(item)
            lead = not self._leading
            self._leading = True
        while not lead:
            item.done.wait()
            if not item.lead:
                return item.outcome()
            item.done.clear()
            lead = True
        self._lead_until_done(item)
        return item.outcome()

    def _lead_until_done(self, mine: _Work[Any]) -> None:
        """Commit groups until this caller's own work is done, then hand over leadership."""
        while True:
            with self._lock:
                group, self._queue = self._queue[:_MAX_GROUP], self._queue[_MAX_GROUP:]
            if group:
                self._commit(group)
            with self._lock:
                if not mine.done.is_set() and mine in self._queue:
                    continue  # not taken yet (the group was full): lead another round
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.done.set()
                else:
                    self._leading = False
                return

    def _commit(self, group: list[_Work[Any]]) -> None:
        # Alone (a DIMSE association's C-STORE, most STOW requests), a work needs no savepoint
        # to keep others' works from its failure: the transaction rolls back, the error its own.
        alone = len(group) == 1
        try:
            with self._begin() as conn:
                for item in group:
                    if alone:
                        item.result = item.work(conn)
                        continue
                    savepoint = conn.begin_nested()
                    try:
                        item.result = item.work(conn)
                    except BaseException as exc:  # raised to the work's own caller below
                        savepoint.rollback()
                        item.error = exc
                    else:
                        savepoint.commit()
        except BaseException as exc:
            # The commit (or the transaction around the works) failed: nothing of the group
            # is durable, so every caller hears of it.
            for item in group:
                if item.error is None:
                    item.error = exc
        for item in group:
            item.done.set()
