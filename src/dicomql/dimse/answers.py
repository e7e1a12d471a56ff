"""C-FIND answers built and encoded cheaply: most of a match's cost was pydicom's, per element.

:func:`answer_identifier` turns a match's DICOM JSON into the identifier sent for it, with its
text and integer values already encoded, as raw elements, in the transfer syntax of the request's
presentation context. :func:`encode` writes such an answer by joining each element's header and
value, where pydicom's writer spends some microseconds on every element (a buffer, its
encoding settings, the checks of a general writer) whatever it holds; anything else goes to
pynetdicom's own encoder, which :func:`use_for_answers` puts this one in front of.

Read back (C-MOVE and storage commitment read the answers' UIDs), a raw element is converted by
pydicom as one read from a file would be.
"""

from __future__ import annotations

import functools
import struct
from typing import Any

import pynetdicom.service_class
from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.tag import BaseTag, Tag

from dicomql.dicom.tags import EXPLICIT_VR_LENGTH_32

# How an answer's elements are encoded: (implicit VR, little endian), the presentation context's.
Encoding = tuple[bool, bool]
EXPLICIT_LITTLE: Encoding = (False, True)

_CHARACTER_SET = Tag(0x00080005)
_LEVEL = Tag(0x00080052)
_UTF8 = "ISO_IR 192"  # DICOM JSON values are Unicode
_UTF8_ENCODINGS = convert_encodings(_UTF8)
_UTF8_VALUE = _UTF8.encode("ascii")  # 10 bytes, even: no padding
_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
_INTEGER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "UV": "Q", "SV": "q"}
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


class Answer(Dataset):
    """A C-FIND answer whose raw elements are encoded as ``encoding`` says. ``encoded`` keeps
    each raw element built for it with the element's bytes, which :func:`encode` writes as long
    as the answer still holds that element."""

    encoding: Encoding
    encoded: dict[int, tuple[RawDataElement, bytes]]


def answer_identifier(
    match: dict[str, Any], wanted: list[tuple[BaseTag, str]], level_name: str, encoding: Encoding
) -> Answer:
    """The requested keys of a match (DICOM JSON), empty where the match has none.

    Text and integer values become raw elements encoded in ``encoding`` (UTF-8 text, as the
    Specific Character Set says); anything else (sequences, binary, floating point and decimal
    numbers, bulk data) is converted by pydicom.
    """
    implicit, little = encoding
    elements: dict[BaseTag, Any] = {}
    encoded: dict[int, tuple[RawDataElement, bytes]] = {}

    def add_raw(tag: BaseTag, vr: str, value: bytes) -> None:
        raw = elements[tag] = RawDataElement(tag, vr, len(value), value, 0, implicit, little)
        written = _element_bytes(tag, vr, value, encoding)
        if written is not None:
            encoded[tag] = (raw, written)

    add_raw(_CHARACTER_SET, "CS", _UTF8_VALUE)
    add_raw(_LEVEL, "CS", _padded(level_name, "CS"))
    for tag, key in wanted:
        item = match.get(key)
        if item is None:
            add_raw(tag, _vr_of(tag), b"")
            continue
        vr = item["vr"]
        value = _encoded(vr, item["Value"], little) if "Value" in item else None
        if value is None and len(item) == 1:  # present without a value
            value = b""
        if value is None:
            elements[tag] = Dataset.from_json({key: item})[tag]
        else:
            add_raw(tag, vr, value)
    # Given its elements at once: a Dataset's item assignment checks each (~1 us apiece).
    answer = Answer(elements)
    answer.encoding = encoding
    answer.encoded = encoded
    answer.set_original_encoding(implicit, little, _UTF8_ENCODINGS)
    return answer


def _encoded(vr: str, values: list[Any], little: bool) -> bytes | None:
    """A DICOM JSON Value (PS3.18 F.2) as the bytes of the element's value; None for what only
    pydicom converts here (sequences, floating point and decimal numbers, AT)."""
    if not values:
        return b""
    if vr in _TEXT_VRS:
        if not all(isinstance(value, str | None) for value in values):
            return None
        return _padded("\\".join(value or "" for value in values), vr)
    if vr == "PN":
        if not all(isinstance(value, dict | None) for value in values):
            return None
        return _padded("\\".join(_person_name(value or {}) for value in values), vr)
    if vr in ("IS", "DS"):
        if not all(value is None or type(value) in (int, str) for value in values):
            return None  # a float: pydicom formats decimal strings
        return _padded("\\".join("" if value is None else str(value) for value in values), vr)
    if vr in _INTEGER_FORMATS:
        if not all(type(value) is int for value in values):
            return None
        try:
            return struct.pack(
                ("<" if little else ">") + _INTEGER_FORMATS[vr] * len(values), *values
            )
        except struct.error:
            return None  # out of range: pydicom reports it as it does for any bad value
    return None


def _padded(text: str, vr: str) -> bytes:
    """UTF-8, padded to an even length (PS3.5 6.2: UIDs with NUL, text with a space)."""
    data = text.encode("utf-8")
    if len(data) % 2:
        data += b"\x00" if vr == "UI" else b" "
    return data


def _person_name(value: dict[str, str]) -> str:
    """A DICOM JSON person name as PN text: its groups joined by ``=``, trailing empties
    dropped (PS3.18 F.2.2)."""
    return "=".join(value.get(group) or "" for group in _PN_GROUPS).rstrip("=")


@functools.cache
def _vr_of(tag: int) -> str:
    """The dictionary VR of a tag; the first of an ambiguous pair (the value is empty)."""
    try:
        return str(dictionary_VR(tag)).split(" or ")[0]
    except KeyError:
        return "UN"


# Element headers (PS3.5 7.1.2, 7.1.3) by byte order: implicit VR, explicit VR with a 2-byte
# length, explicit VR with 2 reserved bytes and a 4-byte length.
_HEADERS = {
    little: (
        struct.Struct(order + "HHI"),
        struct.Struct(order + "HH2sH"),
        struct.Struct(order + "HH2s2xI"),
    )
    for little, order in ((True, "<"), (False, ">"))
}


def _element_bytes(tag: int, vr: str, value: bytes, encoding: Encoding) -> bytes | None:
    """A raw element's header and value; None for a value too long for its VR's 2-byte length,
    which pydicom's writer writes as UN."""
    implicit, little = encoding
    implicit_header, short_header, long_header = _HEADERS[little]
    long_vr = vr in EXPLICIT_VR_LENGTH_32
    if len(value) > 0xFFFF and not long_vr:
        return None
    group, element = tag >> 16, tag & 0xFFFF
    if implicit:
        return implicit_header.pack(group, element, len(value)) + value
    if long_vr:
        return long_header.pack(group, element, vr.encode(), len(value)) + value
    return short_header.pack(group, element, vr.encode(), len(value)) + value


_pynetdicom_encode = pynetdicom.service_class.encode


def encode(
    ds: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
) -> bytes | None:
    """pynetdicom's ``dsutils.encode``, which this stands in for: the encoded dataset, or None.

    An :class:`Answer` in its own encoding is written here: each raw element's header and
    value (those it was built with as they were encoded then), the others by pydicom's element
    writer; anything else, and a deflated transfer syntax, by pynetdicom's encoder.
    """
    encoding = (is_implicit_vr, is_little_endian)
    if deflated or not isinstance(ds, Answer) or ds.encoding != encoding:
        return _pynetdicom_encode(ds, is_implicit_vr, is_little_endian, deflated)
    encoded = ds.encoded
    parts = []
    for tag in sorted(ds.keys()):
        if tag & 0xFFFF == 0 and tag >> 16 > 6:
            continue  # a retired group length, which pydicom's writer leaves out too
        element: Any = ds.get_item(tag)
        known = encoded.get(tag)
        if known is not None and known[0] is element:
            parts.append(known[1])
            continue
        value = element.value if isinstance(element, RawDataElement) else None
        written = None
        if isinstance(value, bytes):
            written = _element_bytes(tag, element.VR or "", value, encoding)
        parts.append(_written(element, encoding) if written is None else written)
    return b"".join(parts)


def _written(element: Any, encoding: Encoding) -> bytes:
    """An element as pydicom's writer writes it (a long value of a short VR as UN)."""
    out = DicomBytesIO()
    out.is_implicit_VR, out.is_little_endian = encoding
    write_data_element(out, element, _UTF8)
    return out.getvalue()


def use_for_answers() -> None:
    """Put :func:`encode` in front of pynetdicom's where its service classes encode the
    identifiers they send (C-FIND answers among them); once is enough, again does nothing."""
    pynetdicom.service_class.encode = encode
