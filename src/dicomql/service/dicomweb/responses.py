"""DICOMweb response classes: DICOM JSON and XML bodies and streamed ``multipart/related``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from dicomql.service.dicomweb.multipart import new_boundary, write_multipart

DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"


class DicomJsonResponse(Response):
    """The DICOM JSON model (PS3.18 F.2)."""

    media_type = DICOM_JSON

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class DicomXmlResponse(Response):
    """The Native DICOM Model (PS3.19 A.1) of a DICOM JSON dataset."""

    media_type = DICOM_XML

    def render(self, content: Any) -> bytes:
        body = _xml_attributes(content)
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM">{body}'
            "</NativeDicomModel>"
        ).encode()


def _xml_attributes(dataset: Mapping[str, Any]) -> str:
    out: list[str] = []
    for tag, attribute in sorted(dataset.items()):
        vr = attribute.get("vr", "UN")
        out.append(f'<DicomAttribute tag="{tag}" vr="{vr}">')
        for number, value in enumerate(attribute.get("Value", []), start=1):
            if vr == "SQ":
                out.append(f'<Item number="{number}">{_xml_attributes(value)}</Item>')
            elif vr == "PN":
                groups = "".join(
                    f"<{group}>{escape(str(text))}</{group}>" for group, text in value.items()
                )
                out.append(f'<PersonName number="{number}">{groups}</PersonName>')
            else:
                out.append(f'<Value number="{number}">{escape(str(value))}</Value>')
        if "BulkDataURI" in attribute:
            out.append(f"<BulkData uri={quoteattr(attribute['BulkDataURI'])}/>")
        if "InlineBinary" in attribute:
            out.append(f"<InlineBinary>{attribute['InlineBinary']}</InlineBinary>")
        out.append("</DicomAttribute>")
    return "".join(out)


Part = tuple[dict[str, str], Iterable[bytes]]


class MultipartRelatedResponse(StreamingResponse):
    """A ``multipart/related`` body streamed part by part (PS3.18 8.6.1.2).

    ``parts`` is a (lazy) iterable of (part headers, chunk iterable); it runs in a worker thread
    (Starlette iterates sync iterators in its thread pool), so it may read blobs and decode.
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
        media_type = f'multipart/related; type="{part_type}"; boundary={boundary}{extra_params}'
        super().__init__(
            _coalesce(write_multipart(parts, boundary)),
            status_code=status_code,
            headers=headers,
            media_type=media_type,
            background=background,
        )


def _coalesce(chunks: Iterator[bytes], size: int = 256 * 1024) -> Iterator[bytes]:
    """Join small pieces (part headers, small instances) into sends of about ``size`` bytes:
    each piece of a sync iterator costs Starlette a thread-pool round trip."""
    pending: list[bytes] = []
    pending_size = 0
    for chunk in chunks:
        pending.append(chunk)
        pending_size += len(chunk)
        if pending_size >= size:
            yield b"".join(pending)
            pending, pending_size = [], 0
    if pending:
        yield b"".join(pending)
