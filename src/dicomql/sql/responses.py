"""What comes back from a call: which media type to ask for, and the payload as JSON or bytes."""

from __future__ import annotations

import base64
import re
from typing import Any

import httpx

from dicomql.errors import DataError
from dicomql.provider.registry import Method


def dicom_accept(method: Method) -> str | None:
    """DICOM JSON for DICOMweb methods answering DICOM (QIDO, metadata; PS3.18 8.7.3);
    the metrics and storage-info verbs answer plain JSON."""
    if method.is_dicomweb and method.response_schema == "HttpBody":
        return "application/dicom+json"
    return None


def payload_of(response: httpx.Response) -> Any:
    """A response's JSON (``{}`` for an empty body), or its bytes when it is not JSON."""
    content_type = response.headers.get("content-type", "")
    if not response.content:
        return {}
    if "json" in content_type:
        return response.json()
    return response.content


_WARNING = re.compile(r'^299 \S+ "(.*)"$')


def warnings_of(response: httpx.Response) -> list[str]:
    """The texts of a response's ``Warning: 299`` headers (RFC 7234 5.5; PS3.18 8.4.3 uses
    them for a QIDO page cut short and a limit clamped)."""
    return [
        match.group(1)
        for value in response.headers.get_list("warning")
        if (match := _WARNING.match(value))
    ]


def decode_data(value: str) -> bytes:
    """HttpBody.data: base64 (standard or URL-safe), as Google's JSON mapping of bytes."""
    padded = value + "=" * (-len(value) % 4)
    try:
        return base64.b64decode(padded, altchars=b"-_" if "-" in value or "_" in value else None)
    except ValueError as exc:
        raise DataError(f"HttpBody data is not base64: {exc}") from exc
