"""A cheap, iterative walk over a PS3.10 file's elements that refuses what would make pydicom
recurse too deep or inflate too much (see :mod:`dicomql.dicom.limits`), before pydicom reads it."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from pydicom.datadict import dictionary_VR
from pydicom.uid import ExplicitVRLittleEndian

from dicomql.dicom.limits import MAX_INFLATED_BYTES, MAX_SEQUENCE_DEPTH
from dicomql.dicom.tags import EXPLICIT_VR_LENGTH_32

DEFLATED = "1.2.840.10008.1.2.1.99"
_IMPLICIT = "1.2.840.10008.1.2"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_UNDEFINED = 0xFFFFFFFF
# PS3.5 7.1.2: explicit VRs whose length is 4 bytes after 2 reserved ones, as written.
LONG_VRS = frozenset(vr.encode("ascii") for vr in EXPLICIT_VR_LENGTH_32)
_PIXEL_DATA = 0x7FE00010
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_CHUNK = 1024 * 1024


class LimitExceeded(ValueError):
    """The instance is beyond one of dicomql's limits; the message names it."""


class _MemoryReader:
    """Bytes of a data set held in memory (not deflated): slices of it, no buffering."""

    def __init__(self, data: bytes, position: int) -> None:
        self.data = data
        self.position = position

    def read(self, size: int) -> bytes:
        start = self.position
        data = self.data[start : start + size]
        self.position = start + len(data)
        return data

    def skip(self, size: int) -> None:
        self.position += size


class _Reader:
    """Bytes of the data set, inflated on the fly for the deflated transfer syntax."""

    def __init__(self, file: BinaryIO, deflated: bool) -> None:
        self.file = file
        self.inflater = zlib.decompressobj(-zlib.MAX_WBITS) if deflated else None
        self.buffer = b""
        self.position = 0

    def _fill(self, size: int) -> None:
        while len(self.buffer) < size:
            if self.inflater is None:
                data = self.file.read(max(size - len(self.buffer), 8))
            else:
                data = self.inflater.decompress(
                    self.inflater.unconsumed_tail or self.file.read(64 * 1024), _CHUNK
                )
                if self.position + len(self.buffer) + len(data) > MAX_INFLATED_BYTES:
                    raise LimitExceeded(
                        "The deflated data set inflates to more than"
                        f" {MAX_INFLATED_BYTES} bytes, the most dicomql accepts."
                    )
                if not data and not self.inflater.unconsumed_tail:
                    more = self.file.read(64 * 1024)
                    if not more:
                        return
                    data = self.inflater.decompress(more, _CHUNK)
            if not data:
                return
            self.buffer += data

    def read(self, size: int) -> bytes:
        self._fill(size)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        self.position += len(data)
        return data

    def skip(self, size: int) -> None:
        if self.inflater is None and size > len(self.buffer):
            self.file.seek(size - len(self.buffer), 1)
            self.position += size
            self.buffer = b""
            return
        while size > 0:
            taken = len(self.read(min(size, _CHUNK)))
            if not taken:
                return
            size -= taken


def check_structure(file: BinaryIO) -> None:
    """Walk the elements of the PS3.10 file at ``file``'s position without recursion; the
    position is restored afterwards. Files that are not PS3.10 pass (pydicom refuses them).

    Raises:
        LimitExceeded: sequences nested deeper than ``MAX_SEQUENCE_DEPTH``, or a deflated data
            set inflating to more than ``MAX_INFLATED_BYTES``.
    """
    start = file.tell()
    try:
        transfer_syntax = skip_file_meta(file)
        if transfer_syntax is not None:
            deflated = transfer_syntax == DEFLATED
            if isinstance(file, io.BytesIO) and not deflated:
                # In memory (STOW-RS, C-STORE): slices of it, without _Reader's buffering (the
                # walk was a third of the parse's CPU, docs/performance.md).
                # getvalue(): the bytes the file was made of, not a copy.
                _walk(_MemoryReader(file.getvalue(), file.tell()), transfer_syntax)
            else:
                _walk(_Reader(file, deflated), transfer_syntax)
    except (zlib.error, struct.error):
        pass  # damaged: pydicom's own reading reports it
    finally:
        file.seek(start)


def walk_explicit_little(data: bytes, position: int, elements: int | None = None) -> int | None:
    """Walk the explicit VR little endian data set in ``data`` from ``position``, where a
    top-level element starts, as :func:`check_structure` walks it: ``elements`` top-level
    elements (with all they nest), or all of them. Lets a reader of the same bytes run the
    check in step with its own walk (dicom/header_reader.py).

    Returns:
        The position after those elements; None when the walk ended before (the end of the
        data, or damage that pydicom's reading reports).

    Raises:
        LimitExceeded: sequences nested deeper than ``MAX_SEQUENCE_DEPTH``.
    """
    reader = _MemoryReader(data, position)
    try:
        walked_all = _walk(reader, ExplicitVRLittleEndian, elements)
    except struct.error:
        return None  # damaged: check_structure's walk ends here too
    return reader.position if walked_all else None


def data_set_start(data: bytes, start: int) -> int | None:
    """Where :func:`check_structure` starts walking the PS3.10 file at ``start`` in ``data``
    as explicit VR little endian (not deflated); None when it walks it otherwise, or not."""
    file = io.BytesIO(data)
    file.seek(start)
    try:
        transfer_syntax = skip_file_meta(file)
    except struct.error:
        return None  # check_structure walks nothing of such a file
    if transfer_syntax is None or transfer_syntax in (DEFLATED, _IMPLICIT, _BIG_ENDIAN):
        return None
    return file.tell()


def skip_file_meta(file: BinaryIO) -> str | None:
    """Read past the preamble and group 0002 (always explicit VR little endian, PS3.10 7.1);
    the transfer syntax, or None when this is not a PS3.10 file."""
    if file.read(132)[128:] != b"DICM":
        return None
    transfer_syntax = None
    for element, _vr, value in _file_meta_elements(file):
        if element == 0x0010:
            transfer_syntax = value.decode("ascii", "replace").strip("\x00 ")
    return transfer_syntax


def _file_meta_elements(file: BinaryIO) -> Iterator[tuple[int, bytes, bytes]]:
    """(element, VR, value) of each group 0002 element from ``file``'s position (just past
    ``DICM``); ``file`` is left at the first element of the data set."""
    while True:
        position = file.tell()
        header = file.read(8)
        if len(header) < 8:
            return
        group, element = struct.unpack("<HH", header[:4])
        if group != 0x0002:
            file.seek(position)
            return
        if header[4:6] in LONG_VRS:
            (length,) = struct.unpack("<I", file.read(4))
        else:
            (length,) = struct.unpack("<H", header[6:8])
        yield element, header[4:6], file.read(length)


def inflated(file: BinaryIO) -> Iterator[bytes]:
    """The PS3.10 bytes of the Deflated Explicit VR Little Endian instance at ``file`` as
    Explicit VR Little Endian, its data set inflated a chunk at a time (PS3.5 A.5 deflates the
    data set alone, so only the file meta's transfer syntax and group length change). Memory
    holds one chunk, not the data set pydicom would inflate whole.

    Raises:
        LimitExceeded: the data set inflates to more than ``MAX_INFLATED_BYTES``.
        zlib.error: the deflated stream is damaged.
    """
    preamble = file.read(132)
    meta = b""
    for element, vr, value in _file_meta_elements(file):
        if element == 0x0000:
            continue  # group length: recomputed below
        if element == 0x0010:
            value = ExplicitVRLittleEndian.encode("ascii") + b"\x00"  # UI padded to even length
        if vr in LONG_VRS:
            meta += struct.pack("<HH2s2xI", 0x0002, element, vr, len(value)) + value
        else:
            meta += struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value
    yield preamble + struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(meta)) + meta
    reader = _Reader(file, deflated=True)
    while chunk := reader.read(_CHUNK):
        yield chunk


def _walk(
    reader: _Reader | _MemoryReader, transfer_syntax: str, elements: int | None = None
) -> bool:
    """Walk the data set from the reader's position: ``elements`` top-level elements, or all.
    True when it walked them all, False when the data ended first."""
    order = ">" if transfer_syntax == _BIG_ENDIAN else "<"
    # Built once a walk, not once an element (the format strings and struct's cache lookups
    # were a fifth of the walk).
    tag_of = struct.Struct(f"{order}HH").unpack_from
    long_of = struct.Struct(f"{order}I").unpack_from
    short_of = struct.Struct(f"{order}H").unpack_from
    base_explicit = transfer_syntax != _IMPLICIT
    # Open containers: (is a sequence, end position or None when undefined, explicit VR inside).
    open_: list[tuple[bool, int | None, bool]] = []
    depth = 0
    left = -1 if elements is None else elements  # top-level elements still to walk
    while True:
        while open_ and open_[-1][1] is not None and reader.position >= (open_[-1][1] or 0):
            if open_.pop()[0]:
                depth -= 1
        if not open_:
            if left == 0:
                return True
            left -= 1
        header = reader.read(8)
        if len(header) < 8:
            return False
        group, element = tag_of(header)
        tag = group << 16 | element
        explicit = open_[-1][2] if open_ else base_explicit
        if group == 0xFFFE:
            (length,) = long_of(header, 4)
            if tag == _ITEM and open_ and open_[-1][0]:
                end = None if length == _UNDEFINED else reader.position + length
                open_.append((False, end, explicit))
            elif tag == _ITEM_END:
                while open_ and open_[-1][0]:  # tolerate a missing sequence delimiter
                    open_.pop()
                    depth -= 1
                if open_:
                    open_.pop()
            elif tag == _SEQUENCE_END:
                while open_:
                    if open_.pop()[0]:
                        depth -= 1
                        break
            elif length != _UNDEFINED:
                reader.skip(length)
            continue
        if explicit:
            vr = header[4:6]
            if vr in LONG_VRS:
                (length,) = long_of(reader.read(4))
            else:
                (length,) = short_of(header, 6)
        else:
            (length,) = long_of(header, 4)
            vr = b"SQ" if _dictionary_vr(tag) == "SQ" else b"UN"
        if tag == _PIXEL_DATA and length == _UNDEFINED:
            _skip_fragments(reader, order)
            continue
        # PS3.5 6.2.2: UN of undefined length is a sequence encoded in implicit VR.
        if vr == b"SQ" or length == _UNDEFINED:
            depth += 1
            if depth > MAX_SEQUENCE_DEPTH:
                raise LimitExceeded(
                    f"Sequences are nested more than {MAX_SEQUENCE_DEPTH} deep (at"
                    f" ({group:04X},{element:04X})), the most dicomql accepts."
                )
            end = None if length == _UNDEFINED else reader.position + length
            open_.append((True, end, explicit and vr == b"SQ"))
            continue
        reader.skip(length)


def _skip_fragments(reader: _Reader | _MemoryReader, order: str) -> None:
    """Encapsulated pixel data (PS3.5 A.4): items of defined length up to the delimiter."""
    while True:
        header = reader.read(8)
        if len(header) < 8:
            return
        group, element = struct.unpack(f"{order}HH", header[:4])
        (length,) = struct.unpack(f"{order}I", header[4:8])
        if (group << 16 | element) == _SEQUENCE_END or length == _UNDEFINED:
            return
        reader.skip(length)


def _dictionary_vr(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None
