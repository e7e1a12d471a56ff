"""Pixel data access in a stored instance without reading it whole: one frame (as stored or
decoded to native little endian) and the value of a bulk data attribute, by byte range."""

from __future__ import annotations

import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from pydicom.encaps import get_frame
from pydicom.pixels import pixel_array
from pydicom.uid import JPEGBaseline8Bit

from dicomql.dicom import transcode as ts
from dicomql.dicom.parse import ParsedInstance
from dicomql.dicom.tags import PIXEL_DATA_KEY

OCTET_STREAM = "application/octet-stream"
_NATIVE_LITTLE = frozenset({ts.EXPLICIT_VR_LITTLE_ENDIAN, ts.IMPLICIT_VR_LITTLE_ENDIAN})
_ITEM, _SEQUENCE_DELIMITER = 0xFFFEE000, 0xFFFEE0DD


class StoredFile(Protocol):
    """A stored DICOM file as the storage that holds it gives it (``store.blobs.StoredBlob``):
    opened for reading, or read by byte range in chunks, so a frame is read without the rest."""

    def open(self) -> BinaryIO: ...

    def read_chunks(self, start: int = 0, end: int | None = None) -> Iterator[bytes]: ...


@dataclass(frozen=True)
class FrameChoice:
    media_type: str  # the multipart ``type`` parameter
    part_content_type: str
    as_stored: bool
    jpeg: bool = False  # decoded and re-encoded as JPEG baseline (ts.encode_jpeg_baseline)


JPEG = "image/jpeg"
_JPEG_BASELINE_TYPE = f"{JPEG}; transfer-syntax={JPEGBaseline8Bit}"


def negotiate_frames(
    ranked: list[Any], stored: str, bits_allocated: int | None = None
) -> FrameChoice | None:
    """The frame representation for an Accept list (PS3.18 8.7.3.3, Table 8.7.3-2).

    ``ranked`` holds parsed media types (``.type``, ``.params``), best first. Uncompressed
    frames are ``application/octet-stream`` (explicit VR little endian byte order); compressed
    frames are served as stored, in their own media type, when ``transfer-syntax=*`` or that
    media type is asked for. None when nothing acceptable can be served.
    """
    native = OCTET_STREAM, f"{OCTET_STREAM}; transfer-syntax={ts.EXPLICIT_VR_LITTLE_ENDIAN}"
    stored_type = OCTET_STREAM if ts.is_native(stored) else ts.FRAME_MEDIA_TYPES.get(stored)
    if not ranked:
        ranked = [_Media("multipart/related", {"type": OCTET_STREAM})]
    for media in ranked:
        if media.type not in ("multipart/related", "*/*"):
            continue
        part_type = media.params.get("type", OCTET_STREAM).lower()
        syntax = media.params.get("transfer-syntax")
        if part_type in (OCTET_STREAM, "*/*"):
            if syntax == ts.ANY and stored_type is not None:
                return FrameChoice(
                    stored_type,
                    f"{stored_type}; transfer-syntax={stored}",
                    stored_type != OCTET_STREAM,
                )
            if syntax in (None, ts.EXPLICIT_VR_LITTLE_ENDIAN) and ts.can_decode(stored):
                return FrameChoice(*native, False)
        elif part_type == stored_type and syntax in (None, ts.ANY, stored):
            return FrameChoice(part_type, f"{part_type}; transfer-syntax={stored}", True)
        elif (
            part_type == JPEG
            and syntax in (None, JPEGBaseline8Bit)
            and ts.can_transcode(stored, JPEGBaseline8Bit, True, bits_allocated)
        ):
            # Google's conformance statement lists image/jpeg with 1.2.840.10008.1.2.4.50 for
            # frames: 8-bit frames are re-encoded with Pillow.
            return FrameChoice(JPEG, _JPEG_BASELINE_TYPE, False, jpeg=True)
    return None


def jpeg_refusal(header: ParsedInstance) -> str | None:
    """Why the frames of ``header``'s instance cannot be re-encoded as JPEG, or None."""
    ds = header.dataset
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        return "Palette colour frames cannot be compressed lossily."
    if int(ds.get("PixelRepresentation", 0) or 0):
        return "Signed 8-bit frames cannot be re-encoded as JPEG baseline."
    return None


def frame_as_jpeg(stored: StoredFile, header: ParsedInstance, index: int) -> Iterator[bytes]:
    """Frame ``index`` decoded and re-encoded as JPEG baseline (unsigned 8-bit grey or
    colour data; see :func:`jpeg_refusal`)."""
    with stored.open() as file, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = pixel_array(file, index=index)
    yield ts.encode_jpeg_baseline(frame)


@dataclass(frozen=True)
class _Media:
    type: str
    params: dict[str, str]


def native_frames_location(
    file: BinaryIO,
    file_size: int,
    transfer_syntax: str,
    geometry: tuple[int | None, int | None, int | None, int | None, int | None],
) -> tuple[int, int] | None:
    """Where native pixel data lies, found from the index instead of parsing the header:
    ``(offset of the value, bytes per frame)``, or None when it cannot be confirmed.

    ``geometry`` is (Rows, Columns, BitsAllocated, NumberOfFrames, SamplesPerPixel). Pixel Data
    is normally the file's last element; its value then ends the file, so the element header
    sits just before ``file_size - length``. Reading those 8 or 12 bytes and finding
    (7FE0,0010) with exactly that length confirms it (PS3.5 7.1.2, 7.1.3); anything else (a
    trailing element, padding, an odd layout) returns None and the caller parses the header.
    """
    rows, columns, bits, frames, samples = geometry
    if transfer_syntax not in _NATIVE_LITTLE or not (rows and columns and bits) or bits % 8:
        return None
    frame_size = rows * columns * (samples or 1) * bits // 8
    length = frame_size * (frames or 1)
    length += length & 1  # PS3.5 7.1.1: values have even length
    implicit = transfer_syntax == ts.IMPLICIT_VR_LITTLE_ENDIAN
    head = 8 if implicit else 12
    offset = file_size - length
    if frame_size <= 0 or offset - head < 132:  # 128-byte preamble + "DICM" (PS3.10 7.1)
        return None
    file.seek(offset - head)
    header = file.read(head)
    if len(header) != head or header[:4] != _PIXEL_DATA_TAG:
        return None
    if implicit:
        (found,) = struct.unpack("<I", header[4:8])
    elif header[4:6] in (b"OW", b"OB") and header[6:8] == b"\0\0":
        (found,) = struct.unpack("<I", header[8:12])
    else:
        return None
    return (offset, frame_size) if found == length else None


_PIXEL_DATA_TAG = struct.pack("<HH", 0x7FE0, 0x0010)


def frame_bytes(
    stored: StoredFile, header: ParsedInstance, index: int, as_stored: bool
) -> Iterator[bytes]:
    """The bytes of frame ``index`` (from 0), streamed from the blob where they lie as stored."""
    ds = header.dataset
    syntax = header.transfer_syntax_uid
    bits = int(ds.get("BitsAllocated", 0) or 0)
    offset = header.pixel_data_offset
    if syntax in _NATIVE_LITTLE and offset is not None and bits and bits % 8 == 0:
        # PS3.5 8.1.1: native frames are contiguous, Rows x Columns x Samples x BitsAllocated/8.
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        size = int(ds.Rows) * int(ds.Columns) * samples * bits // 8
        start = offset + index * size
        yield from stored.read_chunks(start, start + size)
        return
    with stored.open() as file, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if as_stored and offset is not None and header.pixel_data_length is None:
            file.seek(offset)
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            # Reads the item headers and only the asked frame's fragments (PS3.5 A.4).
            data = get_frame(file, index, number_of_frames=frames)
        else:
            array = pixel_array(file, index=index)
            data = array.astype(array.dtype.newbyteorder("<")).tobytes()
    yield data


def bulkdata_chunks(
    stored: StoredFile, header: ParsedInstance, tag_path: str
) -> Iterator[bytes] | None:
    """The value bytes of the attribute at ``tag_path`` (``7FE00010``, ``00540016/0/00181072``),
    or None when there is no such binary attribute."""
    if tag_path.upper() == PIXEL_DATA_KEY:
        offset = header.pixel_data_offset
        if offset is None:
            return None
        length = header.pixel_data_length
        if length is None:
            length = _encapsulated_length(stored, offset)
        return stored.read_chunks(offset, offset + length)
    value: Any = header.dataset
    pieces = tag_path.split("/")
    try:
        for position, piece in enumerate(pieces):
            value = value[int(piece)] if position % 2 else value[int(piece, 16)].value
    except (KeyError, IndexError, ValueError, TypeError):
        return None
    if not isinstance(value, bytes | bytearray):
        return None
    return iter([bytes(value)])


def _encapsulated_length(stored: StoredFile, offset: int) -> int:
    # PS3.5 A.4: items (FFFE,E000) then the Sequence Delimitation Item (FFFE,E0DD).
    with stored.open() as file:
        file.seek(offset)
        position = offset
        while True:
            head = file.read(8)
            if len(head) < 8:
                return position - offset
            group, element, length = struct.unpack("<HHI", head)
            position += 8
            if group << 16 | element == _SEQUENCE_DELIMITER:
                return position - offset
            file.seek(length, 1)
            position += length
