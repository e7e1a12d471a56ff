"""The index database: opening it, migrating it, and handing out transactions.

SQLite (a file in the data dir, WAL, ``synchronous=FULL`` so a committed write survives a crash)
is the default; PostgreSQL is chosen by a ``postgresql+psycopg://`` URL. The schema lives in
:mod:`dicomql.store.schema` and is brought up to date by Alembic on open.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.pool import NullPool

from dicomql.store import migrations


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'index.sqlite3'}"


class Index:
    """A handle on the index database shared by every request of one process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # SQLite admits one writer at a time, and a writer that finds the lock taken sleeps in
        # its busy handler with growing back-off (STOW spent ~42 % of its time there under 4
        # clients). Queueing this process's writers on a lock hands the database over at once;
        # other processes still meet busy_timeout. PostgreSQL has row locks and needs none.
        self._write_lock: threading.RLock | None = (
            threading.RLock() if engine.dialect.name == "sqlite" else None
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @classmethod
    def open(cls, url: str) -> Index:
        """Connect to ``url`` and migrate the schema to the newest revision."""
        engine = _create_engine(url)
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
        self.engine.dispose()


def _create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            # A pooled connection per thread keeps SQLite's page cache warm between requests.
            pool_size=8,
            max_overflow=16,
        )
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
        return engine
    if url.startswith("postgresql"):
        return create_engine(url, pool_size=8, max_overflow=16, pool_pre_ping=True)
    return create_engine(url, poolclass=NullPool)


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
    write = connection.get_execution_options().get("dicomql_write", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
