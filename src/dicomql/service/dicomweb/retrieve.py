"""WADO-RS (PS3.18 10.4): studies, series and instances as PS3.10 bytes, frames, bulk data and
rendered images, streamed from the blob store with transfer syntax negotiation."""

from __future__ import annotations

import json
import logging
import re
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

from anyio import to_thread
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from sqlalchemy import Connection, Row
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from dicomql.dicom import frames as frame_data
from dicomql.dicom import transcode as ts
from dicomql.dicom.jsonmodel import BULKDATA_PATH
from dicomql.dicom.parse import ParsedInstance, UnreadableInstance, read_header
from dicomql.dicom.render import (
    MAX_RENDERED_PIXELS,
    RENDERED_MEDIA_TYPES,
    RenderError,
    RenderOptions,
    parse_window,
    render_frame,
)
from dicomql.dicom.structure import DEFLATED, LimitExceeded, inflated
from dicomql.dicom.tags import PIXEL_DATA_KEY, json_key
from dicomql.service.conformance import conformance_of
from dicomql.service.dicomweb.multipart import parse_accept
from dicomql.service.dicomweb.paths import StoreContext, resolve_store_then
from dicomql.service.dicomweb.responses import (
    MultipartRelatedResponse,
    Part,
    buffered_multipart_related,
)
from dicomql.service.errors import InvalidArgument, NotAcceptable, NotFound
from dicomql.service.prometheus import count_instances
from dicomql.store.blobs import BlobStore, StoredBlob
from dicomql.store.instances import find_instances, instance_attributes, instance_elements
from dicomql.store.names import bulkdata_path, frame_path, rendered_frame_path

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


# A retrieval whose stored bytes total at most this much is read whole in the worker-thread
# call that looked it up and answered with one body (one thread hand-off instead of one per
# chunk); larger ones stream in batches of chunks (MultipartRelatedResponse).
_BUFFERED_BYTES = 8 * 1024 * 1024


def _not_found(request: Request, level: str) -> NotFound:
    return NotFound(f"{level} not found: {request.url.path.split('/dicomWeb/', 1)[-1]}")


def _lookup(request: Request, level: str) -> Callable[[Connection, StoreContext], list[Row]]:
    """The instances the path names (404 if none), as a ``resolve_store_then`` step."""
    params = request.path_params

    def lookup(conn: Connection, context: StoreContext) -> list[Row]:
        rows = find_instances(
            conn, context.store_pk, params["study"], params.get("series"), params.get("instance")
        )
        if not rows:
            raise _not_found(request, level)
        return rows

    return lookup


async def _instances(request: Request, level: str) -> tuple[StoreContext, list[Row]]:
    return await resolve_store_then(request, _lookup(request, level))


def _wants_bulkdata(accept: str | None) -> bool:
    """Whether Accept asks for the resource's bulk data: ``multipart/related;
    type="application/octet-stream"`` first among the DICOM media types (PS3.18 Table 10.4.4-1
    note: equivalent to the Bulkdata resource)."""
    for media in parse_accept(accept):
        if media.type == "multipart/related":
            return media.params.get("type", DICOM).lower() == OCTET_STREAM
        if media.type in (DICOM, "*/*", "multipart/*"):
            return False
    return False


async def retrieve_dicom(request: Request) -> Response:
    level = _level_of(request)
    accept = request.headers.get("accept")
    if conformance_of(request).instance_bulkdata and _wants_bulkdata(accept):
        return await _retrieve_bulkdata_resource(request, level)
    find = _lookup(request, level)

    def prepare(conn: Connection, context: StoreContext) -> tuple[list[Row], Negotiated, Any]:
        rows = find(conn, context)
        wanted = negotiate_dicom(accept, single_allowed=level == "Instance")
        for row in rows:
            if not ts.can_transcode(
                row.transfer_syntax_uid, wanted.transfer_syntax, _pixels(row), row.bits_allocated
            ):
                raise NotAcceptable(
                    f"Instance {row.sop_instance_uid} is stored in {row.transfer_syntax_uid}"
                    f" and cannot be converted to transfer syntax {wanted.transfer_syntax}."
                )
        as_stored = all(wanted.transfer_syntax in (ts.ANY, r.transfer_syntax_uid) for r in rows)
        if as_stored and sum(row.size_bytes for row in rows) <= _BUFFERED_BYTES:
            return rows, wanted, [_read_blob(context.service.blobs, row) for row in rows]
        return rows, wanted, None

    context, (rows, wanted, contents) = await resolve_store_then(request, prepare)
    count_instances("retrieved", len(rows))
    blobs = context.service.blobs
    if not wanted.multipart:
        row = rows[0]
        syntax = ts.served_syntax(row.transfer_syntax_uid, wanted.transfer_syntax, _pixels(row))
        media_type = f"{DICOM}; transfer-syntax={syntax}"
        if contents is not None:
            return Response(contents[0], media_type=media_type)
        return StreamingResponse(
            _instance_bytes(blobs, row, wanted.transfer_syntax), media_type=media_type
        )
    if contents is not None:
        return buffered_multipart_related(
            [
                (_dicom_part_headers(row, wanted.transfer_syntax), [content])
                for row, content in zip(rows, contents, strict=True)
            ],
            part_type=DICOM,
        )
    parts = (_dicom_part(blobs, row, wanted.transfer_syntax) for row in rows)
    return MultipartRelatedResponse(parts, part_type=DICOM)


def _read_blob(blobs: BlobStore, row: Row) -> bytes:
    with blobs.open(row.blob_key) as file:
        return file.read()


def _pixels(row: Row) -> bool:
    return row.rows is not None


def _level_of(request: Request) -> str:
    params = request.path_params
    return "Instance" if "instance" in params else "Series" if "series" in params else "Study"


def _dicom_part_headers(row: Row, target: str) -> dict[str, str]:
    syntax = ts.served_syntax(row.transfer_syntax_uid, target, _pixels(row))
    return {"Content-Type": f"{DICOM}; transfer-syntax={syntax}"}


def _dicom_part(blobs: BlobStore, row: Row, target: str) -> Part:
    return _dicom_part_headers(row, target), _instance_bytes(blobs, row, target)


def _instance_bytes(blobs: BlobStore, row: Row, target: str) -> Iterator[bytes]:
    if target in (ts.ANY, row.transfer_syntax_uid):
        yield from blobs.read_chunks(row.blob_key)  # as stored, byte for byte
        return
    if row.transfer_syntax_uid == DEFLATED and target == ts.EXPLICIT_VR_LITTLE_ENDIAN:
        # Inflated as it streams: pydicom would inflate the whole data set in memory.
        with blobs.open(row.blob_key) as file:
            try:
                yield from inflated(file)
            except (LimitExceeded, zlib.error):
                log.exception("inflating %s failed", row.sop_instance_uid)
                raise
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
    find = _lookup(request, "Instance")
    accept = request.headers.get("accept")

    def prepare(
        conn: Connection, context: StoreContext
    ) -> tuple[Row, list[int], frame_data.FrameChoice, list[bytes] | None]:
        row = find(conn, context)[0]
        if not _pixels(row):
            raise NotFound(f"Instance {row.sop_instance_uid} has no pixel data.")
        numbers = _frame_numbers(request.path_params["frames"], row.number_of_frames or 1)
        stored = row.transfer_syntax_uid
        choice = frame_data.negotiate_frames(parse_accept(accept), stored, row.bits_allocated)
        if choice is None:
            raise NotAcceptable(
                f"Frames stored in {stored} are available as multipart/related;"
                ' type="application/octet-stream" (uncompressed) or, with transfer-syntax=*,'
                " as stored."
            )
        if choice.jpeg:
            return row, numbers, choice, None
        return row, numbers, choice, _native_frames(conn, context.service.blobs, row, numbers)

    context, (row, numbers, choice, contents) = await resolve_store_then(request, prepare)
    instance_url = _instance_url(context, row)

    def part_headers(number: int) -> dict[str, str]:
        # PS3.18 10.4.3.3.5: each part names the frame it holds.
        return {
            "Content-Type": choice.part_content_type,
            "Content-Location": frame_path(instance_url, number),
        }

    if contents is not None:
        return buffered_multipart_related(
            [(part_headers(n), [content]) for n, content in zip(numbers, contents, strict=True)],
            part_type=choice.media_type,
        )
    blobs = context.service.blobs
    header = await to_thread.run_sync(_header, blobs, row)
    blob = StoredBlob(blobs, row.blob_key)
    if choice.jpeg:
        refusal = frame_data.jpeg_refusal(header)
        if refusal is not None:
            raise NotAcceptable(refusal)
        parts = ((part_headers(n), frame_data.frame_as_jpeg(blob, header, n - 1)) for n in numbers)
        return MultipartRelatedResponse(parts, part_type=choice.media_type)
    parts = (
        (part_headers(number), frame_data.frame_bytes(blob, header, number - 1, choice.as_stored))
        for number in numbers
    )
    return MultipartRelatedResponse(parts, part_type=choice.media_type)


def _instance_url(context: StoreContext, row: Row) -> str:
    return context.instance_url(
        row.study_instance_uid, row.series_instance_uid, row.sop_instance_uid
    )


# Pixel Data (present, not Float Pixel Data) and Samples per Pixel.
_SAMPLES_PER_PIXEL = json_key("SamplesPerPixel")
_FRAME_ELEMENTS = (PIXEL_DATA_KEY, _SAMPLES_PER_PIXEL)


def _frames_location(
    file: BinaryIO,
    row: Row,
    geometry: tuple[int | None, int | None, int | None, int | None, int | None],
) -> tuple[int, int] | None:
    """Where the stored instance's native frames start and how long each is; None when the
    file does not hold them as the index says (see frame_data.native_frames_location)."""
    return frame_data.native_frames_location(
        file, row.size_bytes, row.transfer_syntax_uid, geometry
    )


def _native_frames(
    conn: Connection, blobs: BlobStore, row: Row, numbers: list[int]
) -> list[bytes] | None:
    """The frames of uncompressed pixel data read where the index says they lie, without
    parsing the header (the index already holds its geometry); None to take the general path
    (compressed, unconfirmed, or too much to hold)."""
    if not ts.is_native(row.transfer_syntax_uid) or row.columns is None:
        return None
    elements = instance_elements(conn, row.pk, _FRAME_ELEMENTS) or {}
    if elements.get(PIXEL_DATA_KEY) is None:
        return None
    samples = ((elements.get(_SAMPLES_PER_PIXEL) or {}).get("Value") or [1])[0]
    geometry = (row.rows, row.columns, row.bits_allocated, row.number_of_frames, samples)
    if not isinstance(samples, int):
        return None
    with blobs.open(row.blob_key) as file:
        found = _frames_location(file, row, geometry)
        if found is None:
            return None
        offset, frame_size = found
        if frame_size * len(numbers) > _BUFFERED_BYTES:
            return None
        frames = []
        for number in numbers:
            file.seek(offset + (number - 1) * frame_size)
            frames.append(file.read(frame_size))
        return frames


def _header(blobs: BlobStore, row: Row) -> ParsedInstance:
    with blobs.open(row.blob_key) as file:
        try:
            return read_header(file)
        except UnreadableInstance as exc:  # stored blobs were parsed on the way in
            raise NotFound(f"Instance {row.sop_instance_uid} cannot be read: {exc}") from exc


def _whole_dataset(blobs: BlobStore, row: Row) -> Dataset:
    with blobs.open(row.blob_key) as file, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deviations were accepted at ingest (see parse.py)
        try:
            return dcmread(file)
        except (InvalidDicomError, ValueError, EOFError, OSError) as exc:
            raise NotFound(f"Instance {row.sop_instance_uid} cannot be read: {exc}") from exc


# --- rendered -------------------------------------------------------------------------------


def _render_options(request: Request, *, multipart: bool = False) -> RenderOptions:
    """Accept and the rendering query parameters (PS3.18 8.3.5.1: viewport, quality, window).

    ``multipart``: the resource is several images (a study or series), served as
    ``multipart/related; type="image/…"`` (PS3.18 Table 10.4.4-1 note: single-part types
    alone are not acceptable there).
    """
    media_type = "image/jpeg"
    ranked = parse_accept(request.headers.get("accept"))
    if ranked:
        for media in ranked:
            media_type_of = media.type
            if media.type == "multipart/related":
                media_type_of = media.params.get("type", "image/jpeg").lower()
            elif multipart and media.type in RENDERED_MEDIA_TYPES:
                continue
            if media_type_of in RENDERED_MEDIA_TYPES:
                media_type = media_type_of
                break
            if media_type_of in ("*/*", "image/*"):
                break
        else:
            raise NotAcceptable(
                'Rendered images are available as multipart/related; type="image/jpeg" or'
                ' type="image/png".'
                if multipart
                else "Rendered images are available as image/jpeg or image/png."
            )
    query = request.query_params
    viewport = None
    if "viewport" in query:
        try:
            width, height = (int(v) for v in query["viewport"].split(",")[:2])
        except ValueError as exc:
            raise InvalidArgument("viewport must be width,height in pixels.") from exc
        if width < 1 or height < 1 or width > 16384 or height > 16384:
            raise InvalidArgument("viewport must be between 1 and 16384 pixels each way.")
        viewport = (width, height)
    quality = 75
    if "quality" in query:
        try:
            quality = int(query["quality"])
        except ValueError as exc:
            raise InvalidArgument("quality must be an integer from 1 to 100.") from exc
        if not 1 <= quality <= 100:
            raise InvalidArgument("quality must be an integer from 1 to 100.")
    window = None
    if "window" in query:
        try:
            window = parse_window(query["window"])
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from exc
    return RenderOptions(media_type, viewport, quality, window)


def _check_renderable(row: Row) -> None:
    """404 without pixel data, 406 for an undecodable syntax or a frame too large to render
    (checked from the index, before any byte is read)."""
    if not _pixels(row):
        raise NotFound(f"Instance {row.sop_instance_uid} has no pixel data to render.")
    if not ts.can_decode(row.transfer_syntax_uid):
        raise NotAcceptable(f"Pixel data in {row.transfer_syntax_uid} cannot be decoded.")
    pixels = (row.rows or 0) * (row.columns or 0)
    if pixels > MAX_RENDERED_PIXELS:
        raise NotAcceptable(
            f"Instance {row.sop_instance_uid} has frames of {pixels:,} pixels; frames of at"
            f" most {MAX_RENDERED_PIXELS:,} pixels are rendered (docs/reliability.md)."
            " Retrieve its frames instead."
        )


def _render_row(blobs: BlobStore, row: Row, index: int, options: RenderOptions) -> bytes:
    """Frame ``index`` of ``row`` rendered (runs in a worker thread)."""
    try:
        if row.size_bytes <= _BUFFERED_BYTES:
            # Read once, pixels included: pixel_array on a file parses its header again.
            dataset = _whole_dataset(blobs, row)
            return render_frame(dataset, dataset, index, options)
        header = _header(blobs, row)
        with blobs.open(row.blob_key) as file:
            return render_frame(file, header.dataset, index, options)
    except RenderError as exc:
        raise NotAcceptable(str(exc)) from exc


# What rendering a native grayscale frame reads of the header (dicom/render.py)…
_RENDER_HEADER = tuple(
    json_key(keyword)
    for keyword in (
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "NumberOfFrames",
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "PixelRepresentation",
        "WindowCenter",
        "WindowWidth",
        "RescaleIntercept",
        "RescaleSlope",
        "VOILUTFunction",
    )
)
# … and what sends it down the general path: tables and per-frame values.
_RENDER_GENERAL = tuple(
    json_key(keyword)
    for keyword in (
        "ModalityLUTSequence",
        "VOILUTSequence",
        "SharedFunctionalGroupsSequence",
        "PerFrameFunctionalGroupsSequence",
    )
)
_RENDER_ELEMENTS = (PIXEL_DATA_KEY, *_RENDER_HEADER, *_RENDER_GENERAL)


def _render_indexed(
    conn: Connection, blobs: BlobStore, row: Row, index: int, options: RenderOptions
) -> bytes | None:
    """Frame ``index`` of a native little-endian grayscale instance rendered from the header
    values the index holds and the frame's own bytes, read where the index says they lie:
    the file's header is not parsed (pydicom's parse of a CT header costs more CPU than the
    rest of the rendering). None to take the general path (:func:`_render_row`)."""
    if row.bits_allocated not in (8, 16) or not row.rows or not row.columns:
        return None
    elements = instance_elements(conn, row.pk, _RENDER_ELEMENTS)
    if elements is None or elements[PIXEL_DATA_KEY] is None:
        return None
    if any(elements[tag] is not None for tag in _RENDER_GENERAL):
        return None
    try:
        header = Dataset.from_json(
            {tag: elements[tag] for tag in _RENDER_HEADER if elements[tag] is not None}
        )
        photometric = header.get("PhotometricInterpretation")
        samples = int(header.get("SamplesPerPixel", 1) or 1)
    except (ValueError, TypeError, KeyError):
        return None
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or samples != 1:
        return None
    geometry = (row.rows, row.columns, row.bits_allocated, row.number_of_frames, 1)
    with blobs.open(row.blob_key) as file:
        found = _frames_location(file, row, geometry)
        if found is None:
            return None
        offset, frame_size = found
        file.seek(offset + index * frame_size)
        pixels = file.read(frame_size)
    if len(pixels) != frame_size:
        return None
    header.file_meta = FileMetaDataset()
    header.file_meta.TransferSyntaxUID = row.transfer_syntax_uid
    header.add_new(0x7FE00010, "OW" if row.bits_allocated == 16 else "OB", pixels)
    try:
        # The one frame read is frame 0 of this dataset; nothing per-frame is left to index.
        return render_frame(header, header, 0, options)
    except RenderError as exc:
        raise NotAcceptable(str(exc)) from exc


async def retrieve_rendered(request: Request) -> Response:
    options = _render_options(request)
    find = _lookup(request, "Instance")
    frame = request.path_params.get("frame")

    def render(conn: Connection, context: StoreContext) -> bytes:
        # Lookup and rendering in one worker-thread call (see paths.resolve_store_then).
        row = find(conn, context)[0]
        _check_renderable(row)
        number = 1 if frame is None else _frame_numbers(frame, row.number_of_frames or 1)[0]
        blobs = context.service.blobs
        image = _render_indexed(conn, blobs, row, number - 1, options)
        return _render_row(blobs, row, number - 1, options) if image is None else image

    _, image = await resolve_store_then(request, render)
    return Response(image, media_type=options.media_type)


async def retrieve_rendered_many(request: Request) -> Response:
    """A rendered study or series (PS3.18 10.4.1.1.3, ``standard`` profile): one part per frame
    of each instance with pixel data, rendered one at a time as the body streams."""
    conformance = conformance_of(request)
    if not conformance.rendered_study_and_series:
        raise NotFound(conformance.refusal("Rendering a whole study or series"))
    options = _render_options(request, multipart=True)
    context, rows = await _instances(request, _level_of(request))
    renderable = []
    for row in rows:
        if _pixels(row) and ts.can_decode(row.transfer_syntax_uid):
            _check_renderable(row)
            renderable.append(row)
    if not renderable:
        raise NotFound("No instance here has pixel data that can be rendered.")
    blobs = context.service.blobs

    def parts() -> Iterator[Part]:
        for row in renderable:
            url = _instance_url(context, row)
            for index in range(row.number_of_frames or 1):
                headers = {
                    "Content-Type": options.media_type,
                    "Content-Location": rendered_frame_path(url, index + 1),
                }
                yield headers, [_render_row(blobs, row, index, options)]

    return MultipartRelatedResponse(parts(), part_type=options.media_type)


async def retrieve_thumbnail(request: Request) -> Response:
    """A thumbnail (PS3.18 10.4.1.1.5, ``standard`` profile): the rendered middle frame of the
    middle instance with pixel data, fitted into ``viewport`` (default 128 x 128)."""
    conformance = conformance_of(request)
    if not conformance.thumbnails:
        raise NotFound(conformance.refusal("Thumbnail resources"))
    options = _render_options(request)
    if options.viewport is None:
        options = replace(options, viewport=_THUMBNAIL_VIEWPORT)
    context, rows = await _instances(request, _level_of(request))
    renderable = [r for r in rows if _pixels(r) and ts.can_decode(r.transfer_syntax_uid)]
    if not renderable:
        raise NotFound("No instance here has pixel data that can be rendered.")
    row = renderable[len(renderable) // 2]
    _check_renderable(row)
    if "frame" in request.path_params:
        index = _frame_numbers(request.path_params["frame"], row.number_of_frames or 1)[0] - 1
    else:
        index = (row.number_of_frames or 1) // 2
    image = await to_thread.run_sync(_render_row, context.service.blobs, row, index, options)
    return Response(image, media_type=options.media_type)


_THUMBNAIL_VIEWPORT = (128, 128)  # a choice; PS3.18 leaves the default size to the server


# --- bulk data ------------------------------------------------------------------------------


async def retrieve_bulkdata(request: Request) -> Response:
    context, rows = await _instances(request, "Instance")
    row = rows[0]
    blobs = context.service.blobs
    tag_path = request.path_params["path"].strip("/")
    header = await to_thread.run_sync(_header, blobs, row)
    chunks = await to_thread.run_sync(
        frame_data.bulkdata_chunks, StoredBlob(blobs, row.blob_key), header, tag_path
    )
    if chunks is None:
        raise NotFound(f"No bulk data at {tag_path} in instance {row.sop_instance_uid}.")
    accept = parse_accept(request.headers.get("accept"))
    location = bulkdata_path(_instance_url(context, row), tag_path)
    if accept and accept[0].type == OCTET_STREAM:
        return StreamingResponse(
            chunks, media_type=OCTET_STREAM, headers={"Content-Location": location}
        )
    # PS3.18 10.4.3.3.5: a bulk data part carries the BulkDataURI it answers.
    parts = iter([({"Content-Type": OCTET_STREAM, "Content-Location": location}, chunks)])
    return MultipartRelatedResponse(parts, part_type=OCTET_STREAM)


async def retrieve_instance_bulkdata(request: Request) -> Response:
    """The Bulkdata resource of a study, series or instance (PS3.18 10.4.1.1.4; ``standard``
    profile): every bulk data element its metadata points to."""
    conformance = conformance_of(request)
    if not conformance.instance_bulkdata:
        raise NotFound(
            conformance.refusal("The Bulkdata resource of a study, series or instance")
            + " Google serves bulk data at the BulkDataURIs its metadata returns."
        )
    return await _retrieve_bulkdata_resource(request, _level_of(request))


_BULKDATA_URI = re.compile(r'"BulkDataURI"\s*:\s*"' + BULKDATA_PATH + r'/([0-9A-Fa-f/]+)"')


async def _retrieve_bulkdata_resource(request: Request, level: str) -> Response:
    find = _lookup(request, level)

    def prepare(conn: Connection, context: StoreContext) -> list[tuple[Row, list[str]]]:
        found = []
        for row in find(conn, context):
            text = json.dumps(instance_attributes(conn, row.pk) or {})
            found.append((row, _BULKDATA_URI.findall(text)))
        return found

    context, found = await resolve_store_then(request, prepare)
    blobs = context.service.blobs

    def parts() -> Iterator[Part]:
        for row, tag_paths in found:
            if not tag_paths:
                continue
            url = _instance_url(context, row)
            header = _header(blobs, row)
            for tag_path in tag_paths:
                yield from _bulkdata_parts(blobs, row, header, url, tag_path)

    return MultipartRelatedResponse(parts(), part_type=OCTET_STREAM)


def _bulkdata_parts(
    blobs: BlobStore, row: Row, header: ParsedInstance, url: str, tag_path: str
) -> Iterator[Part]:
    """One element's parts: its bytes (little endian) as application/octet-stream; compressed
    pixel data as one part a frame in the frame's own media type (PS3.18 8.7.3.3.2)."""
    stored = row.transfer_syntax_uid
    blob = StoredBlob(blobs, row.blob_key)
    if tag_path.upper() == PIXEL_DATA_KEY and not ts.is_native(stored):
        media_type = ts.FRAME_MEDIA_TYPES.get(stored, OCTET_STREAM)
        for index in range(row.number_of_frames or 1):
            headers = {
                "Content-Type": f"{media_type}; transfer-syntax={stored}",
                "Content-Location": frame_path(url, index + 1),
            }
            yield headers, frame_data.frame_bytes(blob, header, index, True)
        return
    chunks = frame_data.bulkdata_chunks(blob, header, tag_path)
    if chunks is not None:
        location = bulkdata_path(url, tag_path)
        yield {"Content-Type": OCTET_STREAM, "Content-Location": location}, chunks
