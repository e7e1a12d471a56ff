"""A faster read of an explicit VR little endian header held in memory, exact to pydicom's.

``dcmread`` spends most of STOW's parse time in its per-element Python loop, which also asks the
file for its position at every element. This reads the same elements straight from the bytes:
every plain element (a known VR, a defined length, its value wholly present) becomes the same
``RawDataElement`` pydicom's ``data_element_generator`` would yield; anything else (a sequence
or item of undefined length, an unknown VR, a truncated element) is handed, one element at a
time, to pydicom's own generator, and the dataset is put together as ``read_partial`` does. Other
transfer syntaxes (implicit VR, big endian, deflated, private) are left to ``dcmread``. The
items of a sequence of defined length holding plain elements only are read the same way for the
DICOM JSON walk (``read_items``), instead of pydicom's ``read_sequence``.
``tests/dicom/test_parse_differential.py`` holds the two to the same DICOM JSON and index values.
"""

from __future__ import annotations

import io
import struct
from collections.abc import MutableSequence
from typing import Any, TypeVar

import pydicom.uid
from pydicom import config
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR
from pydicom.values import convert_string

from dicomql.dicom.structure import (
    LONG_VRS,
    check_structure,
    data_set_start,
    walk_explicit_little,
)
from dicomql.dicom.tags import EXPLICIT_VR_LENGTH_32 as _STANDARD_LENGTH_32

try:  # pydicom's reading steps; a pydicom without them falls back to dcmread
    from pydicom.filereader import (
        _at_pixel_data,
        _is_implicit_vr,
        _read_command_set_elements,
        _read_file_meta_info,
        data_element_generator,
        read_preamble,
    )

    _AVAILABLE = True
except ImportError:  # pragma: no cover - depends on the pydicom release
    _AVAILABLE = False

# The fields of RawDataElement as built below; with other fields (another pydicom) dcmread reads.
_FIELDS = ("tag", "VR", "length", "value", "value_tell", "is_implicit_VR", "is_little_endian")
if RawDataElement._fields != (*_FIELDS, "is_raw", "is_buffered"):  # pragma: no cover
    _AVAILABLE = False
# The lengths read here are pydicom's only while it reads the same VRs' lengths as 4 bytes.
if {vr.value for vr in EXPLICIT_VR_LENGTH_32} != _STANDARD_LENGTH_32:  # pragma: no cover
    _AVAILABLE = False
_HEADER = struct.Struct("<HH2sH")
_LONG_LENGTH = struct.Struct("<L")
_KNOWN_VRS = {vr.value.encode(default_encoding): vr.value for vr in VR}
# How _elements reads each VR: its name, whether its length is 4 bytes, and whether the
# structure check skips an element of it just as _elements reads it (all but a sequence).
_READINGS = {
    vr_bytes: (vr, vr_bytes in LONG_VRS, vr_bytes != b"SQ") for vr_bytes, vr in _KNOWN_VRS.items()
}
# The BaseTag of each tag met, made once (equal to a new one); bounded, as a file may name
# any of 2**32 tags.
_TAGS: dict[int, BaseTag] = {}
_MAX_TAGS = 65536
_STOP_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})
_ITEM_DELIMITER = 0xFFFEE00D
_ITEM = 0xFFFEE000
_ITEM_HEADER = struct.Struct("<HHL")
_CHARSET = 0x00080005
_CHARSET_TAG = BaseTag(_CHARSET)
_GROUP_LENGTH = BaseTag(0x00020000)
# The transfer syntaxes read_partial reads in a way of its own; every other one is explicit VR
# little endian there, as here.
_OTHER_SYNTAXES = frozenset(
    {
        pydicom.uid.ImplicitVRLittleEndian,
        pydicom.uid.ExplicitVRBigEndian,
        pydicom.uid.DeflatedExplicitVRLittleEndian,
        *pydicom.uid.PrivateTransferSyntaxes,
    }
)


def read_explicit_little(file: io.BytesIO) -> FileDataset | None:
    """The header of the PS3.10 file in ``file`` up to its pixel data, read as
    ``dcmread(file, stop_before_pixels=True)`` reads it, with ``file`` left at the pixel data
    element; None (``file`` rewound) when its transfer syntax is not one this reads or the
    reading settings differ from pydicom's defaults (then ``dcmread`` reads it)."""
    if not _AVAILABLE or not _default_settings() or type(file) is not io.BytesIO:
        return None  # (a subclass may have a name: FileDataset's filename)
    start = file.tell()
    data = file.getvalue()
    preamble = read_preamble(file, False)
    meta = _file_meta(data, file.tell())
    command_set = None
    if meta is None:
        file_meta = _read_file_meta_info(file)
        command_set = _read_command_set_elements(file)
    else:
        file_meta, meta_end = meta
        file.seek(meta_end)
    transfer_syntax = file_meta.get("TransferSyntaxUID")
    # Nothing after the file meta: read_partial then reads (nothing) as implicit VR.
    nothing_more = file.tell() >= len(data)
    if transfer_syntax is None or transfer_syntax in _OTHER_SYNTAXES or nothing_more:
        file.seek(start)
        return None
    dataset_start = file.tell()
    if _is_implicit_vr(file, False, True, _at_pixel_data, False):
        file.seek(start)  # a file that says explicit VR but is not: pydicom's heuristics
        return None
    # The structure check walks in step with the read below when it would start its walk
    # where pydicom starts reading; otherwise alone, first, as check_structure.
    in_step = data_set_start(data, start) == dataset_start
    if not in_step:
        file.seek(start)
        check_structure(file)
    file.seek(dataset_start)
    elements = _elements(file, data, dataset_start, in_step)
    if _CHARSET in elements:  # as read_dataset reads it, for its errors
        convert_encodings(convert_raw_data_element(elements[_CHARSET_TAG]).value)
    if command_set:
        Dataset(elements).update(command_set)
    ds = _new_dataset(
        FileDataset,
        _dict=elements,
        preamble=preamble,
        file_meta=file_meta,
        fileobj_type=type(file),
        buffer=file,
    )
    ds.set_original_encoding(False, True, ds._character_set)
    return ds


def _file_meta(data: bytes, position: int) -> tuple[FileMetaDataset, int] | None:
    """The file meta group at ``position`` and where it ends, as pydicom's
    ``_read_file_meta_info`` reads it (then ``_read_command_set_elements`` reads nothing), when
    all of it is plain and the element after it is no command set's (PS3.10 7.1: the group is
    always explicit VR little endian); None otherwise, for pydicom to read."""
    elements: dict[BaseTag, Any] = {}
    end = len(data)
    while True:
        header = _element_header(data, position, end)
        if header is None:
            # Nothing after the file meta (pydicom's read decides), or an element header that
            # ends early (whose read fails there).
            return None
        group, number, vr, value_at, length = header
        if group != 0x0002:
            # Where pydicom's reads stop, rewound to this element; unless a command set
            # follows, or it is an item delimiter.
            if not elements or group == 0x0000 or group == 0xFFFE:
                return None
            break
        if vr is None or vr in ("SQ", "UN") or value_at + length > end:
            return None  # (an undefined length is past the end too)
        position = _add_raw_element(elements, data, group << 16 | number, vr, value_at, length)
    file_meta = _new_dataset(
        FileMetaDataset,
        _dict=elements,
        _read_implicit=False,
        _read_little=True,
        _read_charset=default_encoding,
    )
    # What _read_file_meta_info converts: the first element, to see that the group is explicit
    # VR after all (a NotImplementedError: it reads it again as implicit VR), and the group
    # length, to compare it with the group's.
    try:
        file_meta[min(elements)]
    except NotImplementedError:
        return None
    if _GROUP_LENGTH in elements:
        file_meta[_GROUP_LENGTH]
    return file_meta, position


_DatasetKind = TypeVar("_DatasetKind", bound=Dataset)


def _new_dataset(kind: type[_DatasetKind], **attributes: Any) -> _DatasetKind:
    """A ``kind`` with the attributes its constructor gives a new one (_BLANK) but
    ``attributes``, without running it: its ~15 calls of ``Dataset.__setattr__`` (Python
    code) were most of the time of building a dataset, four an instance."""
    blank, fresh = _BLANK[kind]
    state = blank.copy()
    for name in fresh:  # each dataset its own
        state[name] = blank[name].copy()
    state.update(attributes)
    dataset = object.__new__(kind)
    object.__setattr__(dataset, "__dict__", state)
    return dataset


def _blank(dataset: Dataset) -> tuple[dict[str, Any], tuple[str, ...]] | None:
    """The attributes of a newly constructed ``dataset`` but those each read sets, and those
    of them each dataset needs its own copy of; None when one is not a plain value (another
    pydicom: then dcmread reads)."""
    state = {
        name: value
        for name, value in vars(dataset).items()
        if name not in ("_dict", "file_meta", "buffer")
    }
    fresh = tuple(name for name, value in state.items() if type(value) is dict)
    values = [value for name, value in state.items() if name not in fresh]
    values += [value for name in fresh for value in state[name].values()]
    plain = (type(None), bool, int, str, bytes, type)
    return (state, fresh) if all(type(value) in plain for value in values) else None


_BLANKS = {
    kind: _blank(dataset)
    for kind, dataset in (
        (Dataset, Dataset()),
        (FileMetaDataset, FileMetaDataset()),
        (FileDataset, FileDataset(io.BytesIO(), {}, None, FileMetaDataset(), False, True)),
    )
}
_BLANK = {kind: blank for kind, blank in _BLANKS.items() if blank is not None}
if len(_BLANK) < len(_BLANKS):  # pragma: no cover - depends on the pydicom release
    _AVAILABLE = False
# pydicom's constructors set other attributes under PYDICOM_FUTURE (config.future_behavior).
_FUTURE = config._use_future


def _default_settings() -> bool:
    return (
        config._use_future == _FUTURE
        and not config.debugging
        and config.settings.infer_sq_for_un_vr
        and config.replace_un_with_known_vr
        and config.assume_implicit_vr_switch
    )


def _elements(file: io.BytesIO, data: bytes, position: int, check: bool) -> dict[BaseTag, Any]:
    """The elements from ``position`` to the pixel data (or the end); ``file`` is left at the
    first element not read.

    With ``check``, check_structure's walk (dicom/structure.py) runs in step: it would only
    skip over a plain element that is no sequence, so it walks every other element, before
    pydicom's recursive read of it, and the rest of the data set once the read stops (past
    the pixel data). Where the two part ways on an element's end (a damaged file), it walks
    the rest alone from its own end.

    Raises:
        LimitExceeded: the check found sequences nested too deep.
    """
    elements: dict[BaseTag, Any] = {}
    encoding: str | MutableSequence[str] = default_encoding
    end = len(data)
    unpack, unpack_long, readings, new_tuple, raw_element, empty_value = (
        _HEADER.unpack_from,
        _LONG_LENGTH.unpack_from,
        _READINGS,
        tuple.__new__,
        RawDataElement,
        empty_value_for_VR,
    )
    tags, stop_tags = _TAGS, _STOP_TAGS
    while True:
        if end - position < 8:
            position = end  # pydicom's generator reads what is left, and ends
            break
        group, number, vr_bytes, length = unpack(data, position)
        tag = group << 16 | number
        value_at = position + 8
        reading = readings.get(vr_bytes)
        vr = None
        if reading is not None:
            vr, long_length, skipped_alike = reading
            if long_length:
                if end - value_at < 4:
                    vr = None
                else:
                    length = unpack_long(data, value_at)[0]
                    value_at += 4
                    if length == 0xFFFFFFFF:  # undefined, even in a file of 4 GiB
                        skipped_alike = False
            next_position = value_at + length
            if (
                skipped_alike
                and next_position <= end
                and group != 0xFFFE
                and vr is not None
                and tag not in stop_tags
                and tag != _CHARSET
            ):
                # The common element, plain: what the branches below do with it, in short
                # (most of the header read's time is this loop's, ~250 elements an instance).
                key = tags.get(tag) or _new_tag(tag)
                value = data[value_at:next_position] if length else empty_value(vr, True)
                elements[key] = new_tuple(
                    raw_element, (key, vr, length, value, value_at, False, True, True, False)
                )
                position = next_position
                continue
        plain = not (
            vr is None or tag == _ITEM_DELIMITER or length == 0xFFFFFFFF or value_at + length > end
        )
        checked_to = None
        # The check skips a plain element just as it is read here, unless it is a sequence
        # or an item: the check walks only those.
        if check and not (plain and vr_bytes != b"SQ" and group != 0xFFFE):
            checked_to = walk_explicit_little(data, position, 1)
            check = checked_to is not None  # else the check's walk ended in this element
        if not plain:
            # pydicom's generator reads exactly this one (or stops, and leaves the file where
            # it stopped, as it would).
            element, next_position = _pydicom_element(file, position, encoding)
            if element is None:
                if checked_to is not None:
                    walk_explicit_little(data, checked_to)
                return elements  # read_dataset keeps what it read before
            elements[element.tag] = element
        elif tag in _STOP_TAGS:
            break
        else:
            assert vr is not None  # plain
            next_position = _add_raw_element(elements, data, tag, vr, value_at, length)
            if tag == _CHARSET:
                text = convert_string(elements[_CHARSET_TAG].value or b"", True)
                encoding = convert_encodings(text)
        if checked_to is not None and checked_to != next_position:
            walk_explicit_little(data, checked_to)
            check = False
        position = next_position
    if check:
        walk_explicit_little(data, position)
    file.seek(position)
    return elements


def _new_tag(tag: int) -> BaseTag:
    key = BaseTag(tag)
    if len(_TAGS) < _MAX_TAGS:
        _TAGS[tag] = key
    return key


def _pydicom_element(
    file: io.BytesIO, position: int, encoding: str | MutableSequence[str]
) -> tuple[Any, int]:
    """The element at ``position`` as pydicom's generator reads it and the position after it;
    None where read_dataset would stop reading (``file`` left where the generator left it)."""
    file.seek(position)
    generator = data_element_generator(file, False, True, _at_pixel_data, None, encoding)
    try:
        element = next(generator, None)
    except EOFError:
        if config.settings.reading_validation_mode == config.RAISE:
            raise
        return None, position
    except NotImplementedError:
        return None, position
    if element is None:
        return None, position
    next_position = file.tell()
    generator.close()  # type: ignore[attr-defined]
    return element, next_position


def read_items(value: bytes, encoding: str | MutableSequence[str]) -> list[Dataset] | None:
    """The items of an explicit VR little endian sequence's value of defined length, read as
    pydicom's ``read_sequence`` reads them, when each is an item of defined length whose
    elements are all plain (see _plain_elements); None otherwise, for pydicom to read.
    ``encoding``: the parent data set's original one, which items inherit (when empty,
    pydicom would look for the parent's Specific Character Set: None)."""
    if not encoding or not _AVAILABLE or config._use_future != _FUTURE:
        return None
    items = []
    position, end = 0, len(value)
    while position < end:
        if end - position < 8:
            return None
        group, number, length = _ITEM_HEADER.unpack_from(value, position)
        item_end = position + 8 + length
        if (group << 16 | number) != _ITEM or item_end > end:  # also an undefined length
            return None
        elements = _plain_elements(value, position + 8, item_end)
        if elements is None:
            return None
        # As read_dataset makes an item.
        item = _new_dataset(
            Dataset,
            _dict=elements,
            _parent_encoding=encoding,
            _read_implicit=False,
            _read_little=True,
            _read_charset=encoding,
        )
        items.append(item)
        position = item_end
    return items


def _plain_elements(data: bytes, position: int, end: int) -> dict[BaseTag, Any] | None:
    """The elements from ``position`` to exactly ``end`` when all are plain and need nothing
    of their parent's to convert (pydicom passes an item its parent's pixel representation,
    for ambiguous VRs, and character set): a known VR but SQ and UN, no item tag, a length
    within ``end``, no Specific Character Set of their own; None otherwise. Their value_tell
    is relative to ``data``."""
    elements: dict[BaseTag, Any] = {}
    while position < end:
        header = _element_header(data, position, end)
        if header is None:
            return None
        group, number, vr, value_at, length = header
        if vr is None or vr in ("SQ", "UN") or group == 0xFFFE or value_at + length > end:
            return None
        tag = group << 16 | number
        if tag == _CHARSET:
            return None
        position = _add_raw_element(elements, data, tag, vr, value_at, length)
    return elements


def _element_header(
    data: bytes, position: int, end: int
) -> tuple[int, int, str | None, int, int] | None:
    """The explicit VR little endian element header at ``position``: its group, element
    number, VR (None: one pydicom does not know), where its value starts and its length; None
    when the header runs past ``end``."""
    if end - position < 8:
        return None
    group, number, vr_bytes, length = _HEADER.unpack_from(data, position)
    value_at = position + 8
    if vr_bytes in LONG_VRS:
        if end - value_at < 4:
            return None
        length = _LONG_LENGTH.unpack_from(data, value_at)[0]
        value_at += 4
    return group, number, _KNOWN_VRS.get(vr_bytes), value_at, length


def _add_raw_element(
    elements: dict[BaseTag, Any], data: bytes, tag: int, vr: str, value_at: int, length: int
) -> int:
    """Add the plain element whose value is ``data[value_at:value_at + length]`` to
    ``elements``, as the RawDataElement pydicom's generator yields for it; where it ends.
    (``_elements`` does the same inline for its common element, its hot path.)"""
    key = _TAGS.get(tag) or _new_tag(tag)
    value = data[value_at : value_at + length] if length else empty_value_for_VR(vr, True)
    # RawDataElement(key, vr, length, value, value_at, False, True), built as the tuple it is:
    # its generated __new__ was a twentieth of STOW's CPU.
    elements[key] = tuple.__new__(
        RawDataElement, (key, vr, length, value, value_at, False, True, True, False)
    )
    return value_at + length
