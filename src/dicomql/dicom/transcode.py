"""Transfer syntax negotiation and conversion for WADO-RS (PS3.18 8.7.3): which conversions
pydicom and its pixel handlers can make, and making them one instance at a time."""

from __future__ import annotations

import io
import warnings
from typing import BinaryIO

from pydicom import dcmread, dcmwrite
from pydicom import uid as uids
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import get_encoder

ANY = "*"
EXPLICIT_VR_LITTLE_ENDIAN = uids.ExplicitVRLittleEndian
IMPLICIT_VR_LITTLE_ENDIAN = uids.ImplicitVRLittleEndian
# PS3.18 8.7.3.5.2: the default transfer syntax of application/dicom.
DEFAULT = EXPLICIT_VR_LITTLE_ENDIAN
_LITTLE_ENDIAN_NATIVE = frozenset({EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN})
_NATIVE = _LITTLE_ENDIAN_NATIVE | {uids.ExplicitVRBigEndian, uids.DeflatedExplicitVRLittleEndian}

# PS3.18 Table 8.7.3-2 (and Google's conformance statement): the single-frame media type of a
# stored compressed transfer syntax, for frames retrieved as stored.
FRAME_MEDIA_TYPES = {
    uids.JPEGBaseline8Bit: "image/jpeg",
    uids.JPEGExtended12Bit: "image/jpeg",
    uids.JPEGLossless: "image/jpeg",
    uids.JPEGLosslessSV1: "image/jpeg",
    uids.JPEGLSLossless: "image/jls",
    uids.JPEGLSNearLossless: "image/jls",
    uids.JPEG2000Lossless: "image/jp2",
    uids.JPEG2000: "image/jp2",
    uids.HTJ2KLossless: "image/jphc",
    uids.HTJ2KLosslessRPCL: "image/jphc",
    uids.HTJ2K: "image/jphc",
    uids.RLELossless: "image/x-dicom-rle",
}


class TranscodeError(ValueError):
    """pydicom cannot convert this instance to the requested transfer syntax."""


def is_native(transfer_syntax: str) -> bool:
    return transfer_syntax in _NATIVE


def can_decode(transfer_syntax: str) -> bool:
    if transfer_syntax in _NATIVE:
        return True
    try:
        return bool(get_decoder(transfer_syntax).is_available)
    except NotImplementedError:
        return False


def can_encode(transfer_syntax: str) -> bool:
    try:
        return bool(get_encoder(transfer_syntax).is_available)
    except NotImplementedError:
        return False


def can_transcode(source: str, target: str, has_pixels: bool = True) -> bool:
    """Whether an instance stored in ``source`` can be served in ``target``.

    >>> can_transcode("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
    True
    >>> can_transcode("1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50")
    False
    """
    if target in (ANY, source):
        return True
    if target in _LITTLE_ENDIAN_NATIVE:
        return not has_pixels or can_decode(source)
    if not has_pixels:
        return True  # no pixel data to compress: served in explicit VR little endian
    if target in _NATIVE:
        return False  # big endian and deflate are retired or unsupported for writing here
    return can_decode(source) and can_encode(target)


def served_syntax(source: str, target: str, has_pixels: bool = True) -> str:
    """The transfer syntax actually served for ``target`` (``*`` means as stored)."""
    if target in (ANY, source):
        return source
    if target not in _LITTLE_ENDIAN_NATIVE and not has_pixels:
        return EXPLICIT_VR_LITTLE_ENDIAN
    return target


def transcode(file: BinaryIO, target: str) -> bytes:
    """The PS3.10 bytes of the instance in ``file`` re-encoded in ``target``.

    Raises:
        TranscodeError: decoding or encoding failed (a handler missing or the data invalid).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(file)
            source = ds.file_meta.TransferSyntaxUID
            has_pixels = "PixelData" in ds
            big_endian = source == uids.ExplicitVRBigEndian
            if has_pixels and big_endian:
                # Decoded values are re-encoded by the writer; only the pixel bytes (OW) need
                # swapping by hand (pydicom refuses to convert endianness on its own).
                array = ds.pixel_array
                ds.PixelData = array.astype(array.dtype.newbyteorder("<")).tobytes()
            elif has_pixels and not is_native(source):
                ds.decompress()
            if target not in _LITTLE_ENDIAN_NATIVE and has_pixels:
                ds.compress(target)
            elif target not in _LITTLE_ENDIAN_NATIVE:
                target = EXPLICIT_VR_LITTLE_ENDIAN
            ds.file_meta.TransferSyntaxUID = target
            buffer = io.BytesIO()
            if big_endian:
                implicit = target == IMPLICIT_VR_LITTLE_ENDIAN
                dcmwrite(buffer, ds, implicit_vr=implicit, little_endian=True, force_encoding=True)
            else:
                ds.save_as(buffer, enforce_file_format=True)
    except (ValueError, RuntimeError, NotImplementedError, TypeError, AttributeError) as exc:
        raise TranscodeError(f"Cannot transcode to {target}: {exc}") from exc
    return buffer.getvalue()
