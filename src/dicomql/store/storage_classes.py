"""Changing the storage class of stored instances (``setBlobStorageSettings``): index rows only,
since the embedded service keeps every blob in one place; the class is what
``:getStorageInfo`` reports and what SetBlobSettings notifications announce."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, select, update

from dicomql.store import events
from dicomql.store.schema import instances, series, studies


def set_storage_class(
    conn: Connection, store_pk: int, instance_pks: list[int], storage_class: str, moment: datetime
) -> None:
    """Give the instances ``storage_class`` as of ``moment``, and enqueue a SetBlobSettings
    notification for each that changes. The update time records a change of class; setting
    the same class again leaves it (and the row) alone, and sends no notification."""
    changing = instances.c.pk.in_(instance_pks) & (instances.c.storage_class != storage_class)
    changed = _class_changes(conn, changing, storage_class, moment)
    conn.execute(
        update(instances)
        .where(changing)
        .values(storage_class=storage_class, storage_class_update_time=moment)
    )
    events.enqueue_storage_class_changes(conn, store_pk, changed)


def _class_changes(
    conn: Connection, changing: ColumnElement[bool], storage_class: str, moment: datetime
) -> list[dict[str, Any]]:
    """What a SetBlobSettings notification says of each instance about to change class."""
    rows = conn.execute(
        select(
            studies.c.study_instance_uid,
            series.c.series_instance_uid,
            series.c.modality,
            instances.c.sop_instance_uid,
            instances.c.storage_class,
        )
        .join(series, series.c.pk == instances.c.series_pk)
        .join(studies, studies.c.pk == instances.c.study_pk)
        .where(changing)
    )
    return [
        {
            "studyInstanceUID": row.study_instance_uid,
            "seriesInstanceUID": row.series_instance_uid,
            "sopInstanceUID": row.sop_instance_uid,
            "modality": row.modality,
            "storageClass": storage_class,
            "previousStorageClass": row.storage_class,
            "lastUpdated": moment.astimezone(UTC).isoformat(),
        }
        for row in rows
    ]
