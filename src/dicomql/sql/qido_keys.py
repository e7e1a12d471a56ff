"""QIDO-RS query keys as SQL sees them: DICOM keywords (or tags) and the search options, checked
before a call so a misspelt keyword gets the closest right one instead of a bare 400."""

from __future__ import annotations

import difflib
import functools
import re

from dicomql.errors import ProgrammingError

# PS3.18 8.3.4 (QIDO-RS query parameters) plus Google's includefield spelling.
OPTIONS = frozenset({"limit", "offset", "fuzzymatching", "includefield"})
_TAG = re.compile(r"[0-9A-Fa-f]{8}")


@functools.cache
def _keywords() -> dict[str, str]:
    """Every DICOM keyword by its lower-case spelling (pydicom's data dictionary)."""
    # Imported here: pydicom costs ~0.3 s to import, and most statements never need it.
    from pydicom.datadict import DicomDictionary

    return {entry[4].lower(): entry[4] for entry in DicomDictionary.values() if entry[4]}


def is_attribute(name: str) -> bool:
    """Whether ``name`` names a DICOM attribute: a keyword, 8 hex digits, or a dotted path of
    them (a sequence's item attribute, PS3.18 8.3.4.1).

    >>> is_attribute("PatientID"), is_attribute("0020000D"), is_attribute("PatientId")
    (True, True, False)
    """
    keywords = _keywords()
    return all(
        _TAG.fullmatch(part) is not None or keywords.get(part.lower()) == part
        for part in name.split(".")
    )


def check_key(name: str) -> None:
    """Refuse a QIDO key that is close to a keyword but not one (``PatientId``).

    A key that resembles nothing is left to the server, which may know private attributes.

    Raises:
        ProgrammingError: names the key and the keyword it resembles.
    """
    if name.lower() in OPTIONS or is_attribute(name):
        return
    keywords = _keywords()
    wanted = name.split(".")[-1].lower()
    close = keywords.get(wanted)
    if close is None:
        found = difflib.get_close_matches(wanted, list(keywords), n=1, cutoff=0.85)
        close = keywords[found[0]] if found else None
    if close is not None:
        raise ProgrammingError(
            f"unknown DICOM attribute '{name}' (keywords are case-sensitive);"
            f" did you mean '{close}'?"
        )
