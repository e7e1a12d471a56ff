"""The operation worker pool: operations run off the request path to the end, report counters,
stop when cancelled, survive server restarts and crashes, and run once across pools."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import event, insert, select

from dicomql.service.app import create_app
from dicomql.service.config import ServiceConfig
from dicomql.service.workers import Handler, ItemizedMethod, OperationContext, WorkerPool
from dicomql.store import work
from dicomql.store.blobs import LocalBlobStore
from dicomql.store.index import Index
from dicomql.store.operations import create_operation, operation_resource
from dicomql.store.schema import datasets, operations
from tests.support.workers import DEADLINE, Blobless, PoolThread

METHOD = "test.count"
# Generous bound on waiting for a background worker; only reached if the pool is broken.


@dataclass
class Runs:
    """What the counting handler saw: every (operation, item) it processed, across pools."""

    items: list[tuple[str, int]]
    starts: list[str]
    lock: threading.Lock
    reached: threading.Event
    pools: set[str] = field(default_factory=set)  # the pools that have started an operation
    met: threading.Event = field(default_factory=threading.Event)

    def record(self, operation_id: str, item: int) -> None:
        with self.lock:
            self.items.append((operation_id, item))


def counting_handler(runs: Runs, *, signal_after: int = 3, pool: str = "") -> Handler:
    """Counts ``request.items`` work items with ``request.sleep`` seconds each, resuming from its
    checkpoint; sets ``runs.reached`` after ``signal_after`` items. With ``request.meet`` = N,
    an operation starts counting only once N pools have started one (so that on a loaded
    machine one pool cannot run them all before the other has looked)."""

    def handle(ctx: OperationContext) -> dict[str, Any]:
        if "meet" in ctx.request:
            with runs.lock:
                runs.pools.add(pool)
                if len(runs.pools) >= int(ctx.request["meet"]):
                    runs.met.set()
            runs.met.wait(DEADLINE)  # else the test's check of both pools says so
        total = int(ctx.request["items"])
        start = ctx.checkpoint or 0
        with runs.lock:
            runs.starts.append(ctx.claim.operation_id)
        ctx.set_pending(total - start)
        for item in range(start, total):
            time.sleep(float(ctx.request.get("sleep", 0.001)))
            runs.record(ctx.claim.operation_id, item)
            ctx.progress(success=1, checkpoint=item + 1)
            if item + 1 >= signal_after:
                runs.reached.set()
        return {"counted": total}

    return handle


@pytest.fixture
def runs() -> Runs:
    return Runs(items=[], starts=[], lock=threading.Lock(), reached=threading.Event())


def add_dataset(index: Index) -> int:
    with index.begin() as conn:
        result = conn.execute(
            insert(datasets).values(
                project="p",
                location="l",
                dataset_id="d",
                resource={},
                create_time=datetime.now(UTC),
            )
        )
        pk: int = result.inserted_primary_key[0]
        return pk


def add_operation(index: Index, dataset_pk: int, **request: Any) -> str:
    with index.begin() as conn:
        row = create_operation(conn, dataset_pk, METHOD, request=request)
        return str(row.operation_id)


def operation(index: Index, operation_id: str) -> dict[str, Any]:
    with index.connect() as conn:
        row = conn.execute(
            select(operations).where(operations.c.operation_id == operation_id)
        ).one()
    return operation_resource(row, f"projects/p/locations/l/datasets/d/operations/{operation_id}")


def wait_until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the condition was not reached; the worker pool is stuck")
        time.sleep(0.02)


def wait_done(index: Index, operation_id: str) -> dict[str, Any]:
    wait_until(lambda: operation(index, operation_id).get("done", False))
    return operation(index, operation_id)


def make_pool(index: Index, tmp_path: Path, handler: Handler, **options: Any) -> WorkerPool:
    service = Blobless(index=index, blobs=LocalBlobStore(tmp_path / "blobs"))
    options.setdefault("poll_interval", 0.05)
    return WorkerPool(service, {METHOD: handler}, **options)


def test_operation_runs_to_done_with_success_counter_and_response(
    index: Index, tmp_path: Path, runs: Runs
) -> None:
    dataset_pk = add_dataset(index)
    operation_id = add_operation(index, dataset_pk, items=5)
    with PoolThread(make_pool(index, tmp_path, counting_handler(runs))):
        resource = wait_done(index, operation_id)
    assert resource["response"] == {"counted": 5}
    assert "error" not in resource
    assert resource["metadata"]["counter"] == {"success": "5"}
    assert resource["metadata"]["apiMethodName"] == METHOD
    assert "endTime" in resource["metadata"]
    assert [item for _, item in runs.items] == [0, 1, 2, 3, 4]


def test_pending_counter_is_visible_while_the_operation_runs(
    index: Index, tmp_path: Path, runs: Runs
) -> None:
    dataset_pk = add_dataset(index)
    operation_id = add_operation(index, dataset_pk, items=400, sleep=0.005)
    pool = make_pool(index, tmp_path, counting_handler(runs))
    with PoolThread(pool):
        assert runs.reached.wait(DEADLINE)
        running = operation(index, operation_id)
        work.request_cancel(index, _pk(index, operation_id))
        wait_done(index, operation_id)
    assert "done" not in running
    counter = running["metadata"]["counter"]
    assert int(counter["success"]) >= 3
    assert int(counter["success"]) + int(counter["pending"]) == 400


def _pk(index: Index, operation_id: str) -> int:
    with index.connect() as conn:
        pk: int = conn.execute(
            select(operations.c.pk).where(operations.c.operation_id == operation_id)
        ).scalar_one()
        return pk


def test_cancel_mid_way_ends_with_cancelled_error_between_items(
    index: Index, tmp_path: Path, runs: Runs
) -> None:
    dataset_pk = add_dataset(index)
    operation_id = add_operation(index, dataset_pk, items=1000, sleep=0.005)
    with PoolThread(make_pool(index, tmp_path, counting_handler(runs))):
        assert runs.reached.wait(DEADLINE)
        assert work.request_cancel(index, _pk(index, operation_id))
        resource = wait_done(index, operation_id)
    assert resource["error"]["code"] == 1  # google.rpc.Code.CANCELLED
    assert "cancel" in resource["error"]["message"].lower()
    assert "response" not in resource
    assert resource["metadata"]["cancelRequested"] is True
    processed = len(runs.items)
    assert 3 <= processed < 1000
    assert int(resource["metadata"]["counter"]["success"]) == processed


def test_cancel_before_any_worker_claims_it_ends_cancelled_without_running(
    index: Index, tmp_path: Path, runs: Runs
) -> None:
    dataset_pk = add_dataset(index)
    operation_id = add_operation(index, dataset_pk, items=5)
    work.request_cancel(index, _pk(index, operation_id))
    with PoolThread(make_pool(index, tmp_path, counting_handler(runs))):
        resource = wait_done(index, operation_id)
    assert resource["error"]["code"] == 1
    assert runs.starts == []


def test_cancel_of_a_finished_operation_changes_nothing(
    index: Index, tmp_path: Path, runs: Runs
) -> None:
    dataset_pk = add_dataset(index)
    operation_id = add_operation(index, dataset_pk, items=2)
    with PoolThread(make_pool(index, tmp_path, counting_handler(runs))):
        wait_done(index, operation_id)
    assert not work.request_cancel(index, _pk(index, operation_id))
    assert operation(index, operation_id)["response"] == {"counted": 2}


def test_handler_failure_ends_the_operation_with_an_internal_error(
    index: Index, tmp_path: Path
) -> None:
    def failing(ctx: OperationContext) -> dict[str, Any]:
        ctx.progress(success=1)
        raise ValueError("the source store vanished")

    dataset_pk = add_dataset(index)
    operation_id = add_operation(index, dataset_pk)
    with PoolThread(make_pool(index, tmp_path, failing)):
        resource = wait_done(index, operation_id)
    assert resource["error"]["code"] == 13  # INTERNAL
    assert "the source store vanished" in resource["error"]["message"]


def test_pool_leaves_operations_of_methods_it_has_no_handler_for(
    index: Index, tmp_path: Path, runs: Runs
) -> None:
    dataset_pk = add_dataset(index)
    with index.begin() as conn:
        other = create_operation(conn, dataset_pk, "other.method", request={}).operation_id
    mine = add_operation(index, dataset_pk, items=1)
    with PoolThread(make_pool(index, tmp_path, counting_handler(runs))):
        wait_done(index, mine)
    assert "done" not in operation(index, other)
    with index.connect() as conn:
        claimed = conn.execute(
            select(operations.c.claimed_by).where(operations.c.operation_id == other)
        ).scalar_one()
    assert claimed is None


def test_operation_claimed_by_a_crashed_worker_resumes_when_its_lease_expires(
    index: Index, tmp_path: Path, runs: Runs
) -> None:
    dataset_pk = add_dataset(index)
    operation_id = add_operation(index, dataset_pk, items=6)
    # A worker in another process claims it, gets through two items, then dies.
    dead = work.claim_next(index, "dead-host:1/0", lease=timedelta(seconds=0.3), methods=[METHOD])
    assert dead is not None and dead.operation_id == operation_id
    work.record_progress(
        index, dead, lease=timedelta(seconds=0.3), success=2, pending=4, checkpoint=2
    )
    with PoolThread(make_pool(index, tmp_path, counting_handler(runs))):
        resource = wait_done(index, operation_id)
    assert resource["response"] == {"counted": 6}
    assert [item for _, item in runs.items] == [2, 3, 4, 5]
    assert resource["metadata"]["counter"] == {"success": "6"}
    # The dead worker's claim is void: it can no longer write to the operation.
    with pytest.raises(work.LeaseLostError):
        work.record_progress(index, dead, lease=timedelta(seconds=1), success=1)


def test_operation_that_keeps_dying_is_abandoned_with_a_clear_error(
    index: Index, tmp_path: Path, runs: Runs
) -> None:
    dataset_pk = add_dataset(index)
    operation_id = add_operation(index, dataset_pk, items=3)
    for attempt in range(3):
        claim = work.claim_next(
            index, f"dying:{attempt}", lease=timedelta(microseconds=1), methods=[METHOD]
        )
        assert claim is not None
        time.sleep(0.01)  # past the 1 µs lease, whatever the clock's resolution
    with PoolThread(make_pool(index, tmp_path, counting_handler(runs), max_attempts=3)):
        resource = wait_done(index, operation_id)
    assert resource["error"]["code"] == 10  # ABORTED
    assert "3 attempts" in resource["error"]["message"]
    assert runs.starts == []


def looks_at_operations(index: Index) -> list[float]:
    """When each statement reading the operations table ran on ``index``, as they run."""
    times: list[float] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM operations" in statement:
            times.append(time.monotonic())

    event.listen(index.engine, "before_cursor_execute", record)
    return times


def test_an_idle_pool_looks_for_work_less_and_less_often_up_to_its_bound(
    index: Index, tmp_path: Path, runs: Runs
) -> None:
    # Idle CPU: one look per wait, the wait doubling from poll_interval to max_poll_interval
    # (not one look per worker every poll_interval). Waits are lower bounds on a loaded machine.
    dataset_pk = add_dataset(index)
    looks = looks_at_operations(index)
    pool = make_pool(index, tmp_path, counting_handler(runs), workers=3, max_poll_interval=0.4)
    with PoolThread(pool):
        wait_until(lambda: len(looks) >= 9)  # 3 at start, then after 0.05, 0.1, 0.2, 0.4, …
        gaps = [later - earlier for earlier, later in pairwise(looks[3:9])]
        assert gaps[-2] >= 0.3 and gaps[-1] >= 0.3, gaps
        assert gaps[0] < gaps[-1], gaps
        # Work created elsewhere (nobody wakes this pool) is still found by polling.
        operation_id = add_operation(index, dataset_pk, items=1)
        assert wait_done(index, operation_id)["response"] == {"counted": 1}


def test_a_wake_starts_an_operation_at_once_however_long_the_pool_would_wait(
    index: Index, tmp_path: Path, runs: Runs
) -> None:
    dataset_pk = add_dataset(index)
    looks = looks_at_operations(index)
    # A pool that would not look again for an hour on its own.
    pool = make_pool(
        index, tmp_path, counting_handler(runs), poll_interval=3600, max_poll_interval=3600
    )
    with PoolThread(pool) as thread:
        wait_until(lambda: len(looks) >= 2)  # both workers looked, found nothing, and wait
        operation_id = add_operation(index, dataset_pk, items=1)
        thread.wake(pool)
        assert wait_done(index, operation_id)["response"] == {"counted": 1}


def test_two_pools_on_one_database_never_run_the_same_operation_twice(
    index_url: str, index: Index, tmp_path: Path, runs: Runs
) -> None:
    dataset_pk = add_dataset(index)
    operation_ids = [add_operation(index, dataset_pk, items=2, meet=2) for _ in range(24)]
    # Two engines stand for two server processes sharing the index.
    other_index = Index.open(index_url)
    try:
        pools = [
            make_pool(index, tmp_path, counting_handler(runs, pool="a"), workers=3, worker_id="a"),
            make_pool(
                other_index, tmp_path, counting_handler(runs, pool="b"), workers=3, worker_id="b"
            ),
        ]
        with PoolThread(*pools):
            for operation_id in operation_ids:
                wait_done(index, operation_id)
    finally:
        other_index.close()
    assert Counter(runs.starts) == dict.fromkeys(operation_ids, 1)
    assert Counter(runs.items) == {(op, item): 1 for op in operation_ids for item in (0, 1)}
    with index.connect() as conn:
        claimers = conn.execute(select(operations.c.claimed_by)).scalars().all()
    assert {claimer.split(":")[0][0] for claimer in claimers} == {"a", "b"}


class Server:
    """The service on a real uvicorn server with the counting handler registered."""

    def __init__(self, config: ServiceConfig, handlers: dict[str, Handler]) -> None:
        app = create_app(config, operation_handlers=handlers)
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self.app = app

    def __enter__(self) -> Server:
        self._thread.start()
        wait_until(lambda: self._server.started or not self._thread.is_alive())
        assert self._server.started
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(DEADLINE)
        assert not self._thread.is_alive()


def test_server_stopped_mid_operation_finishes_it_after_restart_on_the_same_data_dir(
    service_config: ServiceConfig, runs: Runs
) -> None:
    handlers = {METHOD: counting_handler(runs, signal_after=4)}
    with Server(service_config, handlers) as server:
        index = server.app.state.service.index
        dataset_pk = add_dataset(index)
        operation_id = add_operation(index, dataset_pk, items=60, sleep=0.01)
        server.app.state.service.workers.wake()
        assert runs.reached.wait(DEADLINE)
    reopened = Index.open(service_config.index_url)
    try:
        stopped = operation(reopened, operation_id)
    finally:
        reopened.close()
    assert "done" not in stopped
    done_before_restart = len(runs.items)
    assert 4 <= done_before_restart < 60

    with Server(service_config, handlers) as server:
        resource = wait_done(server.app.state.service.index, operation_id)
    assert resource["response"] == {"counted": 60}
    assert resource["metadata"]["counter"] == {"success": "60"}
    # Resumed from its checkpoint: every item processed exactly once over both runs.
    assert sorted(item for _, item in runs.items) == list(range(60))
    assert runs.starts == [operation_id, operation_id]


# --- a handler blocked inside one read ----------------------------------------------------


def fifo_handler(fifo: Path, entered: threading.Event) -> Handler:
    """Runs one work item that opens ``fifo`` for reading with no writer: a real read that
    blocks in the kernel (what a named pipe given as an import source did before the import
    roots), which no cancellation can interrupt from Python."""

    def run_item(ctx: Any) -> None:
        entered.set()
        with open(fifo, "rb") as file:  # blocks until someone opens the FIFO for writing
            file.read()
        ctx.progress(success=1)

    return ItemizedMethod(
        plan=lambda ctx: [{"count": 1}], run_item=run_item, response={"done": True}
    )


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    try:
        yield path
    finally:
        # Release the threads left blocked in open(): they end on their own (their claim is
        # gone, so they record nothing).
        for _ in range(4):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no reader left
                break
            os.close(fd)
        for thread in threading.enumerate():
            if thread.name == "dicomql-handler":
                thread.join(DEADLINE)


@pytest.mark.parametrize("ending", ["cancel", "timeout"])
def test_a_worker_blocked_in_a_read_is_freed_by_cancel_or_the_item_timeout(
    index: Index, tmp_path: Path, runs: Runs, fifo: Path, ending: str
) -> None:
    dataset_pk = add_dataset(index)
    entered = threading.Event()
    blocked_id = add_operation(index, dataset_pk)
    with index.begin() as conn:  # the blocked operation runs the FIFO method
        conn.execute(
            operations.update()
            .where(operations.c.operation_id == blocked_id)
            .values(api_method_name="test.fifo")
        )
    service = Blobless(index=index, blobs=LocalBlobStore(tmp_path / "blobs"))
    pool = WorkerPool(
        service,
        {METHOD: counting_handler(runs), "test.fifo": fifo_handler(fifo, entered)},
        workers=1,  # one worker: while it is held, nothing else runs
        poll_interval=0.05,
        item_timeout=2.0 if ending == "timeout" else 600.0,
        cancel_grace=0.5,
    )
    with PoolThread(pool):
        assert entered.wait(DEADLINE)
        if ending == "cancel":
            assert work.request_cancel(index, _pk(index, blocked_id))
        blocked = wait_done(index, blocked_id)
        # The only worker is free again: another operation runs to its end.
        later_id = add_operation(index, dataset_pk, items=2)
        later = wait_done(index, later_id)
    expected = 1 if ending == "cancel" else 4  # CANCELLED / DEADLINE_EXCEEDED
    assert blocked["error"]["code"] == expected, blocked["error"]
    if ending == "timeout":
        assert "--item-timeout-seconds" in blocked["error"]["message"]
    assert later["response"] == {"counted": 2}
