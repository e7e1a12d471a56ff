"""Long-running operations as index rows, so they survive restarts and are visible to every
process sharing the index.

An operation's JSON (google.longrunning.Operation) is rendered by :func:`operation_resource`;
OperationMetadata counters are int64 and so travel as JSON strings.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from dicomql.google_api import OPERATION_METADATA
from dicomql.store.schema import operations


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime | None) -> str | None:
    """Google's timestamp form: UTC with a Z suffix and microseconds."""
    if moment is None:
        return None
    if moment.tzinfo is None:  # SQLite hands back naive datetimes; they were stored as UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_operation_id() -> str:
    # Google's operation IDs are long decimal strings.
    return str(secrets.randbits(63))


def create_operation(
    conn: Connection,
    dataset_pk: int,
    api_method_name: str,
    *,
    request: dict[str, Any] | None = None,
    target: str | None = None,
    pending: int = 0,
) -> Row:
    """Record a new, not yet done, operation and return its row."""
    operation_id = new_operation_id()
    conn.execute(
        insert(operations).values(
            dataset_pk=dataset_pk,
            operation_id=operation_id,
            api_method_name=api_method_name,
            request=request,
            target=target,
            create_time=now(),
            done=False,
            cancel_requested=False,
            counter_success=0,
            counter_failure=0,
            counter_pending=pending,
        )
    )
    row = conn.execute(
        select(operations).where(
            operations.c.dataset_pk == dataset_pk, operations.c.operation_id == operation_id
        )
    ).one()
    return row


def add_progress(
    conn: Connection, operation_pk: int, *, success: int = 0, failure: int = 0
) -> None:
    """Move counters from pending to success/failure as work items finish."""
    conn.execute(
        update(operations)
        .where(operations.c.pk == operation_pk)
        .values(
            counter_success=operations.c.counter_success + success,
            counter_failure=operations.c.counter_failure + failure,
            counter_pending=operations.c.counter_pending - (success + failure),
        )
    )


def finish_operation(
    conn: Connection,
    operation_pk: int,
    *,
    response: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> None:
    """Mark an operation done with either a response or a google.rpc.Status error."""
    conn.execute(
        update(operations)
        .where(operations.c.pk == operation_pk)
        .values(done=True, end_time=now(), response=response, error=error, counter_pending=0)
    )


def operation_resource(row: Row, name: str) -> dict[str, Any]:
    """The google.longrunning.Operation JSON of an operation row named ``name``."""
    counter: dict[str, str] = {}
    for field in ("success", "failure", "pending"):
        value = getattr(row, f"counter_{field}")
        if value:
            counter[field] = str(value)
    metadata: dict[str, Any] = {
        "@type": OPERATION_METADATA,
        "apiMethodName": row.api_method_name,
        "createTime": rfc3339(row.create_time),
    }
    if row.end_time is not None:
        metadata["endTime"] = rfc3339(row.end_time)
    if row.cancel_requested:
        metadata["cancelRequested"] = True
    if counter:
        metadata["counter"] = counter
    resource: dict[str, Any] = {"name": name, "metadata": metadata}
    if row.done:
        resource["done"] = True
        if row.error is not None:
            resource["error"] = row.error
        else:
            resource["response"] = row.response or {}
    return resource
