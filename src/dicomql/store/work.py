"""Claiming long-running operations for workers: leases, progress, cancellation and completion.

Any process sharing the index can run any unfinished operation. A worker *claims* one by writing
a fresh claim token into ``claimed_by`` and a lease deadline into ``lease_until`` in one atomic
statement; every later write by that worker is conditioned on the token, so a worker whose lease
expired (and whose operation another worker re-claimed) can no longer touch it. An operation is
runnable when it is not done and either never claimed or its lease has run out, which is how an
operation interrupted by a crash resumes: its lease expires and the next claim picks it up.

PostgreSQL claims with ``FOR UPDATE SKIP LOCKED`` so concurrent claimers never wait on or pick
the same row; SQLite serialises writers with ``BEGIN IMMEDIATE`` (see :mod:`dicomql.store.index`),
so a single ``UPDATE … WHERE pk = (SELECT …)`` is atomic there.

Work items spread one operation over every server. The first worker to claim an operation whose
method can be split *plans* it: in one transaction, conditioned on its claim, it inserts the
operation's ``work_items`` and marks the operation :data:`PLANNED` (``claimed_by``), after which
the operation itself is never claimed again and workers everywhere claim its items one at a time
under the same lease rules. A crash before that transaction commits leaves nothing behind (the
next claimer plans again); after it, the items exist exactly once. Each item records its counters
and a resume point together with the operation's counters in one transaction, so an item re-run
after its worker died resumes where the last report left it and counts nothing twice. The worker
whose item is the last one done completes the operation, once: completions lock the operation
row first, so the last of them sees every other item's commit. An item's payload carries
``count``, the units of work (files, instances) it was planned with; units that vanished before
the item ran (an instance deleted meanwhile) leave ``pending`` when the item finishes.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, insert, or_, select, update

from dicomql.store.index import Index
from dicomql.store.schema import operations, work_items

# ``operations.claimed_by`` of an operation whose work lives in ``work_items``: no longer
# claimable as a whole (a claim token always contains "/", so none can equal it).
PLANNED = "work-items"


class LeaseLostError(Exception):
    """The worker's claim on an operation is gone (its lease expired and it was re-claimed, or the
    operation was finished elsewhere); the worker must stop without writing anything more."""


@dataclass(frozen=True)
class Claim:
    """One worker's hold on one operation, as read when it was claimed."""

    operation_pk: int
    dataset_pk: int
    operation_id: str
    api_method_name: str
    request: dict[str, Any] | None
    target: str | None
    token: str
    attempts: int
    cancel_requested: bool
    checkpoint: Any
    counter_success: int
    counter_failure: int
    counter_pending: int


@dataclass(frozen=True)
class Progress:
    """What a worker learns when it records progress."""

    cancel_requested: bool


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_token(worker_id: str) -> str:
    # The worker's name for logs plus a nonce, so two claims of one operation never share a token.
    return f"{worker_id[:100]}/{secrets.token_hex(8)}"


def claim_next(
    index: Index,
    worker_id: str,
    *,
    lease: timedelta,
    methods: Collection[str] | None = None,
) -> Claim | None:
    """Atomically claim the oldest runnable operation, or return None if there is none.

    Args:
        index: the index holding the operations.
        worker_id: a name for the claiming worker (host/process/worker), kept in ``claimed_by``.
        lease: how long the claim lasts unless renewed.
        methods: only claim operations of these ``api_method_name`` values (those the caller
            has handlers for); None claims any.
    """
    now = utcnow()
    token = new_token(worker_id)
    runnable = select(operations.c.pk).where(
        operations.c.done.is_(False),
        or_(operations.c.lease_until.is_(None), operations.c.lease_until < now),
        or_(operations.c.claimed_by.is_(None), operations.c.claimed_by != PLANNED),
    )
    if methods is not None:
        if not methods:
            return None
        runnable = runnable.where(operations.c.api_method_name.in_(sorted(methods)))
    runnable = runnable.order_by(operations.c.pk).limit(1)
    if index.dialect == "postgresql":
        runnable = runnable.with_for_update(skip_locked=True)
    statement = (
        update(operations)
        .where(operations.c.pk == runnable.scalar_subquery())
        .values(
            claimed_by=token,
            lease_until=now + lease,
            attempts=operations.c.attempts + 1,
        )
        .returning(*operations.c)
    )
    with index.begin() as conn:
        row = conn.execute(statement).first()
    if row is None:
        return None
    return Claim(
        operation_pk=row.pk,
        dataset_pk=row.dataset_pk,
        operation_id=row.operation_id,
        api_method_name=row.api_method_name,
        request=row.request,
        target=row.target,
        token=token,
        attempts=row.attempts,
        cancel_requested=bool(row.cancel_requested),
        checkpoint=row.checkpoint,
        counter_success=row.counter_success,
        counter_failure=row.counter_failure,
        counter_pending=row.counter_pending,
    )


def _owned(claim: Claim) -> Any:
    return and_(
        operations.c.pk == claim.operation_pk,
        operations.c.claimed_by == claim.token,
        operations.c.done.is_(False),
    )


def renew_lease(index: Index, claim: Claim, lease: timedelta) -> Progress:
    """Extend the claim's lease; raises LeaseLostError if the claim is no longer held."""
    return record_progress(index, claim, lease=lease)


def record_progress(
    index: Index,
    claim: Claim,
    *,
    lease: timedelta,
    success: int = 0,
    failure: int = 0,
    pending: int | None = None,
    checkpoint: Any = None,
) -> Progress:
    """Move finished work items from pending to success/failure, store the resume point, renew
    the lease, and report whether cancellation was requested.

    Args:
        pending: when given, sets the pending counter outright (the handler counted its work).
        checkpoint: when not None, replaces the stored resume point (any JSON value).

    Raises:
        LeaseLostError: the claim is no longer held; nothing was written.
    """
    values: dict[str, Any] = {"lease_until": utcnow() + lease}
    if success or failure:
        values["counter_success"] = operations.c.counter_success + success
        values["counter_failure"] = operations.c.counter_failure + failure
    if pending is not None:
        values["counter_pending"] = pending
    elif success or failure:
        values["counter_pending"] = operations.c.counter_pending - (success + failure)
    if checkpoint is not None:
        values["checkpoint"] = checkpoint
    statement = (
        update(operations)
        .where(_owned(claim))
        .values(**values)
        .returning(operations.c.cancel_requested)
    )
    with index.begin() as conn:
        row = conn.execute(statement).first()
    if row is None:
        raise LeaseLostError(f"operation {claim.operation_id} is no longer claimed by this worker")
    return Progress(cancel_requested=bool(row.cancel_requested))


def complete(
    index: Index,
    claim: Claim,
    *,
    response: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> bool:
    """Finish the claimed operation with a response or a google.rpc.Status error.

    Returns False (and writes nothing) if the claim was lost meanwhile.
    """
    statement = (
        update(operations)
        .where(_owned(claim))
        .values(
            done=True,
            end_time=utcnow(),
            response=None if error is not None else (response or {}),
            error=error,
            counter_pending=0,
            lease_until=None,
        )
    )
    with index.begin() as conn:
        return conn.execute(statement).rowcount == 1


def release(index: Index, claim: Claim) -> bool:
    """Give the operation back unfinished (a worker shutting down), so another claims it at once.

    The attempt is not counted against the operation: a clean shutdown is not a failure.
    """
    statement = (
        update(operations)
        .where(_owned(claim))
        .values(
            claimed_by=None,
            lease_until=None,
            attempts=operations.c.attempts - 1,
        )
    )
    with index.begin() as conn:
        return conn.execute(statement).rowcount == 1


def cancel_requested(index: Index, operation_pk: int) -> bool:
    """Whether the operation should stop: cancellation requested, or ended elsewhere."""
    with index.connect() as conn:
        row = conn.execute(
            select(operations.c.cancel_requested, operations.c.done).where(
                operations.c.pk == operation_pk
            )
        ).first()
    return row is None or bool(row.cancel_requested or row.done)


def request_cancel(index: Index, operation_pk: int) -> bool:
    """Ask for an unfinished operation to stop (operations.cancel); True if it was not done yet.

    The worker running it notices at its next progress report; an unclaimed one is finished as
    CANCELLED by the next worker that claims it.
    """
    statement = (
        update(operations)
        .where(operations.c.pk == operation_pk, operations.c.done.is_(False))
        .values(cancel_requested=True)
    )
    with index.begin() as conn:
        return conn.execute(statement).rowcount == 1


# --- work items -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemClaim:
    """One worker's hold on one work item, with what it needs of the item's operation."""

    item_pk: int
    operation_pk: int
    operation_id: str
    api_method_name: str
    request: dict[str, Any] | None
    seq: int
    payload: Any
    checkpoint: Any
    token: str
    attempts: int
    cancel_requested: bool


def plan_items(index: Index, claim: Claim, payloads: list[dict[str, Any]]) -> None:
    """Split the claimed operation into work items, once: insert them and mark the operation
    :data:`PLANNED` in one transaction, and set ``pending`` to the sum of their ``count``.

    Raises:
        LeaseLostError: the claim is no longer held; nothing was written (whoever holds the
            operation now plans it).
    """
    pending = sum(int(payload["count"]) for payload in payloads)
    with index.begin() as conn:
        # The conditional update takes the operation's row lock first: no second planner can
        # get past it, and once it commits the operation is no longer claimable as a whole.
        marked = conn.execute(
            update(operations)
            .where(_owned(claim))
            .values(claimed_by=PLANNED, lease_until=None, counter_pending=pending)
        ).rowcount
        if marked != 1:
            raise LeaseLostError(
                f"operation {claim.operation_id} is no longer claimed by this worker"
            )
        conn.execute(
            insert(work_items),
            [
                {
                    "operation_pk": claim.operation_pk,
                    "seq": seq,
                    "payload": payload,
                    "done": False,
                    "attempts": 0,
                    "counter_success": 0,
                    "counter_failure": 0,
                }
                for seq, payload in enumerate(payloads)
            ],
        )


def claim_item(
    index: Index,
    worker_id: str,
    *,
    lease: timedelta,
    methods: Collection[str],
) -> ItemClaim | None:
    """Atomically claim the oldest runnable work item of an unfinished operation of one of
    ``methods``, or return None. Runnable: not done, and never claimed or its lease ran out."""
    if not methods:
        return None
    now = utcnow()
    token = new_token(worker_id)
    planned = select(operations.c.pk).where(
        operations.c.done.is_(False),
        operations.c.claimed_by == PLANNED,
        operations.c.api_method_name.in_(sorted(methods)),
    )
    runnable = (
        select(work_items.c.pk)
        .where(
            work_items.c.done.is_(False),
            or_(work_items.c.lease_until.is_(None), work_items.c.lease_until < now),
            work_items.c.operation_pk.in_(planned),
        )
        .order_by(work_items.c.pk)
        .limit(1)
    )
    if index.dialect == "postgresql":
        runnable = runnable.with_for_update(skip_locked=True, of=work_items)
    statement = (
        update(work_items)
        .where(work_items.c.pk == runnable.scalar_subquery())
        .values(claimed_by=token, lease_until=now + lease, attempts=work_items.c.attempts + 1)
        .returning(*work_items.c)
    )
    with index.begin() as conn:
        item = conn.execute(statement).first()
        if item is None:
            return None
        operation = conn.execute(
            select(
                operations.c.operation_id,
                operations.c.api_method_name,
                operations.c.request,
                operations.c.cancel_requested,
            ).where(operations.c.pk == item.operation_pk)
        ).one()
    return ItemClaim(
        item_pk=item.pk,
        operation_pk=item.operation_pk,
        operation_id=operation.operation_id,
        api_method_name=operation.api_method_name,
        request=operation.request,
        seq=item.seq,
        payload=item.payload,
        checkpoint=item.checkpoint,
        token=token,
        attempts=item.attempts,
        cancel_requested=bool(operation.cancel_requested),
    )


def _item_owned(item: ItemClaim) -> Any:
    return and_(
        work_items.c.pk == item.item_pk,
        work_items.c.claimed_by == item.token,
        work_items.c.done.is_(False),
    )


def _lost(item: ItemClaim) -> LeaseLostError:
    return LeaseLostError(
        f"work item {item.seq} of operation {item.operation_id} is no longer claimed by this worker"
    )


def renew_item_lease(index: Index, item: ItemClaim, lease: timedelta) -> None:
    """Extend the item's lease (the heartbeat); raises LeaseLostError if it is no longer held."""
    with index.begin() as conn:
        renewed = conn.execute(
            update(work_items).where(_item_owned(item)).values(lease_until=utcnow() + lease)
        ).rowcount
    if renewed != 1:
        raise _lost(item)


def record_item_progress(
    index: Index,
    item: ItemClaim,
    *,
    lease: timedelta,
    success: int = 0,
    failure: int = 0,
    checkpoint: Any = None,
) -> Progress:
    """Count finished units on the item and on its operation, store the item's resume point and
    renew its lease, in one transaction; report whether cancellation was requested.

    Raises:
        LeaseLostError: the item is no longer held; nothing was written.
    """
    values: dict[str, Any] = {"lease_until": utcnow() + lease}
    if success or failure:
        values["counter_success"] = work_items.c.counter_success + success
        values["counter_failure"] = work_items.c.counter_failure + failure
    if checkpoint is not None:
        values["checkpoint"] = checkpoint
    with index.begin() as conn:
        if conn.execute(update(work_items).where(_item_owned(item)).values(**values)).rowcount != 1:
            raise _lost(item)  # rolls the transaction back: nothing written
        flags = (operations.c.cancel_requested, operations.c.done)
        if success or failure:
            row = conn.execute(
                update(operations)
                .where(operations.c.pk == item.operation_pk)
                .values(
                    counter_success=operations.c.counter_success + success,
                    counter_failure=operations.c.counter_failure + failure,
                    counter_pending=_pending_less(success + failure),
                )
                .returning(*flags)
            ).one()
        else:
            # Nothing to count: read the flags without taking the operation's row lock.
            row = conn.execute(select(*flags).where(operations.c.pk == item.operation_pk)).one()
    # An operation finished elsewhere (failed by another item, cancelled) stops this item too.
    return Progress(cancel_requested=bool(row.cancel_requested or row.done))


def _pending_less(count: int) -> Any:
    """The operation's pending counter less ``count``; once the operation is done (cancelled, or
    failed by another item) it stays 0, however many units items still running finish."""
    return case(
        (operations.c.done.is_(True), 0),
        else_=operations.c.counter_pending - count,
    )


def finish_item(index: Index, item: ItemClaim, *, response: dict[str, Any]) -> bool:
    """Mark the item done; if it was the operation's last, complete the operation with
    ``response``. Returns True if this call completed the operation.

    Raises:
        LeaseLostError: the item is no longer held (another worker re-runs it); nothing written.
    """
    with index.begin() as conn:
        # The operation's row lock first: completions of one operation's items run one after
        # the other, and the count below (a fresh snapshot per statement under READ COMMITTED)
        # sees every item completed before this one.
        operation = conn.execute(
            update(operations)
            .where(operations.c.pk == item.operation_pk)
            .values(counter_pending=operations.c.counter_pending)
            .returning(operations.c.done)
        ).one()
        done = conn.execute(
            update(work_items)
            .where(_item_owned(item))
            .values(done=True, lease_until=None)
            .returning(
                work_items.c.payload, work_items.c.counter_success, work_items.c.counter_failure
            )
        ).first()
        if done is None:
            raise _lost(item)
        # Units planned but not found when the item ran (deleted meanwhile) are no longer
        # pending; they were neither a success nor a failure.
        vanished = int(done.payload.get("count", 0)) - done.counter_success - done.counter_failure
        if vanished > 0:
            conn.execute(
                update(operations)
                .where(operations.c.pk == item.operation_pk)
                .values(counter_pending=_pending_less(vanished))
            )
        if operation.done:
            return False
        remaining = conn.execute(
            select(func.count())
            .select_from(work_items)
            .where(work_items.c.operation_pk == item.operation_pk, work_items.c.done.is_(False))
        ).scalar_one()
        if remaining:
            return False
        conn.execute(
            update(operations)
            .where(operations.c.pk == item.operation_pk, operations.c.done.is_(False))
            .values(
                done=True,
                end_time=utcnow(),
                response=response,
                error=None,
                counter_pending=0,
                lease_until=None,
            )
        )
    return True


def fail_item_operation(index: Index, item: ItemClaim, error: dict[str, Any]) -> bool:
    """End the item's operation with ``error`` (cancelled, or an item failed), unless it is done
    already or the item is no longer held; the operation's other items are then never claimed.
    Returns True if this call ended it."""
    with index.begin() as conn:
        held = conn.execute(
            update(work_items).where(_item_owned(item)).values(lease_until=None)
        ).rowcount
        if held != 1:
            return False
        ended = conn.execute(
            update(operations)
            .where(operations.c.pk == item.operation_pk, operations.c.done.is_(False))
            .values(
                done=True,
                end_time=utcnow(),
                response=None,
                error=error,
                counter_pending=0,
                lease_until=None,
            )
        ).rowcount
    return ended == 1


def release_item(index: Index, item: ItemClaim) -> bool:
    """Give the item back unfinished (a worker shutting down), keeping its resume point, so
    another worker claims it at once; the attempt is not counted against it."""
    statement = (
        update(work_items)
        .where(_item_owned(item))
        .values(claimed_by=None, lease_until=None, attempts=work_items.c.attempts - 1)
    )
    with index.begin() as conn:
        return conn.execute(statement).rowcount == 1


# Built once: idle workers run it every few seconds, and building a statement costs more CPU
# than running this one.
_ANY_UNFINISHED = select(operations.c.pk).where(operations.c.done.is_(False)).limit(1)


def any_unfinished(index: Index) -> bool:
    """Whether any operation is unfinished (so :func:`claim_next` or :func:`claim_item` may find
    something): a read, much cheaper than those write transactions, that lets idle workers
    skip them while there is no work at all. Work items exist only for unfinished operations."""
    with index.connect() as conn:
        return conn.execute(_ANY_UNFINISHED).first() is not None
