"""STOW-RS (PS3.18 10.5): ``POST …/dicomWeb/studies[/{study}]``, streamed part by part into the
blob store and indexed one instance per transaction."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
from anyio import to_thread
from pydicom.errors import BytesLengthException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from dicomql.dicom.jsonmodel import split_by_level
from dicomql.dicom.parse import ParsedInstance, UnreadableInstance, read_header
from dicomql.dicom.uids import uid_problem
from dicomql.service.dicomweb.multipart import (
    MediaType,
    PartData,
    PartEnd,
    PartStart,
    parse_accept,
    parse_multipart,
)
from dicomql.service.dicomweb.paths import StoreContext, resolve_store
from dicomql.service.dicomweb.responses import (
    DICOM_XML,
    DicomJsonResponse,
    DicomXmlResponse,
)
from dicomql.service.errors import InsufficientStorage, InvalidArgument, UnsupportedMediaType
from dicomql.store.instances import (
    InstanceRecord,
    Outcome,
    discard_blob,
    index_instances,
    journal_blobs,
    unjournal_blobs,
)

log = logging.getLogger("dicomql.service.stow")

# PS3.4 Table B.2-1 / PS3.18 10.5.3: FailureReason (0008,1197) values.
PROCESSING_FAILURE = 0x0110  # 272: Google reports a UID conflict with different bytes as this
CANNOT_UNDERSTAND = 0xC000  # 49152: the part is not a readable DICOM instance
# PS3.18 does not name a reason for "Study Instance UID does not match the target resource";
# 0xA900 ("Data Set does not match SOP Class", PS3.4 B.2.3) is the closest class of error and is
# what dicomql reports (documented choice; Google's conformance statement does not say).
STUDY_MISMATCH = 0xA900
# PS3.4 Table B.2-1: A7xx "Refused: Out of Resources" (below the free-space floor).
OUT_OF_RESOURCES = 0xA700

_FLUSH_BYTES = 1024 * 1024
_KEY_BATCH = 16
# Parts indexed per transaction (group commit); each still has its own savepoint.
_INDEX_BATCH = 16
_DICOM = "application/dicom"


@dataclass(frozen=True)
class PartResult:
    sop_class_uid: str | None
    sop_instance_uid: str | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    failure_reason: int | None = None
    message: str = ""


class _PartSpool:
    """One part on its way to the blob store: journaled, spooled in ~1 MB writes while hashed,
    then committed, parsed and indexed (in worker threads: fsync and parsing block)."""

    def __init__(self, context: StoreContext, key: str) -> None:
        self.context = context
        self.blobs = context.service.blobs
        self.index = context.service.index
        self.key = key
        self.hasher = hashlib.sha256()
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.writer: Any = self.blobs.writer(key)

    def _flush(self) -> None:
        pending, self.pending, self.pending_size = self.pending, [], 0
        for chunk in pending:
            self.hasher.update(chunk)
            self.writer.write(chunk)

    async def write(self, data: bytes) -> None:
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size >= _FLUSH_BYTES:
            await to_thread.run_sync(self._flush)

    async def prepare(self, path_study: str | None) -> PartResult | InstanceRecord:
        """Commit the blob and parse it: a failed result, or a record ready to index."""
        return await to_thread.run_sync(self._prepare_or_discard, path_study)

    def _prepare_or_discard(self, path_study: str | None) -> PartResult | InstanceRecord:
        self._flush()
        self.writer.commit()
        try:
            return self._prepare(path_study)
        except BaseException:
            self.discard_after_error()
            raise

    def discard_after_error(self) -> None:
        # An unexpected failure (a bug, the database gone): the part is not stored, so its
        # blob goes now rather than waiting for recovery at the next start.
        try:
            discard_blob(self.index, self.blobs, self.key, unless_indexed=True)
        except Exception:
            log.exception("could not discard blob %s", self.key)

    def _prepare(self, path_study: str | None) -> PartResult | InstanceRecord:
        try:
            with self.blobs.open(self.key) as file:
                parsed = read_header(file)
        except UnreadableInstance as exc:
            discard_blob(self.index, self.blobs, self.key)
            return PartResult(None, None, None, None, CANNOT_UNDERSTAND, str(exc))
        uids = _uids(parsed)
        if path_study is not None and parsed.study_instance_uid != path_study:
            discard_blob(self.index, self.blobs, self.key)
            return PartResult(
                *uids,
                STUDY_MISMATCH,
                f"StudyInstanceUID {parsed.study_instance_uid} does not match the study"
                f" {path_study} of the request path.",
            )
        try:
            model = parsed.dicom_json()
        except (
            ValueError,
            TypeError,
            KeyError,
            AttributeError,
            IndexError,
            OverflowError,
            NotImplementedError,  # pydicom: an unknown VR read lazily (tests/reliability fuzz)
            BytesLengthException,  # pydicom: a 1-byte US value read lazily (same)
        ) as exc:
            # A header pydicom could read but not convert: still bad input, not a server fault.
            discard_blob(self.index, self.blobs, self.key)
            return PartResult(*uids, CANNOT_UNDERSTAND, f"Cannot convert the header: {exc}")
        study, series, _ = split_by_level(model)
        return InstanceRecord(
            parsed=parsed,
            blob_key=self.key,
            size=self.writer.size,
            sha256=self.hasher.hexdigest(),
            study_attributes=study,
            series_attributes=series,
            instance_attributes=model,
        )

    def abort(self) -> None:
        self.writer.abort()
        discard_blob(self.index, self.blobs, self.key)


def _uids(parsed: ParsedInstance) -> tuple[str | None, str, str, str]:
    return (
        parsed.sop_class_uid,
        parsed.sop_instance_uid,
        parsed.study_instance_uid,
        parsed.series_instance_uid,
    )


def _index_batch(
    context: StoreContext, batch: list[tuple[_PartSpool, InstanceRecord]]
) -> list[PartResult]:
    """Index prepared parts in one transaction, then drop the blobs of those not stored."""
    service = context.service
    try:
        outcomes = index_instances(service.index, context.store_pk, [r for _, r in batch])
    except BaseException:
        for spool, _ in batch:
            spool.discard_after_error()
        raise
    results = []
    for (spool, record), outcome in zip(batch, outcomes, strict=True):
        uids = _uids(record.parsed)
        if outcome.outcome is not Outcome.STORED:
            discard_blob(service.index, service.blobs, spool.key)
        if outcome.outcome in (Outcome.STORED, Outcome.DUPLICATE):
            results.append(PartResult(*uids))
        elif outcome.outcome is Outcome.CONFLICT:
            results.append(PartResult(*uids, PROCESSING_FAILURE, outcome.message))
        else:
            results.append(PartResult(*uids, CANNOT_UNDERSTAND, outcome.message))
    return results


class _KeyPool:
    """Blob keys journaled ahead in batches: one journal transaction (one fsync) per
    ``_KEY_BATCH`` parts instead of per part. Keys left over are unjournaled at the end; after a
    crash, recovery removes them (their blobs never existed)."""

    def __init__(self, context: StoreContext) -> None:
        self.index = context.service.index
        self.blobs = context.service.blobs
        self.free: list[str] = []
        # One key first (most requests carry one instance), then batches that double.
        self.batch = 1

    async def take(self) -> str:
        if not self.free:
            keys = [self.blobs.new_key("instances") for _ in range(self.batch)]
            await to_thread.run_sync(journal_blobs, self.index, keys)
            self.free = keys
            self.batch = min(self.batch * 2, _KEY_BATCH)
        return self.free.pop()

    def release(self) -> None:
        keys, self.free = self.free, []
        unjournal_blobs(self.index, keys)

    @property
    def unused(self) -> bool:
        return bool(self.free)


async def store_instances(request: Request) -> Response:
    context = await resolve_store(request)
    path_study: str | None = request.path_params.get("study")
    if path_study is not None and (problem := uid_problem(path_study)) is not None:
        raise InvalidArgument(f"The study UID of the request path is invalid: {problem}")
    if (shortage := await to_thread.run_sync(context.service.config.space_shortage)) is not None:
        raise InsufficientStorage(shortage)
    content_type = MediaType.parse(request.headers.get("content-type", ""))
    if content_type.type == _DICOM:
        results = [await _store_part(context, _single(request.stream()), path_study)]
    elif content_type.type == "multipart/related":
        part_type = content_type.params.get("type", _DICOM).lower()
        if part_type != _DICOM:
            raise UnsupportedMediaType(
                f'Unsupported multipart/related type "{part_type}"; send PS3.10 instances as'
                ' type="application/dicom" (PS3.18 10.5.1.1).'
            )
        results = await _store_multipart(context, request, content_type, path_study)
    else:
        raise UnsupportedMediaType(
            f'Unsupported Content-Type "{content_type.type}"; expected multipart/related;'
            ' type="application/dicom" or application/dicom.'
        )
    if not results:
        raise InvalidArgument("The request contains no DICOM instances.")
    return _store_response(request, context, results, path_study)


async def _single(stream: AsyncIterator[bytes]) -> AsyncIterator[PartStart | PartData | PartEnd]:
    yield PartStart({"content-type": _DICOM})
    async for chunk in stream:
        if chunk:
            yield PartData(chunk)
    yield PartEnd()


async def _store_multipart(
    context: StoreContext, request: Request, content_type: MediaType, path_study: str | None
) -> list[PartResult]:
    boundary = content_type.params.get("boundary")
    if not boundary:
        raise InvalidArgument("The multipart/related Content-Type has no boundary parameter.")
    return await _store_events(context, parse_multipart(request.stream(), boundary), path_study)


async def _store_part(
    context: StoreContext,
    events: AsyncIterator[PartStart | PartData | PartEnd],
    path_study: str | None,
) -> PartResult:
    results = await _store_events(context, events, path_study)
    return results[0]


async def _store_events(
    context: StoreContext,
    events: AsyncIterator[PartStart | PartData | PartEnd],
    path_study: str | None,
) -> list[PartResult]:
    slots: list[PartResult | None] = []  # one per part, in request order
    spool: _PartSpool | None = None
    skipping: PartResult | None = None  # the failure of a part not stored, while it is skipped
    keys = _KeyPool(context)
    # Pipeline: part k+1 is received while part k is committed and parsed (in a thread) and
    # the batch before is indexed in one transaction. At most one of each is in flight, so
    # memory stays bounded and every result lands in its part's slot.
    preparing: tuple[int, _PartSpool, asyncio.Future[PartResult | InstanceRecord]] | None = None
    indexing: tuple[list[int], asyncio.Future[list[PartResult]]] | None = None
    batch: list[tuple[int, _PartSpool, InstanceRecord]] = []

    async def collect_prepared() -> None:
        nonlocal preparing
        if preparing is not None:
            (slot, current, future), preparing = preparing, None
            outcome = await future
            if isinstance(outcome, PartResult):
                slots[slot] = outcome
            else:
                batch.append((slot, current, outcome))

    async def collect_indexed() -> None:
        nonlocal indexing
        if indexing is not None:
            (numbers, future), indexing = indexing, None
            for slot, result in zip(numbers, await future, strict=True):
                slots[slot] = result

    async def start_indexing() -> None:
        nonlocal indexing, batch
        await collect_indexed()
        if batch:
            work = [(current, record) for _, current, record in batch]
            future = asyncio.ensure_future(to_thread.run_sync(_index_batch, context, work))
            indexing = ([slot for slot, _, _ in batch], future)
            batch = []

    try:
        async for event in events:
            if isinstance(event, PartStart):
                part_type = MediaType.parse(event.headers.get("content-type", _DICOM)).type
                if part_type != _DICOM:
                    message = f"Unsupported part Content-Type {part_type}."
                    skipping = PartResult(None, None, None, None, CANNOT_UNDERSTAND, message)
                    continue
                if (shortage := context.service.config.space_shortage()) is not None:
                    skipping = PartResult(None, None, None, None, OUT_OF_RESOURCES, shortage)
                    continue
                spool = _PartSpool(context, await keys.take())
            elif isinstance(event, PartData):
                if spool is not None:
                    await spool.write(event.data)
            elif skipping is not None:
                slots.append(skipping)
                skipping = None
            elif spool is not None:
                current, spool = spool, None
                await collect_prepared()
                if len(batch) >= _INDEX_BATCH:
                    await start_indexing()
                slots.append(None)
                future = asyncio.ensure_future(current.prepare(path_study))
                preparing = (len(slots) - 1, current, future)
        await collect_prepared()
        await start_indexing()
        await collect_indexed()
    except BaseException:
        # Whatever went wrong (a malformed body, the client gone), the parts received whole are
        # still indexed (as they would have been before the error), the part being received is
        # removed, and nothing is left half-stored.
        with anyio.CancelScope(shield=True):
            pending = [item[-1] for item in (preparing, indexing) if item is not None]
            if pending:
                await asyncio.wait(pending)
            if preparing is not None and preparing[2].done() and not preparing[2].exception():
                outcome = preparing[2].result()
                if not isinstance(outcome, PartResult):
                    batch.append((preparing[0], preparing[1], outcome))
            if batch:
                work = [(current, record) for _, current, record in batch]
                try:
                    await to_thread.run_sync(_index_batch, context, work)
                except Exception:  # _index_batch has discarded them; report the first error
                    log.exception("indexing the parts received before an error failed")
            if spool is not None:
                await to_thread.run_sync(spool.abort)
        raise
    finally:
        if keys.unused:
            with anyio.CancelScope(shield=True):
                await to_thread.run_sync(keys.release)
    results = [slot for slot in slots if slot is not None]
    assert len(results) == len(slots)
    for result in results:
        if result.failure_reason is not None:
            log.warning(
                "STOW of %s into %s failed (reason %#06x): %s",
                result.sop_instance_uid or "a part",
                context.name,
                result.failure_reason,
                result.message,
            )
    return results


def _store_response(
    request: Request, context: StoreContext, results: list[PartResult], path_study: str | None
) -> Response:
    """The Store Instances Response Module (PS3.18 10.5.3, Table 10.5.3-1)."""
    stored = [result for result in results if result.failure_reason is None]
    failed = [result for result in results if result.failure_reason is not None]
    body: dict[str, Any] = {}
    studies = {result.study_instance_uid for result in stored}
    study = path_study or (studies.pop() if len(studies) == 1 else None)
    if study is not None:
        body["00081190"] = {"vr": "UR", "Value": [context.study_url(study)]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [_failed_item(result) for result in failed]}
    if stored:
        body["00081199"] = {
            "vr": "SQ",
            "Value": [_referenced_item(context, result) for result in stored],
        }
    status = 200 if not failed else 202 if stored else 409
    accept = parse_accept(request.headers.get("accept"))
    wants_xml = bool(accept) and accept[0].type == DICOM_XML
    response: Response = (DicomXmlResponse if wants_xml else DicomJsonResponse)(
        body, status_code=status
    )
    for result in failed[:10]:
        # RFC 7234 5.5 warn-code 299 (miscellaneous persistent warning); PS3.18 8.4.3 uses
        # Warning headers for details a client may show to a user.
        text = result.message.replace('"', "'").replace("\r", " ").replace("\n", " ")[:300]
        response.headers.append("Warning", f'299 dicomql: "{text}"')
    return response


def _referenced_item(context: StoreContext, result: PartResult) -> dict[str, Any]:
    assert result.study_instance_uid and result.series_instance_uid and result.sop_instance_uid
    item = _uid_attributes(result)
    url = context.instance_url(
        result.study_instance_uid, result.series_instance_uid, result.sop_instance_uid
    )
    item["00081190"] = {"vr": "UR", "Value": [url]}
    return item


def _failed_item(result: PartResult) -> dict[str, Any]:
    item = _uid_attributes(result)
    item["00081197"] = {"vr": "US", "Value": [result.failure_reason]}
    return item


def _uid_attributes(result: PartResult) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if result.sop_class_uid:
        item["00081150"] = {"vr": "UI", "Value": [result.sop_class_uid]}
    if result.sop_instance_uid:
        item["00081155"] = {"vr": "UI", "Value": [result.sop_instance_uid]}
    return item


routes: list[BaseRoute] = [
    Route("/studies", store_instances, methods=["POST"], name="dicomweb:store"),
    Route("/studies/{study:rid}", store_instances, methods=["POST"], name="dicomweb:store-study"),
]
