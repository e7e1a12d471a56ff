"""Bytes a DICOMweb retrieve answered (a rendered image, frames, an instance), written to files:
one part as the file named, several as ``name-1.ext``, ``name-2.ext`` …, one row per file."""

from __future__ import annotations

from email.message import Message
from email.parser import BytesParser
from pathlib import Path

import httpx

from dicomql.sql.results import Result


def parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    """(media type, bytes) of each part of a multipart/related response (RFC 2387), or of the
    whole body."""
    content_type = response.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/"):
        return [(content_type, response.content)]
    message: Message = BytesParser().parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + response.content
    )
    found = []
    for part in message.get_payload() or []:
        assert isinstance(part, Message)  # a multipart payload is its parts
        data = part.get_payload(decode=True)
        found.append((part.get_content_type(), data if isinstance(data, bytes) else b""))
    return found


def write_parts(response: httpx.Response, target: Path) -> Result:
    """Write each part to a file; rows of (path, contentType, size).

    Raises:
        OSError: a file cannot be written (the CLI reports it).
    """
    found = parts(response)
    rows = []
    for number, (media_type, data) in enumerate(found, start=1):
        path = target
        if len(found) > 1:
            path = target.with_name(f"{target.stem}-{number}{target.suffix}")
        path.write_bytes(data)
        rows.append((str(path), media_type, len(data)))
    message = f"{len(rows)} file{'s' if len(rows) != 1 else ''} written"
    return Result(["path", "contentType", "size"], rows, len(rows), "exec", message)
