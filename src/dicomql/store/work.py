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
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update

from dicomql.store.index import Index
from dicomql.store.schema import operations

# google.rpc.Code values used for operations that end without a response.
CANCELLED = 1
ABORTED = 10
UNIMPLEMENTED = 12
INTERNAL = 13


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


def status(code: int, message: str) -> dict[str, Any]:
    """A google.rpc.Status as stored in an operation's ``error``."""
    return {"code": code, "message": message}
