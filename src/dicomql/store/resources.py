"""Index queries for the resource hierarchy: datasets, DICOM stores, operations."""

from __future__ import annotations

from sqlalchemy import Connection, Row, select

from dicomql.store.schema import datasets, dicom_stores


def find_dataset(conn: Connection, project: str, location: str, dataset_id: str) -> Row | None:
    return conn.execute(
        select(datasets).where(
            datasets.c.project == project,
            datasets.c.location == location,
            datasets.c.dataset_id == dataset_id,
        )
    ).first()


def find_dicom_store(
    conn: Connection, project: str, location: str, dataset_id: str, store_id: str
) -> Row | None:
    """The store's row (with ``dataset_pk``), or None if the dataset or store does not exist."""
    return conn.execute(
        select(dicom_stores)
        .join(datasets, datasets.c.pk == dicom_stores.c.dataset_pk)
        .where(
            datasets.c.project == project,
            datasets.c.location == location,
            datasets.c.dataset_id == dataset_id,
            dicom_stores.c.store_id == store_id,
        )
    ).first()
