"""DICOMweb response classes: DICOM JSON and XML bodies and streamed ``multipart/related``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

from anyio import to_thread
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from dicomql.dicom.xmlmodel import native_dicom_model
from dicomql.service.dicomweb.multipart import new_boundary, write_multipart

DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"


class DicomJsonResponse(Response):
    """The DICOM JSON model (PS3.18 F.2)."""

    media_type = DICOM_JSON

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "replace"
        )


class DicomXmlResponse(Response):
    """The Native DICOM Model (PS3.19 A.1) of a DICOM JSON dataset."""

    media_type = DICOM_XML

    def render(self, content: Any) -> bytes:
        # "replace": a lone surrogate (text decoded from a damaged header) must not fail the
        # whole response; it becomes "?".
        return native_dicom_model(content).encode("utf-8", "replace")


Part = tuple[dict[str, str], Iterable[bytes]]


class MultipartRelatedResponse(StreamingResponse):
    """A ``multipart/related`` body streamed part by part (PS3.18 8.6.1.2).

    ``parts`` is a (lazy) iterable of (part headers, chunk iterable); it runs in worker threads,
    so it may read blobs and decode. Chunks are pulled in batches of about ``_BATCH_BYTES`` per
    thread hand-off and sent as they are, never joined: a hand-off costs as much as a small
    query, and joining copied every byte once more.
    """

    def __init__(
        self,
        parts: Iterable[Part],
        *,
        part_type: str,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        extra_params: str = "",
        background: BackgroundTask | None = None,
    ) -> None:
        boundary = new_boundary()
        super().__init__(
            _in_batches(write_multipart(parts, boundary)),
            status_code=status_code,
            headers=headers,
            media_type=_multipart_type(part_type, boundary, extra_params),
            background=background,
        )


def buffered_multipart_related(
    parts: list[tuple[dict[str, str], list[bytes]]], *, part_type: str
) -> Response:
    """A ``multipart/related`` response of parts already in memory: one body, sent at once with
    its Content-Length (small retrievals; see ``retrieve._BUFFERED_BYTES``)."""
    boundary = new_boundary()
    body = b"".join(write_multipart(parts, boundary))
    return Response(body, media_type=_multipart_type(part_type, boundary, ""))


def _multipart_type(part_type: str, boundary: str, extra_params: str) -> str:
    return f'multipart/related; type="{part_type}"; boundary={boundary}{extra_params}'


_BATCH_BYTES = 4 * 1024 * 1024
_SMALL_BYTES = 64 * 1024


async def _in_batches(chunks: Iterator[bytes], size: int = _BATCH_BYTES) -> AsyncIterator[bytes]:
    """``chunks`` (a blocking iterator) advanced in a worker thread about ``size`` bytes at a
    time; memory stays bounded by one batch plus the transport's buffer."""

    def take() -> list[bytes]:
        batch: list[bytes] = []
        small: list[bytes] = []  # part headers, small instances: joined, one send for many
        small_size = total = 0
        for chunk in chunks:
            if len(chunk) < _SMALL_BYTES:
                small.append(chunk)
                small_size += len(chunk)
            else:
                if small:
                    batch.append(b"".join(small))
                    small, small_size = [], 0
                batch.append(chunk)
            total += len(chunk)
            if total >= size:
                break
            if small_size >= _SMALL_BYTES:
                batch.append(b"".join(small))
                small, small_size = [], 0
        if small:
            batch.append(b"".join(small))
        return [chunk for chunk in batch if chunk]

    while batch := await to_thread.run_sync(take):
        for chunk in batch:
            yield chunk
