"""DICOM JSON (PS3.18 Annex F.2) of a dataset's header, split by study, series and instance level.

Bulk data convention (``BULKDATA_PATH``): the bulk data of an instance is served at
``{instance_url}/bulkdata/{tag_path}``, where ``instance_url`` is
``…/dicomWeb/studies/{study}/series/{series}/instances/{instance}`` and ``tag_path`` names the
attribute: ``"00420011"`` at the top level, ``"00540016/0/00181072"`` for an attribute inside item 0
of a sequence (tags as 8 upper-case hex digits, item indexes from 0). The index stores BulkDataURI
values relative to the instance (``bulkdata/{tag_path}``, built by :func:`relative_bulkdata_uri`);
WADO-RS metadata rewrites them to absolute URLs of the request's base with
:func:`absolutize_bulkdata_uris`.

The walker reads pydicom's raw elements directly instead of calling ``Dataset.to_json_dict``
(about 53 datasets/s on CT_small, see NOTES.md): values of common VRs are decoded straight from
their bytes, the items of a sequence of defined length read as the header was
(:func:`dicomql.dicom.header_reader.read_items`), and only ambiguous VRs, private tags, other
sequences and ISO 2022 character sets go through pydicom's own element conversion (about 1,000
CT_small headers/s on one core).
"""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Callable, Iterable
from typing import Any, cast

from pydicom import Dataset
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName

from dicomql.dicom.header_reader import read_items
from dicomql.dicom.tags import json_key

BULKDATA_PATH = "bulkdata"

PIXEL_DATA_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # also Float/Double Float
_SPECIFIC_CHARACTER_SET = BaseTag(0x00080005)
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_NUMBER_FORMATS = {
    "US": "H",
    "SS": "h",
    "UL": "I",
    "SL": "i",
    "FL": "f",
    "FD": "d",
    "SV": "q",
    "UV": "Q",
}
# PS3.5 6.2: these VRs carry one value and keep leading spaces; backslash is not a delimiter.
_SINGLE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UR"})
# PS3.5 6.1.2.3: only these VRs are affected by (0008,0005) Specific Character Set.
_CHARSET_VRS = frozenset({"SH", "LO", "UC", "ST", "LT", "UT", "PN"})
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", *_CHARSET_VRS, "UR"})
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")

# Looked up by a raw element's VR, which is None for one read in implicit VR.
_NUMBER_STRUCTS: dict[str | None, struct.Struct] = {
    vr: struct.Struct(f"<{code}") for vr, code in _NUMBER_FORMATS.items()
}
# How _raw_attribute decodes a raw value of each VR; SQ, UN and the rest pydicom converts.
_TEXT, _CHARSET_TEXT, _BINARY, _NUMBER, _TAGS = "text", "charset text", "binary", "number", "AT"
_RAW_KINDS = {
    **dict.fromkeys(_TEXT_VRS - _CHARSET_VRS, _TEXT),
    **dict.fromkeys(_CHARSET_VRS, _CHARSET_TEXT),
    **dict.fromkeys(_BINARY_VRS - {"UN"}, _BINARY),
    **dict.fromkeys(_NUMBER_FORMATS, _NUMBER),
    "AT": _TAGS,
}

_vr_cache: dict[int, str | None] = {}
# The JSON key of each tag met, built once; bounded, since a file may name any of 2**32 tags.
_json_keys: dict[int, str] = {}
_MAX_JSON_KEYS = 65536


def _new_json_key(tag: int) -> str:
    key = f"{tag:08X}"
    if len(_json_keys) < _MAX_JSON_KEYS:
        _json_keys[tag] = key
    return key


def relative_bulkdata_uri(tag_path: str) -> str:
    """The BulkDataURI the index stores: relative to the instance's URL."""
    return f"{BULKDATA_PATH}/{tag_path}"


_RELATIVE_BULKDATA = re.compile(r'("BulkDataURI"\s*:\s*")' + BULKDATA_PATH + "/")


def absolutize_bulkdata_uris(dicom_json_text: str, instance_url: str) -> str:
    """Rewrite relative BulkDataURI values in serialized DICOM JSON to absolute URLs.

    Works on the text so that WADO-RS metadata can stream stored JSON without parsing it; a JSON
    string value cannot contain an unescaped quote, so the pattern only matches real keys.

    >>> absolutize_bulkdata_uris('{"BulkDataURI": "bulkdata/7FE00010"}', "http://h/i")
    '{"BulkDataURI": "http://h/i/bulkdata/7FE00010"}'
    """
    prefix = instance_url.rstrip("/").replace("\\", "\\\\")
    return _RELATIVE_BULKDATA.sub(
        lambda m: f"{m.group(1)}{prefix}/{BULKDATA_PATH}/", dicom_json_text
    )


def dataset_to_dicom_json(
    ds: Dataset,
    *,
    bulkdata_uri: Callable[[str], str] | None = None,
    bulk_threshold: int = 1024,
) -> dict[str, Any]:
    """The DICOM JSON model (PS3.18 F.2) of ``ds``'s attributes, without its file meta.

    Args:
        ds: a dataset as read by pydicom (raw elements are decoded here, not by pydicom).
        bulkdata_uri: builds a BulkDataURI from a tag path (see the module docstring). Pixel data
            and binary values longer than ``bulk_threshold`` bytes become ``BulkDataURI``; without
            this callable they are emitted with their VR only (no value).
        bulk_threshold: the largest binary value, in bytes, that is inlined as ``InlineBinary``.

    Returns:
        ``{"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}, …}``; group length
        attributes (gggg,0000) and trailing padding (FFFC,FFFC) are left out.

    >>> from pydicom import Dataset
    >>> ds = Dataset(); ds.PatientName = "Doe^John"; ds.Rows = 2
    >>> dataset_to_dicom_json(ds)["00100010"]
    {'vr': 'PN', 'Value': [{'Alphabetic': 'Doe^John'}]}
    """
    # PS3.5 6.1.2.3: without (0008,0005) the default repertoire applies (pydicom's "iso8859").
    return _walk(ds, "", _encoding_of(ds, "iso8859"), bulkdata_uri, bulk_threshold)


def _encoding_of(ds: Dataset, inherited: str | None) -> str | None:
    """A Python codec for ``ds``'s text, or None when pydicom must decode (ISO 2022 extensions).

    A sequence item without its own Specific Character Set uses its parent's (``inherited``).
    """
    element = ds._dict.get(_SPECIFIC_CHARACTER_SET)
    if element is None:
        return inherited
    value = element.value if isinstance(element, DataElement) else ds[_SPECIFIC_CHARACTER_SET].value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, MultiValue | list):
        terms = [str(term).strip() for term in value]
        if len(terms) > 1:
            return None
        value = terms[0] if terms else ""
    term = str(value or "").strip()
    if term.startswith("ISO 2022"):
        return None
    return python_encoding.get(term, None) if term else "iso8859"


def _walk(
    ds: Dataset,
    prefix: str,
    encoding: str | None,
    bulkdata_uri: Callable[[str], str] | None,
    bulk_threshold: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    elements = cast("dict[int, DataElement | RawDataElement]", ds._dict)
    # Plain ints sort far faster than pydicom Tags, and pairs with the elements spare a lookup
    # by tag (BaseTag's equality is Python code, once an element).
    keys = _json_keys
    for tag, element in sorted(zip(map(int, elements), elements.values(), strict=True)):
        if not tag & 0xFFFF or tag >> 16 == 0x0002 or tag == 0xFFFCFFFC:
            # Group lengths; file meta (it belongs to the Part 10 file, not the dataset); and
            # Data Set Trailing Padding, which carries no information (PS3.10 7.2).
            continue
        key = keys.get(tag) or _new_json_key(tag)
        attribute = None
        if type(element) is RawDataElement and element.is_little_endian:
            # The common raw values, one number or text, decoded here: _raw_attribute's call
            # and its choice of a decoding, once an element, were a fifth of the walk.
            vr, raw = element.VR, element.value
            number = _NUMBER_STRUCTS.get(vr)
            if number is not None and type(raw) is bytes and len(raw) == number.size:
                out[key] = {"vr": vr, "Value": list(number.unpack(raw))}
                continue
            codec = encoding if vr in _CHARSET_VRS else "latin-1"
            if vr in _TEXT_VRS and type(raw) is bytes and raw and codec is not None:
                out[key] = _text_attribute(vr, raw.decode(codec, "replace"))
                continue
            if vr == "SQ" and type(raw) is bytes and not element.is_implicit_VR:
                # A sequence of defined length, its items read as the header was (pydicom's
                # read of it was a sixth of the walk's time).
                items = read_items(raw, ds.original_character_set)
                if items is not None:
                    out[key] = _sequence_attribute(
                        items, key, prefix, encoding, bulkdata_uri, bulk_threshold
                    )
                    continue
            attribute = _raw_attribute(element, key, prefix, encoding, bulkdata_uri, bulk_threshold)
        if attribute is None:
            attribute = _element_attribute(
                ds[tag], key, prefix, encoding, bulkdata_uri, bulk_threshold
            )
        out[key] = attribute
    return out


def _vr_of(tag: int) -> str | None:
    try:
        return _vr_cache[tag]
    except KeyError:
        pass
    try:
        vr: str | None = dictionary_VR(tag)
    except KeyError:
        vr = None
    _vr_cache[tag] = vr
    return vr


def _raw_attribute(
    element: RawDataElement,
    key: str,
    prefix: str,
    encoding: str | None,
    bulkdata_uri: Callable[[str], str] | None,
    bulk_threshold: int,
) -> dict[str, Any] | None:
    """The JSON of a raw element decoded from its bytes, or None to let pydicom convert it."""
    vr = element.VR or _vr_of(element.tag)
    raw = element.value
    if vr is None or not isinstance(raw, bytes):
        return None  # private or deferred: pydicom decides
    # One lookup says how this VR is decoded (STOW and C-STORE decode ~250 elements an instance).
    kind = _RAW_KINDS.get(vr)
    if kind is None:
        # Ambiguous (US or SS), sequence, or UN that pydicom may resolve to the dictionary VR
        # (PS3.5 6.2.2): pydicom decides, unless the value is empty.
        return None if raw or " " in vr or vr in ("SQ", "UN") else {"vr": vr}
    if not raw:
        return {"vr": vr}
    if kind is _TEXT:
        return _text_attribute(vr, raw.decode("latin-1"))
    if kind is _CHARSET_TEXT:
        return None if encoding is None else _text_attribute(vr, raw.decode(encoding, "replace"))
    if kind is _BINARY:
        return _binary_attribute(vr, raw, key, prefix, element.tag, bulkdata_uri, bulk_threshold)
    if kind is _NUMBER:
        single = _NUMBER_STRUCTS[vr]
        if len(raw) == single.size:  # one value, the common case
            return {"vr": vr, "Value": list(single.unpack(raw))}
        count = len(raw) // single.size
        if count * single.size != len(raw):
            return None
        return {"vr": vr, "Value": list(struct.unpack(f"<{count}{_NUMBER_FORMATS[vr]}", raw))}
    count = len(raw) // 4  # AT
    pairs = struct.unpack(f"<{count * 2}H", raw[: count * 4])
    values = [f"{pairs[i]:04X}{pairs[i + 1]:04X}" for i in range(0, len(pairs), 2)]
    return {"vr": vr, "Value": values}


def _text_attribute(vr: str, text: str) -> dict[str, Any]:
    if vr in _SINGLE_TEXT_VRS:
        # Trailing padding goes; leading spaces are significant for these VRs (PS3.5 6.2).
        value = text.rstrip(" \x00")
        return {"vr": vr, "Value": [value]} if value else {"vr": vr}
    if "\\" not in text:
        # One value, by far the most common case: no list to build and scan (STOW parses every
        # header, docs/service.md "Performance").
        single = text.strip(" \x00")
        if not single:
            return {"vr": vr}
        convert = _ONE_VALUE.get(vr)
        if convert is None:  # text as it is, by far the most common
            return {"vr": vr, "Value": [single]}
        value = convert(single)
        return {"vr": vr} if value is None else {"vr": vr, "Value": [value]}
    parts = [part.strip(" \x00") for part in text.split("\\")]
    if vr == "PN":
        names = [_person_name(part) for part in parts]
        if not any(names):
            return {"vr": vr}
        return {"vr": vr, "Value": names}
    if vr == "IS":
        values: list[Any] = [_integer_string(part) for part in parts]
    elif vr == "DS":
        values = [_decimal_string(part) for part in parts]
    else:
        values = [part if part else None for part in parts]
    if values.count(None) == len(values):
        return {"vr": vr}
    return {"vr": vr, "Value": values}


def _person_name(text: str) -> dict[str, str] | None:
    if not text:
        return None
    return person_name_groups(text)


def person_name_groups(text: str) -> dict[str, str]:
    """A PN value's component groups as DICOM JSON names them (PS3.18 F.2.2).

    >>> person_name_groups("Wang^XiaoDong=王^小東")
    {'Alphabetic': 'Wang^XiaoDong', 'Ideographic': '王^小東'}
    """
    groups = text.split("=")
    return {name: group for name, group in zip(_PN_GROUPS, groups, strict=False) if group}


def _integer_string(text: str) -> int | str | None:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            return text  # invalid IS: keep the text rather than lose it
        return int(number) if number.is_integer() else text


def _decimal_string(text: str) -> int | float | str | None:
    if not text:
        return None
    try:
        if "." not in text and "e" not in text and "E" not in text:
            return int(text)
        number = float(text)
    except ValueError:
        return text
    # JSON has no NaN or infinity; keep such (invalid DS) values as text.
    return number if number == number and abs(number) != float("inf") else text


_ONE_VALUE: dict[str, Callable[[str], Any]] = {
    # A name of empty groups ("=") is no name, as in the list case (``not any(names)``).
    "PN": lambda text: _person_name(text) or None,
    "IS": _integer_string,
    "DS": _decimal_string,
}


def _binary_attribute(
    vr: str,
    raw: bytes,
    key: str,
    prefix: str,
    tag: int,
    bulkdata_uri: Callable[[str], str] | None,
    bulk_threshold: int,
) -> dict[str, Any]:
    if tag in PIXEL_DATA_TAGS or len(raw) > bulk_threshold:
        if bulkdata_uri is None:
            return {"vr": vr}
        return {"vr": vr, "BulkDataURI": bulkdata_uri(prefix + key)}
    return {"vr": vr, "InlineBinary": base64.b64encode(raw).decode("ascii")}


def _element_attribute(
    element: DataElement,
    key: str,
    prefix: str,
    encoding: str | None,
    bulkdata_uri: Callable[[str], str] | None,
    bulk_threshold: int,
) -> dict[str, Any]:
    """The JSON of an element pydicom has converted (values already Python objects)."""
    vr = element.VR
    value = element.value
    if vr == "SQ":
        return _sequence_attribute(value or (), key, prefix, encoding, bulkdata_uri, bulk_threshold)
    if value is None or value == "" or value == b"":
        return {"vr": vr}
    if vr in _BINARY_VRS or isinstance(value, bytes | bytearray):
        raw = bytes(value) if isinstance(value, bytes | bytearray) else b""
        return _binary_attribute(vr, raw, key, prefix, element.tag, bulkdata_uri, bulk_threshold)
    values = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    if vr == "PN":
        names = [_person_name_value(name) for name in values]
        return {"vr": vr, "Value": names} if any(names) else {"vr": vr}
    if vr == "AT":
        return {"vr": vr, "Value": [f"{int(tag):08X}" for tag in values]}
    if vr in ("IS", "DS"):
        convert = _integer_string if vr == "IS" else _decimal_string
        numbers = [convert(str(number).strip()) if number != "" else None for number in values]
        return {"vr": vr, "Value": numbers}
    if vr in _NUMBER_FORMATS:
        return {"vr": vr, "Value": [_plain_number(number) for number in values]}
    if vr in _SINGLE_TEXT_VRS:
        return {"vr": vr, "Value": [str(value).rstrip(" \x00")]}
    texts = [str(item).strip(" \x00") if item != "" else None for item in values]
    return {"vr": vr, "Value": texts}


def _sequence_attribute(
    items: Iterable[Dataset],
    key: str,
    prefix: str,
    encoding: str | None,
    bulkdata_uri: Callable[[str], str] | None,
    bulk_threshold: int,
) -> dict[str, Any]:
    values = []
    for index, item in enumerate(items):
        item_prefix = f"{prefix}{key}/{index}/"
        item_encoding = _encoding_of(item, encoding)
        values.append(_walk(item, item_prefix, item_encoding, bulkdata_uri, bulk_threshold))
    return {"vr": "SQ", "Value": values} if values else {"vr": "SQ"}


def _person_name_value(name: Any) -> dict[str, str] | None:
    if isinstance(name, PersonName):
        groups = (name.alphabetic, name.ideographic, name.phonetic)
        result = {key: group for key, group in zip(_PN_GROUPS, groups, strict=True) if group}
        return result or None
    return _person_name(str(name).strip())


def _plain_number(number: Any) -> int | float:
    return number if isinstance(number, int | float) else float(number)


# PS3.4 C.6.1.1.2 (patient level) and C.6.1.1.3 (study level) keys, the Patient Study module
# (PS3.3 C.7.2.2) and the study-level companions PS3.18 Table 10.6.3-3 returns with them.
STUDY_LEVEL_TAGS = frozenset(
    {
        0x00080005,  # SpecificCharacterSet (needed to interpret the rest)
        0x00080020,  # StudyDate
        0x00080030,  # StudyTime
        0x00080050,  # AccessionNumber
        0x00080051,  # IssuerOfAccessionNumberSequence
        0x00080061,  # ModalitiesInStudy
        0x00080062,  # SOPClassesInStudy
        0x00080090,  # ReferringPhysicianName
        0x00080096,  # ReferringPhysicianIdentificationSequence
        0x00080201,  # TimezoneOffsetFromUTC
        0x00081030,  # StudyDescription
        0x00081032,  # ProcedureCodeSequence
        0x00081048,  # PhysiciansOfRecord
        0x00081060,  # NameOfPhysiciansReadingStudy
        0x00081080,  # AdmittingDiagnosesDescription
        0x00081110,  # ReferencedStudySequence
        0x00100010,  # PatientName
        0x00100020,  # PatientID
        0x00100021,  # IssuerOfPatientID
        0x00100022,  # TypeOfPatientID
        0x00100024,  # IssuerOfPatientIDQualifiersSequence
        0x00100030,  # PatientBirthDate
        0x00100032,  # PatientBirthTime
        0x00100040,  # PatientSex
        0x00101000,  # OtherPatientIDs (retired, still common)
        0x00101001,  # OtherPatientNames
        0x00101002,  # OtherPatientIDsSequence
        0x00101010,  # PatientAge
        0x00101020,  # PatientSize
        0x00101030,  # PatientWeight
        0x00102160,  # EthnicGroup
        0x00102180,  # Occupation
        0x001021B0,  # AdditionalPatientHistory
        0x00104000,  # PatientComments
        0x00200010,  # StudyID
        0x0020000D,  # StudyInstanceUID
        0x00201070,  # OtherStudyNumbers
        0x00321032,  # RequestingPhysician
        0x00321060,  # RequestedProcedureDescription
    }
)

# PS3.4 C.6.1.1.4 (series level), the General Series, General Equipment and Frame of Reference
# modules (PS3.3 C.7.3.1, C.7.5.1, C.7.4.1): the same for every instance of a series.
SERIES_LEVEL_TAGS = frozenset(
    {
        0x00080021,  # SeriesDate
        0x00080031,  # SeriesTime
        0x00080060,  # Modality
        0x00080070,  # Manufacturer
        0x00080080,  # InstitutionName
        0x00081010,  # StationName
        0x0008103E,  # SeriesDescription
        0x0008103F,  # SeriesDescriptionCodeSequence
        0x00081040,  # InstitutionalDepartmentName
        0x00081050,  # PerformingPhysicianName
        0x00081070,  # OperatorsName
        0x00081090,  # ManufacturerModelName
        0x00081111,  # ReferencedPerformedProcedureStepSequence
        0x00180015,  # BodyPartExamined
        0x00181000,  # DeviceSerialNumber
        0x00181020,  # SoftwareVersions
        0x00181030,  # ProtocolName
        0x00185100,  # PatientPosition
        0x0020000E,  # SeriesInstanceUID
        0x00200011,  # SeriesNumber
        0x00200052,  # FrameOfReferenceUID
        0x00200060,  # Laterality
        0x00201040,  # PositionReferenceIndicator
        0x00400244,  # PerformedProcedureStepStartDate
        0x00400245,  # PerformedProcedureStepStartTime
        0x00400253,  # PerformedProcedureStepID
        0x00400254,  # PerformedProcedureStepDescription
        0x00400260,  # PerformedProtocolCodeSequence
        0x00400275,  # RequestAttributesSequence
    }
)
_CHARSET_KEY = json_key("SpecificCharacterSet")
# In ascending tag order, the order of the walk's JSON.
_STUDY_KEYS = tuple(f"{tag:08X}" for tag in sorted(STUDY_LEVEL_TAGS))
_SERIES_KEYS = tuple(f"{tag:08X}" for tag in sorted(SERIES_LEVEL_TAGS))
_LEVEL_KEYS = frozenset({*_STUDY_KEYS, *_SERIES_KEYS})
_ABSENT = object()


def level_attributes(dicom_json: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The study-level and series-level parts of an instance's DICOM JSON (see
    :func:`split_by_level`), looked up by their ~70 tags rather than picked out in a pass over
    all of its ~250 attributes (about a sixth of that pass's time); each in ascending tag
    order, the order :func:`dataset_to_dicom_json` writes.

    >>> level_attributes({"00100020": {"vr": "LO"}, "00080018": {"vr": "UI"}})
    ({'00100020': {'vr': 'LO'}}, {})
    """
    study: dict[str, Any] = {}
    series: dict[str, Any] = {}
    get = dicom_json.get
    for keys, part in ((_STUDY_KEYS, study), (_SERIES_KEYS, series)):
        for key in keys:
            attribute = get(key, _ABSENT)
            if attribute is not _ABSENT:
                part[key] = attribute
    charset = study.get(_CHARSET_KEY)
    if charset is not None:
        series[_CHARSET_KEY] = charset
    return study, series


def split_by_level(
    dicom_json: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Split an instance's DICOM JSON into study-level, series-level and instance-level parts.

    SpecificCharacterSet goes to the study part (and is repeated in the series part) so each
    level's stored attributes stay interpretable on their own.

    >>> study, series, instance = split_by_level(
    ...     {"00100020": {"vr": "LO", "Value": ["p1"]}, "00080060": {"vr": "CS", "Value": ["CT"]},
    ...      "00080018": {"vr": "UI", "Value": ["1.2"]}})
    >>> sorted(study), sorted(series), sorted(instance)
    (['00100020'], ['00080060'], ['00080018'])
    """
    study, series = level_attributes(dicom_json)
    instance = {key: value for key, value in dicom_json.items() if key not in _LEVEL_KEYS}
    return study, series, instance
