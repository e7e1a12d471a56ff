"""Path parameters of a request URL: each value is checked and percent-encoded one segment at a
time, so no value — ``..``, ``/``, ``%2F``, ``?``, a control character — can change which resource
a request targets.

httpx removes dot segments (RFC 3986 5.2.4) from every URL it sends, so an instance ID of ``..``
would address the series, and a store ID of ``..`` the dataset; Google's front end would see the
same URL. Cloud Healthcare resource IDs are ``[\\p{L}\\p{N}_\\-\\.]{1,256}`` (discovery document,
``datasets.create`` ``datasetId``): a segment of those characters that is not ``.`` or ``..`` is
safe once its non-ASCII letters are percent-encoded.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from dicomql.errors import ProgrammingError

# Characters besides letters and digits that a segment may hold, by the parameter it fills.
_ID_EXTRA = "_-."
_EXTRA_OF: Mapping[str, str] = {
    # Legacy domain-scoped project IDs: "example.com:my-project" (Resource Manager docs).
    "projectsId": _ID_EXTRA + ":",
    # A frame list: frames/1,3,5 (PS3.18 8.3.5.1.3).
    "framesId": ",",
}
# Flat parameters that fill the rest of a path: the bulk data path after bulkdata/{bulkdataId}/
# (discovery: dicomWebPath pattern "…/bulkdata/[^/]+/.*").
_MULTI_SEGMENT = frozenset({"bulkdataId1"})
_SHOWN = 60


def _shown(value: str) -> str:
    """``value`` as an error message quotes it: control characters escaped, long ones cut."""
    text = value if len(value) <= _SHOWN else value[:_SHOWN] + "…"
    return "'" + "".join(map(_printable, text)) + "'"


def _printable(character: str) -> str:
    return character if character.isprintable() else character.encode("unicode_escape").decode()


def _allowed(character: str, extra: str) -> bool:
    # \p{L} and \p{N}: any letter or number, in any script.
    return character in extra or unicodedata.category(character)[0] in "LN"


def _segment_problem(segment: str, extra: str) -> str | None:
    """Why ``segment`` cannot be one path segment, or None if it can."""
    if segment == "":
        return "an empty path segment would address another resource"
    if segment in (".", ".."):
        return f"'{segment}' is a dot segment, which would address another resource"
    bad = next((c for c in segment if not _allowed(c, extra)), None)
    if bad is not None:
        shown = _printable(bad)
        allowed = ", ".join(f"'{c}'" for c in extra)
        return f"'{shown}' is not allowed (letters, digits and {allowed} only)"
    return None


def _refuse(method_id: str, parameter: str, value: str, problem: str) -> ProgrammingError:
    return ProgrammingError(
        f"invalid value {_shown(value)} for path parameter {parameter} of {method_id}: {problem}"
    )


def _text(method_id: str, parameter: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ProgrammingError(
            f"path parameter {parameter} of {method_id} must be one string or integer, "
            f"not {type(value).__name__} {value!r:.{_SHOWN}}"
        )
    return str(value)


def segment(method_id: str, parameter: str, value: Any) -> str:
    """``value`` of the flat path parameter ``parameter`` as percent-encoded path text.

    >>> segment("m", "datasetsId", "größe.1")
    'gr%C3%B6%C3%9Fe.1'
    >>> segment("m", "instancesId", "..")
    Traceback (most recent call last):
    ...
    dicomql.errors.ProgrammingError: invalid value '..' for path parameter instancesId of m: \
'..' is a dot segment, which would address another resource

    Raises:
        ProgrammingError: the value is empty, a dot segment, or holds a character no ID has.
    """
    text = _text(method_id, parameter, value)
    extra = _EXTRA_OF.get(parameter, _ID_EXTRA)
    pieces = text.split("/") if parameter in _MULTI_SEGMENT else [text]
    for piece in pieces:
        problem = _segment_problem(piece, extra)
        if problem is not None:
            raise _refuse(method_id, parameter, text, problem)
    return "/".join(quote(piece, safe=extra) for piece in pieces)


def reserved(method_id: str, parameter: str, value: Any, pattern: str | None) -> str:
    """``value`` of a ``{+parameter}`` (a resource name such as ``projects/p/…/dicomStores/s``,
    or a DICOMweb path) as percent-encoded path text.

    Each segment is checked as the flat parameter it stands for (the one after ``projects`` as
    ``projectsId``), and the whole against the discovery document's ``pattern``, so a dataset's
    name cannot reach a method of a DICOM store.

    Raises:
        ProgrammingError: a segment is refused, or the value does not fit ``pattern``.
    """
    text = _text(method_id, parameter, value)
    pieces = text.split("/")
    encoded: list[str] = []
    for index, piece in enumerate(pieces):
        # Names alternate collection and ID: projects/{projectsId}/locations/{locationsId}/…
        extra = _EXTRA_OF.get(f"{pieces[index - 1]}Id", _ID_EXTRA) if index % 2 else _ID_EXTRA
        problem = _segment_problem(piece, extra)
        if problem is not None:
            raise _refuse(method_id, parameter, text, problem)
        encoded.append(quote(piece, safe=extra))
    if pattern is not None and re.fullmatch(pattern, text) is None:
        raise _refuse(method_id, parameter, text, f"it must match {pattern}")
    return "/".join(encoded)
