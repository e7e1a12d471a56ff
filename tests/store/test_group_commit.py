"""Group commit (``store.group_commit``): concurrent writers of one process share a commit on
SQLite, each is answered only after that commit, and one writer's failure stays its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, event, insert, select

from dicomql.store.index import Index, sqlite_url
from dicomql.store.operations import now
from dicomql.store.schema import blob_journal

WRITERS = 8


@pytest.fixture
def sqlite_index(tmp_path: Path) -> Iterator[Index]:
    index = Index.open(sqlite_url(tmp_path))
    try:
        yield index
    finally:
        index.close()


def _journal(key: str) -> Callable[[Connection], str]:
    def work(conn: Connection) -> str:
        conn.execute(insert(blob_journal), [{"blob_key": key, "create_time": now()}])
        return key

    return work


def _keys(index: Index) -> set[str]:
    with index.connect() as conn:
        return set(conn.execute(select(blob_journal.c.blob_key)).scalars())


def _run_while_the_writer_lock_is_held(
    index: Index, works: list[Callable[[Connection], Any]]
) -> tuple[list[Any], int]:
    """Start every work while another transaction holds SQLite's write lock, so they queue;
    then let go. Returns each work's result (or exception) and how many commits there were."""
    commits = 0

    def count(_conn: Any) -> None:
        nonlocal commits
        commits += 1

    results: list[Any] = [None] * len(works)

    def call(number: int) -> None:
        try:
            results[number] = index.writes.run(works[number])
        except Exception as exc:
            results[number] = exc

    threads = [threading.Thread(target=call, args=(n,)) for n in range(len(works))]
    with index.begin():
        event.listen(index.engine, "commit", count)
        for thread in threads:
            thread.start()
        # Every writer queued behind the first one, which waits for this transaction.
        deadline = time.monotonic() + 60
        while len(index.writes._queue) < len(works) - 1:
            assert time.monotonic() < deadline, "the writers did not queue"
            time.sleep(0.005)
    for thread in threads:
        thread.join(timeout=60)
    event.remove(index.engine, "commit", count)
    return results, commits


def test_concurrent_writers_share_commits_and_all_of_them_are_durable(
    sqlite_index: Index,
) -> None:
    keys = [f"instances/00/{n}" for n in range(WRITERS)]
    results, commits = _run_while_the_writer_lock_is_held(
        sqlite_index, [_journal(key) for key in keys]
    )
    assert results == keys
    # The lock holder's, the first writer's, then one for all who queued behind it.
    assert commits == 3
    assert _keys(sqlite_index) == set(keys)


def test_a_failing_writer_is_answered_with_its_error_and_the_others_commit(
    sqlite_index: Index,
) -> None:
    def fail(conn: Connection) -> None:
        conn.execute(insert(blob_journal), [{"blob_key": "doomed", "create_time": now()}])
        raise ValueError("this work fails")

    works = [_journal("a"), _journal("b"), fail, _journal("c")]
    results, _ = _run_while_the_writer_lock_is_held(sqlite_index, works)
    assert results[:2] == ["a", "b"] and results[3] == "c"
    assert isinstance(results[2], ValueError)
    assert _keys(sqlite_index) == {"a", "b", "c"}  # the failing work's row was rolled back


def test_a_writer_alone_commits_at_once(sqlite_index: Index) -> None:
    assert sqlite_index.writes.run(_journal("alone")) == "alone"
    assert _keys(sqlite_index) == {"alone"}
