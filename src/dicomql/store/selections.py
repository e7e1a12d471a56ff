"""The instances a long-running request selects: a store, study, series or instance (the
request's path), narrowed to the resource paths of ``DicomFilterConfig.resourcePathsGcsUri``.
A selection is walked in primary key order a page per short read transaction, counted, or cut
into key ranges that work items take."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, and_, func, or_, select

from dicomql.store.schema import instances, series, studies

#: ``/studies/{study}[/series/{series}[/instances/{instance}]]`` as its three UIDs.
ResourcePath = tuple[str, str | None, str | None]
#: The study, series and instance UIDs of a request's path (``None`` where it stops).
Scope = Mapping[str, str | None]
ConnectionFactory = Callable[[], Any]

# Instances read per query while walking a selection (keyset pagination on the primary key).
PAGE = 200


def _scope_condition(
    study: str | None, series_uid: str | None, instance: str | None
) -> ColumnElement[bool] | None:
    terms = []
    if study is not None:
        terms.append(studies.c.study_instance_uid == study)
    if series_uid is not None:
        terms.append(series.c.series_instance_uid == series_uid)
    if instance is not None:
        terms.append(instances.c.sop_instance_uid == instance)
    return and_(*terms) if terms else None


def _conditions(
    store_pk: int, scope: Scope, paths: list[ResourcePath] | None
) -> list[ColumnElement[bool]] | None:
    """The WHERE terms of a selection, or None when its filter file lists no paths (nothing)."""
    conditions = [instances.c.store_pk == store_pk]
    scoped = _scope_condition(scope.get("study"), scope.get("series"), scope.get("instance"))
    if scoped is not None:
        conditions.append(scoped)
    if paths is not None:
        if not paths:
            return None
        conditions.append(or_(*(_path_condition(path) for path in paths)))
    return conditions


def _path_condition(path: ResourcePath) -> ColumnElement[bool]:
    condition = _scope_condition(*path)
    assert condition is not None  # a resource path names at least a study
    return condition


def iter_selected(
    conn_factory: ConnectionFactory,
    store_pk: int,
    scope: Scope,
    paths: list[ResourcePath] | None,
    after_pk: int = 0,
    through_pk: int | None = None,
) -> Iterator[Row]:
    """Instances of the store within ``scope`` (study/series/instance UIDs of the request path)
    and, if given, within one of ``paths``; in primary key order after ``after_pk`` (the
    checkpoint of a resumed operation) and up to ``through_pk`` (the end of a work item's
    range). Read a page per short read transaction."""
    conditions = _conditions(store_pk, scope, paths)
    if conditions is None:
        return
    if through_pk is not None:
        conditions.append(instances.c.pk <= through_pk)
    query = (
        select(
            instances.c.pk,
            instances.c.blob_key,
            instances.c.transfer_syntax_uid,
            instances.c.sop_instance_uid,
            series.c.series_instance_uid,
            studies.c.study_instance_uid,
        )
        .join(series, series.c.pk == instances.c.series_pk)
        .join(studies, studies.c.pk == instances.c.study_pk)
        .where(*conditions)
        .order_by(instances.c.pk)
        .limit(PAGE)
    )
    cursor = after_pk
    while True:
        with conn_factory() as conn:
            rows = list(conn.execute(query.where(instances.c.pk > cursor)))
        yield from rows
        if len(rows) < PAGE:
            return
        cursor = rows[-1].pk


def count_selected(
    conn: Connection,
    store_pk: int,
    scope: Scope,
    paths: list[ResourcePath] | None,
    after_pk: int = 0,
) -> int:
    """How many instances :func:`iter_selected` would walk after ``after_pk``."""
    conditions = _conditions(store_pk, scope, paths)
    if conditions is None:
        return 0
    query = (
        select(func.count())
        .select_from(instances)
        .join(series, series.c.pk == instances.c.series_pk)
        .join(studies, studies.c.pk == instances.c.study_pk)
        .where(*conditions, instances.c.pk > after_pk)
    )
    return int(conn.execute(query).scalar_one())


def plan_ranges(
    conn_factory: ConnectionFactory,
    store_pk: int,
    scope: Scope,
    paths: list[ResourcePath] | None,
    size: int,
    after_pk: int = 0,
) -> list[dict[str, Any]]:
    """Work item payloads covering the selection in primary key ranges of ``size`` instances:
    ``{"after": pk, "through": pk, "count": n}``. An instance stored later has a higher key
    than any range, so a range selects the same instances when it runs (less any deleted)."""
    items: list[dict[str, Any]] = []
    previous, last, count = after_pk, after_pk, 0
    for row in iter_selected(conn_factory, store_pk, scope, paths, after_pk):
        last, count = row.pk, count + 1
        if count == size:
            items.append({"after": previous, "through": last, "count": count})
            previous, count = last, 0
    if count:
        items.append({"after": previous, "through": last, "count": count})
    return items


def stored_facts(conn: Connection, instance_pks: list[int]) -> dict[int, Row]:
    """What an export writes of each instance beside its UIDs: ``attributes``,
    ``storage_class``, ``size_bytes`` and ``create_time``, by key; an instance deleted since it
    was selected is absent."""
    query = select(
        instances.c.pk,
        instances.c.attributes,
        instances.c.storage_class,
        instances.c.size_bytes,
        instances.c.create_time,
    ).where(instances.c.pk.in_(instance_pks))
    return {row.pk: row for row in conn.execute(query)}
