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
_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
_INTEGER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "UV": "Q", "SV": "q"}
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


class Answer(Dataset):
    """A C-FIND answer whose raw elements are encoded as ``encoding`` says."""

    encoding: Encoding


def answer_identifier(
    match: dict[str, Any], wanted: list[tuple[BaseTag, str]], level_name: str, encoding: Encoding
) -> Answer:
    """The requested keys of a match (DICOM JSON), empty where the match has none.

    Text and integer values become raw elements encoded in ``encoding`` (UTF-8 text, as the
    Specific Character Set says); anything else (sequences, binary, floating point and decimal
    numbers, bulk data) is converted by pydicom.
    """
    implicit, little = encoding
    answer = Answer()
    answer.encoding = encoding
    answer.set_original_encoding(implicit, little, _UTF8_ENCODINGS)
    answer[_CHARACTER_SET] = _raw(_CHARACTER_SET, "CS", _padded(_UTF8, "CS"), encoding)
    answer[_LEVEL] = _raw(_LEVEL, "CS", _padded(level_name, "CS"), encoding)
    for tag, key in wanted:
        item = match.get(key)
        if item is None:
            answer[tag] = _raw(tag, _vr_of(tag), b"", encoding)
            continue
        vr = item["vr"]
        value = _encoded(vr, item["Value"], little) if "Value" in item else None
        if value is None and len(item) == 1:  # present without a value
            value = b""
        if value is None:
            answer[tag] = Dataset.from_json({key: item})[tag]
        else:
            answer[tag] = _raw(tag, vr, value, encoding)
    return answer


def _raw(tag: BaseTag, vr: str, value: bytes, encoding: Encoding) -> RawDataElement:
    return RawDataElement(tag, vr, len(value), value, 0, *encoding)


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


def _vr_of(tag: Any) -> str:
    """The dictionary VR of a tag; the first of an ambiguous pair (the value is empty)."""
    try:
        return str(dictionary_VR(tag)).split(" or ")[0]
    except KeyError:
        return "UN"


_pynetdicom_encode = pynetdicom.service_class.encode


def encode(
    ds: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
) -> bytes | None:
    """pynetdicom's ``dsutils.encode``, which this stands in for: the encoded dataset, or None.

    An :class:`Answer` in its own encoding is written here: each raw element's header (PS3.5
    7.1.2, 7.1.3) and value, the others by pydicom's element writer; anything else, and a
    deflated transfer syntax, by pynetdicom's encoder.
    """
    encoding = (is_implicit_vr, is_little_endian)
    if deflated or not isinstance(ds, Answer) or ds.encoding != encoding:
        return _pynetdicom_encode(ds, is_implicit_vr, is_little_endian, deflated)
    order = "<" if is_little_endian else ">"
    implicit_header = struct.Struct(order + "HHI")
    short_header = struct.Struct(order + "HH2sH")
    long_header = struct.Struct(order + "HH2s2xI")
    out = DicomBytesIO()
    out.is_implicit_VR, out.is_little_endian = encoding
    for tag in sorted(ds.keys()):
        if tag.element == 0 and tag.group > 6:
            continue  # a retired group length, which pydicom's writer leaves out too
        element = ds.get_item(tag)
        value = element.value if isinstance(element, RawDataElement) else None
        vr = element.VR or ""
        if not isinstance(value, bytes) or (
            len(value) > 0xFFFF and vr not in EXPLICIT_VR_LENGTH_32
        ):
            write_data_element(out, element, _UTF8)  # pydicom's, which makes a long value UN
        elif is_implicit_vr:
            out.write(implicit_header.pack(tag.group, tag.element, len(value)) + value)
        elif vr in EXPLICIT_VR_LENGTH_32:
            out.write(long_header.pack(tag.group, tag.element, vr.encode(), len(value)) + value)
        else:
            out.write(short_header.pack(tag.group, tag.element, vr.encode(), len(value)) + value)
    return out.getvalue()


def use_for_answers() -> None:
    """Put :func:`encode` in front of pynetdicom's where its service classes encode the
    identifiers they send (C-FIND answers among them); once is enough, again does nothing."""
    pynetdicom.service_class.encode = encode
