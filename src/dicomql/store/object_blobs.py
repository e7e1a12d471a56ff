"""Blob stores in object storage (``s3://``, ``gs://``, ``memory://``) through fsspec."""

from __future__ import annotations

import contextlib
import io
import secrets
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Protocol

from dicomql.store.blobs import CHUNK_SIZE, BlobStore, LocalBlobStore
from dicomql.store.index import Index
from dicomql.store.inline_blobs import InlineBlobStore

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

SCHEMES = ("s3", "gs", "gcs", "memory")

# Ranged reads fetch this much per request: fewer round trips than one per CHUNK_SIZE, while a
# reader still holds only a few MB in memory.
_READ_BLOCK = 8 * CHUNK_SIZE
# Writes upload in parts this size (s3fs would buffer 50 MB): S3 needs at least 5 MB per part
# but the last, GCS a multiple of 256 KiB; 10,000 S3 parts still allow 80 GB instances.
_WRITE_PART = 8 * CHUNK_SIZE


class BlobSettings(Protocol):
    """Where blobs live, as the service's configuration says (``service.config.ServiceConfig``
    satisfies it; store/ names only the three settings it reads, not the service above it)."""

    @property
    def blob_url(self) -> str | None: ...

    @property
    def blob_root(self) -> Path: ...

    @property
    def blobs_are_files(self) -> bool: ...

    @property
    def s3_endpoint_url(self) -> str | None: ...

    @property
    def inline_blob_bytes(self) -> int: ...


def blob_store_for(config: BlobSettings, index: Index) -> BlobStore:
    """The blob store a configuration names: object storage at ``blob_url``, else files (in a
    ``file://`` directory or the data directory), with instances of at most
    ``inline_blob_bytes`` kept in ``index`` instead."""
    if config.blobs_are_files:
        files = LocalBlobStore(config.blob_root)
        if config.inline_blob_bytes:
            return InlineBlobStore(index, files, config.inline_blob_bytes)
        return files
    assert config.blob_url is not None
    return FsspecBlobStore(config.blob_url, s3_endpoint_url=config.s3_endpoint_url)


def check_blob_url(url: str) -> None:
    """Refuse a URL no object-storage backend serves, before anything starts."""
    scheme, separator, rest = url.partition("://")
    if scheme == "file" and separator:
        # Files (store.blobs), with the same crash safety as the data directory's.
        if not rest.startswith("/") or not rest.strip("/"):
            raise ValueError(
                f"blob URL {url!r} must name an absolute directory (file:///mnt/shared/dicomql)"
            )
        return
    if not separator or scheme not in SCHEMES:
        raise ValueError(
            f"blob URL must start with one of {', '.join(s + '://' for s in (*SCHEMES, 'file'))}"
        )
    if scheme != "memory" and not rest.strip("/"):
        raise ValueError(f"blob URL {url!r} names no bucket")


class FsspecBlobWriter:
    """One blob on its way to object storage.

    Object stores publish an object only when its upload completes (S3 PutObject or
    CompleteMultipartUpload; a GCS resumable upload's final chunk), so readers never see a partial
    blob, and :meth:`commit` returns only after the store confirmed the whole object.
    """

    def __init__(self, fs: AbstractFileSystem, path: str, key: str, *, spool: bool) -> None:
        self.key = key
        self.size = 0
        self._fs = fs
        self._path = path
        self._done = False
        self._upload: Any = None
        self._spool: IO[bytes] | None = None
        if spool:
            # A backend whose files are visible while written (memory://): spool locally and
            # publish the whole blob in one call at commit.
            self._spool = tempfile.SpooledTemporaryFile(max_size=_READ_BLOCK)  # noqa: SIM115
        else:
            # Uploads parts as they fill and publishes only on close.
            self._upload = fs.open(path, "wb", block_size=_WRITE_PART)

    def write(self, data: bytes) -> None:
        if self._upload is not None:
            self._upload.write(data)
        else:
            assert self._spool is not None
            self._spool.write(data)
        self.size += len(data)

    def commit(self) -> None:
        if self._done:
            raise ValueError(f"blob {self.key} already committed or aborted")
        self._done = True
        if self._upload is not None:
            try:
                self._upload.close()  # completes the upload; raises if the store refused it
            except BaseException:
                with contextlib.suppress(Exception):  # else the next start's recovery aborts it
                    self._upload.discard()
                raise
            return
        assert self._spool is not None
        try:
            self._spool.seek(0)
            self._fs.pipe_file(self._path, self._spool.read())
        finally:
            self._spool.close()

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        if self._upload is not None:
            try:
                self._upload.discard()  # S3: AbortMultipartUpload; GCS: cancel the session
            finally:
                # Closed without flushing: nothing more may be uploaded for this blob.
                self._upload.closed = True
        elif self._spool is not None:
            self._spool.close()

    def __enter__(self) -> FsspecBlobWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()


class FsspecBlobStore:
    """Blobs as objects under ``url`` (``s3://bucket/prefix``, ``gs://bucket/prefix``,
    ``memory://prefix``), keyed like :class:`LocalBlobStore`: ``{prefix}/{2 hex}/{key}``.

    Credentials come from each library's usual sources (AWS environment / config files, Google
    application-default credentials). ``s3_endpoint_url`` names an S3-compatible service other
    than AWS (``DICOMQL_S3_ENDPOINT_URL``, read at the edge); ``storage_options`` passes anything
    else to the fsspec backend.
    """

    # Every instance an object, whatever its size: a bucket's lifecycle rules and storage
    # classes see them all.
    inline_limit = 0

    def __init__(
        self, url: str, *, s3_endpoint_url: str | None = None, **storage_options: Any
    ) -> None:
        check_blob_url(url)
        try:
            from fsspec.core import url_to_fs
        except ImportError as exc:
            raise ImportError("object storage needs the cloud extra: dicomql[cloud]") from exc
        scheme = url.partition("://")[0]
        options: dict[str, Any] = {}
        if scheme in ("s3", "gs", "gcs"):
            # Another process may add or delete blobs: never answer exists() from a stale listing.
            options["use_listings_cache"] = False
        if scheme == "s3" and s3_endpoint_url:
            options["endpoint_url"] = s3_endpoint_url
        options.update(storage_options)
        self.url = url
        self.fs, root = url_to_fs(url, **options)
        self.root = root.rstrip("/")
        self._spool_writes = scheme == "memory"

    def new_key(self, prefix: str) -> str:
        token = secrets.token_hex(16)
        return f"{prefix}/{token[:2]}/{token}"

    def writer(self, key: str) -> FsspecBlobWriter:
        return FsspecBlobWriter(self.fs, self._path(key), key, spool=self._spool_writes)

    def open(self, key: str) -> BinaryIO:
        from fsspec.spec import AbstractBufferedFile

        path = self._path(key)
        file = self.fs.open(path, "rb", block_size=_READ_BLOCK)  # s3fs would fetch 50 MB
        if isinstance(file, AbstractBufferedFile):
            return file  # seekable, reads by ranged requests
        # memory:// hands every reader the same stored object: give each its own copy.
        return io.BytesIO(self.fs.cat_file(path))

    def read_chunks(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        path = self._path(key)
        total = self.fs.size(path)
        stop = total if end is None else min(end, total)
        position = start
        while position < stop:
            block_end = min(position + _READ_BLOCK, stop)
            block = self.fs.cat_file(path, start=position, end=block_end)
            if not block:
                return
            position += len(block)
            for offset in range(0, len(block), CHUNK_SIZE):
                yield block[offset : offset + CHUNK_SIZE]

    def size(self, key: str) -> int:
        return int(self.fs.size(self._path(key)))

    def exists(self, key: str) -> bool:
        return bool(self.fs.isfile(self._path(key)))

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(key))

    def remove_temporaries(self, older_than: timedelta | None = None) -> int:
        """Abort multipart uploads a crash left under this store's prefix (S3 keeps and bills
        them until aborted); returns how many. Other backends leave no temporaries.

        Args:
            older_than: only uploads initiated at least this long ago (other servers sharing
                the bucket may be uploading the younger ones); None aborts all.
        """
        list_uploads = getattr(self.fs, "list_multipart_uploads", None)
        if list_uploads is None:
            return 0
        bucket, _, prefix = self.root.partition("/")
        cutoff = None if older_than is None else datetime.now(UTC) - older_than
        removed = 0
        for upload in list_uploads(bucket):
            if prefix and not upload["Key"].startswith(prefix + "/"):
                continue
            initiated = upload.get("Initiated")
            # An upload of unknown age may be another server's, in progress: leave it.
            if cutoff is not None and not (isinstance(initiated, datetime) and initiated < cutoff):
                continue
            self.fs.abort_mpu(bucket, upload["Key"], upload["UploadId"])
            removed += 1
        return removed

    def _path(self, key: str) -> str:
        # Keys are made by new_key; refuse anything else rather than trust it.
        if not key or ".." in key.split("/") or key.startswith("/") or "\x00" in key:
            raise ValueError(f"not a blob key: {key!r}")
        return f"{self.root}/{key}"
