"""Reading what the index needs from a stored PS3.10 file: its UIDs, its indexed attributes per
level, its DICOM JSON, and where its pixel data starts, without reading the pixel data."""

from __future__ import annotations

import functools
import io
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pydicom import Dataset, dcmread
from pydicom.dataelem import RawDataElement
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.tag import Tag

from dicomql.dicom.attributes import INDEXED_ATTRIBUTES, Level
from dicomql.dicom.header_reader import read_explicit_little
from dicomql.dicom.jsonmodel import dataset_to_dicom_json, relative_bulkdata_uri
from dicomql.dicom.structure import LimitExceeded, check_structure
from dicomql.dicom.tags import PIXEL_DATA_KEY
from dicomql.dicom.uids import uid_problem

PIXEL_DATA = 0x7FE00010
_PIXEL_TAGS = {0x7FE00008: "OF", 0x7FE00009: "OD", PIXEL_DATA: None}
_INTEGER_VRS = frozenset({"IS", "US", "UL", "SS", "SL"})
# PS3.5 Annex A: the little endian transfer syntaxes whose data set is implicit VR.
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"


class UnreadableInstance(ValueError):
    """The bytes are not a DICOM PS3.10 file the store can index.

    ``sop_class_uid`` and ``sop_instance_uid`` are what the file says, when it could be read
    that far (a STOW-RS response names them in its Failed SOP Sequence).
    """

    def __init__(
        self, message: str, sop_class_uid: str | None = None, sop_instance_uid: str | None = None
    ) -> None:
        super().__init__(message)
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid


@dataclass
class ParsedInstance:
    """The header of one instance, as the index stores it."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str | None
    transfer_syntax_uid: str
    dataset: Dataset = field(repr=False)
    # Where the pixel data element's value starts in the file (None without pixel data).
    pixel_data_offset: int | None = None
    pixel_data_vr: str | None = None
    # The value length, or None when undefined (encapsulated pixel data, PS3.5 A.4).
    pixel_data_length: int | None = None
    _model: dict[str, Any] | None = field(default=None, init=False, repr=False)

    @functools.cached_property
    def _index_values(self) -> tuple[dict[Level, dict[str, Any]], dict[str, str]]:
        return index_values(self.dicom_json())

    @property
    def columns(self) -> dict[Level, dict[str, Any]]:
        """Index columns per level, named as in ``store.schema`` (see ``dicom.attributes``)."""
        return self._index_values[0]

    @property
    def person_names(self) -> dict[str, str]:
        """PatientName and ReferringPhysicianName, for the study's name tokens."""
        return self._index_values[1]

    def dicom_json(self) -> dict[str, Any]:
        """The DICOM JSON of the header, pixel data as a (relative) BulkDataURI; built once
        (the index columns are read from it too).

        Raises:
            UnreadableInstance: an element pydicom read but cannot convert (bad input, not a
                server fault).
        """
        if self._model is None:
            self._model = self._convert()
        return self._model

    def _convert(self) -> dict[str, Any]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = dataset_to_dicom_json(self.dataset, bulkdata_uri=relative_bulkdata_uri)
        except PARSE_ERRORS as exc:
            raise UnreadableInstance(
                f"Cannot convert the header: {exc}", self.sop_class_uid, self.sop_instance_uid
            ) from exc
        if self.pixel_data_vr is not None:
            model[PIXEL_DATA_KEY] = {
                "vr": self.pixel_data_vr,
                "BulkDataURI": relative_bulkdata_uri(PIXEL_DATA_KEY),
            }
        return model


# What pydicom raises on a damaged header, eagerly or when a lazily parsed element is touched:
# the one list of them. Everything that reads a header turns these into UnreadableInstance.
PARSE_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    EOFError,
    OSError,
    struct.error,
    KeyError,
    TypeError,
    IndexError,
    AttributeError,
    NotImplementedError,
    OverflowError,
    BytesLengthException,
    # A damaged Deflated Explicit VR Little Endian data set (PS3.5 A.5): pydicom inflates it
    # with zlib.decompress, whose error is no ValueError.
    zlib.error,
)


def read_header(source: Path | BinaryIO) -> ParsedInstance:
    """Parse a PS3.10 file's header (everything before the pixel data).

    Raises:
        UnreadableInstance: not PS3.10 (no preamble and ``DICM``), no transfer syntax, or a
            missing Study, Series or SOP Instance UID. The message says which.
    """
    file = open(source, "rb") if isinstance(source, Path) else source  # noqa: SIM115
    try:
        # pydicom warns about the many small deviations found in real files; the store accepts
        # them as they are (Google's does too), so the warnings are noise here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _read_header(file)
    except UnreadableInstance:
        raise
    except LimitExceeded as exc:
        raise UnreadableInstance(str(exc)) from exc
    except RecursionError as exc:  # nested within the limit, yet too deep for this stack
        raise UnreadableInstance("The DICOM header is nested too deep to parse.") from exc
    except PARSE_ERRORS as exc:
        # pydicom parses elements lazily: a damaged one can fail after dcmread returned (found
        # by tests/reliability/test_fuzz.py: a bad VR in (0028,0002), a 1-byte (0002,0000)).
        raise UnreadableInstance(f"Cannot parse the DICOM header: {exc}") from exc
    finally:
        if isinstance(source, Path):
            file.close()


def _read_header(file: BinaryIO) -> ParsedInstance:
    try:
        ds = _read_checked(file)
        # Force the lazily parsed elements now, while errors still mean "unreadable".
        uids = [_uid(ds, keyword) for keyword in _UID_KEYWORDS]
    except InvalidDicomError as exc:
        raise UnreadableInstance(f"Not a DICOM PS3.10 file: {exc}") from exc
    meta = getattr(ds, "file_meta", None)
    sop_class = _uid(ds, "SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta else None)
    # What the file names itself, for the refusals below (a STOW-RS Failed SOP item).
    names = (_uid_or_none(sop_class), _uid_or_none(uids[2]))
    transfer_syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if not transfer_syntax:
        raise UnreadableInstance(
            "The file meta information has no TransferSyntaxUID (0002,0010).", *names
        )
    for keyword, value in zip(_UID_KEYWORDS, uids, strict=True):
        if not value or not str(value).strip():
            raise UnreadableInstance(f"The instance has no {keyword}.", *names)
        # UIDs become resource names and export file names: only PS3.5 9.1 UIDs get in.
        problem = uid_problem(str(value).strip())
        if problem is not None:
            raise UnreadableInstance(f"{keyword}: {problem}", *names)
    offset, pixel_vr, pixel_length = _pixel_data_position(file, str(transfer_syntax))
    return ParsedInstance(
        study_instance_uid=str(uids[0]).strip(),
        series_instance_uid=str(uids[1]).strip(),
        sop_instance_uid=str(uids[2]).strip(),
        sop_class_uid=str(sop_class).strip() if sop_class else None,
        transfer_syntax_uid=str(transfer_syntax).strip(),
        dataset=ds,
        pixel_data_offset=offset,
        pixel_data_vr=pixel_vr,
        pixel_data_length=pixel_length,
    )


def _read_checked(file: BinaryIO) -> Dataset:
    """The header up to the pixel data, its structure checked first (dicom/structure.py), or
    in step with a faster read of the same header when it is in memory and explicit VR little
    endian (dicom/header_reader.py).

    Raises:
        LimitExceeded: the check refused the file; before any error of pydicom's, as when the
            check ran first.
    """
    if isinstance(file, io.BytesIO):
        start = file.tell()
        try:
            ds = read_explicit_little(file)
        except LimitExceeded:
            raise
        except Exception:
            # Maybe before the check walked the rest: the whole walk decides first.
            file.seek(start)
            check_structure(file)
            raise
        if ds is not None:
            return ds
    check_structure(file)
    return dcmread(file, stop_before_pixels=True)


_UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_UID_TAGS = {keyword: Tag(keyword) for keyword in (*_UID_KEYWORDS, "SOPClassUID")}


def _uid(ds: Dataset, keyword: str) -> Any:
    """The UID ``ds.get(keyword)`` gives, taken from the element's bytes when they hold one
    plain UID (pydicom's conversion was an eighth of the header read), pydicom's otherwise.

    Plain: a raw UI element's one value with no whitespace but its padding, which pydicom's
    UID would strip (then the DICOM JSON of the raw and of the converted element differ)."""
    element = ds._dict.get(_UID_TAGS[keyword])
    if type(element) is RawDataElement and element.VR == "UI" and type(element.value) is bytes:
        text = element.value.decode("latin-1").rstrip("\x00 ")
        if "\\" not in text and text == text.strip():
            return text
    return ds.get(keyword)


def _uid_or_none(value: Any) -> str | None:
    # Only a valid UID is echoed back (in a Failed SOP item): never arbitrary text from a file.
    text = str(value).strip() if value else ""
    return text if text and uid_problem(text) is None else None


def index_values(model: dict[str, Any]) -> tuple[dict[Level, dict[str, Any]], dict[str, str]]:
    """The index columns per level and the person names, read from an instance's DICOM JSON.

    Taken from the JSON the store keeps anyway rather than from pydicom's converted values: one
    conversion an instance instead of two (tests/dicom/test_parse_differential.py holds the two
    to the same values on every storable test file).
    """
    columns: dict[Level, dict[str, Any]] = {level: {} for level in _LEVELS}
    person_names: dict[str, str] = {}
    for key, level, column, vr, name_key, keyword in _INDEXED:
        entry = model.get(key)
        value = _column_value(entry.get("Value"), vr) if entry else None
        part = columns[level]
        part[column] = value
        if name_key is not None:
            part[name_key] = value.casefold() if value else None
            if value:
                person_names[keyword] = value
    return columns, person_names


# Each indexed attribute's JSON key, level, column, VR, name key column (PN only) and keyword,
# taken out once (index_values runs for every instance stored).
_INDEXED = [
    (
        f"{attribute.tag:08X}",
        attribute.level,
        attribute.column,
        attribute.vr,
        f"{attribute.column}_key" if attribute.vr == "PN" else None,
        attribute.keyword,
    )
    for attribute in INDEXED_ATTRIBUTES
]
_LEVELS = tuple(Level)


def _column_value(values: list[Any] | None, vr: str) -> Any:
    if not values:
        return None
    if vr in _INTEGER_VRS:
        number = values[0]
        if isinstance(number, str):  # an invalid IS kept as text
            return None
        return number if number is not None and -(2**31) <= number < 2**31 else None  # int32
    if vr == "PN":
        text = "\\".join(_person_name(value) for value in values)
    elif len(values) == 1:  # the most common: no generator to join
        text = "" if values[0] is None else str(values[0])
    else:
        text = "\\".join("" if value is None else str(value) for value in values)
    text = text.strip()
    if vr == "DA" and text:
        # PS3.5 6.2 note: ACR-NEMA wrote dates as YYYY.MM.DD; the index compares YYYYMMDD text.
        text = text.replace(".", "")
        return text if len(text) == 8 and text.isdigit() else None
    return text or None


def _person_name(value: dict[str, str] | None) -> str:
    if not value:
        return ""
    groups = [value.get(group, "") for group in ("Alphabetic", "Ideographic", "Phonetic")]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def _pixel_data_position(
    file: BinaryIO, transfer_syntax: str
) -> tuple[int | None, str | None, int | None]:
    """The offset of the pixel data value, its VR and length, read from just after the header.

    ``dcmread(stop_before_pixels=True)`` leaves the file positioned at the pixel data element's
    tag (PS3.5 7.1): read its header to find where the value starts.
    """
    position = file.tell()
    header = file.read(12)
    if len(header) < 8:
        return None, None, None
    order = ">" if transfer_syntax == EXPLICIT_VR_BIG_ENDIAN else "<"
    group, element = struct.unpack(f"{order}HH", header[:4])
    tag = group << 16 | element
    if tag not in _PIXEL_TAGS:
        return None, None, None
    written_vr = header[4:6]
    if transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN or not (
        len(written_vr) == 2 and written_vr.isalpha() and written_vr.isupper()
    ):
        # Implicit VR, or an explicit VR file whose pixel data element was written in implicit
        # VR all the same (pydicom's SC_rgb_jpeg.dcm; pydicom reads it so): no VR, a 4-byte
        # length. Encapsulated (undefined length) pixel data is OB (PS3.5 A.4).
        (length,) = struct.unpack(f"{order}I", header[4:8])
        vr = _PIXEL_TAGS[tag] or ("OB" if length == 0xFFFFFFFF else "OW")
        offset = position + 8
    else:
        if len(header) < 12:
            return None, None, None
        vr = header[4:6].decode("latin-1")
        (length,) = struct.unpack(f"{order}I", header[8:12])
        offset = position + 12
    return offset, vr, None if length == 0xFFFFFFFF else length


def person_name_tokens(name: str) -> set[str]:
    """Case-folded tokens of a person name for fuzzy matching (split on ``^``, ``=``, spaces).

    >>> sorted(person_name_tokens("Doe^John Paul=ドウ"))
    ['doe', 'john', 'paul', 'ドウ']
    """
    tokens: set[str] = set()
    for group in name.split("="):
        for component in group.split("^"):
            tokens.update(token.casefold() for token in component.split() if token)
    return tokens
