"""Transfer syntax negotiation and conversion for WADO-RS (PS3.18 8.7.3): which conversions
pydicom and its pixel handlers can make, and making them one instance at a time."""

from __future__ import annotations

import io
import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image
from pydicom import Dataset, dcmread, dcmwrite
from pydicom import uid as uids
from pydicom.encaps import encapsulate
from pydicom.pixels import pixel_array
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
FRAME_MEDIA_TYPES: dict[str, str] = {
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


def decode_mislabelled(ds: Dataset) -> None:
    """Decode every element of a data set encoded otherwise than its transfer syntax says.

    pydicom reads such a file (pydicom's ``SC_rgb_jpeg.dcm`` declares explicit VR and is
    implicit) by the encoding it finds, leaving values raw and without VRs; writing them in the
    declared syntax then fails ("encoding without a string argument"). Decoded elements take
    their VRs from the data dictionary and are written in the declared syntax.
    """
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is None or not syntax.is_transfer_syntax or syntax.is_implicit_VR:
        return
    tags = ds.keys()  # iterating the Dataset itself would convert every element
    if any(ds.get_item(tag).VR is None for tag in tags):
        for _ in ds.iterall():  # converts each raw element in place, VR from the dictionary
            pass


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


def can_transcode(
    source: str, target: str, has_pixels: bool = True, bits_allocated: int | None = None
) -> bool:
    """Whether an instance stored in ``source`` can be served in ``target``.

    JPEG baseline (8-bit) is encoded with Pillow, for 8-bit pixel data only
    (``bits_allocated``): a 12- or 16-bit image would have to be windowed down, which is
    rendering, not transcoding.

    >>> can_transcode("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
    True
    >>> can_transcode("1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50", True, 8)
    True
    >>> can_transcode("1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50", True, 16)
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
    if target == uids.JPEGBaseline8Bit:
        return bits_allocated == 8 and can_decode(source)
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
            decode_mislabelled(ds)
            source = ds.file_meta.TransferSyntaxUID
            has_pixels = "PixelData" in ds
            big_endian = source == uids.ExplicitVRBigEndian
            if target == uids.JPEGBaseline8Bit and has_pixels:
                _compress_jpeg_baseline(ds)  # decodes from the stored syntax itself
            elif has_pixels and big_endian:
                # Decoded values are re-encoded by the writer; only the pixel bytes (OW) need
                # swapping by hand (pydicom refuses to convert endianness on its own).
                array = ds.pixel_array
                ds.PixelData = array.astype(array.dtype.newbyteorder("<")).tobytes()
            elif has_pixels and not is_native(source):
                ds.decompress()
            if target == uids.JPEGBaseline8Bit and has_pixels:
                pass
            elif target not in _LITTLE_ENDIAN_NATIVE and has_pixels:
                ds.compress(target)
            elif target not in _LITTLE_ENDIAN_NATIVE:
                target = EXPLICIT_VR_LITTLE_ENDIAN
            ds.file_meta.TransferSyntaxUID = uids.UID(target)
            buffer = io.BytesIO()
            if big_endian:
                implicit = target == IMPLICIT_VR_LITTLE_ENDIAN
                dcmwrite(buffer, ds, implicit_vr=implicit, little_endian=True, force_encoding=True)
            else:
                ds.save_as(buffer, enforce_file_format=True)
    except (ValueError, RuntimeError, NotImplementedError, TypeError, AttributeError) as exc:
        raise TranscodeError(f"Cannot transcode to {target}: {exc}") from exc
    return buffer.getvalue()


# A choice: quality 90 of libjpeg's scale keeps diagnostic detail at about 1:10 (Pillow's
# default of 75 is meant for photographs).
JPEG_BASELINE_QUALITY = 90


def encode_jpeg_baseline(frame: np.ndarray) -> bytes:
    """One decoded 8-bit frame (rows x columns, or x 3 as RGB) as a JPEG baseline stream,
    colour subsampled 4:2:2 (YBR_FULL_422, PS3.5 8.2.1)."""
    colour = frame.ndim == 3
    image = Image.fromarray(np.ascontiguousarray(frame), "RGB" if colour else "L")
    buffer = io.BytesIO()
    if colour:
        image.save(buffer, "JPEG", quality=JPEG_BASELINE_QUALITY, subsampling="4:2:2")
    else:
        image.save(buffer, "JPEG", quality=JPEG_BASELINE_QUALITY)
    return buffer.getvalue()


def _compress_jpeg_baseline(ds: Dataset) -> None:
    """Re-encode decoded 8-bit pixel data as JPEG baseline (PS3.5 A.4.1, 8.2.1) with Pillow,
    one fragment a frame; colour becomes YBR_FULL_422 (Pillow's 4:2:2 YCbCr), as PS3.5 8.2.1
    requires of lossy JPEG colour."""
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if int(ds.get("BitsAllocated", 0) or 0) != 8 or int(ds.get("PixelRepresentation", 0)):
        raise ValueError("JPEG baseline holds unsigned 8-bit samples only")
    if samples not in (1, 3):
        raise ValueError(f"JPEG baseline holds 1 or 3 samples a pixel, not {samples}")
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        raise ValueError("palette indices cannot be compressed lossily")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    fragments = []
    stored_size = 0
    for index in range(frames):  # one frame decoded at a time; colour as RGB
        frame = pixel_array(ds, index=index)
        stored_size += frame.nbytes
        fragments.append(encode_jpeg_baseline(frame))
    if samples == 3:
        ds.PhotometricInterpretation = "YBR_FULL_422"  # what Pillow's JPEG holds
        ds.PlanarConfiguration = 0
    ds.PixelData = encapsulate(fragments)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.BitsStored, ds.HighBit = 8, 7
    # PS3.3 C.7.6.1.1.5: the image has been lossy compressed, with which method and ratio.
    ratio = stored_size / max(1, sum(len(f) for f in fragments))
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = [f"{ratio:.2f}"[:16]]
    ds.LossyImageCompressionMethod = ["ISO_10918_1"]
    if frames > 1:
        ds.NumberOfFrames = frames
