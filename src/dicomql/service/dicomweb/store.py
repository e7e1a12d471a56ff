"""STOW-RS (PS3.18 10.5): ``POST …/dicomWeb/studies[/{study}]``. The endpoint reads the body part
by part and shapes the Store Instances Response; storing is the store's unit of work
(:class:`dicomql.store.ingest.Ingest`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from dicomql.dicom.tags import (
    FAILED_SOP_SEQUENCE_KEY,
    REFERENCED_SOP_SEQUENCE_KEY,
    RETRIEVE_URL_KEY,
    json_key,
)
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
from dicomql.service.dicomweb.store_metadata import (
    DICOM_JSON,
    receive_metadata_and_bulkdata,
)
from dicomql.service.errors import (
    InsufficientStorage,
    InvalidArgument,
    NotFound,
    UnsupportedMediaType,
)
from dicomql.service.prometheus import count_instances
from dicomql.store.ingest import Ingest
from dicomql.store.instances import InstanceOutcome, Outcome, StoreNotFound

_DICOM = "application/dicom"
Event = PartStart | PartData | PartEnd


async def store_instances(request: Request) -> Response:
    context = await resolve_store(request)
    path_study: str | None = request.path_params.get("study")
    if path_study is not None and (problem := uid_problem(path_study)) is not None:
        raise InvalidArgument(f"The study UID of the request path is invalid: {problem}")
    service = context.service
    # Two quick system calls (stat, statvfs), made on the event loop as the unit of work makes
    # them for each instance: a worker-thread hand-off cost more CPU than the check.
    if (shortage := service.config.space_shortage()) is not None:
        raise InsufficientStorage(shortage)
    events, metadata = _events(request)
    ingest = Ingest(
        service.index,
        service.blobs,
        context.store_pk,
        study_instance_uid=path_study,
        space_shortage=service.config.space_shortage,
    )
    try:
        async with ingest:
            if metadata:
                await receive_metadata_and_bulkdata(ingest, events)
            else:
                await _receive(ingest, events)
            outcomes = await ingest.finish()
    except StoreNotFound as exc:
        # Deleted while this request was storing into it; nothing of it stays (Google answers a
        # STOW into a store that does not exist with 404).
        raise NotFound(f"DICOM store {context.name} not found.") from exc
    if not outcomes:
        raise InvalidArgument("The request contains no DICOM instances.")
    stored = sum(result.outcome is Outcome.STORED for result in outcomes)
    count_instances("stored", stored)
    if stored:
        service.instances_stored()
    return _store_response(request, context, outcomes, path_study)


def _events(request: Request) -> tuple[AsyncIterator[Event], bool]:
    """The body's parts, and whether they are metadata and bulk data (PS3.18 10.5.1.4) rather
    than PS3.10 instances."""
    content_type = MediaType.parse(request.headers.get("content-type", ""))
    if content_type.type == _DICOM:
        return _single(request.stream()), False
    if content_type.type != "multipart/related":
        raise UnsupportedMediaType(
            f'Unsupported Content-Type "{content_type.type}"; expected multipart/related;'
            ' type="application/dicom" or application/dicom.'
        )
    part_type = content_type.params.get("type", _DICOM).lower()
    if part_type not in (_DICOM, DICOM_JSON):
        raise UnsupportedMediaType(
            f'Unsupported multipart/related type "{part_type}"; send PS3.10 instances as'
            ' type="application/dicom" (PS3.18 10.5.1.1), or DICOM JSON metadata and bulk data'
            ' as type="application/dicom+json" (PS3.18 10.5.1.4).'
        )
    boundary = content_type.params.get("boundary")
    if not boundary:
        raise InvalidArgument("The multipart/related Content-Type has no boundary parameter.")
    return parse_multipart(request.stream(), boundary), part_type == DICOM_JSON


async def _single(stream: AsyncIterator[bytes]) -> AsyncIterator[Event]:
    yield PartStart({"content-type": _DICOM})
    async for chunk in stream:
        if chunk:
            yield PartData(chunk)
    yield PartEnd()


async def _receive(ingest: Ingest, events: AsyncIterator[Event]) -> None:
    """Hand each ``application/dicom`` part to the unit of work; refuse the others in place."""
    async for event in events:
        if not isinstance(event, PartStart):
            continue  # a part's data or end seen without its start cannot happen; be lenient
        part_type = MediaType.parse(event.headers.get("content-type", _DICOM)).type
        if part_type == _DICOM:
            await ingest.receive(_part_body(events))
            continue
        async for skipped in events:
            if isinstance(skipped, PartEnd):
                break
        ingest.refuse(
            InstanceOutcome(Outcome.UNREADABLE, f"Unsupported part Content-Type {part_type}.")
        )


async def _part_body(events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    async for event in events:
        if isinstance(event, PartEnd):
            return
        if isinstance(event, PartData):
            yield event.data


def _store_response(
    request: Request,
    context: StoreContext,
    results: list[InstanceOutcome],
    path_study: str | None,
) -> Response:
    """The Store Instances Response Module (PS3.18 10.5.3, Table 10.5.3-1)."""
    stored = [result for result in results if result.ok]
    failed = [result for result in results if not result.ok]
    body: dict[str, Any] = {}
    studies = {result.study_instance_uid for result in stored}
    study = path_study or (studies.pop() if len(studies) == 1 else None)
    if study is not None:
        body[RETRIEVE_URL_KEY] = {"vr": "UR", "Value": [context.study_url(study)]}
    if failed:
        body[FAILED_SOP_SEQUENCE_KEY] = {
            "vr": "SQ",
            "Value": [_failed_item(result) for result in failed],
        }
    if stored:
        body[REFERENCED_SOP_SEQUENCE_KEY] = {
            "vr": "SQ",
            "Value": [_referenced_item(context, result) for result in stored],
        }
    response: Response = _response_class(request)(body, status_code=_status(stored, failed))
    for result in failed[:10]:
        # RFC 7234 5.5 warn-code 299 (miscellaneous persistent warning); PS3.18 8.4.3 uses
        # Warning headers for details a client may show to a user.
        response.headers.append("Warning", f'299 dicomql: "{warning_text(result.message)}"')
    return response


def warning_text(message: str) -> str:
    """A message as the quoted text of a Warning header: printable ASCII (RFC 9110 5.5 field
    values; anything else escaped, so a header never fails to encode), no quote, 300 at most."""
    text = message.replace('"', "'").encode("ascii", "backslashreplace").decode("ascii")
    return "".join(char if " " <= char <= "~" else " " for char in text)[:300]


def _status(stored: list[InstanceOutcome], failed: list[InstanceOutcome]) -> int:
    """PS3.18 Table 10.5.3-1: 200 all stored, 202 some; none stored: 400 when every instance
    was unreadable ("bad syntax"), 409 for conflicts or a mixture of reasons."""
    if not failed:
        return 200
    if stored:
        return 202
    if all(result.outcome is Outcome.UNREADABLE for result in failed):
        return 400
    return 409


def _response_class(request: Request) -> type[Response]:
    """XML unless DICOM JSON is asked for first: Google answers STOW with
    ``application/dicom+xml`` when the request names no type or ``*/*`` (its own ``dcmweb``
    CLI reads XML); dicomweb-client reads either; google-api-python-client asks for JSON."""
    for media in parse_accept(request.headers.get("accept")):
        if media.type in (DICOM_XML, "application/xml"):
            return DicomXmlResponse
        if media.type in ("application/dicom+json", "application/json"):
            return DicomJsonResponse
    return DicomXmlResponse


_FAILURE_REASON = json_key("FailureReason")
_REFERENCED_SOP_CLASS_UID = json_key("ReferencedSOPClassUID")
_REFERENCED_SOP_INSTANCE_UID = json_key("ReferencedSOPInstanceUID")


def _referenced_item(context: StoreContext, result: InstanceOutcome) -> dict[str, Any]:
    assert result.study_instance_uid and result.series_instance_uid and result.sop_instance_uid
    item = _uid_attributes(result)
    url = context.instance_url(
        result.study_instance_uid, result.series_instance_uid, result.sop_instance_uid
    )
    item[RETRIEVE_URL_KEY] = {"vr": "UR", "Value": [url]}
    return item


def _failed_item(result: InstanceOutcome) -> dict[str, Any]:
    item = _uid_attributes(result)
    item[_FAILURE_REASON] = {"vr": "US", "Value": [result.failure_reason]}
    return item


def _uid_attributes(result: InstanceOutcome) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if result.sop_class_uid:
        item[_REFERENCED_SOP_CLASS_UID] = {"vr": "UI", "Value": [result.sop_class_uid]}
    if result.sop_instance_uid:
        item[_REFERENCED_SOP_INSTANCE_UID] = {"vr": "UI", "Value": [result.sop_instance_uid]}
    return item
