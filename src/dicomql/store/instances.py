"""Index writes and reads of DICOM instances (being built by the DICOMweb work)."""

from __future__ import annotations

from sqlalchemy import delete, select

from dicomql.store.blobs import BlobStore
from dicomql.store.index import Index
from dicomql.store.schema import blob_journal, instances


def recover_journal(index: Index, blobs: BlobStore) -> int:
    """Delete blobs journaled before a crash that no committed instance row references."""
    removed = 0
    with index.begin() as conn:
        keys = [row.blob_key for row in conn.execute(select(blob_journal.c.blob_key))]
        for key in keys:
            referenced = conn.execute(
                select(instances.c.pk).where(instances.c.blob_key == key).limit(1)
            ).first()
            if referenced is None:
                blobs.delete(key)
                removed += 1
        if keys:
            conn.execute(delete(blob_journal).where(blob_journal.c.blob_key.in_(keys)))
    return removed
