"""PS3.10 instances built from DICOM JSON (PS3.18 Annex F) and bulk data: what a STOW-RS
"metadata and bulk data" request (PS3.18 10.5.1.4 / 10.5.2) carries instead of PS3.10 files.

pydicom reads the JSON (``Dataset.from_json``); values given as ``BulkDataURI`` are looked up
with the caller's resolver, ``InlineBinary`` values are decoded by pydicom. The file meta comes
from the JSON's own group 0002 when present (its TransferSyntaxUID decides the encoding), else
Explicit VR Little Endian; Pixel Data is encapsulated only when that transfer syntax is a
compressed one (PS3.5 A.4), one fragment a frame.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from io import BufferedIOBase
from typing import IO, Any

import PIL.Image
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_buffer
from pydicom.fileutil import buffer_length, reset_buffer_position
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID, ExplicitVRLittleEndian
from pydicom.valuerep import BUFFERABLE_VRS

from dicomql.dicom.parse import UnreadableInstance
from dicomql.dicom.tags import SOP_CLASS_UID_KEY as _SOP_CLASS_UID
from dicomql.dicom.tags import SOP_INSTANCE_UID_KEY as _SOP_INSTANCE_UID

_PIXEL_DATA = 0x7FE00010
_ITEM_TAG = b"\xfe\xff\x00\xe0"  # (FFFE,E000) little endian: the Basic Offset Table item
# JPEG Baseline and Extended: bitstreams whose header Pillow reads (PS3.18 Table 10.5.2-1).
_JPEG_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"})

# Resolves a BulkDataURI to its value, a readable seekable binary file (pydicom writes O* values
# from it in chunks, so bulk data never sits in memory); KeyError when the request lacks it.
BulkResolver = Callable[[str], IO[bytes]]


class UnbuildableInstance(UnreadableInstance):
    """A DICOM JSON object that cannot become a PS3.10 instance; the message says why, and the
    SOP UIDs are those the object names (for the Failed SOP Sequence), when it names them."""


def parse_metadata(raw: bytes) -> list[Any]:
    """The DICOM JSON objects of one ``application/dicom+json`` part: an array of objects
    (PS3.18 F.2.1.1); a single object is taken as an array of one.

    Raises:
        UnbuildableInstance: not UTF-8 JSON, or neither an object nor an array.
    """
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise UnbuildableInstance(f"The DICOM JSON metadata part is not valid JSON: {exc}") from exc
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, list):
        raise UnbuildableInstance(
            "The DICOM JSON metadata part is not an array of DICOM JSON objects (PS3.18 F.2.1.1)."
        )
    return value


def write_instance(model: Any, resolve: BulkResolver, out: IO[bytes]) -> None:
    """Write the PS3.10 file of one DICOM JSON object to ``out``.

    Raises:
        UnbuildableInstance: not an object, no SOP Class or SOP Instance UID, a BulkDataURI the
            request does not carry, or values pydicom cannot read or write.
    """
    if not isinstance(model, dict):
        raise UnbuildableInstance("A DICOM JSON instance is not a JSON object (PS3.18 F.2.1.1).")
    sop_class = _uid_of(model, _SOP_CLASS_UID)
    sop_instance = _uid_of(model, _SOP_INSTANCE_UID)
    if sop_class is None or sop_instance is None:
        raise UnbuildableInstance(
            "The DICOM JSON instance has no SOPClassUID (0008,0016) or SOPInstanceUID (0008,0018).",
            sop_class,
            sop_instance,
        )

    def bulk(tag: str, vr: str, uri: str) -> bytes | IO[bytes]:
        try:
            buffer = resolve(uri)
        except KeyError:
            raise UnbuildableInstance(
                f"BulkDataURI {uri!r} of ({tag[:4]},{tag[4:]}) names no part of the request"
                " (no part has it as Content-Location).",
                sop_class,
                sop_instance,
            ) from None
        buffer.seek(0)
        if (
            isinstance(buffer, BufferedIOBase)
            and vr in BUFFERABLE_VRS
            and buffer_length(buffer) % 2 == 0
        ):
            return buffer
        # An odd length or a VR pydicom cannot write from a file: read it, pydicom pads it.
        return buffer.read()

    try:
        # pydicom 3 takes a buffered bulk value (written without reading it whole); its
        # BulkDataType annotation leaves buffers out.
        dataset = Dataset.from_json(model, bulk_data_uri_handler=bulk)  # type: ignore[arg-type]
        meta = FileMetaDataset(dataset.group_dataset(0x0002))
        for tag in list(meta.keys()):
            del dataset[tag]
        if "TransferSyntaxUID" not in meta:
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = UID(sop_class)
        meta.MediaStorageSOPInstanceUID = UID(sop_instance)
        dataset.file_meta = meta
        syntax = UID(meta.TransferSyntaxUID)
        if syntax.is_compressed and _PIXEL_DATA in dataset:
            _encapsulate_pixel_data(dataset)
        dcmwrite(out, dataset, enforce_file_format=True)
    except UnbuildableInstance:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
        # pydicom's refusals of values it cannot read (from_json) or encode (dcmwrite).
        raise UnbuildableInstance(
            f"The DICOM JSON instance cannot be encoded as PS3.10: {exc}", sop_class, sop_instance
        ) from exc


def _uid_of(model: dict[str, Any], tag: str) -> str | None:
    element = model.get(tag)
    if not isinstance(element, dict):
        return None
    value = element.get("Value")
    if isinstance(value, list) and value and isinstance(value[0], str) and value[0]:
        return value[0]
    return None


def _encapsulate_pixel_data(dataset: Dataset) -> None:
    """Pixel Data sent as the compressed bitstream of its frame (PS3.18 8.7.3.3.2, e.g. an
    ``image/jpeg`` part) becomes encapsulated; already-encapsulated data is kept as sent."""
    element = dataset[_PIXEL_DATA]
    value: bytes | BufferedIOBase = element.value
    if isinstance(value, BufferedIOBase):
        with reset_buffer_position(value):
            start = value.read(len(_ITEM_TAG))
    elif isinstance(value, bytes):
        start = value[: len(_ITEM_TAG)]
    else:
        raise UnbuildableInstance("Pixel Data of a compressed transfer syntax has no bytes.")
    if start != _ITEM_TAG:
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        if frames != 1:
            raise UnbuildableInstance(
                f"Pixel Data of {frames} frames in a compressed transfer syntax must be sent"
                " encapsulated (PS3.5 A.4); one bitstream can only be one frame."
            )
        if UID(dataset.file_meta.TransferSyntaxUID) in _JPEG_SYNTAXES:
            _fill_image_pixel_from_jpeg(dataset, value)
        if isinstance(value, BufferedIOBase):
            value = encapsulate_buffer([value])
        else:
            value = encapsulate([value])
    element.VR = "OB"
    element.value = value
    element.is_undefined_length = True


def _fill_image_pixel_from_jpeg(dataset: Dataset, bitstream: bytes | BufferedIOBase) -> None:
    """PS3.18 10.5.2 (Table 10.5.2-1): with a compressed bulk data part the metadata may leave
    out the Image Pixel Description attributes; the origin server takes them from the bitstream.
    Read from the JPEG header (Pillow reads no pixels here); values the metadata has are kept."""
    source = io.BytesIO(bitstream) if isinstance(bitstream, bytes) else bitstream
    position = source.tell()
    try:
        # Pillow reads any binary file object; typeshed's BufferedIOBase is not an IO[bytes].
        with PIL.Image.open(source) as image:  # type: ignore[arg-type]
            columns, rows = image.size
            mode = image.mode
            layers = getattr(image, "layer", [])
    except (OSError, ValueError) as exc:
        raise UnbuildableInstance(f"Pixel Data is not a JPEG bitstream: {exc}") from exc
    finally:
        source.seek(position)
    if mode == "L":
        samples, photometric = 1, "MONOCHROME2"
    elif mode == "RGB":
        # Chroma subsampled when the luminance component is sampled more often (PS3.3 C.7.6.3.1.2).
        subsampled = bool(layers) and any(layer[1:3] != layers[0][1:3] for layer in layers[1:])
        samples, photometric = 3, "YBR_FULL_422" if subsampled else "YBR_FULL"
    else:
        raise UnbuildableInstance(f"A JPEG bitstream of mode {mode} has no DICOM photometric form.")
    defaults: dict[str, Any] = {
        "Rows": rows,
        "Columns": columns,
        "SamplesPerPixel": samples,
        "PhotometricInterpretation": photometric,
        "BitsAllocated": 8,
        "BitsStored": 8,
        "HighBit": 7,
        "PixelRepresentation": 0,
    }
    if samples == 3:
        defaults["PlanarConfiguration"] = 0
    for keyword, value in defaults.items():
        if keyword not in dataset:
            setattr(dataset, keyword, value)
