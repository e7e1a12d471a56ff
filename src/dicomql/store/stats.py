"""Counts an operator watches, read from the index when ``/metrics`` is scraped (not counted in
a process), so they are right across server processes and servers sharing one index."""

from __future__ import annotations

from sqlalchemy import Text, and_, cast, func, select

from dicomql.store.index import Index
from dicomql.store.schema import instance_events, operations, work_items


def operation_states(index: Index) -> dict[tuple[str, str], int]:
    """How many operations there are per (API method, state); state is ``running``,
    ``succeeded`` or ``failed`` (done with an error)."""
    # An error written as None may be stored as SQL NULL or as JSON null.
    failed = and_(operations.c.error.is_not(None), cast(operations.c.error, Text) != "null").label(
        "failed"
    )
    state = select(
        operations.c.api_method_name, operations.c.done, failed, func.count().label("count")
    ).group_by(operations.c.api_method_name, operations.c.done, failed)
    counts: dict[tuple[str, str], int] = {}
    with index.connect() as conn:
        for method, done, failed, count in conn.execute(state):
            name = "running" if not done else ("failed" if failed else "succeeded")
            key = (method, name)
            counts[key] = counts.get(key, 0) + count
    return counts


def queue_depths(index: Index) -> dict[str, int]:
    """Work not yet done: pending operation work items and undelivered instance events."""
    with index.connect() as conn:
        items = conn.execute(
            select(func.count()).select_from(work_items).where(work_items.c.done.is_(False))
        ).scalar_one()
        events = conn.execute(select(func.count()).select_from(instance_events)).scalar_one()
    return {"work_items": items, "outbox": events}
