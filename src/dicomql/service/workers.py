"""The worker pool that runs long-running operations (deidentify, import, export, …) off the
request path.

An endpoint records an operation row (``store.operations.create_operation`` with its request) and
calls :meth:`WorkerPool.wake`; a worker claims it (``store.work``), runs the handler registered for
its ``api_method_name`` in a thread, and finishes it. Handlers report progress per work item
through :class:`OperationContext`, which renews the lease and is where cancellation and shutdown
take effect, between work items. Because the operation, its request and the handler's checkpoint
live in the index, an operation survives restarts: a clean shutdown gives it back at once, a
crash leaves a lease that expires, and either way the next worker (in any process sharing the
index) resumes it. Cloud Healthcare ends cancelled operations with google.rpc.Code 1 (CANCELLED).

A method registered as an :class:`ItemizedMethod` is spread over every process: the worker that
claims the operation only *plans* it (``store.work.plan_items``), and workers everywhere then
claim its work items one at a time and run them through :class:`ItemContext`; the worker
finishing the last item completes the operation.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, TypeAlias, TypeVar

import anyio
from anyio import from_thread, to_thread
from anyio.abc import TaskStatus
from anyio.lowlevel import current_token

from dicomql.google_api import Code, rpc_status
from dicomql.service.config import ServiceConfig
from dicomql.store import work
from dicomql.store.blobs import BlobStore
from dicomql.store.index import Index
from dicomql.store.work import Claim, ItemClaim, LeaseLostError

_T = TypeVar("_T")

logger = logging.getLogger(__name__)

# An operation created in this process starts at once (wake()). One created by another process
# or server sharing the index is found by polling: the first look after work ran here comes
# within DEFAULT_POLL_INTERVAL, and each fruitless look doubles the wait up to
# DEFAULT_MAX_POLL_INTERVAL, so an idle server costs next to no CPU (docs/operations.md).
DEFAULT_POLL_INTERVAL = 0.25
DEFAULT_MAX_POLL_INTERVAL = 2.0
# While a handler runs, how often its worker looks whether the operation was cancelled.
_CANCEL_CHECK_INTERVAL = 1.0
DEFAULT_LEASE = timedelta(seconds=60)
# An operation that keeps killing its worker is given up after this many claims.
DEFAULT_MAX_ATTEMPTS = 3


class ServiceLike(Protocol):
    """What handlers may use: the configuration, the index and the blob store
    (``service.app.Service`` fits)."""

    config: ServiceConfig
    index: Index
    blobs: BlobStore


class OperationCancelledError(Exception):
    """Raised inside a handler at its next progress report once cancellation was requested."""


class WorkerStoppingError(Exception):
    """Raised inside a handler at its next progress report when the pool is shutting down."""


class OperationFailedError(Exception):
    """A handler's way to end its operation with a specific google.rpc.Status."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class WorkContext(ABC):
    """What operation and item handlers share (the helpers in ``service/lro.py`` take either):
    the service, the request, progress reports and the stopping points they are."""

    def __init__(self, pool: WorkerPool, claim: Claim | ItemClaim) -> None:
        self.service: ServiceLike = pool.service
        self._pool = pool
        self._claim = claim

    @property
    def request(self) -> dict[str, Any]:
        return self._claim.request or {}

    @property
    def checkpoint(self) -> Any:
        return self._claim.checkpoint

    @abstractmethod
    def progress(self, *, success: int = 0, failure: int = 0, checkpoint: Any = None) -> None: ...

    def check(self) -> None:
        """Stop here if cancelled or shutting down, without recording anything."""
        self.progress()

    def _stop_if_asked(self, cancel_requested: bool) -> None:
        if cancel_requested:
            raise OperationCancelledError
        if self._pool.stopping.is_set():
            raise WorkerStoppingError


class OperationContext(WorkContext):
    """A handler's view of the operation it runs (or plans).

    Attributes:
        service: the index and blob store to work on.
        claim: the claimed row: ``request`` (the JSON that started it), ``target``,
            ``checkpoint`` (where a previous attempt stopped; None the first time), counters.
    """

    def __init__(self, pool: WorkerPool, claim: Claim) -> None:
        super().__init__(pool, claim)
        self.claim = claim

    def set_pending(self, pending: int) -> None:
        """Declare how many work items remain (shown as ``counter.pending``)."""
        self._report(pending=pending)

    def progress(self, *, success: int = 0, failure: int = 0, checkpoint: Any = None) -> None:
        """Record finished work items (and the point to resume from), then stop here if the
        operation was cancelled or the pool is shutting down.

        Raises:
            OperationCancelledError, WorkerStoppingError: let them propagate; the pool finishes
                or releases the operation.
            LeaseLostError: another worker owns the operation now; stop at once.
        """
        self._report(success=success, failure=failure, checkpoint=checkpoint)

    def _report(self, **changes: Any) -> None:
        # Record first: the items reported are finished and must not be redone on resume.
        result = work.record_progress(
            self.service.index, self.claim, lease=self._pool.lease, **changes
        )
        self._stop_if_asked(result.cancel_requested)


class ItemContext(WorkContext):
    """An item handler's view of the work item it runs.

    Attributes:
        claim: the claimed item: ``payload`` (as planned), ``checkpoint`` (where a worker that
            lost the item last reported; None the first time), and the operation's ``request``.
    """

    def __init__(self, pool: WorkerPool, claim: ItemClaim) -> None:
        super().__init__(pool, claim)
        self.claim = claim

    @property
    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = self.claim.payload
        return payload

    def progress(self, *, success: int = 0, failure: int = 0, checkpoint: Any = None) -> None:
        """Record finished units of the item (and its resume point) on the item and the
        operation, then stop here if the operation was cancelled (or ended by another item) or
        the pool is shutting down.

        Raises:
            OperationCancelledError, WorkerStoppingError, LeaseLostError: as
                :meth:`OperationContext.progress`.
        """
        result = work.record_item_progress(
            self.service.index,
            self.claim,
            lease=self._pool.lease,
            success=success,
            failure=failure,
            checkpoint=checkpoint,
        )
        self._stop_if_asked(result.cancel_requested)


OperationHandler: TypeAlias = Callable[[OperationContext], dict[str, Any] | None]
"""Runs one operation to its end in a worker thread and returns the operation's ``response``
JSON (None for ``{}``). It must be resumable: on a retry it starts again with ``ctx.checkpoint``."""


@dataclass(frozen=True)
class ItemizedMethod:
    """A long-running method whose work is split into items that any process runs.

    Attributes:
        plan: given the operation, the payloads of its items, in order, each with ``count``
            (its units of work: files, instances); ``[]`` completes the operation at once with
            ``response``; None runs it whole with ``whole`` (a request this method does not
            split). Raising ``OperationFailedError`` ends the operation with that status. It
            must read nothing it cannot read again: a crash before the plan is stored plans
            again.
        run_item: runs one item in a worker thread, reporting progress through its context;
            it must be idempotent (an item whose worker died is run again from its checkpoint).
        response: the operation's ``response`` once every item is done.
        whole: the handler for requests ``plan`` does not split.
    """

    plan: Callable[[OperationContext], list[dict[str, Any]] | None]
    run_item: Callable[[ItemContext], None]
    response: dict[str, Any]
    whole: OperationHandler | None = None


Handler: TypeAlias = OperationHandler | ItemizedMethod
"""What the pool runs per ``api_method_name``."""


class WorkerPool:
    """N tasks that claim operations and run their handlers in threads.

    Args:
        service: the index and blobs handlers work on.
        handlers: handler per ``api_method_name`` (an :class:`ItemizedMethod` for methods split
            into work items); the pool only claims operations and items of those methods, so
            servers with different handler sets can share an index.
        workers: how many operations this process runs at once.
        lease: how long a claim lasts without a progress report or heartbeat.
        poll_interval: the first wait of an idle pool before it looks again for work nobody
            woke it for (created by another process or server); each fruitless look doubles
            the wait, up to ``max_poll_interval``; work found or a wake() starts again here.
        max_poll_interval: the longest wait between looks, so the bound on how late work
            created elsewhere starts here.
        max_attempts: claims after which an operation that never finished is given up.
        worker_id: a name for ``claimed_by``; host and process ID by default.
        shutdown_timeout: how long ``stop()`` waits for running handlers to reach a progress
            report before abandoning them to lease expiry.
        item_timeout: how long one work item may run; then its operation fails with
            DEADLINE_EXCEEDED and the worker moves on (None: no limit).
        cancel_grace: how long a handler has to notice a cancellation at its next progress
            report before its worker ends the operation without it.
        after_run: called on the event loop after each operation or work item ran here (the
            app lets the event deliverer look soon: the work may have stored instances).

    A handler runs in a thread of its own, and its worker watches it: a handler blocked inside
    one read (a hung network file system, say) cannot be interrupted, but it no longer holds
    its worker, its operation, or a thread of the pool other work needs. The abandoned thread
    ends at its next progress report (its claim is gone) or when the read returns.
    """

    def __init__(
        self,
        service: ServiceLike,
        handlers: Mapping[str, Handler],
        *,
        workers: int = 2,
        lease: timedelta = DEFAULT_LEASE,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        worker_id: str | None = None,
        shutdown_timeout: float = 30.0,
        item_timeout: float | None = 900.0,
        cancel_grace: float = 5.0,
        after_run: Callable[[], None] | None = None,
    ) -> None:
        self.service = service
        self.handlers = dict(handlers)
        self.workers = workers
        self.lease = lease
        self.poll_interval = poll_interval
        self.max_poll_interval = max(poll_interval, max_poll_interval)
        # The idle pool's current wait between looks (see _idle).
        self._idle_wait = poll_interval
        # Whether an idle worker is the one that polls; the other idle workers wait for a wake.
        self._polling = False
        self.max_attempts = max_attempts
        self.shutdown_timeout = shutdown_timeout
        self.item_timeout = item_timeout
        self.cancel_grace = cancel_grace
        self.after_run = after_run
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        # Set from the event loop, read from handler threads: a threading.Event is safe for both.
        self.stopping = threading.Event()
        self._wakeup: anyio.Event | None = None
        self._threads: anyio.CapacityLimiter | None = None
        self._workers: anyio.CancelScope | None = None
        self._stopped: anyio.Event | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the workers until :meth:`stop`: the app's lifespan starts it in its task group
        (``await group.start(pool.run)``), which returns once the workers are started."""
        self._wakeup = anyio.Event()
        # Their own thread tokens (a claim or report and a heartbeat per worker), so a burst of
        # requests holding anyio's default 40 cannot hold back a lease renewal.
        self._threads = anyio.CapacityLimiter(2 * max(self.workers, 1))
        self._stopped = anyio.Event()
        self.stopping.clear()
        try:
            async with anyio.create_task_group() as workers:
                self._workers = workers.cancel_scope
                for n in range(self.workers if self.handlers else 0):
                    workers.start_soon(self._worker, n, name=f"dicomql-worker-{n}")
                task_status.started()
        finally:
            self._workers = None
            self._stopped.set()

    async def _in_thread(self, function: Callable[..., _T], *args: Any) -> _T:
        assert self._threads is not None, "run() first"
        return await to_thread.run_sync(function, *args, limiter=self._threads)

    def wake(self) -> None:
        """Tell idle workers there is new work (call from the event loop after creating one).

        Only an optimisation: work nobody woke this pool for is still found by polling."""
        if self._wakeup is not None:
            self._wakeup.set()

    def _clear_wakeup(self) -> None:
        # An anyio.Event cannot be cleared: a set one is replaced (its waiters have been woken).
        if self._wakeup is not None and self._wakeup.is_set():
            self._wakeup = anyio.Event()

    async def stop(self) -> None:
        """Stop claiming, let running handlers reach their next progress report, and give their
        operations back unfinished so that the next start (or another process) resumes them."""
        self.stopping.set()
        self.wake()
        if self._stopped is None:
            return
        with anyio.move_on_after(self.shutdown_timeout):
            await self._stopped.wait()
        # A handler stuck inside one work item: stop waiting for it. Its thread finishes on its
        # own; its lease expires, so the operation resumes on the next start.
        if self._workers is not None:
            self._workers.cancel()
        await self._stopped.wait()

    @property
    def itemized_methods(self) -> list[str]:
        return [
            name for name, handler in self.handlers.items() if isinstance(handler, ItemizedMethod)
        ]

    async def _worker(self, number: int) -> None:
        worker_id = f"{self.worker_id}/{number}"
        while not self.stopping.is_set():
            # Cleared before looking, so a wake() during the claim query is not lost.
            self._clear_wakeup()
            try:
                claim = await self._in_thread(self._claim, worker_id)
            except Exception as exc:  # the index is unreachable for a moment: look again later
                logger.exception("claiming work failed")
                _count_error(exc)
                claim = None
            if claim is None:
                await self._idle()
                continue
            # Work comes in runs: look again soon once idle.
            self._idle_wait = self.poll_interval
            # Other idle workers may find more; a wake() could have covered several operations.
            self.wake()
            await self._run(claim)
            if self.after_run is not None:
                self.after_run()
            # A planned operation has items now: idle workers of this process claim them at
            # once (other processes find them at their next poll).
            self.wake()

    def _claim(self, worker_id: str) -> Claim | ItemClaim | None:
        """New operations first (planning one is quick and lets every process share it), then
        items of operations planned here or elsewhere, oldest first; blocking, in a thread."""
        index = self.service.index
        if not work.any_unfinished(index):  # a cheap read first: idle polls cost next to nothing
            return None
        claim: Claim | ItemClaim | None = work.claim_next(
            index, worker_id, lease=self.lease, methods=self.handlers.keys()
        )
        if claim is None:
            claim = work.claim_item(
                index, worker_id, lease=self.lease, methods=self.itemized_methods
            )
        return claim

    async def _idle(self) -> None:
        """Wait after a fruitless look. One idle worker polls, with a wait that doubles after
        each fruitless look up to ``max_poll_interval``; the others wait for a wake (the
        poller's own, when it finds work, or wake()), so an idle process runs one look per
        interval, not one per worker."""
        assert self._wakeup is not None
        if self._polling:
            await self._wakeup.wait()
            return
        self._polling = True
        try:
            with anyio.move_on_after(self._idle_wait) as waiting:
                await self._wakeup.wait()
            if waiting.cancelled_caught:
                self._idle_wait = min(self._idle_wait * 2, self.max_poll_interval)
            else:
                self._idle_wait = self.poll_interval
        finally:
            self._polling = False

    async def _run(self, claim: Claim | ItemClaim) -> None:
        run = self.run_item_claim if isinstance(claim, ItemClaim) else self.run_claim
        async with anyio.create_task_group() as beside:
            beside.start_soon(self._heartbeat, claim)
            await self._watch(_in_own_thread(run, claim), claim)
            beside.cancel_scope.cancel()

    async def _watch(self, finished: _ThreadEnd, claim: Claim | ItemClaim) -> None:
        """Wait for the handler's thread; give up on it when its operation is cancelled and it
        does not stop within ``cancel_grace``, or when a work item outlives ``item_timeout``."""
        started = anyio.current_time()
        cancel_seen: float | None = None
        interval = min(_CANCEL_CHECK_INTERVAL, self.lease.total_seconds() / 3, self.cancel_grace)
        while True:
            with anyio.move_on_after(max(interval, 0.01)):
                await finished.done.wait()
            if finished.done.is_set():
                if finished.error is not None:
                    raise finished.error
                return
            now = anyio.current_time()
            if cancel_seen is None and await self._in_thread(
                work.cancel_requested, self.service.index, claim.operation_pk
            ):
                cancel_seen = now
            if cancel_seen is not None and now - cancel_seen >= self.cancel_grace:
                logger.warning(
                    "operation %s was cancelled while its handler was blocked; left it behind",
                    claim.operation_id,
                )
                await self._in_thread(self._abandon, claim, cancelled_status())
                return
            if (
                isinstance(claim, ItemClaim)
                and self.item_timeout is not None
                and now - started >= self.item_timeout
            ):
                logger.warning(
                    "item %s of operation %s ran longer than %g s; left it behind",
                    claim.seq,
                    claim.operation_id,
                    self.item_timeout,
                )
                await self._in_thread(self._abandon, claim, timeout_status(self.item_timeout))
                return

    def _abandon(self, claim: Claim | ItemClaim, error: dict[str, Any]) -> None:
        """End the operation with ``error`` and drop the claim, so that the thread left running
        stops at its next progress report (LeaseLostError) instead of recording more."""
        index = self.service.index
        if isinstance(claim, ItemClaim):
            work.fail_item_operation(index, claim, error)
            work.release_item(index, claim)
        else:
            work.complete(index, claim, error=error)

    async def _heartbeat(self, claim: Claim | ItemClaim) -> None:
        # A handler may spend longer than the lease on one work item; keep the claim alive while
        # its thread runs. Cancellation is still only acted upon between work items.
        interval = self.lease.total_seconds() / 3
        while True:
            await anyio.sleep(interval)
            try:
                if isinstance(claim, ItemClaim):
                    await self._in_thread(
                        work.renew_item_lease, self.service.index, claim, self.lease
                    )
                else:
                    await self._in_thread(work.renew_lease, self.service.index, claim, self.lease)
            except LeaseLostError:
                return
            except Exception as exc:  # the index is unreachable for a moment: renew next time
                logger.warning("renewing the lease on %s failed", claim.operation_id, exc_info=True)
                _count_error(exc)

    def run_claim(self, claim: Claim) -> None:
        """Run one claimed operation to its end, plan its items, or give it back; blocking, in
        a thread."""
        index = self.service.index
        if claim.cancel_requested:
            work.complete(index, claim, error=cancelled_status())
            return
        if claim.attempts > self.max_attempts:
            work.complete(index, claim, error=abandoned_status(claim.attempts))
            return
        handler = self.handlers.get(claim.api_method_name)
        if handler is None:  # not claimable by construction; kept for direct callers
            work.complete(
                index,
                claim,
                error=rpc_status(Code.UNIMPLEMENTED, f"{claim.api_method_name} is not supported."),
            )
            return
        context = OperationContext(self, claim)
        try:
            response = self._plan_or_run(handler, context)
        except OperationCancelledError:
            work.complete(index, claim, error=cancelled_status())
        except WorkerStoppingError:
            work.release(index, claim)
        except LeaseLostError:
            logger.warning("lost the lease on operation %s; stopped it", claim.operation_id)
        except OperationFailedError as exc:
            work.complete(index, claim, error=rpc_status(exc.code, exc.message))
        except Exception as exc:
            # The operation must end rather than stay "running": record the failure for the
            # caller (operations.get) and keep the traceback in the server log.
            logger.exception("operation %s failed", claim.operation_id)
            _count_error(exc)
            work.complete(index, claim, error=internal_status(exc))
        else:
            if response is not None:
                work.complete(index, claim, response=response)

    def _plan_or_run(self, handler: Handler, context: OperationContext) -> dict[str, Any] | None:
        """The operation's response if it ran here to its end; None once its items are stored
        (then the item that finishes last completes it)."""
        if not isinstance(handler, ItemizedMethod):
            return handler(context) or {}
        payloads = handler.plan(context)
        if payloads is None:
            if handler.whole is None:
                raise OperationFailedError(
                    Code.UNIMPLEMENTED,
                    f"{context.claim.api_method_name} cannot run this request.",
                )
            return handler.whole(context) or {}
        if not payloads:
            return handler.response
        context.check()  # cancelled while planning: end now rather than store the items
        work.plan_items(self.service.index, context.claim, payloads)
        return None

    def run_item_claim(self, item: ItemClaim) -> None:
        """Run one claimed work item (and complete its operation if it was the last one), or
        give it back; blocking, in a thread."""
        index = self.service.index
        if item.cancel_requested:
            work.fail_item_operation(index, item, cancelled_status())
            return
        if item.attempts > self.max_attempts:
            work.fail_item_operation(index, item, abandoned_status(item.attempts))
            return
        handler = self.handlers.get(item.api_method_name)
        if not isinstance(handler, ItemizedMethod):  # not claimable by construction
            work.release_item(index, item)
            return
        try:
            handler.run_item(ItemContext(self, item))
            work.finish_item(index, item, response=handler.response)
        except OperationCancelledError:
            work.fail_item_operation(index, item, cancelled_status())
        except WorkerStoppingError:
            work.release_item(index, item)
        except LeaseLostError:
            logger.warning(
                "lost the lease on item %s of operation %s; stopped it",
                item.seq,
                item.operation_id,
            )
        except OperationFailedError as exc:
            work.fail_item_operation(index, item, rpc_status(exc.code, exc.message))
        except Exception as exc:
            logger.exception("item %s of operation %s failed", item.seq, item.operation_id)
            _count_error(exc)
            work.fail_item_operation(index, item, internal_status(exc))


@dataclass
class _ThreadEnd:
    """The end of a handler's thread: ``done`` is set on the event loop, with what it raised."""

    done: anyio.Event = field(default_factory=anyio.Event)
    error: BaseException | None = None


def _in_own_thread(function: Callable[[Any], None], claim: Any) -> _ThreadEnd:
    """Run ``function(claim)`` in a new daemon thread. Not one of anyio's worker threads: a
    handler blocked for good must neither take a thread that claims, heartbeats and requests
    need nor, being a non-daemon thread, keep the process from exiting."""
    end = _ThreadEnd()
    loop = current_token()

    def body() -> None:
        try:
            function(claim)
        except BaseException as exc:  # handed to the awaiting worker, as to_thread would
            end.error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            from_thread.run_sync(end.done.set, token=loop)

    threading.Thread(target=body, name="dicomql-handler", daemon=True).start()
    return end


def _count_error(exc: BaseException) -> None:
    """An unexpected error in background work, counted in ``/metrics`` as a 500 is."""
    from dicomql.service.prometheus import count_error  # prometheus-client only when needed

    count_error(exc)


def timeout_status(seconds: float) -> dict[str, Any]:
    return rpc_status(
        Code.DEADLINE_EXCEEDED,
        f"A work item ran longer than {seconds:g} s (the server's --item-timeout-seconds) and"
        " was abandoned; a source or destination may be blocking (a FIFO, a device, a hung"
        " network file system).",
    )


def abandoned_status(attempts: int) -> dict[str, Any]:
    return rpc_status(
        Code.ABORTED,
        f"The operation was abandoned after {attempts - 1} attempts that ended without"
        " finishing (the server stopped or crashed while running it).",
    )


def _disk_full(exc: BaseException) -> bool:
    """ENOSPC from a blob write, or SQLITE_FULL from the index on the same disk."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    original = getattr(exc, "orig", None)  # SQLAlchemy wraps the driver's error
    return getattr(original, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


def internal_status(exc: Exception) -> dict[str, Any]:
    if _disk_full(exc):
        # The disk filled under the free-space floor's nose: say so, as STOW's 507 does.
        return rpc_status(
            Code.RESOURCE_EXHAUSTED, "Refused: out of resources. The server's disk is full."
        )
    return rpc_status(Code.INTERNAL, f"{type(exc).__name__}: {exc}")


def cancelled_status() -> dict[str, Any]:
    return rpc_status(Code.CANCELLED, "The operation was cancelled.")
