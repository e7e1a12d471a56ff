"""The command sets of C-ECHO, C-STORE and C-FIND messages, encoded and decoded directly.

pynetdicom builds a pydicom Dataset of every element of a response's command set and encodes
it twice (once to learn the group length), a tenth of a C-STORE's CPU, and reads a request's
through a pydicom Dataset too. :func:`command_set` and :func:`request` do the same for these
three messages with their elements as bytes (PS3.7 6.3.1, E.1); anything else is left to
pynetdicom (:class:`dicomql.dimse.transport._DIMSE` uses them).
"""

from __future__ import annotations

import struct
from typing import Any

from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_STORE

# PS3.7 E.1 Command Field of each response encoded here.
_RESPONSE_COMMANDS: dict[type[Any], int] = {C_STORE: 0x8001, C_FIND: 0x8020, C_ECHO: 0x8030}
_NO_DATA_SET = 0x0101  # Command Data Set Type (0000,0800): no data set follows
_HAS_DATA_SET = 0x0001


def _element(tag: int, value: bytes) -> bytes:
    """One implicit VR little endian element of group 0000 (PS3.7 6.3.1)."""
    return struct.pack("<HHI", 0x0000, tag, len(value)) + value


def uid_value(value: object) -> bytes:
    """A UID as the bytes of its element's value: ASCII, padded with NUL to an even length."""
    encoded = str(value).encode("ascii")
    return encoded + b"\0" if len(encoded) % 2 else encoded


def command_set(primitive: Any) -> bytes | None:
    """A C-ECHO, C-STORE or C-FIND response's command set, encoded as pynetdicom's
    ``primitive_to_message`` and ``encode_msg`` encode it; None for anything else (another
    message, an Offending Element, an Error Comment that is not ASCII), left to pynetdicom."""
    command = _RESPONSE_COMMANDS.get(type(primitive))
    if command is None or primitive.MessageIDBeingRespondedTo is None:
        return None
    if getattr(primitive, "OffendingElement", None) is not None:
        return None
    comment = primitive.ErrorComment
    try:
        comment = None if comment is None else str(comment).encode("ascii")
    except UnicodeEncodeError:
        return None
    identifier = getattr(primitive, "Identifier", None)
    elements = []
    if primitive.AffectedSOPClassUID is not None:
        elements.append(_element(0x0002, uid_value(primitive.AffectedSOPClassUID)))
    elements += [
        _element(0x0100, struct.pack("<H", command)),
        _element(0x0120, struct.pack("<H", primitive.MessageIDBeingRespondedTo)),
        _element(0x0800, struct.pack("<H", _HAS_DATA_SET if identifier else _NO_DATA_SET)),
    ]
    if primitive.Status is not None:
        elements.append(_element(0x0900, struct.pack("<H", primitive.Status)))
    if comment is not None:
        elements.append(_element(0x0902, comment + b" " * (len(comment) % 2)))
    if getattr(primitive, "AffectedSOPInstanceUID", None) is not None:
        elements.append(_element(0x1000, uid_value(primitive.AffectedSOPInstanceUID)))
    body = b"".join(elements)
    return _element(0x0000, struct.pack("<I", len(body))) + body


# The requests decoded here: Command Field -> primitive, and its data set's parameter, if any.
_REQUESTS: dict[int, tuple[type[Any], str | None]] = {
    0x0001: (C_STORE, "DataSet"),
    0x0020: (C_FIND, "Identifier"),
    0x0030: (C_ECHO, None),
}
# The command elements of those requests: element -> parameter (None: read here, not set).
_REQUEST_ELEMENTS: dict[int, str | None] = {
    0x0000: None,  # Command Group Length
    0x0002: "AffectedSOPClassUID",
    0x0100: None,  # Command Field
    0x0110: "MessageID",
    0x0700: "Priority",
    0x0800: None,  # Command Data Set Type
    0x1000: "AffectedSOPInstanceUID",
}
_UID_ELEMENTS = (0x0002, 0x1000)


def request(encoded: bytes) -> tuple[Any, str | None] | None:
    """A C-ECHO, C-STORE or C-FIND request's primitive from its command set (without its data
    set) and the parameter its data set goes to (None: it has none), as pynetdicom's
    ``decode_msg`` and ``message_to_primitive`` make it; None for anything else (another
    message, another element such as a C-MOVE's originator, a value pynetdicom would convert
    otherwise), left to pynetdicom.

    Raises:
        ValueError: a value the primitive refuses (pynetdicom's "invalid DIMSE message").
    """
    values: dict[int, bytes] = {}
    position = 0
    while position < len(encoded):
        if len(encoded) - position < 8:
            return None
        group, element, length = struct.unpack_from("<HHI", encoded, position)
        value = encoded[position + 8 : position + 8 + length]
        if group != 0x0000 or element not in _REQUEST_ELEMENTS or len(value) != length:
            return None
        if not value or (element not in _UID_ELEMENTS and element != 0x0000 and length != 2):
            return None
        values[element] = value
        position += 8 + length
    command = values.get(0x0100)
    found = None if command is None else _REQUESTS.get(struct.unpack("<H", command)[0])
    kind = values.get(0x0800)
    if found is None or kind is None:
        return None
    primitive_class, parameter = found
    primitive = primitive_class()
    for element, value in values.items():
        name = _REQUEST_ELEMENTS[element]
        if name is None:
            continue
        if not hasattr(primitive, name):
            return None  # an element this request does not have: pynetdicom's
        if element in _UID_ELEMENTS:
            if not value.isascii() or b"\\" in value:
                return None  # pydicom would decode it otherwise, or as several values
            text = value.decode("ascii").rstrip("\0 ")
            if not text:
                return None
            setattr(primitive, name, text)
        else:
            setattr(primitive, name, struct.unpack("<H", value)[0])
    has_data_set = struct.unpack("<H", kind)[0] != _NO_DATA_SET
    if has_data_set and parameter is None:
        return None
    return primitive, parameter if has_data_set else None
