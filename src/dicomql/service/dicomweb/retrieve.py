"""WADO-RS (PS3.18 10.4): studies, series and instances as PS3.10 bytes, frames, bulk data and
rendered images, streamed from the blob store with transfer syntax negotiation."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from anyio import to_thread
from sqlalchemy import Row
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from dicomql.dicom import frames as frame_data
from dicomql.dicom import transcode as ts
from dicomql.dicom.parse import ParsedInstance, UnreadableInstance, read_header
from dicomql.dicom.render import RENDERED_MEDIA_TYPES, RenderError, RenderOptions, render_frame
from dicomql.service.dicomweb.multipart import parse_accept
from dicomql.service.dicomweb.paths import StoreContext, resolve_store
from dicomql.service.dicomweb.responses import MultipartRelatedResponse, Part
from dicomql.service.errors import InvalidArgument, NotAcceptable, NotFound
from dicomql.store.blobs import BlobStore
from dicomql.store.instances import find_instances

log = logging.getLogger("dicomql.service.wado")

DICOM = "application/dicom"
OCTET_STREAM = "application/octet-stream"


@dataclass(frozen=True)
class Negotiated:
    multipart: bool
    transfer_syntax: str  # a UID or ``*``


def negotiate_dicom(accept: str | None, *, single_allowed: bool) -> Negotiated:
    """The representation of PS3.10 instances asked for by Accept (PS3.18 8.7.3, 10.4.1.1)."""
    ranked = parse_accept(accept)
    if not ranked:
        return Negotiated(True, ts.DEFAULT)
    for media in ranked:
        syntax = media.params.get("transfer-syntax", ts.DEFAULT)
        if media.type == "multipart/related":
            if media.params.get("type", DICOM).lower() in (DICOM, "*/*"):
                return Negotiated(True, syntax)
        elif media.type == DICOM and single_allowed:
            return Negotiated(False, syntax)
        elif media.type in ("*/*", "multipart/*"):
            return Negotiated(True, syntax)
    raise NotAcceptable(
        "None of the Accept media types can be served; retrieve instances as multipart/related;"
        ' type="application/dicom" (or application/dicom for one instance).'
    )


async def _instances(request: Request, level: str) -> tuple[StoreContext, list[Row]]:
    context = await resolve_store(request)
    params = request.path_params
    series_uid = params.get("series")
    instance_uid = params.get("instance")

    def lookup() -> list[Row]:
        with context.service.index.connect() as conn:
            return find_instances(conn, context.store_pk, params["study"], series_uid, instance_uid)

    rows = await to_thread.run_sync(lookup)
    if not rows:
        raise NotFound(f"{level} not found: {request.url.path.split('/dicomWeb/', 1)[-1]}")
    return context, rows


async def retrieve_dicom(request: Request) -> Response:
    level = _level_of(request)
    context, rows = await _instances(request, level)
    wanted = negotiate_dicom(request.headers.get("accept"), single_allowed=level == "Instance")
    for row in rows:
        if not ts.can_transcode(row.transfer_syntax_uid, wanted.transfer_syntax, _pixels(row)):
            raise NotAcceptable(
                f"Instance {row.sop_instance_uid} is stored in {row.transfer_syntax_uid} and"
                f" cannot be converted to transfer syntax {wanted.transfer_syntax}."
            )
    blobs = context.service.blobs
    if not wanted.multipart:
        row = rows[0]
        syntax = ts.served_syntax(row.transfer_syntax_uid, wanted.transfer_syntax, _pixels(row))
        return StreamingResponse(
            _instance_bytes(blobs, row, wanted.transfer_syntax),
            media_type=f"{DICOM}; transfer-syntax={syntax}",
        )
    parts = (_dicom_part(blobs, row, wanted.transfer_syntax) for row in rows)
    return MultipartRelatedResponse(parts, part_type=DICOM)


def _pixels(row: Row) -> bool:
    return row.rows is not None


def _level_of(request: Request) -> str:
    params = request.path_params
    return "Instance" if "instance" in params else "Series" if "series" in params else "Study"


def _dicom_part(blobs: BlobStore, row: Row, target: str) -> Part:
    syntax = ts.served_syntax(row.transfer_syntax_uid, target, _pixels(row))
    headers = {"Content-Type": f"{DICOM}; transfer-syntax={syntax}"}
    return headers, _instance_bytes(blobs, row, target)


def _instance_bytes(blobs: BlobStore, row: Row, target: str) -> Iterator[bytes]:
    if target in (ts.ANY, row.transfer_syntax_uid):
        yield from blobs.read_chunks(row.blob_key)  # as stored, byte for byte
        return
    with blobs.open(row.blob_key) as file:
        try:
            data = ts.transcode(file, target)
        except ts.TranscodeError:
            # The status line is sent; all that is left is to end the stream short, which the
            # client sees as a truncated multipart body rather than wrong bytes.
            log.exception("transcoding %s to %s failed", row.sop_instance_uid, target)
            raise
    yield data


# --- frames ---------------------------------------------------------------------------------


def _frame_numbers(text: str, number_of_frames: int) -> list[int]:
    try:
        numbers = [int(piece) for piece in text.split(",") if piece.strip()]
    except ValueError as exc:
        raise InvalidArgument(f"Invalid frame list {text!r}: expected e.g. 1,2,3.") from exc
    if not numbers:
        raise InvalidArgument("The frame list is empty.")
    for number in numbers:
        if number < 1 or number > number_of_frames:
            raise NotFound(f"Frame {number} does not exist; the instance has {number_of_frames}.")
    return numbers


async def retrieve_frames(request: Request) -> Response:
    context, rows = await _instances(request, "Instance")
    row = rows[0]
    if not _pixels(row):
        raise NotFound(f"Instance {row.sop_instance_uid} has no pixel data.")
    numbers = _frame_numbers(request.path_params["frames"], row.number_of_frames or 1)
    stored = row.transfer_syntax_uid
    choice = frame_data.negotiate_frames(parse_accept(request.headers.get("accept")), stored)
    if choice is None:
        raise NotAcceptable(
            f"Frames stored in {stored} are available as multipart/related;"
            ' type="application/octet-stream" (uncompressed) or, with transfer-syntax=*, as'
            " stored."
        )
    blobs = context.service.blobs
    header = await to_thread.run_sync(_header, blobs, row)
    parts = (
        (
            {"Content-Type": choice.part_content_type},
            frame_data.frame_bytes(blobs, row.blob_key, header, number - 1, choice.as_stored),
        )
        for number in numbers
    )
    return MultipartRelatedResponse(parts, part_type=choice.media_type)


def _header(blobs: BlobStore, row: Row) -> ParsedInstance:
    with blobs.open(row.blob_key) as file:
        try:
            return read_header(file)
        except UnreadableInstance as exc:  # stored blobs were parsed on the way in
            raise NotFound(f"Instance {row.sop_instance_uid} cannot be read: {exc}") from exc


# --- rendered -------------------------------------------------------------------------------


def _render_options(request: Request) -> RenderOptions:
    media_type = "image/jpeg"
    ranked = parse_accept(request.headers.get("accept"))
    if ranked:
        for media in ranked:
            if media.type in RENDERED_MEDIA_TYPES:
                media_type = media.type
                break
            if media.type in ("*/*", "image/*"):
                break
        else:
            raise NotAcceptable("Rendered images are available as image/jpeg or image/png.")
    viewport = None
    if "viewport" in request.query_params:
        try:
            width, height = (int(v) for v in request.query_params["viewport"].split(",")[:2])
        except ValueError as exc:
            raise InvalidArgument("viewport must be width,height in pixels.") from exc
        if width < 1 or height < 1 or width > 16384 or height > 16384:
            raise InvalidArgument("viewport must be between 1 and 16384 pixels each way.")
        viewport = (width, height)
    quality = 75
    if "quality" in request.query_params:
        try:
            quality = int(request.query_params["quality"])
        except ValueError as exc:
            raise InvalidArgument("quality must be an integer from 1 to 100.") from exc
        if not 1 <= quality <= 100:
            raise InvalidArgument("quality must be an integer from 1 to 100.")
    return RenderOptions(media_type, viewport, quality)


async def retrieve_rendered(request: Request) -> Response:
    options = _render_options(request)
    context, rows = await _instances(request, "Instance")
    row = rows[0]
    if not _pixels(row):
        raise NotFound(f"Instance {row.sop_instance_uid} has no pixel data to render.")
    number = 1
    if "frame" in request.path_params:
        number = _frame_numbers(request.path_params["frame"], row.number_of_frames or 1)[0]
    blobs = context.service.blobs
    if not ts.can_decode(row.transfer_syntax_uid):
        raise NotAcceptable(f"Pixel data in {row.transfer_syntax_uid} cannot be decoded.")

    def render() -> bytes:
        header = _header(blobs, row)
        with blobs.open(row.blob_key) as file:
            return render_frame(file, header.dataset, number - 1, options)

    try:
        image = await to_thread.run_sync(render)
    except RenderError as exc:
        raise NotAcceptable(str(exc)) from exc
    return Response(image, media_type=options.media_type)


# --- bulk data ------------------------------------------------------------------------------


async def retrieve_bulkdata(request: Request) -> Response:
    context, rows = await _instances(request, "Instance")
    row = rows[0]
    blobs = context.service.blobs
    tag_path = request.path_params["path"].strip("/")
    header = await to_thread.run_sync(_header, blobs, row)
    chunks = await to_thread.run_sync(
        frame_data.bulkdata_chunks, blobs, row.blob_key, header, tag_path
    )
    if chunks is None:
        raise NotFound(f"No bulk data at {tag_path} in instance {row.sop_instance_uid}.")
    accept = parse_accept(request.headers.get("accept"))
    if accept and accept[0].type == OCTET_STREAM:
        return StreamingResponse(chunks, media_type=OCTET_STREAM)
    parts = iter([({"Content-Type": OCTET_STREAM}, chunks)])
    return MultipartRelatedResponse(parts, part_type=OCTET_STREAM)


_INSTANCE = "/studies/{study:rid}/series/{series:rid}/instances/{instance:rid}"

routes: list[BaseRoute] = [
    Route("/studies/{study:rid}", retrieve_dicom, methods=["GET"], name="dicomweb:study"),
    Route(
        "/studies/{study:rid}/series/{series:rid}",
        retrieve_dicom,
        methods=["GET"],
        name="dicomweb:series",
    ),
    Route(_INSTANCE, retrieve_dicom, methods=["GET"], name="dicomweb:instance"),
    Route(f"{_INSTANCE}/rendered", retrieve_rendered, methods=["GET"], name="dicomweb:rendered"),
    Route(
        f"{_INSTANCE}/frames/{{frames}}", retrieve_frames, methods=["GET"], name="dicomweb:frames"
    ),
    Route(
        f"{_INSTANCE}/frames/{{frame}}/rendered",
        retrieve_rendered,
        methods=["GET"],
        name="dicomweb:frame-rendered",
    ),
    Route(
        f"{_INSTANCE}/bulkdata/{{path:path}}",
        retrieve_bulkdata,
        methods=["GET"],
        name="dicomweb:bulkdata",
    ),
]
