"""The index's connection handling: what a closed index does with connections still in use, and
how many round trips a PostgreSQL checkout costs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy
from sqlalchemy import literal, select

from dicomql.store.index import Index


@pytest.fixture
def postgres_index(postgres_url: str) -> Iterator[Index]:
    index = Index.open(postgres_url)
    try:
        yield index
    finally:
        index.close()


def _is_closed(dbapi_connection: object) -> bool:
    if isinstance(dbapi_connection, psycopg.Connection):
        return dbapi_connection.closed
    try:
        dbapi_connection.execute("SELECT 1")  # type: ignore[attr-defined]
    except Exception:  # sqlite3.ProgrammingError: Cannot operate on a closed database
        return True
    return False


def test_a_connection_in_use_when_the_index_closes_is_closed_when_it_is_returned(
    index_url: str,
) -> None:
    # A streamed response or an operation handler can still hold a connection at shutdown;
    # Engine.dispose alone would leave it open in the discarded pool (psycopg then warns
    # "was deleted while still open" whenever the garbage collector finds it).
    index = Index.open(index_url)
    held = index.engine.connect()
    held.execute(select(literal(1)))
    in_use = held.connection.dbapi_connection
    with index.connect() as idle:
        idle.execute(select(literal(1)))
        pooled = idle.connection.dbapi_connection
    assert pooled is not in_use

    index.close()
    assert _is_closed(pooled)
    assert not _is_closed(in_use)
    held.close()
    assert _is_closed(in_use)


def _round_trips(trace: Path) -> list[str]:
    """The frontend's simple queries and extended-protocol syncs in a libpq trace."""
    return [
        line.split("\t", 4)[-1]
        for line in trace.read_text().splitlines()
        if "\tF\t" in line and ("\tQuery\t" in line or "\tSync" in line)
    ]


@pytest.mark.postgres
def test_a_postgresql_read_costs_begin_statement_and_rollback_without_a_ping(
    postgres_index: Index, tmp_path: Path
) -> None:
    trace = tmp_path / "libpq.trace"
    with trace.open("w") as trace_file:
        with postgres_index.connect() as connection:
            connection.connection.dbapi_connection.pgconn.trace(trace_file.fileno())  # type: ignore[union-attr]
            connection.execute(select(literal(7)))
        for _ in range(3):
            with postgres_index.connect() as connection:
                connection.execute(select(literal(7)))
        with postgres_index.connect() as connection:
            connection.connection.dbapi_connection.pgconn.untrace()  # type: ignore[union-attr]
    round_trips = _round_trips(trace)
    # BEGIN, the statement (Parse/Bind/Execute/Sync) and the pool's ROLLBACK, four times; a
    # pre-ping would add a SELECT 1 to each.
    assert len(round_trips) == 4 * 3, round_trips
    assert sum("ROLLBACK" in line for line in round_trips) == 4


def _backend_pid(index: Index) -> int:
    with index.connect() as connection:
        pid: int = connection.execute(sqlalchemy.text("SELECT pg_backend_pid()")).scalar_one()
        return pid


def _terminate(postgres_url: str, pid: int) -> None:
    plain = postgres_url.replace("+psycopg", "").split("?")[0]
    with psycopg.connect(plain, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


@pytest.mark.postgres
def test_a_postgresql_connection_idle_past_the_ping_threshold_is_replaced_if_the_server_dropped_it(
    postgres_url: str,
) -> None:
    index = Index.open(postgres_url, ping_after_idle=0)
    try:
        first = _backend_pid(index)
        _terminate(postgres_url, first)
        assert _backend_pid(index) != first
    finally:
        index.close()


@pytest.mark.postgres
def test_a_dropped_postgresql_connection_fails_one_statement_and_the_pool_then_reconnects(
    postgres_index: Index, postgres_url: str
) -> None:
    # Used moments ago, so it is not pinged: the failure surfaces once, SQLAlchemy sees a
    # disconnect and invalidates the pool, and the next checkout connects afresh.
    first = _backend_pid(postgres_index)
    _terminate(postgres_url, first)
    with pytest.raises(sqlalchemy.exc.OperationalError) as failure:
        _backend_pid(postgres_index)
    assert failure.value.connection_invalidated
    assert _backend_pid(postgres_index) != first


def test_reopening_an_index_stamped_with_an_older_revision_migrates_it(index_url: str) -> None:
    # Opening skips Alembic when the database is stamped with the scripts' heads; an older
    # stamp must still be upgraded.
    from alembic import command
    from alembic.script import ScriptDirectory

    from dicomql.store.migrations import alembic_config

    index = Index.open(index_url)
    config = alembic_config(index.engine)
    head = ScriptDirectory.from_config(config).get_current_head()
    command.downgrade(config, "-1")
    with index.connect() as connection:
        older = connection.execute(sqlalchemy.text("SELECT version_num FROM alembic_version"))
        assert older.scalar_one_or_none() != head
    index.close()

    index = Index.open(index_url)
    try:
        with index.connect() as connection:
            stamped = connection.execute(sqlalchemy.text("SELECT version_num FROM alembic_version"))
            assert stamped.scalar_one() == head
    finally:
        index.close()
