"""The index database: opening it, migrating it, and handing out transactions.

SQLite (a file in the data dir, WAL, ``synchronous=FULL`` so a committed write survives a crash)
is the default; PostgreSQL is chosen by a ``postgresql+psycopg://`` URL. The schema lives in
:mod:`dicomql.store.schema` and is brought up to date by Alembic on open (Alembic is imported and
run only when the database is not stamped with the newest revision).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, create_engine, event, exc, text
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from dicomql.store.group_commit import GroupCommit
from dicomql.store.locks import ProcessLock
from dicomql.store.prepared import sqlite_execute

MIGRATIONS = Path(__file__).parent / "migrations" / "versions"

# Seconds after which a pooled PostgreSQL connection is replaced, and seconds of idleness after
# which it is pinged before use.
RECYCLE_SECONDS = 300
PING_AFTER_IDLE_SECONDS = 30.0


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'index.sqlite3'}"


class Index:
    """A handle on the index database shared by every request of one process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # SQLite admits one writer at a time, and a writer that finds the lock taken sleeps in
        # its busy handler with growing back-off (STOW spent ~42 % of its time there under 4
        # clients). Queueing writers on a lock hands the database over at once: a file lock
        # beside the index, so that the processes of `serve --processes N` (and a `dicomql
        # exec` on the same data directory) queue too; busy_timeout stays as the backstop for
        # other programs. PostgreSQL has row locks and needs none.
        self._write_lock: ProcessLock | threading.RLock | None = _writer_lock(engine)
        # Concurrent writers of this process share commits (store/group_commit.py).
        self.writes = GroupCommit(self.begin, grouped=self.dialect == "sqlite")
        self._closed = False
        # Recreated pools (dispose, invalidation) share the listeners of the first.
        event.listen(engine.pool, "checkin", self._close_if_index_closed)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @classmethod
    def open(cls, url: str, *, ping_after_idle: float = PING_AFTER_IDLE_SECONDS) -> Index:
        """Connect to ``url`` and migrate the schema to the newest revision.

        Args:
            ping_after_idle: PostgreSQL only: a pooled connection idle at least this many
                seconds is pinged before it is handed out (a busy pool never pings).
        """
        engine = _create_engine(url, ping_after_idle)
        if not _schema_is_current(engine):
            # The processes of `serve --processes N` (or servers on one PostgreSQL) start
            # together: one migrates, the others wait and then find the schema current.
            with _migration_lock(engine):
                if not _schema_is_current(engine):
                    # Importing and running Alembic was ~10 % of a cold start: only when
                    # there is work.
                    from dicomql.store import migrations

                    migrations.upgrade(engine)
        return cls(engine)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction, committed on success, rolled back on error."""
        with self._write_lock or nullcontext(), self.engine.connect() as connection:
            connection.execution_options(dicomql_write=True)
            with connection.begin():
                yield connection

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection for reads (autocommit-free; nothing to commit)."""
        with self.engine.connect() as connection:
            yield connection

    def close(self) -> None:
        """Close every pooled connection, and each one still in use as soon as it is returned.

        ``Engine.dispose`` closes only the connections in the pool: one a thread still holds
        (a streamed response, an operation handler that outlived shutdown) would go back to the
        discarded pool and stay open until the garbage collector found it unclosed.
        """
        self._closed = True
        self.engine.dispose()
        if isinstance(self._write_lock, ProcessLock):
            self._write_lock.close()

    def _close_if_index_closed(self, _dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        if self._closed:
            record.close()


def _writer_lock(engine: Engine) -> ProcessLock | threading.RLock | None:
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return threading.RLock()  # private to this process
    return ProcessLock(Path(database).with_name(Path(database).name + ".writer"))


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Held by one migrating process at a time among those opening the same index."""
    if engine.dialect.name == "postgresql":
        # A session-level advisory lock on a connection of its own, outside the pool (Alembic
        # uses a pooled one; the pool stays as small as it was).
        key = "hashtext('dicomql.migrate:' || current_schema())"
        locker = create_engine(engine.url, poolclass=NullPool)
        try:
            with locker.connect() as connection:
                connection.execution_options(isolation_level="AUTOCOMMIT")
                connection.execute(text(f"SELECT pg_advisory_lock({key})"))
                try:
                    yield
                finally:
                    connection.execute(text(f"SELECT pg_advisory_unlock({key})"))
        finally:
            locker.dispose()
        return
    lock = _writer_lock(engine)
    if not isinstance(lock, ProcessLock):
        yield
        return
    try:
        with lock:
            yield
    finally:
        lock.close()


def json_text(value: Any) -> str:
    """The JSON columns' text: compact UTF-8 JSON as orjson writes it (the DICOM JSON of an
    instance took ~0.15 ms with the json module, ~10 % of a C-STORE's CPU, and ~0.01 ms so).
    Readers parse it (SQLAlchemy, psycopg, SQLite's JSON functions) or pass it on as a DICOMweb
    body, which the service writes compact and unescaped too. A NaN or infinity becomes null
    (valid JSON; the json module wrote ``NaN``, which PostgreSQL refuses). Values orjson does
    not take (integers beyond 64 bits, non-text keys, unpaired surrogates) are written by the
    json module, as before."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


def _create_engine(url: str, ping_after_idle: float) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            json_serializer=json_text,
            connect_args={"check_same_thread": False, "timeout": 30},
            # A pooled connection per thread keeps SQLite's page cache warm between requests,
            # and the most recently returned one is handed out next: the pool's default, the
            # least recent, had in each transaction a connection whose cache the others'
            # commits had made stale (~20 page reads from the WAL for each C-STORE's insert).
            pool_size=8,
            max_overflow=16,
            pool_use_lifo=True,
        )
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
        return engine
    if url.startswith("postgresql"):
        engine = create_engine(
            url,
            json_serializer=json_text,
            # Eight stay open: four STOW clients keep about that many in use. Overflow reaches
            # 48, what anyio's default 40 threads (requests, event delivery, the janitor) plus
            # the operation workers' own (a claim or report, a heartbeat and a handler thread
            # each; two workers by default) can hold at once, so the pool never makes one wait.
            pool_size=8,
            max_overflow=40,
            # No pool_pre_ping: it cost a round trip (SELECT 1) on every checkout, and a request
            # checks out one to four times. Instead a connection is replaced when it is older
            # than five minutes (before NATs and load balancers drop idle TCP, often at 350 s),
            # pinged only when it sat idle long enough for the server to have gone away, and on
            # a disconnect error SQLAlchemy invalidates every connection opened before it.
            pool_recycle=RECYCLE_SECONDS,
        )
        event.listen(engine.pool, "checkin", _note_checkin)
        event.listen(engine.pool, "checkout", _ping_if_idle(engine, ping_after_idle))
        return engine
    return create_engine(url, poolclass=NullPool, json_serializer=json_text)


def _note_checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info["dicomql_checked_in"] = time.monotonic()


def _ping_if_idle(engine: Engine, ping_after_idle: float) -> Any:
    def ping(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        checked_in = record.info.get("dicomql_checked_in")
        if checked_in is None or time.monotonic() - checked_in < ping_after_idle:
            return  # new, or used moments ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            # SQLAlchemy's documented way to say "dead": the pool discards this connection
            # and checks out another (docs: "Disconnect Handling - Pessimistic", custom).
            raise exc.DisconnectionError(str(error)) from error

    return ping


_REVISION = re.compile(r"^revision\s*=\s*[\"']([^\"']+)[\"']", re.MULTILINE)
_DOWN_REVISION = re.compile(r"^down_revision\s*=\s*(None|[\"']([^\"']+)[\"'])", re.MULTILINE)


def _head_revisions() -> set[str] | None:
    """The newest revisions of the migration scripts, read as text; None if a script is not in
    the plain ``revision = "…"`` / ``down_revision = "…"|None`` form (then Alembic decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in MIGRATIONS.glob("*.py"):
        source = script.read_text(encoding="utf-8")
        revision, down = _REVISION.search(source), _DOWN_REVISION.search(source)
        if revision is None or down is None:
            return None
        revisions.add(revision.group(1))
        if down.group(2):
            parents.add(down.group(2))
    return revisions - parents or None


def _schema_is_current(engine: Engine) -> bool:
    """True if the database is stamped with exactly the scripts' head revisions."""
    heads = _head_revisions()
    if heads is None:
        return False
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT version_num FROM alembic_version"))
            stamped = {row[0] for row in rows}
    except exc.DBAPIError:
        return False  # a new database: no alembic_version table yet
    return stamped == heads


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # Take over transaction control from the sqlite3 module so BEGIN IMMEDIATE can be issued;
    # otherwise two writers can deadlock upgrading their read locks.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # an acknowledged write survives a crash
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _begin_sqlite(connection: Connection) -> None:
    # Writers take the write lock up front (IMMEDIATE) so they queue on busy_timeout instead of
    # failing with SQLITE_BUSY on lock upgrade; readers stay DEFERRED and never block in WAL mode.
    # On the sqlite3 connection: exec_driver_sql's execution cost 14 µs of CPU a transaction.
    write = connection.get_execution_options().get("dicomql_write", False)
    sqlite_execute(connection, "BEGIN IMMEDIATE" if write else "BEGIN")
