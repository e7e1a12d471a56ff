"""Small instances kept in the index; the rest in another blob store (files).

Storing an instance as a file costs a new inode, an fsync of the file and one of its directory,
and a rename, all before the index transaction commits with an fsync of its own: for a small
instance, more CPU than parsing it, and three waits for the disk (docs/performance.md, "Small
instances in the index"). An instance of at most ``limit`` bytes is instead indexed with its
bytes (``InstanceRecord.inline_data``, written by :mod:`dicomql.store.instances` into the table
``instance_blobs`` in the same transaction), so one commit makes it durable, and its bytes are
deleted with its row.

Keys are the files' keys either way. A reader tries the file first, so a file-backed instance
is read as before, and an inline one costs a failed ``open`` before the index is asked.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta
from typing import BinaryIO

from sqlalchemy import bindparam, func, select

from dicomql.store.blobs import BlobStore, BlobWriter, read_file_chunks
from dicomql.store.index import Index
from dicomql.store.prepared import Prepared
from dicomql.store.schema import instance_blobs, instances

# The largest limit: the ingest holds an instance whole in memory up to this size only
# (store/ingest.py, _FLUSH_BYTES), and a reader holds an inline instance whole.
MAX_INLINE_LIMIT = 1024 * 1024

# Compiled once (store/prepared.py): a WADO-RS of a small instance runs it once or twice.
_DATA = Prepared(
    select(instance_blobs.c.data)
    .join(instances, instances.c.pk == instance_blobs.c.instance_pk)
    .where(instances.c.blob_key == bindparam("key"))
)
_SIZE = (
    select(func.length(instance_blobs.c.data))
    .join(instances, instances.c.pk == instance_blobs.c.instance_pk)
    .where(instances.c.blob_key == bindparam("key"))
)


class InlineBlobStore:
    """``files`` for writing and for the instances stored as files; the index for those
    stored inline (at most ``limit`` bytes each)."""

    def __init__(self, index: Index, files: BlobStore, limit: int) -> None:
        if not 0 <= limit <= MAX_INLINE_LIMIT:
            raise ValueError(f"the inline limit must be 0 to {MAX_INLINE_LIMIT} bytes")
        self.index = index
        self.files = files
        self.inline_limit = limit

    def new_key(self, prefix: str) -> str:
        return self.files.new_key(prefix)

    def writer(self, key: str) -> BlobWriter:
        return self.files.writer(key)

    def open(self, key: str) -> BinaryIO:
        try:
            return self.files.open(key)
        except FileNotFoundError:
            return io.BytesIO(self._inline(key))

    def read_chunks(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        with self.open(key) as file:
            yield from read_file_chunks(file, start, end)

    def size(self, key: str) -> int:
        try:
            return self.files.size(key)
        except FileNotFoundError:
            with self.index.connect() as conn:
                size = conn.execute(_SIZE, {"key": key}).scalar()
            if size is None:
                raise
            return int(size)

    def exists(self, key: str) -> bool:
        if self.files.exists(key):
            return True
        with self.index.connect() as conn:
            return conn.execute(_SIZE, {"key": key}).scalar() is not None

    def delete(self, key: str) -> None:
        # An inline instance's bytes go with its row, in the transaction that deletes it.
        self.files.delete(key)

    def remove_temporaries(self, older_than: timedelta | None = None) -> int:
        return self.files.remove_temporaries(older_than)

    def _inline(self, key: str) -> bytes:
        with self.index.connect() as conn:
            data = _DATA.scalar(conn, {"key": key})
        if data is None:
            raise FileNotFoundError(f"no blob {key!r}")
        return bytes(data)
