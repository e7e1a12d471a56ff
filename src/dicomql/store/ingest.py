"""Storing PS3.10 instances into a DICOM store as one unit of work, with the crash-safety protocol:
journal the blob key, write and fsync the blob, parse it, index it (which unjournals it) or
discard it. STOW-RS, import and de-identification all store through :class:`Ingest`; each
instance ends in one :class:`~dicomql.store.instances.InstanceOutcome`.

Nothing is acknowledged before it is durable: an outcome of STORED is returned only after the
index transaction that holds the instance has committed, and its blob was fsynced before that.
After a crash, recovery (:func:`~dicomql.store.instances.recover_journal`) removes every journaled
blob no committed instance references, so a unit of work never leaves an orphan file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import threading
import time
from collections.abc import AsyncIterable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

import anyio
from anyio import to_thread

from dicomql.dicom.jsonmodel import level_attributes
from dicomql.dicom.parse import UnreadableInstance, read_header
from dicomql.store import events
from dicomql.store.blobs import BlobStore, BlobWriter
from dicomql.store.index import Index
from dicomql.store.instances import (
    InstanceOutcome,
    Outcome,
    StoreNotFound,
    discard_blob,
    index_instances,
    journal_blobs,
    unjournal_blobs,
)
from dicomql.store.records import InstanceRecord

log = logging.getLogger("dicomql.store.ingest")

# Bytes of a received instance held before they are written out (in a worker thread).
_FLUSH_BYTES = 1024 * 1024
# Keys journaled per journal transaction after the first (one commit, one fsync, for the lot):
# a request with a second instance usually carries many (doubling from 1 to 16 cost five journal
# commits for 25 instances; keys left unused are forgotten in the last index commit).
_KEY_BATCH = 32
# Seconds a journaled key is handed out for at most. Recovery removes the blob of an entry older
# than its grace period (an hour by default) that no instance references, so a key must be used
# well before that; keys held longer (a slow sender on a long association) are given up, and
# forgotten in the next index commit.
_KEY_MAX_AGE = 60.0
# Instances indexed per index transaction at most (group commit); each has its own savepoint.
_INDEX_BATCH = 64
_READ_SIZE = 1024 * 1024


class IncomingInstance:
    """One instance on its way into the blob store: its journaled key, its writer and hash.

    The writer (and with it a file) is made at the first write: an instance held whole and
    kept in the index (``flush(last=True, inline_limit=…)``) never has one."""

    def __init__(self, blobs: BlobStore, key: str) -> None:
        self.key = key
        self.hasher = hashlib.sha256()
        self.size = 0
        self.inline = False  # its bytes go into the index with its row
        self._blobs = blobs
        self._writer: BlobWriter | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._spilled = False  # some bytes were written out already
        self.committed = False

    @property
    def writer(self) -> BlobWriter:
        if self._writer is None:
            self._writer = self._blobs.writer(self.key)
        return self._writer

    def buffer(self, data: bytes) -> bool:
        """Hold ``data``; True when enough is held that :meth:`flush` should run."""
        self._pending.append(data)
        self._pending_size += len(data)
        return self._pending_size >= _FLUSH_BYTES

    def flush(self, *, last: bool = False, inline_limit: int = 0) -> bytes | None:
        """Write out what is held. The last flush returns the instance's bytes when they were
        all held until then (an instance under ``_FLUSH_BYTES``), else None; a larger instance
        is never joined into one copy. Held bytes of at most ``inline_limit`` are not written
        out at all: the instance is :attr:`inline`."""
        pending, self._pending, self._pending_size = self._pending, [], 0
        if last and not self._spilled:
            whole = pending[0] if len(pending) == 1 else b"".join(pending)
            if len(whole) <= inline_limit:
                self.hasher.update(whole)
                self.size = len(whole)
                self.inline = True
                return whole
            pending = [whole]
        else:
            whole = None
        for chunk in pending:
            self._spilled = True
            self.hasher.update(chunk)
            self.writer.write(chunk)
            self.size += len(chunk)
        return whole

    def write(self, data: bytes) -> None:
        if self.buffer(data):
            self.flush()

    def abort(self) -> None:
        """Drop what was written (nothing, if no writer was made)."""
        if self._writer is not None:
            self._writer.abort()


class BlobKeys:
    """Blob keys journaled ahead of their writes: one journal commit for a batch of instances
    rather than one each. Each :class:`Ingest` has its own unless given one to share with the
    units of work after it (a DIMSE association stores one instance per C-STORE): then the keys
    it leaves unused stay journaled for the next, and :meth:`release` forgets them at the end.
    Not thread-safe: one unit of work uses it at a time."""

    def __init__(self, index: Index, blobs: BlobStore) -> None:
        self.index = index
        self.blobs = blobs
        self._free: list[str] = []
        self._given_up: list[str] = []  # journaled, never to be used: forget them
        self._batch = 1  # one key first (most STOW requests carry one instance), then more
        self._journaled_at = 0.0

    def ready(self) -> bool:
        """Whether :meth:`take` would hand out a key without a commit."""
        return bool(self._free) and time.monotonic() - self._journaled_at < _KEY_MAX_AGE

    def take(self) -> str:
        """A journaled key (committed to the journal before its file exists, so a crash in
        between leaves it to recovery)."""
        if not self.ready():
            self._given_up += self._free
            keys = [self.blobs.new_key("instances") for _ in range(self._batch)]
            journal_blobs(self.index, keys)
            self._free = keys
            self._journaled_at = time.monotonic()
            self._batch = _KEY_BATCH
        return self._free.pop()

    def unused(self, *, all_free: bool) -> list[str]:
        """The keys to forget in an index commit: those given up, and with ``all_free`` those
        not handed out too (the last commit of a unit of work that owns the keys). Put them
        back with :meth:`restore` if that commit fails."""
        unused, self._given_up = self._given_up, []
        if all_free:
            unused, self._free = unused + self._free, []
        return unused

    def restore(self, keys: list[str]) -> None:
        """Keys :meth:`unused` returned that are still journaled (their commit failed)."""
        self._given_up += keys

    @property
    def holding(self) -> bool:
        return bool(self._free or self._given_up)

    def release(self) -> None:
        """Forget every key not handed out (one commit, none when there are none)."""
        unjournal_blobs(self.index, self.unused(all_free=True))


class Ingest:
    """Stores instances into one DICOM store: the one place that journals, writes, parses,
    indexes and discards them, and turns a file that cannot be read into a refusal.

    Synchronous callers (import, de-identification, a future DIMSE C-STORE) call
    :meth:`store`. The asynchronous STOW-RS endpoint streams each part into :meth:`receive`
    (committing and parsing one part in a worker thread while the next is received), records
    parts it cannot take with :meth:`refuse`, and collects the outcomes, in request order, from
    :meth:`finish`; used as an ``async with`` block, whatever was received whole is stored and
    nothing is left half-stored if the request fails midway.

    Args:
        study_instance_uid: the study the instances must belong to (STOW-RS into
            ``/studies/{study}``); others are refused with STUDY_MISMATCH.
        action: what stores them, for the store's notifications and streams (see
            :func:`dicomql.store.instances.index_instances`).
        storage_class: the blob storage class of the new instances; STANDARD when None.
        space_shortage: says why there is no room for another instance (below the data
            directory's free-space floor), or None; each instance that meets a shortage is
            refused with OUT_OF_RESOURCES before anything of it is written.
        keys: journaled keys shared with other units of work, which the caller releases;
            by default the Ingest journals its own and forgets those left unused.
    """

    def __init__(
        self,
        index: Index,
        blobs: BlobStore,
        store_pk: int,
        *,
        study_instance_uid: str | None = None,
        action: str = events.STORE_INSTANCES,
        storage_class: str | None = None,
        space_shortage: Callable[[], str | None] | None = None,
        keys: BlobKeys | None = None,
    ) -> None:
        self.index = index
        self.blobs = blobs
        self.store_pk = store_pk
        self.study_instance_uid = study_instance_uid
        self.action = action
        self.storage_class = storage_class
        self.space_shortage = space_shortage
        self._keys = BlobKeys(index, blobs) if keys is None else keys
        self._own_keys = keys is None
        # One slot per instance, in the order given; filled as outcomes become known.
        self._outcomes: list[InstanceOutcome | None] = []
        self._ready: list[tuple[int, InstanceRecord]] = []
        # The thread work that overlaps receiving the next instance, as asyncio futures rather
        # than tasks of an anyio task group: every one is awaited before the Ingest is left
        # (collected, or by __aexit__'s shielded _abandon), so none outlives the request, and a
        # task group held open across receive() calls would wrap the request's own error (a
        # client gone, StoreNotFound) in an ExceptionGroup for the STOW handler to unwrap.
        self._preparing: (
            tuple[int, IncomingInstance, asyncio.Future[InstanceRecord | InstanceOutcome]] | None
        ) = None
        self._indexing: tuple[list[int], asyncio.Future[list[InstanceOutcome]]] | None = None

    # --- synchronous: import, de-identification, C-STORE ---------------------------------

    def store(self, sources: Iterable[bytes | BinaryIO]) -> list[InstanceOutcome]:
        """Store each source (a PS3.10 file's bytes, or a binary file open for reading), one
        outcome per source in order; indexed in as few transactions as the batch size allows.

        Raises:
            StoreNotFound: the store was deleted meanwhile; nothing of this call stays stored
                but what an earlier transaction committed.
        """
        try:
            for source in sources:
                if self.space_shortage is not None and (shortage := self.space_shortage()):
                    self._outcomes.append(InstanceOutcome(Outcome.OUT_OF_RESOURCES, shortage))
                    continue
                incoming = self._take()
                try:
                    _copy(source, incoming)
                except BaseException:
                    self._abort(incoming)
                    raise
                self._outcomes.append(None)
                self._settle(len(self._outcomes) - 1, self._prepare_or_discard(incoming))
                if len(self._ready) >= _INDEX_BATCH:
                    self._index_ready()
            self._index_ready(last=True)
        finally:
            if self._own_keys:
                self._keys.release()
        return self._results()

    # --- asynchronous: STOW-RS -----------------------------------------------------------

    async def __aenter__(self) -> Ingest:
        return self

    async def __aexit__(self, exc_type: object, *_: object) -> None:
        with anyio.CancelScope(shield=True):
            if exc_type is not None:
                await self._abandon()
            # finish() forgets them in its last commit: usually none are left.
            if self._own_keys and self._keys.holding:
                await to_thread.run_sync(self._keys.release)

    async def receive(self, chunks: AsyncIterable[bytes]) -> None:
        """Take one instance's bytes; its blob is committed and parsed in the background while
        the caller receives the next one."""
        if self.space_shortage is not None and (shortage := self.space_shortage()) is not None:
            async for _ in chunks:
                pass  # read past it, not stored
            self.refuse(InstanceOutcome(Outcome.OUT_OF_RESOURCES, shortage))
            return
        incoming = await self._take_async()
        try:
            async for chunk in chunks:
                if chunk and incoming.buffer(chunk):
                    await to_thread.run_sync(incoming.flush)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await to_thread.run_sync(self._abort, incoming)
            raise
        await self._collect_prepared()
        if len(self._ready) >= _INDEX_BATCH:
            await self._start_indexing()
        self._outcomes.append(None)
        future = asyncio.ensure_future(to_thread.run_sync(self._prepare_or_discard, incoming))
        self._preparing = (len(self._outcomes) - 1, incoming, future)

    def refuse(self, outcome: InstanceOutcome) -> None:
        """Record a refusal the caller decided (a part that is not an instance), in order."""
        self._outcomes.append(outcome)

    async def finish(self) -> list[InstanceOutcome]:
        """Index what is left, then every outcome in the order the instances came.

        Raises:
            StoreNotFound: the store was deleted meanwhile (the blobs of this unit of work that
                were not indexed before are gone).
        """
        await self._collect_prepared()
        await self._start_indexing(last=True)
        await self._collect_indexed()
        return self._results()

    async def _take_async(self) -> IncomingInstance:
        if self._keys.ready():
            return self._open(self._keys.take())
        return await to_thread.run_sync(self._take)

    async def _collect_prepared(self) -> None:
        if self._preparing is not None:
            (slot, _, future), self._preparing = self._preparing, None
            self._settle(slot, await future)

    async def _start_indexing(self, *, last: bool = False) -> None:
        await self._collect_indexed()
        if self._ready:
            ready, self._ready = self._ready, []
            future = asyncio.ensure_future(to_thread.run_sync(self._index, ready, last))
            self._indexing = ([slot for slot, _ in ready], future)

    async def _collect_indexed(self) -> None:
        if self._indexing is not None:
            (slots, future), self._indexing = self._indexing, None
            for slot, outcome in zip(slots, await future, strict=True):
                self._outcomes[slot] = outcome

    async def _abandon(self) -> None:
        """After an error (a malformed body, the client gone): the instances received whole
        are still indexed, as they would have been before the error."""
        pending = [item[-1] for item in (self._preparing, self._indexing) if item is not None]
        if pending:
            await asyncio.wait(pending)
        if self._preparing is not None:
            slot, _, future = self._preparing
            self._preparing = None
            if future.exception() is None:
                self._settle(slot, future.result())
        self._indexing = None
        if self._ready:
            ready, self._ready = self._ready, []
            try:
                await to_thread.run_sync(self._index, ready)
            except Exception:  # _index discarded them; the request's own error is reported
                log.exception("indexing the instances received before an error failed")

    # --- the protocol, step by step (each step runs in the calling thread) -----------------

    def _take(self) -> IncomingInstance:
        """A writer under a journaled key (:class:`BlobKeys`: one key first, then
        ``_KEY_BATCH`` at a time, one journal commit per batch)."""
        return self._open(self._keys.take())

    def _open(self, key: str) -> IncomingInstance:
        return IncomingInstance(self.blobs, key)

    def _abort(self, incoming: IncomingInstance) -> None:
        incoming.abort()
        discard_blob(self.index, self.blobs, incoming.key)

    def _prepare_or_discard(self, incoming: IncomingInstance) -> InstanceRecord | InstanceOutcome:
        try:
            return self._prepare(incoming)
        except BaseException:
            if not incoming.committed:
                # Failed writing (a full disk): the partial file goes now, so that the space
                # is back for the index to record the failure.
                with contextlib.suppress(Exception):
                    incoming.abort()
            self._discard_after_error(incoming.key)
            raise

    def _prepare(self, incoming: IncomingInstance) -> InstanceRecord | InstanceOutcome:
        """Commit (fsync) the blob and read its header: a record to index, or a refusal (whose
        blob is discarded here). The one place a file that cannot be read becomes a refusal."""
        held = incoming.flush(last=True, inline_limit=self.blobs.inline_limit)
        committing = None
        if held is None:
            incoming.writer.commit()
            incoming.committed = True
        elif not incoming.inline:  # an inline instance is written with its index row
            # Held whole, it is parsed from memory while another thread waits for the disk
            # (the fsyncs release the GIL); nothing is indexed before the commit is done.
            committing = _blob_commits().submit(incoming.writer.commit)
        unreadable: UnreadableInstance | None = None
        try:
            # An instance held whole is parsed from memory: reading it back from its file cost
            # a system call (and a GIL hand-over) per element (pydicom asks the file's position
            # at each), about a fifth of STOW's CPU (docs/performance.md).
            with io.BytesIO(held) if held is not None else self.blobs.open(incoming.key) as file:
                parsed = read_header(file)
            model = parsed.dicom_json()
        except UnreadableInstance as exc:
            unreadable = exc
        finally:
            if committing is not None:
                committing.result()  # the commit's error, if any, is the instance's
                incoming.committed = True
        if unreadable is not None:
            discard_blob(self.index, self.blobs, incoming.key)
            # With the UIDs the file has, for the Failed SOP Sequence (PS3.18 10.5.3).
            return InstanceOutcome(
                Outcome.UNREADABLE,
                str(unreadable),
                unreadable.sop_class_uid,
                unreadable.sop_instance_uid,
            )
        study = self.study_instance_uid
        if study is not None and parsed.study_instance_uid != study:
            discard_blob(self.index, self.blobs, incoming.key)
            return InstanceOutcome.of(
                parsed,
                Outcome.STUDY_MISMATCH,
                f"StudyInstanceUID {parsed.study_instance_uid} does not match the study {study}"
                " of the request path.",
            )
        study_attributes, series_attributes = level_attributes(model)
        return InstanceRecord(
            parsed=parsed,
            blob_key=incoming.key,
            size=incoming.size,
            sha256=incoming.hasher.hexdigest(),
            study_attributes=study_attributes,
            series_attributes=series_attributes,
            instance_attributes=model,
            inline_data=held if incoming.inline else None,
        )

    def _settle(self, slot: int, prepared: object) -> None:
        if isinstance(prepared, InstanceRecord):
            self._ready.append((slot, prepared))
        else:
            assert isinstance(prepared, InstanceOutcome)
            self._outcomes[slot] = prepared

    def _index_ready(self, *, last: bool = False) -> None:
        if self._ready:
            ready, self._ready = self._ready, []
            for (slot, _), outcome in zip(ready, self._index(ready, last), strict=True):
                self._outcomes[slot] = outcome

    def _index(
        self, ready: list[tuple[int, InstanceRecord]], last: bool = False
    ) -> list[InstanceOutcome]:
        """Index prepared instances in one transaction, then discard the blobs of those not
        stored (duplicates, conflicts). If the transaction fails, every blob goes. The last
        batch also forgets the journaled keys left unused, in the same commit."""
        records = [record for _, record in ready]
        unused = self._keys.unused(all_free=last and self._own_keys)
        try:
            outcomes = index_instances(
                self.index,
                self.store_pk,
                records,
                action=self.action,
                storage_class=self.storage_class,
                unjournal=unused,
            )
        except BaseException:
            self._keys.restore(unused)  # still journaled: released at the end
            for record in records:
                self._discard_after_error(record.blob_key)
            raise
        for record, outcome in zip(records, outcomes, strict=True):
            if outcome.outcome is not Outcome.STORED:
                discard_blob(self.index, self.blobs, record.blob_key)
        return outcomes

    def _discard_after_error(self, key: str) -> None:
        # An unexpected failure (a bug, the database or the store gone): the instance is not
        # stored, so its blob goes now rather than at the next recovery.
        try:
            discard_blob(self.index, self.blobs, key, unless_indexed=True)
        except Exception:
            log.exception("could not discard blob %s", key)

    def _results(self) -> list[InstanceOutcome]:
        results = [outcome for outcome in self._outcomes if outcome is not None]
        assert len(results) == len(self._outcomes), "an instance without an outcome"
        for outcome in results:
            if not outcome.ok:
                log.warning(
                    "storing %s into store %s refused (%s): %s",
                    outcome.sop_instance_uid or "an instance",
                    self.store_pk,
                    outcome.outcome.value,
                    outcome.message,
                )
        return results


# The process's pool of threads that commit blobs, and the process it was made in (a process
# forked after making it has none of its threads).
_commits: tuple[int, ThreadPoolExecutor] | None = None
_commits_lock = threading.Lock()


def _blob_commits() -> ThreadPoolExecutor:
    """The threads that commit (fsync) blobs while their instances are parsed."""
    global _commits
    with _commits_lock:
        if _commits is None or _commits[0] != os.getpid():
            pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dicomql-blob-commit")
            _commits = (os.getpid(), pool)
        return _commits[1]


def store_instances(
    index: Index,
    blobs: BlobStore,
    store_pk: int,
    sources: Iterable[bytes | BinaryIO],
    *,
    action: str = events.IMPORT_DICOM_DATA,
    storage_class: str | None = None,
) -> list[InstanceOutcome]:
    """Store instances into a DICOM store in one unit of work (see :meth:`Ingest.store`)."""
    ingest = Ingest(index, blobs, store_pk, action=action, storage_class=storage_class)
    return ingest.store(sources)


def _copy(source: bytes | BinaryIO, incoming: IncomingInstance) -> None:
    if isinstance(source, bytes | bytearray | memoryview):
        incoming.write(bytes(source))
        return
    while chunk := source.read(_READ_SIZE):
        incoming.write(chunk)


__all__ = ["BlobKeys", "IncomingInstance", "Ingest", "StoreNotFound", "store_instances"]
