"""Streaming ``multipart/related`` (RFC 2387 on RFC 2046 5.1): a parser that turns a request body
into per-part events without holding a part in memory, and a writer for WADO-RS responses."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field

from dicomql.service.errors import InvalidArgument

# How much of a part body is held back while looking for the next delimiter; the rest is emitted.
_MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True)
class MediaType:
    """A parsed media type: ``multipart/related; type="application/dicom"; boundary=x``."""

    type: str
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> MediaType:
        """Parse one media type (RFC 9110 8.3.1); parameter names are case-folded.

        >>> MediaType.parse('multipart/related; type="application/dicom"; boundary=b1')
        MediaType(type='multipart/related', params={'type': 'application/dicom', 'boundary': 'b1'})
        """
        pieces = _split_unquoted(text, ";")
        media = pieces[0].strip().lower()
        params: dict[str, str] = {}
        for piece in pieces[1:]:
            name, sep, value = piece.partition("=")
            if not sep:
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1].replace('\\"', '"')
            params[name.strip().lower()] = value
        return cls(media, params)


def parse_accept(header: str | None) -> list[MediaType]:
    """The media types of an Accept header, best first (by ``q``, then as listed).

    >>> [m.type for m in parse_accept("image/png;q=0.5, image/jpeg")]
    ['image/jpeg', 'image/png']
    """
    if not header:
        return []
    ranked: list[tuple[float, int, MediaType]] = []
    for position, item in enumerate(_split_unquoted(header, ",")):
        if not item.strip():
            continue
        media = MediaType.parse(item)
        try:
            quality = float(media.params.get("q", "1"))
        except ValueError:
            quality = 1.0
        if quality > 0:
            ranked.append((-quality, position, media))
    return [media for _, _, media in sorted(ranked, key=lambda entry: entry[:2])]


def _split_unquoted(text: str, separator: str) -> list[str]:
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    return pieces


@dataclass
class PartStart:
    headers: dict[str, str]


@dataclass
class PartData:
    data: bytes


@dataclass
class PartEnd:
    pass


Event = PartStart | PartData | PartEnd


async def parse_multipart(stream: AsyncIterator[bytes], boundary: str) -> AsyncIterator[Event]:
    """Events of a multipart body read from ``stream``: PartStart, PartData…, PartEnd per part.

    Memory is bounded by the size of the chunks plus the delimiter: part bodies are emitted as
    they arrive, minus a tail that could be the start of the next delimiter.

    Raises:
        InvalidArgument: the body is not a well-formed multipart message (no closing delimiter,
            oversized part headers).
    """
    if not boundary or len(boundary) > 200:
        raise InvalidArgument("The multipart boundary is missing or too long.")
    dash_boundary = b"--" + boundary.encode("latin-1")
    delimiter = b"\r\n" + dash_boundary
    buffer = bytearray()
    state = "preamble"
    finished = False
    async for chunk in stream:
        if not chunk:
            continue
        buffer += chunk
        while True:
            if state == "preamble":
                # RFC 2046: the first delimiter may open the body without a preceding CRLF.
                if buffer.startswith(dash_boundary):
                    start = 0
                else:
                    start = buffer.find(delimiter)
                    if start < 0:
                        del buffer[: max(0, len(buffer) - len(delimiter))]
                        break
                    start += 2
                after = start + len(dash_boundary)
                if len(buffer) < after + 2:
                    break
                if buffer[after : after + 2] == b"--":
                    finished = True
                    break
                del buffer[:after]
                state = "after-delimiter"
            if state == "after-delimiter":
                # Transport padding (whitespace) then CRLF ends the delimiter line.
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > 1024:
                        raise InvalidArgument("Malformed multipart delimiter line.")
                    break
                del buffer[: end + 2]
                state = "headers"
            if state == "headers":
                if buffer.startswith(b"\r\n"):
                    head_end, head_len = 0, 2
                else:
                    head_end = buffer.find(b"\r\n\r\n")
                    head_len = 4
                if head_end < 0:
                    if len(buffer) > _MAX_HEADER_BYTES:
                        raise InvalidArgument("Multipart part headers are too large.")
                    break
                headers = _parse_headers(bytes(buffer[:head_end]))
                del buffer[: head_end + head_len]
                state = "body"
                yield PartStart(headers)
            if state == "body":
                end = buffer.find(delimiter)
                if end < 0:
                    keep = len(delimiter) + 1
                    if len(buffer) > keep:
                        data = bytes(buffer[: len(buffer) - keep])
                        del buffer[: len(buffer) - keep]
                        yield PartData(data)
                    break
                if len(buffer) < end + len(delimiter) + 2:
                    if end:
                        data = bytes(buffer[:end])
                        del buffer[:end]
                        yield PartData(data)
                    break
                if end:
                    yield PartData(bytes(buffer[:end]))
                yield PartEnd()
                tail = buffer[end + len(delimiter) : end + len(delimiter) + 2]
                del buffer[: end + len(delimiter)]
                if tail == b"--":
                    finished = True
                    break
                state = "after-delimiter"
        if finished:
            break
    if not finished:
        raise InvalidArgument(
            "The multipart body ended before its closing boundary (RFC 2046 5.1.1)."
        )


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n"):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise InvalidArgument(f"Malformed multipart part header: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


def new_boundary() -> str:
    return f"dicomql-{secrets.token_hex(16)}"


def write_multipart(
    parts: Iterable[tuple[dict[str, str], Iterable[bytes]]], boundary: str
) -> Iterator[bytes]:
    """The bytes of a multipart body: each part's headers, then its chunks, then the close."""
    opening = f"--{boundary}\r\n".encode("latin-1")
    between = f"\r\n--{boundary}\r\n".encode("latin-1")
    first = True
    for headers, chunks in parts:
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        yield (opening if first else between) + head.encode("latin-1") + b"\r\n"
        first = False
        yield from chunks
    if first:
        yield f"--{boundary}--\r\n".encode("latin-1")
    else:
        yield f"\r\n--{boundary}--\r\n".encode("latin-1")
