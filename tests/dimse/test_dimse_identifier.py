"""A C-FIND identifier read from its encoding (dimse.identifier, find.encoded_keys) gives the
keys pydicom's decoding of it gives, value for value, or is left to pydicom; in implicit and
explicit VR little endian, for every VR read there and for padding, empty values and lists."""

from __future__ import annotations

import io
import struct
import warnings

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pynetdicom.dsutils import decode

from dicomql.dicom.tags import EXPLICIT_VR_LENGTH_32
from dicomql.dimse.find import FindError, Keys, encoded_keys, identifier_keys

LEVEL = (0x00080052, "CS", b"STUDY ")
# (tag, VR) of a key of each VR read without pydicom, and some it leaves to pydicom.
KEYS = [
    (0x00080020, "DA"),  # StudyDate
    (0x0008002A, "DT"),  # AcquisitionDateTime
    (0x00080030, "TM"),  # StudyTime
    (0x00080050, "SH"),  # AccessionNumber
    (0x00080060, "CS"),  # Modality
    (0x00080119, "UC"),  # LongCodeValue
    (0x0008103E, "LO"),  # SeriesDescription
    (0x00100010, "PN"),  # PatientName
    (0x00101010, "AS"),  # PatientAge
    (0x00102180, "SH"),  # Occupation
    (0x0020000D, "UI"),  # StudyInstanceUID
    (0x00200011, "IS"),  # SeriesNumber
    (0x00204000, "LT"),  # ImageComments
    (0x00280010, "US"),  # Rows
    (0x00400241, "AE"),  # PerformedStationAETitle
    (0x00400275, "SQ"),  # RequestAttributesSequence (empty)
    (0x0040A160, "UT"),  # TextValue
    (0x00181050, "DS"),  # SpatialResolution
]
VALUES = [
    b"",
    b" ",
    b"\0",
    b"  A B  ",
    b" 1.2 \\ 3.4 ",
    b"A\\",
    b"\\",
    b"A\\\\B ",
    b"x\0",
    b"Doe^J*",
    b"Doe^John=Do^Jo",
    b"20240101-20240201",
    b"CT\\MR",
    b"1.2.3\\4.5.6",
    b"+5 ",
    b"7",
    b"\t\x00",
    "Zoë".encode(),  # not ASCII: pydicom decodes it by the character set
    b"\x1b$B",  # ISO 2022: likewise
]


def _element(tag: int, vr: str, value: bytes, implicit: bool) -> bytes:
    group, element = tag >> 16, tag & 0xFFFF
    if implicit:
        return struct.pack("<HHI", group, element, len(value)) + value
    if vr in EXPLICIT_VR_LENGTH_32:
        return struct.pack("<HH2s2xI", group, element, vr.encode(), len(value)) + value
    return struct.pack("<HH2sH", group, element, vr.encode(), len(value)) + value


def _identifier(elements: list[tuple[int, str, bytes]], implicit: bool) -> bytes:
    """The elements encoded in the order given (tag order is the identifier's own)."""
    return b"".join(_element(tag, vr, value, implicit) for tag, vr, value in elements)


def _pydicom_keys(data: bytes, implicit: bool) -> Keys | Exception:
    with warnings.catch_warnings():
        # pydicom warns of a value invalid for its VR and reads it all the same; the server
        # does not turn its warnings into errors, as this suite does.
        warnings.simplefilter("ignore")
        try:
            return identifier_keys(decode(io.BytesIO(data), implicit, True, False))
        except Exception as exc:  # pydicom's conversion or the level refused
            return exc


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
@pytest.mark.parametrize(("tag", "vr"), KEYS, ids=[vr for _, vr in KEYS])
def test_each_value_reads_as_pydicom_reads_it_or_is_left_to_pydicom(
    tag: int, vr: str, implicit: bool
) -> None:
    read = 0
    for value in VALUES:
        if vr == "SQ" and value:
            continue  # not a sequence's encoding
        data = _identifier(sorted([LEVEL, (tag, vr, value)]), implicit)
        keys = encoded_keys(data, implicit)
        if keys is None:
            continue
        read += 1
        assert keys == _pydicom_keys(data, implicit), value
    assert read > 0


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
def test_a_viewers_identifier_is_read_without_pydicom(implicit: bool) -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.SpecificCharacterSet = "ISO_IR 100"
    query.StudyInstanceUID = "1.2.840.113619.2.55.3.604688119.971.1385631239.123"
    for keyword in ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription"):
        setattr(query, keyword, "")
    query.NumberOfSeriesRelatedInstances = None
    query.add_new(0x00091010, "LO", "private: neither searched nor read")
    out = DicomBytesIO()
    out.is_implicit_VR, out.is_little_endian = implicit, True
    write_dataset(out, query)
    data = out.getvalue()
    keys = encoded_keys(data, implicit)
    assert keys is not None
    assert keys == _pydicom_keys(data, implicit)
    assert ("0020000D", query.StudyInstanceUID) in keys.params
    assert [key for _, key in keys.wanted][-1] == "00201209"


@pytest.mark.parametrize(
    "elements",
    [
        [(0x0020000D, "UI", b"1.2"), LEVEL],  # out of tag order
        [LEVEL, LEVEL],  # twice
        [(0x00080052, "CS", b"STUDY\\SERIES")],  # several levels
        [LEVEL, (0x00400275, "SQ", b"\xfe\xff\x00\xe0\x00\x00\x00\x00")],  # an item
    ],
    ids=["unordered", "repeated", "levels", "sequence"],
)
def test_what_pydicom_reads_otherwise_is_left_to_it(elements: list[tuple[int, str, bytes]]) -> None:
    for implicit in (True, False):
        assert encoded_keys(_identifier(elements, implicit), implicit) is None


def test_undefined_lengths_and_truncation_are_left_to_pydicom() -> None:
    data = _identifier([LEVEL, (0x0020000D, "UI", b"1.2")], True)
    assert encoded_keys(data[:-1], True) is None
    assert encoded_keys(data + b"\x08\x00", True) is None
    undefined = struct.pack("<HH2s2xI", 0x0040, 0x0275, b"SQ", 0xFFFFFFFF)
    assert encoded_keys(_identifier([LEVEL], False) + undefined, False) is None


def test_a_bad_level_is_refused_as_pydicoms_reading_refuses_it() -> None:
    for level in (b"FRAME ", b""):
        data = _identifier([(0x00080052, "CS", level), (0x0020000D, "UI", b"1.2")], True)
        with pytest.raises(FindError) as fast:
            encoded_keys(data, True)
        assert str(fast.value) == str(_pydicom_keys(data, True))
    data = _identifier([(0x0020000D, "UI", b"1.2")], True)  # no level at all
    with pytest.raises(FindError, match="QueryRetrieveLevel ''"):
        encoded_keys(data, True)
