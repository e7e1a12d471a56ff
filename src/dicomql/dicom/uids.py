"""What a DICOM UID may be (PS3.5 9.1): components of digits separated by dots, no component
empty, at most 64 characters.

UIDs name resources in URLs and in the paths an export writes, so anything else (``..``, ``/``,
letters, a NUL) is refused where a UID enters the service rather than trusted downstream.
PS3.5 also forbids a leading zero in a component (``1.02``); legacy modalities wrote such UIDs,
Orthanc and dcm4chee store them, and they are as safe in a path as any other digits, so they are
accepted rather than turning real archives away.
"""

from __future__ import annotations

import re

MAX_LENGTH = 64
_COMPONENT = r"[0-9]+"
_UID = re.compile(rf"{_COMPONENT}(?:\.{_COMPONENT})*")


def uid_problem(value: str) -> str | None:
    """Why ``value`` is not a valid UID, or None when it is.

    >>> uid_problem("1.2.840.10008.1.2.1") is None
    True
    >>> uid_problem("1.02.3") is None  # a legacy leading zero: accepted
    True
    >>> uid_problem("1..3")
    "'1..3' is not a valid UID: it has an empty component (PS3.5 9.1)."
    """
    if not value:
        return "The UID is empty."
    if len(value) > MAX_LENGTH:
        return (
            f"The UID is longer than {MAX_LENGTH} characters ({len(value)}), the most"
            " PS3.5 9.1 allows."
        )
    if _UID.fullmatch(value) is not None:
        return None
    shown = repr(value)
    if not value.isascii() or re.fullmatch(r"[0-9.]+", value) is None:
        return f"{shown} is not a valid UID: only digits and dots are allowed (PS3.5 9.1)."
    for component in value.split("."):
        if not component:
            return f"{shown} is not a valid UID: it has an empty component (PS3.5 9.1)."
    raise AssertionError(f"unreachable for {shown}")  # pragma: no cover
