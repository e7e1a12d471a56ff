"""Reading the indexed attributes of a stored instance from its header."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicomql.dicom.attributes import Level
from dicomql.dicom.parse import UnreadableInstance, person_name_tokens, read_header
from tests.support.deflated import DAMAGES, damaged_deflated


def _path(name: str) -> Path:
    return Path(str(get_testdata_file(name, download=False)))


def test_header_gives_uids_columns_and_names() -> None:
    parsed = read_header(_path("CT_small.dcm"))
    assert parsed.study_instance_uid == "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
    assert parsed.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert parsed.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert parsed.columns[Level.SERIES]["modality"] == "CT"
    assert parsed.columns[Level.INSTANCE]["rows"] == 128
    assert parsed.columns[Level.STUDY]["patient_name_key"] == "compressedsamples^ct1"
    assert parsed.person_names == {"PatientName": "CompressedSamples^CT1"}


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm"]
)
def test_pixel_data_offset_points_at_the_pixel_value(name: str) -> None:
    data = _path(name).read_bytes()
    parsed = read_header(io.BytesIO(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pixels = pydicom.dcmread(io.BytesIO(data)).PixelData
    assert parsed.pixel_data_offset is not None
    assert parsed.pixel_data_length == len(pixels)
    start = parsed.pixel_data_offset
    assert data[start : start + len(pixels)] == pixels


def test_encapsulated_pixel_data_has_undefined_length() -> None:
    parsed = read_header(_path("JPEG2000.dcm"))
    assert parsed.pixel_data_offset is not None and parsed.pixel_data_length is None
    assert parsed.pixel_data_vr == "OB"


def test_dicom_json_names_pixel_data_as_relative_bulkdata() -> None:
    model = read_header(_path("CT_small.dcm")).dicom_json()
    assert model["7FE00010"] == {"vr": "OW", "BulkDataURI": "bulkdata/7FE00010"}
    assert model["00080060"] == {"vr": "CS", "Value": ["CT"]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not dicom" * 100, "Not a DICOM PS3.10 file"),
        (b"\0" * 128 + b"DICM" + b"\xff" * 50, None),
        (b"", "Not a DICOM"),
    ],
)
def test_unreadable_bytes_raise_unreadable_instance(data: bytes, message: str | None) -> None:
    with pytest.raises(UnreadableInstance, match=message):
        read_header(io.BytesIO(data))


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_deflated_data_set_is_unreadable_not_a_zlib_error(
    damage: str, tmp_path: Path
) -> None:
    data = damaged_deflated(damage)
    with pytest.raises(UnreadableInstance, match="while decompressing data"):
        read_header(io.BytesIO(data))
    (tmp_path / "damaged.dcm").write_bytes(data)  # a blob not held in memory is read so
    with pytest.raises(UnreadableInstance, match="while decompressing data"):
        read_header(tmp_path / "damaged.dcm")


def test_missing_study_uid_is_unreadable() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(_path("CT_small.dcm"))
    del ds.StudyInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer)
    with pytest.raises(UnreadableInstance, match="StudyInstanceUID"):
        read_header(io.BytesIO(buffer.getvalue()))


def test_person_name_tokens_split_components_groups_and_spaces() -> None:
    assert person_name_tokens("Doe^John Paul^^Dr.=Doe") == {"doe", "john", "paul", "dr."}
    assert person_name_tokens("") == set()


def test_docstring_examples() -> None:
    import doctest

    from dicomql.dicom import parse

    assert doctest.testmod(parse).failed == 0


def test_a_uid_longer_than_64_characters_is_unreadable() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(_path("CT_small.dcm"))
        ds.SOPInstanceUID = "1." * 40 + "1"
        buffer = io.BytesIO()
        ds.save_as(buffer)
    with pytest.raises(UnreadableInstance, match="longer than 64"):
        read_header(io.BytesIO(buffer.getvalue()))
