"""A C-FIND identifier's elements read from its encoding, without a pydicom Dataset.

pynetdicom hands the identifier over as bytes; decoding it into a Dataset and converting each
element (validation, UID and PersonName objects) was about a fifth of a series-of-study
C-FIND's handler. A query's identifier is a handful of short text elements, most of them empty
(return keys): :func:`elements` walks their headers in a little endian encoding and
:func:`matching_value` gives each value as the search reads it, the same text pydicom's
conversion leads to (``dimse.find`` turns an element into a QIDO parameter from its ``str``).

Both answer None for anything they do not read as pydicom would, which is then left to pydicom:
an undefined length (a sequence with items), elements out of order, a non-ASCII or ISO 2022
value (whose decoding depends on the Specific Character Set), a number, a VR that is unknown or
ambiguous.
"""

from __future__ import annotations

import struct

from pydicom.datadict import DicomDictionary

from dicomql.dicom.tags import EXPLICIT_VR_LENGTH_32

_IMPLICIT = struct.Struct("<HHI")
_EXPLICIT = struct.Struct("<HH2sH")
_LENGTH_32 = struct.Struct("<I")
_LONG_VRS = frozenset(vr.encode() for vr in EXPLICIT_VR_LENGTH_32)
_UNDEFINED_LENGTH = 0xFFFFFFFF

# How pydicom splits and strips each text VR's value (pydicom.values), ASCII only:
# the whole value's trailing spaces and NULs off, then split at backslashes (convert_string,
# convert_PN) ...
_VALUE_RSTRIPPED = frozenset({"AS", "CS", "DA", "DT", "PN", "TM"})
# ... split, then each value's trailing spaces and NULs off (convert_text) ...
_ITEMS_RSTRIPPED = frozenset({"LO", "SH", "UC"})
# ... one value, its trailing spaces and NULs off (convert_single_string).
_SINGLE = frozenset({"LT", "ST", "UT"})
# UI: the whole value's trailing spaces and NULs off, split, each UID stripped (UID's own
# strip); AE: split, each value stripped (leading and trailing spaces are not significant).
# VRs whose value is read here only when empty: None (numbers) or an empty sequence.
_EMPTY_ONLY = frozenset({"DS", "FD", "FL", "IS", "SL", "SQ", "SS", "SV", "UL", "US", "UV"})
_VRS = _VALUE_RSTRIPPED | _ITEMS_RSTRIPPED | _SINGLE | _EMPTY_ONLY | {"AE", "UI"}
_ESCAPE = 0x1B  # ISO 2022 code extension: the decoding depends on the character set


def elements(data: bytes, implicit: bool) -> list[tuple[int, str, bytes]] | None:
    """Each top-level element's tag, VR (empty in implicit VR: see :func:`matching_value`) and
    value, of an identifier in implicit or explicit VR little endian; None if its elements are
    not all of defined length, in ascending tag order and whole."""
    found: list[tuple[int, str, bytes]] = []
    position = 0
    end = len(data)
    previous = -1
    while position < end:
        if end - position < 8:
            return None
        vr = ""
        if implicit:
            group, element, length = _IMPLICIT.unpack_from(data, position)
            position += 8
        else:
            group, element, vr_bytes, length = _EXPLICIT.unpack_from(data, position)
            if vr_bytes in _LONG_VRS:
                if end - position < 12:
                    return None
                (length,) = _LENGTH_32.unpack_from(data, position + 8)
                position += 12
            else:
                position += 8
            vr = vr_bytes.decode("latin-1")
        tag = group << 16 | element
        if length == _UNDEFINED_LENGTH or tag <= previous or position + length > end:
            return None
        found.append((tag, vr, data[position : position + length]))
        position += length
        previous = tag
    return found


def matching_value(tag: int, vr: str, value: bytes) -> str | None:
    """The element's value as ``dimse.find`` reads a pydicom element's: its values joined by
    backslashes, or the one value stripped; empty for an empty element. ``vr`` empty: the data
    dictionary's (implicit VR). None where pydicom alone can tell."""
    if not vr:
        entry = DicomDictionary.get(tag)
        if entry is None:
            return None
        vr = entry[0]
    if vr not in _VRS:
        return None  # unknown, ambiguous ("US or SS"), binary or UN (replaced by pydicom)
    if not value:
        return ""
    if vr in _EMPTY_ONLY or not value.isascii() or _ESCAPE in value:
        return None
    text = value.decode("ascii")
    if vr in _SINGLE:
        return text.rstrip("\0 ").strip()
    if vr in _VALUE_RSTRIPPED:
        items = text.rstrip(" \0").split("\\")
    elif vr in _ITEMS_RSTRIPPED:
        items = [item.rstrip("\0 ") for item in text.split("\\")]
    elif vr == "UI":
        items = [item.strip() for item in text.rstrip("\0 ").split("\\")]
    else:  # AE
        items = [item.strip() for item in text.split("\\")]
    return items[0].strip() if len(items) == 1 else "\\".join(items)
