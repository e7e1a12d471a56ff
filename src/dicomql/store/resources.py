"""Index queries for the resource hierarchy: datasets, DICOM stores, operations."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Text,
    bindparam,
    cast,
    delete,
    func,
    insert,
    select,
    update,
)

from dicomql.store.blobs import BlobStore
from dicomql.store.index import Index
from dicomql.store.operations import now
from dicomql.store.prepared import Prepared
from dicomql.store.schema import (
    blob_journal,
    datasets,
    dicom_stores,
    instance_blobs,
    instances,
    operations,
    person_name_tokens,
    series,
    studies,
)


def lock_dataset(conn: Connection, dataset_pk: int) -> bool:
    """Take the dataset row's lock for the rest of the transaction; False if it is gone.

    On PostgreSQL (READ COMMITTED) this orders a dataset's delete against a store created in it
    meanwhile: whichever locks first wins, and the other sees its result, instead of a foreign
    key failure (a 500) or a cascade that removes a new store's rows without journaling their
    blobs. SQLite's BEGIN IMMEDIATE already serializes writers and ignores FOR UPDATE.
    """
    query = select(datasets.c.pk).where(datasets.c.pk == dataset_pk).with_for_update()
    return conn.execute(query).first() is not None


def lock_dicom_store(conn: Connection, store_pk: int) -> bool:
    """Take the store row's lock (as STOW's index transaction does first); False if it is gone.

    A patch or delete racing a delete of the same store then answers 404 rather than updating
    nothing and answering 200, and a delete waits for a STOW's index transaction in flight
    (whose instances it then journals and removes) instead of deadlocking with it.
    """
    query = select(dicom_stores.c.pk).where(dicom_stores.c.pk == store_pk).with_for_update()
    return conn.execute(query).first() is not None


def find_dataset(conn: Connection, project: str, location: str, dataset_id: str) -> Row | None:
    return conn.execute(
        select(datasets).where(
            datasets.c.project == project,
            datasets.c.location == location,
            datasets.c.dataset_id == dataset_id,
        )
    ).first()


# One statement built once: every DICOMweb request runs it, and building a Core statement costs
# more CPU than SQLite takes to answer it.
_FIND_DICOM_STORE = (
    select(dicom_stores)
    .join(datasets, datasets.c.pk == dicom_stores.c.dataset_pk)
    .where(
        datasets.c.project == bindparam("project"),
        datasets.c.location == bindparam("location"),
        datasets.c.dataset_id == bindparam("dataset_id"),
        dicom_stores.c.store_id == bindparam("store_id"),
    )
)


def find_dicom_store(
    conn: Connection, project: str, location: str, dataset_id: str, store_id: str
) -> Row | None:
    """The store's row (with ``dataset_pk``), or None if the dataset or store does not exist."""
    return conn.execute(
        _FIND_DICOM_STORE,
        {"project": project, "location": location, "dataset_id": dataset_id, "store_id": store_id},
    ).first()


# A DIMSE request's store, looked up by every C-FIND and association: run as a Prepared
# statement, as SQLAlchemy's execution of the statement above cost several times SQLite's work.
_DICOM_STORE_PK = Prepared(_FIND_DICOM_STORE.with_only_columns(dicom_stores.c.pk))


def dicom_store_pk(
    conn: Connection, project: str, location: str, dataset_id: str, store_id: str
) -> int | None:
    """The store's primary key, or None if the dataset or store does not exist."""
    pk = _DICOM_STORE_PK.scalar(
        conn,
        {"project": project, "location": location, "dataset_id": dataset_id, "store_id": store_id},
    )
    return None if pk is None else int(pk)


def dicom_store_exists(conn: Connection, store_pk: int) -> bool:
    """Whether the store still exists (a long-running operation's may be deleted meanwhile)."""
    query = select(dicom_stores.c.pk).where(dicom_stores.c.pk == store_pk)
    return conn.execute(query).first() is not None


# --- datasets -------------------------------------------------------------------------------


def insert_dataset(
    conn: Connection, project: str, location: str, dataset_id: str, resource: dict[str, Any]
) -> Row:
    """Create a dataset row; the caller has checked that the name is free.

    Raises:
        sqlalchemy.exc.IntegrityError: a concurrent request created the same dataset first.
    """
    conn.execute(
        insert(datasets).values(
            project=project,
            location=location,
            dataset_id=dataset_id,
            resource=resource,
            create_time=now(),
        )
    )
    row = find_dataset(conn, project, location, dataset_id)
    assert row is not None
    return row


def list_datasets(
    conn: Connection, project: str, location: str, after: str | None, limit: int
) -> list[Row]:
    """Up to ``limit`` datasets of a location in ID order, starting after ID ``after``."""
    query = select(datasets).where(datasets.c.project == project, datasets.c.location == location)
    if after is not None:
        query = query.where(datasets.c.dataset_id > after)
    return list(conn.execute(query.order_by(datasets.c.dataset_id).limit(limit)))


def dataset_locations(conn: Connection, project: str) -> list[str]:
    """The locations where ``project`` has at least one dataset."""
    query = select(datasets.c.location).where(datasets.c.project == project).distinct()
    return [row.location for row in conn.execute(query)]


def update_dataset(conn: Connection, dataset_pk: int, resource: dict[str, Any]) -> None:
    conn.execute(update(datasets).where(datasets.c.pk == dataset_pk).values(resource=resource))


def delete_dataset(conn: Connection, dataset_pk: int) -> list[str]:
    """Delete a dataset with its stores, their instances and its operations.

    Returns the blob keys of the deleted instances, journaled in this transaction: call
    :func:`release_blobs` after commit. A crash in between leaves them to recovery.
    """
    # Each store's lock first, as STOW's index transaction takes it: one in flight commits
    # before its instances are journaled here, rather than after (its blobs would be orphans).
    locked = list(
        conn.execute(
            select(dicom_stores.c.pk)
            .where(dicom_stores.c.dataset_pk == dataset_pk)
            .order_by(dicom_stores.c.pk)
            .with_for_update()
        ).scalars()
    )
    keys = _journal_instance_blobs(conn, instances.c.store_pk.in_(locked))
    # Children first, rather than trusting ON DELETE CASCADE: SQLite enforces it only with
    # PRAGMA foreign_keys=ON on every connection, and an index opened elsewhere may lack it.
    for store_pk in locked:
        _delete_store_contents(conn, store_pk)
    conn.execute(delete(dicom_stores).where(dicom_stores.c.dataset_pk == dataset_pk))
    conn.execute(delete(operations).where(operations.c.dataset_pk == dataset_pk))
    conn.execute(delete(datasets).where(datasets.c.pk == dataset_pk))
    return keys


# --- DICOM stores ---------------------------------------------------------------------------


def insert_dicom_store(
    conn: Connection, dataset_pk: int, store_id: str, resource: dict[str, Any]
) -> Row:
    """Create a DICOM store row in a dataset; the caller has checked the ID is free.

    Raises:
        sqlalchemy.exc.IntegrityError: a concurrent request created the same store first.
    """
    moment = now()
    conn.execute(
        insert(dicom_stores).values(
            dataset_pk=dataset_pk,
            store_id=store_id,
            resource=resource,
            create_time=moment,
            update_time=moment,
        )
    )
    return conn.execute(
        select(dicom_stores).where(
            dicom_stores.c.dataset_pk == dataset_pk, dicom_stores.c.store_id == store_id
        )
    ).one()


def list_dicom_stores(
    conn: Connection, dataset_pk: int, after: str | None, limit: int
) -> list[Row]:
    """Up to ``limit`` stores of a dataset in ID order, starting after ID ``after``."""
    query = select(dicom_stores).where(dicom_stores.c.dataset_pk == dataset_pk)
    if after is not None:
        query = query.where(dicom_stores.c.store_id > after)
    return list(conn.execute(query.order_by(dicom_stores.c.store_id).limit(limit)))


def all_dicom_store_names(conn: Connection, limit: int) -> list[tuple[str, str, str, str]]:
    """Up to ``limit`` stores of every dataset, as (project, location, dataset, store) IDs in
    that order (the viewer's list of data sources)."""
    query = (
        select(
            datasets.c.project, datasets.c.location, datasets.c.dataset_id, dicom_stores.c.store_id
        )
        .join(datasets, datasets.c.pk == dicom_stores.c.dataset_pk)
        .order_by(
            datasets.c.project, datasets.c.location, datasets.c.dataset_id, dicom_stores.c.store_id
        )
        .limit(limit)
    )
    return [tuple(row) for row in conn.execute(query)]


def update_dicom_store(conn: Connection, store_pk: int, resource: dict[str, Any]) -> None:
    conn.execute(
        update(dicom_stores)
        .where(dicom_stores.c.pk == store_pk)
        .values(resource=resource, update_time=now())
    )


def delete_dicom_store(conn: Connection, store_pk: int) -> list[str]:
    """Delete a store and every study, series and instance in it.

    Returns the deleted instances' blob keys, journaled in this transaction: call
    :func:`release_blobs` after commit.
    """
    keys = _journal_instance_blobs(conn, instances.c.store_pk == store_pk)
    _delete_store_contents(conn, store_pk)
    conn.execute(delete(dicom_stores).where(dicom_stores.c.pk == store_pk))
    return keys


def dicom_store_metrics(conn: Connection, store_pk: int) -> dict[str, int]:
    """Counts and sizes of a store, counted from the index (studies, series, instances).

    ``structuredStorageSizeBytes`` is the size of the indexed metadata: the DICOM JSON kept for
    each study, series and instance.
    """
    counts: dict[str, int] = {}
    structured = 0
    for key, table in (("study", studies), ("series", series), ("instance", instances)):
        row = conn.execute(
            select(
                func.count(),
                func.coalesce(func.sum(func.length(cast(table.c.attributes, Text))), 0),
            ).where(table.c.store_pk == store_pk)
        ).one()
        counts[f"{key}Count"] = int(row[0])
        structured += int(row[1])
    blob_bytes = conn.execute(
        select(func.coalesce(func.sum(instances.c.size_bytes), 0)).where(
            instances.c.store_pk == store_pk
        )
    ).scalar_one()
    counts["structuredStorageSizeBytes"] = structured
    counts["blobStorageSizeBytes"] = int(blob_bytes)
    return counts


def _journal_instance_blobs(conn: Connection, where: ColumnElement[bool]) -> list[str]:
    # Journal the keys in the deleting transaction: if the process dies after commit but before
    # the files are removed, recovery (store.instances.recover_journal) removes them, because no
    # committed instance row references them any more.
    keys = list(conn.execute(select(instances.c.blob_key).where(where)).scalars())
    moment = now()
    for start in range(0, len(keys), _BATCH):
        conn.execute(
            insert(blob_journal),
            [{"blob_key": key, "create_time": moment} for key in keys[start : start + _BATCH]],
        )
    return keys


def _delete_store_contents(conn: Connection, store_pk: int) -> None:
    conn.execute(
        delete(instance_blobs).where(
            instance_blobs.c.instance_pk.in_(
                select(instances.c.pk).where(instances.c.store_pk == store_pk)
            )
        )
    )
    for table in (person_name_tokens, instances, series, studies):
        conn.execute(delete(table).where(table.c.store_pk == store_pk))


def release_blobs(index: Index, blobs: BlobStore, keys: list[str]) -> None:
    """Remove the files of deleted instances, then their journal entries (after commit)."""
    for key in keys:
        blobs.delete(key)
    for start in range(0, len(keys), _BATCH):
        with index.begin() as conn:
            conn.execute(
                delete(blob_journal).where(
                    blob_journal.c.blob_key.in_(keys[start : start + _BATCH])
                )
            )


_BATCH = 500


# --- operations -----------------------------------------------------------------------------


def find_operation(conn: Connection, dataset_pk: int, operation_id: str) -> Row | None:
    return conn.execute(
        select(operations).where(
            operations.c.dataset_pk == dataset_pk, operations.c.operation_id == operation_id
        )
    ).first()


def list_operations(conn: Connection, dataset_pk: int, after: int | None, limit: int) -> list[Row]:
    """Up to ``limit`` operations of a dataset in creation order, after row ``after``."""
    query = select(operations).where(operations.c.dataset_pk == dataset_pk)
    if after is not None:
        query = query.where(operations.c.pk > after)
    return list(conn.execute(query.order_by(operations.c.pk).limit(limit)))


def request_cancel(conn: Connection, operation_pk: int) -> None:
    """Ask the operation's worker to stop; a done operation is left as it is."""
    conn.execute(
        update(operations)
        .where(operations.c.pk == operation_pk, operations.c.done.is_(False))
        .values(cancel_requested=True)
    )
