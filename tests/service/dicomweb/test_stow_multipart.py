"""The streaming multipart/related parser and writer (RFC 2046 5.1) under any chunking."""

from __future__ import annotations

import asyncio
import doctest
from collections.abc import AsyncIterator

import pytest

from dicomql.service.dicomweb import multipart as module
from dicomql.service.dicomweb.multipart import (
    PartData,
    PartEnd,
    PartStart,
    new_boundary,
    parse_accept,
    parse_multipart,
    write_multipart,
)
from dicomql.service.errors import InvalidArgument

BOUNDARY = "XyZ"
# Bodies that look like delimiters but are not: a CRLF and dashes, the boundary without CRLF.
TRICKY = [b"\r\n--XyX not it\r\n--", b"--XyZ at the very start is data", b"", b"\r\n" * 5]


def _parse(body: bytes, chunk: int, boundary: str = BOUNDARY) -> list[tuple[dict, bytes]]:
    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(body), chunk):
            yield body[start : start + chunk]

    async def collect() -> list[tuple[dict, bytes]]:
        parts: list[tuple[dict, bytes]] = []
        async for event in parse_multipart(stream(), boundary):
            if isinstance(event, PartStart):
                parts.append((event.headers, b""))
            elif isinstance(event, PartData):
                parts[-1] = (parts[-1][0], parts[-1][1] + event.data)
            else:
                assert isinstance(event, PartEnd)
        return parts

    return asyncio.run(collect())


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 16])
def test_parts_survive_any_chunking(chunk: int) -> None:
    parts = [({"Content-Type": "application/dicom"}, [data]) for data in TRICKY]
    body = b"preamble text\r\n" + b"".join(write_multipart(parts, BOUNDARY))
    parsed = _parse(body, chunk)
    assert [data for _, data in parsed] == TRICKY
    assert all(headers == {"content-type": "application/dicom"} for headers, _ in parsed)


def test_transport_padding_and_missing_final_crlf_are_accepted() -> None:
    body = b"--XyZ  \r\nContent-Type: a/b\r\n\r\nhello\r\n--XyZ--"
    assert _parse(body, 4) == [({"content-type": "a/b"}, b"hello")]


@pytest.mark.parametrize(
    "body",
    [
        b"--XyZ\r\n\r\nno end",
        b"no delimiter at all",
        b"--XyZ\r\nBad header line\r\n\r\nx\r\n--XyZ--",
    ],
)
def test_malformed_bodies_raise_invalid_argument(body: bytes) -> None:
    with pytest.raises(InvalidArgument):
        _parse(body, 5)


def test_written_boundaries_are_unique_and_parse_back() -> None:
    assert new_boundary() != new_boundary()
    body = b"".join(write_multipart([({"X": "1"}, iter([b"ab", b"cd"]))], "b"))
    assert body == b"--b\r\nX: 1\r\n\r\nabcd\r\n--b--\r\n"


def test_accept_ranks_by_quality_then_order() -> None:
    ranked = parse_accept('a/x;q=0.2, multipart/related; type="application/dicom", b/y;q=0')
    assert [media.type for media in ranked] == ["multipart/related", "a/x"]
    assert ranked[0].params["type"] == "application/dicom"


def test_docstring_examples() -> None:
    assert doctest.testmod(module).failed == 0
