"""C-FIND answers (dimse.answers): encoded up front and written without pydicom's writer, they
read back as pydicom's own conversion of the match's DICOM JSON does, and are the bytes pydicom
writes for them, in every encoding a presentation context can have."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.tag import Tag
from pynetdicom.dsutils import encode

from dicomql.dimse import answers
from dicomql.dimse.answers import answer_identifier

MATCH: dict[str, Any] = {
    "00080020": {"vr": "DA", "Value": ["20240105"]},
    "00080050": {"vr": "SH"},  # present, empty
    "00080061": {"vr": "CS", "Value": ["CT", "MR"]},
    "00081030": {"vr": "LO", "Value": ["Thorax – contrast"]},  # not ASCII, odd length in UTF-8
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}]},
    "00100020": {"vr": "LO", "Value": ["PID1"]},
    "00101030": {"vr": "DS", "Value": [72.5]},  # decimal: pydicom's conversion
    "0020000D": {"vr": "UI", "Value": ["1.2.3.4"]},  # odd length: NUL padded
    "00200011": {"vr": "IS", "Value": [7]},
    "00201208": {"vr": "IS", "Value": [12]},
    "00280010": {"vr": "US", "Value": [512]},
    "00282000": {"vr": "OB", "InlineBinary": "AAEC"},  # binary: pydicom's conversion
    "00189087": {"vr": "FD", "Value": [1000.0]},
    "00400275": {
        "vr": "SQ",
        "Value": [{"00401001": {"vr": "SH", "Value": ["RP1"]}}],
    },
}
WANTED_KEYS = [*MATCH, "00081090", "00280106"]  # the last two absent: empty answers
ENCODINGS = [(True, True), (False, True), (False, False)]


def _reference(match: dict[str, Any], wanted: list[str], level: str) -> Dataset:
    """What pydicom makes of the match: Dataset.from_json of the wanted keys, empty elements
    for the others."""
    answer = Dataset.from_json({key: match[key] for key in wanted if key in match})
    answer.SpecificCharacterSet = "ISO_IR 192"
    answer.QueryRetrieveLevel = level
    for key in wanted:
        if key not in match:
            answer.add_new(int(key, 16), "LO" if key == "00081090" else "US", None)
    return answer


def _decoded(data: bytes, implicit: bool, little: bool) -> Dataset:
    return read_dataset(DicomBytesIO(data), implicit, little)


@pytest.mark.parametrize(("implicit", "little"), ENCODINGS, ids=str)
def test_answer_encodes_as_pydicom_converts(implicit: bool, little: bool) -> None:
    wanted = [(Tag(key), key) for key in WANTED_KEYS]
    answer = answer_identifier(MATCH, wanted, "STUDY", (implicit, little))
    encoded = answers.encode(answer, implicit, little)
    # Byte for byte what pydicom's writer makes of the same answer.
    assert encoded == encode(answer, implicit, little)
    expected = encode(_reference(MATCH, WANTED_KEYS, "STUDY"), implicit, little)
    assert encoded is not None and expected is not None
    got, want = _decoded(encoded, implicit, little), _decoded(expected, implicit, little)
    assert [element.tag for element in got] == [element.tag for element in want]
    for element in want:
        assert got[element.tag].value == element.value, element.keyword
    # Values read back from the answer itself (C-MOVE and storage commitment do).
    assert str(answer.PatientName) == "Yamada^Tarou=山田^太郎"
    assert answer.StudyInstanceUID == "1.2.3.4"
    assert answer.ModalitiesInStudy == ["CT", "MR"]
    assert answer.Rows == 512
    assert answer.SeriesNumber == 7


def test_other_datasets_and_other_encodings_go_to_pynetdicom() -> None:
    wanted = [(Tag(key), key) for key in WANTED_KEYS]
    answer = answer_identifier(MATCH, wanted, "STUDY", (True, True))
    assert answers.encode(answer, False, True) == encode(answer, False, True)
    assert answers.encode(answer, False, True, True) == encode(answer, False, True, True)
    plain = _reference(MATCH, WANTED_KEYS, "STUDY")
    assert answers.encode(plain, True, True) == encode(plain, True, True)


@pytest.mark.parametrize(("implicit", "little"), ENCODINGS, ids=str)
def test_an_answer_changed_after_it_was_built_is_written_as_it_is_now(
    implicit: bool, little: bool
) -> None:
    wanted = [(Tag(key), key) for key in WANTED_KEYS]
    answer = answer_identifier(MATCH, wanted, "STUDY", (implicit, little))
    answer.PatientID = "OTHER"  # replaced
    assert str(answer.PatientName) == "Yamada^Tarou=山田^太郎"  # converted by pydicom
    del answer.StudyDate
    answer.StudyID = "S1"  # added
    encoded = answers.encode(answer, implicit, little)
    assert encoded == encode(answer, implicit, little)
    assert encoded is not None
    got = _decoded(encoded, implicit, little)
    assert (got.PatientID, got.StudyID, "StudyDate" in got) == ("OTHER", "S1", False)
