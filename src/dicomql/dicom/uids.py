"""What a DICOM UID may be (PS3.5 9.1): components of digits separated by dots, no component
empty or with a leading zero (``0`` alone is allowed), at most 64 characters.

UIDs name resources in URLs and in the paths an export writes, so anything else (``..``, ``/``,
letters, a NUL) is refused where a UID enters the service rather than trusted downstream.
"""

from __future__ import annotations

import re

MAX_LENGTH = 64
_COMPONENT = r"(?:0|[1-9][0-9]*)"
_UID = re.compile(rf"{_COMPONENT}(?:\.{_COMPONENT})*")


def uid_problem(value: str) -> str | None:
    """Why ``value`` is not a valid UID, or None when it is.

    >>> uid_problem("1.2.840.10008.1.2.1") is None
    True
    >>> uid_problem("1.02.3")
    "'1.02.3' is not a valid UID: component '02' has a leading zero (PS3.5 9.1)."
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
        if component.startswith("0"):
            return (
                f"{shown} is not a valid UID: component {component!r} has a leading zero"
                " (PS3.5 9.1)."
            )
    raise AssertionError(f"unreachable for {shown}")  # pragma: no cover


def is_valid_uid(value: str) -> bool:
    return uid_problem(value) is None
