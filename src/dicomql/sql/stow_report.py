"""What a STOW-RS response says about each instance sent: one row per instance, stored or failed,
a failure with its file (when files were sent), its FailureReason in hexadecimal as PS3.4 writes
it, and a readable reason (the server's ``Warning: 299`` text, else the standard's meaning)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from dicomql.dicom.tags import FAILED_SOP_SEQUENCE_KEY as _FAILED_SOP_SEQUENCE
from dicomql.dicom.tags import REFERENCED_SOP_SEQUENCE_KEY as _REFERENCED_SOP_SEQUENCE
from dicomql.provider.client import api_error
from dicomql.sql.dicom_rows import dicom_rows
from dicomql.sql.responses import warnings_of

COLUMNS = [
    "status",
    "path",
    "ReferencedSOPClassUID",
    "ReferencedSOPInstanceUID",
    "RetrieveURL",
    "FailureReason",
    "FailureDescription",
]
# PS3.4 Table B.2-1 (Storage Service Class status) and PS3.18 Table I.2-3 (STOW-RS failures).
_MEANINGS = {
    0x0110: "processing failure",
    0x0111: "duplicate SOP instance",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    0xA700: "out of resources",
    0xA900: "data set does not match SOP class",
    0xC000: "cannot understand (not a readable DICOM instance)",
    0xC122: "transfer syntax not supported",
}


def meaning(code: int) -> str:
    """The standard's name for a FailureReason code (its class for 0xA7xx, 0xA9xx, 0xCxxx).

    >>> meaning(0xC000), meaning(0xA701)
    ('cannot understand (not a readable DICOM instance)', 'out of resources')
    """
    if code in _MEANINGS:
        return _MEANINGS[code]
    for mask in (0xFF00, 0xF000):
        if code & mask in _MEANINGS:
            return _MEANINGS[code & mask]
    return "failure"


def _hex(code: Any) -> str | None:
    return f"0x{code:04X}" if isinstance(code, int) else None


def store_rows(response: httpx.Response, files: Sequence[Path] = ()) -> list[tuple[Any, ...]]:
    """One row per instance of a STOW-RS response (columns :data:`COLUMNS`).

    ``files`` are the files the request carried, in order: a failure is matched to its file by
    SOP Instance UID, or — for a part the server could not read a UID from — to the next file
    the response does not account for.

    Raises:
        ApiError: the request failed as a whole.
    """
    try:
        payload = response.json() if response.content else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        payload = None
    if not isinstance(payload, dict) or (response.is_error and "error" in payload):
        raise api_error(response)
    _, stored = dicom_rows((payload.get(_REFERENCED_SOP_SEQUENCE) or {}).get("Value") or [])
    _, failed = dicom_rows((payload.get(_FAILED_SOP_SEQUENCE) or {}).get("Value") or [])
    if response.is_error and not stored and not failed:
        raise api_error(response)
    warnings = warnings_of(response)
    paths = _failed_paths(files, stored, failed) if files and failed else [None] * len(failed)
    rows: list[tuple[Any, ...]] = []
    for row in stored:
        uid = row.get("ReferencedSOPInstanceUID")
        url = row.get("RetrieveURL")
        rows.append(("stored", None, row.get("ReferencedSOPClassUID"), uid, url, None, None))
    for index, (row, path) in enumerate(zip(failed, paths, strict=True)):
        code = row.get("FailureReason")
        # The server writes one Warning per failure, in the order of FailedSOPSequence.
        reason = warnings[index] if len(warnings) == len(failed) else None
        if reason is None and isinstance(code, int):
            reason = meaning(code)
        rows.append(
            (
                "failed",
                str(path) if path is not None else None,
                row.get("ReferencedSOPClassUID"),
                row.get("ReferencedSOPInstanceUID"),
                None,
                _hex(code),
                reason,
            )
        )
    return rows


def _failed_paths(
    files: Sequence[Path], stored: list[dict[str, Any]], failed: list[dict[str, Any]]
) -> list[Path | None]:
    """The file of each failure; reads the headers of the request's files (only when some
    failed, so a clean upload reads each file once)."""
    by_uid: dict[str, Path] = {}
    unread: list[Path] = []
    for file in files:
        uid = _sop_instance_uid(file)
        if uid is None:
            unread.append(file)
        else:
            by_uid.setdefault(uid, file)
    accounted = {row.get("ReferencedSOPInstanceUID") for row in stored + failed}
    spare = unread + [f for uid, f in by_uid.items() if uid not in accounted]
    paths: list[Path | None] = []
    for row in failed:
        uid = row.get("ReferencedSOPInstanceUID")
        if uid in by_uid:
            paths.append(by_uid[uid])
        else:
            paths.append(spare.pop(0) if spare else None)
    return paths


def _sop_instance_uid(file: Path) -> str | None:
    # Imported here: pydicom costs ~0.3 s to import, and a clean upload never needs it.
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    from dicomql.dicom.parse import PARSE_ERRORS

    # What the server refuses as unreadable (a damaged deflated data set's zlib.error too).
    unreadable: tuple[type[Exception], ...] = (InvalidDicomError, *PARSE_ERRORS)
    try:
        dataset = dcmread(file, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    except unreadable:
        return None
    uid = dataset.get("SOPInstanceUID")
    return str(uid) if uid else None
