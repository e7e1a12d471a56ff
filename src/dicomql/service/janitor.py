"""Cleaning up after crashes when several servers share one index and one blob store.

A crash leaves two kinds of leftovers: blobs journaled (``blob_journal``) but never indexed, and
partial writes (local ``*.part`` files, S3 multipart uploads). A lone server removes them all at
start. With several servers, another live server's STOW in flight looks exactly like a leftover,
so removing everything would delete blobs it is writing right now. Two rules keep both safe:

- **Presence.** Every server holds a shared lock for its lifetime: a PostgreSQL session-level
  advisory lock, or ``flock`` on a file next to a SQLite index. At start a server first tries the
  same lock exclusively: if it gets it, no other server is alive (a dead one's lock went with its
  connection or process), so it removes every leftover at once, as before, then keeps the lock
  shared. Otherwise it removes only leftovers older than a grace period.
- **Janitor.** Every server periodically removes leftovers older than the grace period, so a
  crashed server's leftovers are cleaned while the others keep running.

The grace period must exceed the longest STOW (a blob's journal entry is written before its
upload starts and removed when it is indexed); one hour by default.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import anyio
from anyio import to_thread
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool

from dicomql.service.prometheus import count_error

if TYPE_CHECKING:
    from dicomql.service.config import ServiceConfig
    from dicomql.service.context import Service
    from dicomql.store.index import Index

log = logging.getLogger(__name__)

# Servers sharing one index (one PostgreSQL database and schema) contend on this advisory lock;
# the schema is part of the key because tests and tenants put several indexes in one database.
_LOCK_KEY = "hashtext('dicomql.servers:' || current_schema())"
# How long a starting server waits for another one's start-up recovery to finish.
_SHARED_WAIT = 300.0


class ServerPresence:
    """This server's membership of the set of servers sharing an index, held until :meth:`leave`.

    ``alone`` tells whether, when it joined, no other server was alive on the same index.
    """

    def __init__(self) -> None:
        self.alone = True
        self._connection: Connection | None = None
        self._lock_file: IO[bytes] | None = None
        self._url: Any = None

    @classmethod
    def join(cls, config: ServiceConfig, index: Index) -> ServerPresence:
        presence = cls()
        if index.dialect == "postgresql":
            presence._url = index.engine.url
            presence._join_postgresql()
        elif index.dialect == "sqlite":
            presence._join_sqlite(_sqlite_path(config.index_url))
        return presence

    def settle(self) -> None:
        """After start-up recovery: hold the lock shared, so that other servers may join."""
        if self._connection is not None and self.alone:
            self._connection.execute(text(f"SELECT pg_advisory_lock_shared({_LOCK_KEY})"))
            self._connection.execute(text(f"SELECT pg_advisory_unlock({_LOCK_KEY})"))
        elif self._lock_file is not None and self.alone:
            import fcntl

            fcntl.flock(self._lock_file, fcntl.LOCK_SH)  # a conversion: never waits
        self.alone = False  # from now on other servers may join at any moment

    def check(self) -> None:
        """Take the shared lock again if its PostgreSQL session was lost (a database restart or
        a dropped connection), so that a server starting later does not think it is alone."""
        if self._url is None:
            return
        try:
            assert self._connection is not None
            self._connection.execute(text("SELECT 1"))
        except Exception:
            log.warning("server presence lock lost; taking it again", exc_info=True)
            self._close_connection()
            self._connection = _autocommit_connection(self._url)
            self._connection.execute(text(f"SELECT pg_advisory_lock_shared({_LOCK_KEY})"))

    def leave(self) -> None:
        self._close_connection()
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    # --- per backend ----------------------------------------------------------------------------

    def _join_postgresql(self) -> None:
        # A connection of its own, outside the pool and in autocommit: it lives as long as the
        # server, and must never sit idle inside a transaction.
        self._connection = _autocommit_connection(self._url)
        self.alone = bool(
            self._connection.execute(text(f"SELECT pg_try_advisory_lock({_LOCK_KEY})")).scalar()
        )
        if self.alone:
            return
        # Someone else holds it: shared by running servers (we join them at once), or exclusive
        # for the moment a lone server recovers (we wait until it is done).
        deadline = time.monotonic() + _SHARED_WAIT
        while not self._connection.execute(
            text(f"SELECT pg_try_advisory_lock_shared({_LOCK_KEY})")
        ).scalar():
            if time.monotonic() > deadline:
                log.warning("another server's start-up recovery is still running; not waiting")
                return
            time.sleep(0.1)

    def _join_sqlite(self, path: Path | None) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no flock; one server per data directory, as before
            return
        if path is None:
            return
        # A file of its own, next to the index: locking the database file itself would
        # interfere with SQLite's own locks.
        self._lock_file = open(path.with_name(path.name + ".servers"), "ab")  # noqa: SIM115
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            self.alone = False
        deadline = time.monotonic() + _SHARED_WAIT
        while True:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    log.warning("another server's start-up recovery is still running")
                    return
                time.sleep(0.1)

    def _close_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
                self._connection.engine.dispose()
            self._connection = None


def _autocommit_connection(url: Any) -> Connection:
    engine = create_engine(url, poolclass=NullPool)
    return engine.connect().execution_options(isolation_level="AUTOCOMMIT")


def _sqlite_path(url: str) -> Path | None:
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url.endswith(":memory:"):
        return None
    return Path(url[len(prefix) :])


def remove_leftovers(service: Service, older_than: timedelta | None) -> tuple[int, int]:
    """Remove partial blob writes and journaled blobs no instance references.

    Args:
        older_than: only leftovers at least this old; None for all (a lone server at start).

    Returns:
        how many partial writes and how many unreferenced blobs were removed.
    """
    from dicomql.store.instances import recover_journal

    partial = service.blobs.remove_temporaries(older_than=older_than)
    unreferenced = recover_journal(service.index, service.blobs, older_than=older_than)
    return partial, unreferenced


def recover_at_start(service: Service, presence: ServerPresence) -> None:
    """Start-up recovery: everything when alone, else only what is older than the grace."""
    grace = timedelta(seconds=service.config.orphan_grace_seconds)
    remove_leftovers(service, None if presence.alone else grace)
    presence.settle()


async def run_janitor(service: Service, presence: ServerPresence) -> None:
    """Every ``janitor_interval_seconds`` (±50 %, so servers started together do not all sweep
    at once), remove leftovers older than the grace period. Runs until cancelled."""
    interval = service.config.janitor_interval_seconds
    grace = timedelta(seconds=service.config.orphan_grace_seconds)
    while True:
        await anyio.sleep(interval * random.uniform(0.5, 1.5))
        try:
            await to_thread.run_sync(presence.check)
            partial, unreferenced = await to_thread.run_sync(remove_leftovers, service, grace)
        except Exception as exc:  # the database or object store is down for now: next round
            log.warning("janitor pass failed", exc_info=True)
            count_error(exc)
            continue
        if partial or unreferenced:
            log.info(
                "janitor removed %d partial writes and %d unreferenced blobs",
                partial,
                unreferenced,
            )
