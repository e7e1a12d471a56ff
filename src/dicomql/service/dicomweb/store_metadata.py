"""STOW-RS of metadata and bulk data (PS3.18 10.5.1.4, 10.5.2): a ``multipart/related;
type="application/dicom+json"`` body whose ``application/dicom+json`` parts are arrays of DICOM
JSON instances and whose other parts are the bulk data those instances name by ``BulkDataURI``
(each part's ``Content-Location``).

Bulk data parts are spooled to temporary files as they arrive (memory holds at most
``_SPOOL_MEMORY`` of each); once the body is read, each instance is built into a PS3.10 file
(:mod:`dicomql.dicom.json_instance`) and handed to the same unit of work as a PS3.10 part, so
outcomes, failure reasons and the response are those of any STOW. An instance that cannot be
built is refused with 0xC000 and the reason.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import AsyncIterator
from typing import IO, Any

from anyio import to_thread

from dicomql.dicom.json_instance import (
    BulkResolver,
    UnbuildableInstance,
    parse_metadata,
    write_instance,
)
from dicomql.dicom.limits import MAX_JSON_METADATA_BYTES
from dicomql.service.dicomweb.multipart import MediaType, PartData, PartEnd, PartStart
from dicomql.service.errors import InvalidArgument, PayloadTooLarge
from dicomql.store.ingest import Ingest
from dicomql.store.instances import InstanceOutcome, Outcome

DICOM_JSON = "application/dicom+json"
Event = PartStart | PartData | PartEnd

# Bytes of a bulk data part or built instance kept in memory before it rolls over to disk.
_SPOOL_MEMORY = 1024 * 1024
_READ_SIZE = 1024 * 1024

Spool = IO[bytes]


async def receive_metadata_and_bulkdata(ingest: Ingest, events: AsyncIterator[Event]) -> None:
    """Read the whole body (metadata parts parsed, bulk parts spooled by Content-Location),
    then build and hand each instance to ``ingest`` in the order the metadata lists them."""
    metadata: list[Any | UnbuildableInstance] = []
    metadata_bytes = 0  # of every metadata part so far: all of them stay parsed until the end
    bulk: dict[str, Spool] = {}
    try:
        async for event in events:
            if not isinstance(event, PartStart):
                continue
            part_type = MediaType.parse(event.headers.get("content-type", DICOM_JSON)).type
            if part_type == DICOM_JSON:
                raw = await _metadata_part(events, MAX_JSON_METADATA_BYTES - metadata_bytes)
                metadata_bytes += len(raw)
                metadata.extend(await to_thread.run_sync(_parse, raw))
                continue
            location = event.headers.get("content-location", "").strip()
            spool = await _spool_part(events)
            if not location:
                spool.close()  # nothing can name it
                continue
            if location in bulk:
                spool.close()
                raise InvalidArgument(
                    f"Two bulk data parts have the same Content-Location {location!r}."
                )
            bulk[location] = spool
        for model in metadata:
            await _store_one(ingest, model, bulk)
    finally:
        for spool in bulk.values():
            spool.close()


async def _metadata_part(events: AsyncIterator[Event], budget: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for event in events:
        if isinstance(event, PartEnd):
            break
        if isinstance(event, PartData):
            size += len(event.data)
            if size > budget:
                raise PayloadTooLarge(
                    f"The DICOM JSON metadata parts exceed {MAX_JSON_METADATA_BYTES} bytes;"
                    " send large values as bulk data parts, or the instances in several requests."
                )
            chunks.append(event.data)
    return b"".join(chunks)


def _parse(raw: bytes) -> list[Any | UnbuildableInstance]:
    try:
        return parse_metadata(raw)
    except UnbuildableInstance as exc:
        return [exc]  # one refusal for the part, in its place


async def _spool_part(events: AsyncIterator[Event]) -> Spool:
    """A bulk data part's bytes: in memory up to ``_SPOOL_MEMORY``, else in a temporary file."""
    pending: list[bytes] = []
    held = 0
    file: Spool | None = None
    try:
        async for event in events:
            if isinstance(event, PartEnd):
                break
            if isinstance(event, PartData):
                pending.append(event.data)
                held += len(event.data)
                if held >= _SPOOL_MEMORY:
                    if file is None:
                        file = await to_thread.run_sync(tempfile.TemporaryFile)
                    await to_thread.run_sync(file.write, b"".join(pending))
                    pending, held = [], 0
        if file is None:
            return io.BytesIO(b"".join(pending))
        if pending:
            await to_thread.run_sync(file.write, b"".join(pending))
    except BaseException:
        if file is not None:
            file.close()
        raise
    return file


async def _store_one(
    ingest: Ingest, model: Any | UnbuildableInstance, bulk: dict[str, Spool]
) -> None:
    if isinstance(model, UnbuildableInstance):
        ingest.refuse(InstanceOutcome(Outcome.UNREADABLE, str(model)))
        return
    built: Spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY)  # noqa: SIM115
    try:
        try:
            await to_thread.run_sync(write_instance, model, _resolver(bulk), built)
        except UnbuildableInstance as exc:
            ingest.refuse(
                InstanceOutcome(
                    Outcome.UNREADABLE, str(exc), exc.sop_class_uid, exc.sop_instance_uid
                )
            )
            return
        built.seek(0)
        await ingest.receive(_chunks(built))
    finally:
        built.close()


def _resolver(bulk: dict[str, Spool]) -> BulkResolver:
    def resolve(uri: str) -> Spool:
        return bulk[uri]  # KeyError: no part has it

    return resolve


async def _chunks(file: Spool) -> AsyncIterator[bytes]:
    while chunk := await to_thread.run_sync(file.read, _READ_SIZE):
        yield chunk
