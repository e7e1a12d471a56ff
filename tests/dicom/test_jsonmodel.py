from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pydicom.data
import pytest
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from bench import datagen
from dicomql.dicom.jsonmodel import (
    SERIES_LEVEL_TAGS,
    STUDY_LEVEL_TAGS,
    absolutize_bulkdata_uris,
    dataset_to_dicom_json,
    level_attributes,
    relative_bulkdata_uri,
    split_by_level,
)

DATA = Path(pydicom.data.__file__).parent
CT_SMALL = DATA / "test_files" / "CT_small.dcm"
CHARSET_FILES = sorted((DATA / "charset_files").glob("*.dcm"))


def roundtrip(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> Dataset:
    """``ds`` written as PS3.10 and read back, so its elements are raw as after ingest."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return dcmread(buffer)


@pytest.fixture(params=[ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def syntax(request: pytest.FixtureRequest) -> str:
    transfer_syntax: str = request.param
    return transfer_syntax


def test_person_names_carry_their_component_groups(syntax: str) -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    ds.ReferringPhysicianName = ["Doe^John", "Roe^Jane"]
    model = dataset_to_dicom_json(roundtrip(ds, syntax))
    assert model["00100010"] == {
        "vr": "PN",
        "Value": [
            {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
        ],
    }
    assert model["00080090"]["Value"] == [{"Alphabetic": "Doe^John"}, {"Alphabetic": "Roe^Jane"}]


def test_numbers_are_json_numbers_and_tags_are_hex_strings(syntax: str) -> None:
    ds = Dataset()
    ds.Rows = 512
    ds.SmallestImagePixelValue = 0  # "US or SS": resolved by pydicom from PixelRepresentation
    ds.PixelRepresentation = 1
    ds.InstanceNumber = "7"
    ds.PixelSpacing = ["0.5", "0.25"]
    ds.SliceThickness = "2"
    ds.FrameIncrementPointer = 0x00181063
    ds.ReferencedFrameNumber = [1, 2]
    ds.RescaleSlope = "1.5e0"
    model = dataset_to_dicom_json(roundtrip(ds, syntax))
    assert model["00280010"] == {"vr": "US", "Value": [512]}
    assert model["00280106"] == {"vr": "SS", "Value": [0]}
    assert model["00200013"] == {"vr": "IS", "Value": [7]}
    assert model["00280030"] == {"vr": "DS", "Value": [0.5, 0.25]}
    assert model["00180050"] == {"vr": "DS", "Value": [2]}
    assert model["00281053"] == {"vr": "DS", "Value": [1.5]}
    assert model["00280009"] == {"vr": "AT", "Value": ["00181063"]}
    assert model["00081160"] == {"vr": "IS", "Value": [1, 2]}


def test_text_values_lose_padding_and_empty_values_have_no_value_key() -> None:
    ds = Dataset()
    ds.ImageType = ["ORIGINAL", "", "AXIAL"]
    ds.PatientID = "ID 7 "
    ds.StudyDescription = ""
    ds.ImageComments = "  indented text stays indented"
    model = dataset_to_dicom_json(roundtrip(ds))
    assert model["00080008"] == {"vr": "CS", "Value": ["ORIGINAL", None, "AXIAL"]}
    assert model["00100020"] == {"vr": "LO", "Value": ["ID 7"]}
    assert model["00081030"] == {"vr": "LO"}
    assert model["00204000"] == {"vr": "LT", "Value": ["  indented text stays indented"]}


def test_sequences_nest_and_bulk_data_inside_them_gets_a_tag_path() -> None:
    inner = Dataset()
    inner.CodeValue = "T-D1100"
    inner.EncapsulatedDocument = b"x" * 2000
    item = Dataset()
    item.ConceptNameCodeSequence = Sequence([inner])
    ds = Dataset()
    ds.ContentSequence = Sequence([Dataset(), item])
    model = dataset_to_dicom_json(roundtrip(ds), bulkdata_uri=relative_bulkdata_uri)
    items = model["0040A730"]["Value"]
    assert items[0] == {}
    code = items[1]["0040A043"]["Value"][0]
    assert code["00080100"] == {"vr": "SH", "Value": ["T-D1100"]}
    assert code["00420011"] == {
        "vr": "OB",
        "BulkDataURI": "bulkdata/0040A730/1/0040A043/0/00420011",
    }


def test_small_binary_is_inline_and_large_binary_and_pixel_data_are_bulk() -> None:
    ds = Dataset()
    ds.EncapsulatedDocument = b"%PDF" * 1000
    ds.add_new(0x00091010, "OB", b"\x01\x02\x03\x04")  # private OB, inlined
    ds.RedPaletteColorLookupTableData = b"\x00\x01" * 8
    ds.add_new(0x7FE00010, "OB", b"\x00\x00")  # tiny, still bulk: pixel data is never inlined
    uris: list[str] = []

    def uri(tag_path: str) -> str:
        uris.append(tag_path)
        return f"https://h/i/bulkdata/{tag_path}"

    model = dataset_to_dicom_json(roundtrip(ds), bulkdata_uri=uri)
    assert model["00420011"] == {"vr": "OB", "BulkDataURI": "https://h/i/bulkdata/00420011"}
    assert model["7FE00010"]["BulkDataURI"] == "https://h/i/bulkdata/7FE00010"
    assert base64.b64decode(model["00281201"]["InlineBinary"]) == b"\x00\x01" * 8
    assert sorted(uris) == ["00420011", "7FE00010"]
    assert model["00091010"] == {
        "vr": "OB",
        "InlineBinary": base64.b64encode(b"\x01\x02\x03\x04").decode(),
    }


def test_without_a_bulkdata_callable_bulk_values_keep_only_their_vr() -> None:
    ds = Dataset()
    ds.add_new(0x7FE00010, "OB", b"\x00" * 4096)
    assert dataset_to_dicom_json(roundtrip(ds))["7FE00010"] == {"vr": "OB"}


def test_the_threshold_decides_between_inline_and_bulk() -> None:
    ds = Dataset()
    ds.EncapsulatedDocument = b"a" * 100
    read = roundtrip(ds)
    assert (
        "InlineBinary"
        in dataset_to_dicom_json(read, bulkdata_uri=relative_bulkdata_uri)["00420011"]
    )
    model = dataset_to_dicom_json(read, bulkdata_uri=relative_bulkdata_uri, bulk_threshold=99)
    assert model["00420011"]["BulkDataURI"] == "bulkdata/00420011"


def test_group_lengths_and_file_meta_are_left_out() -> None:
    ds = Dataset()
    ds.add_new(0x00080000, "UL", 10)
    ds.PatientID = "p"
    model = dataset_to_dicom_json(ds)
    assert list(model) == ["00100020"]


def test_ct_small_matches_pydicoms_json_apart_from_the_documented_choices() -> None:
    """Same values as pydicom's own (slow) converter; the differences are deliberate: pixel data
    is always bulk, values are stripped of padding, empty values in a list are null."""
    ours = dataset_to_dicom_json(dcmread(CT_SMALL), bulkdata_uri=relative_bulkdata_uri)
    theirs = dcmread(CT_SMALL).to_json_dict(
        bulk_data_threshold=1024, bulk_data_element_handler=lambda e: "bulk"
    )
    # Trailing padding (FFFC,FFFC) carries nothing (PS3.10 7.2) and is left out.
    assert set(ours) == {key for key in theirs if not key.endswith("0000")} - {"FFFCFFFC"}
    for key, attribute in theirs.items():
        if key in ("7FE00010", "FFFCFFFC") or key.endswith("0000"):
            continue
        expected = attribute.get("Value")
        if attribute["vr"] == "CS" and expected:
            expected = [value.strip() for value in expected]
        assert ours[key].get("vr") == attribute["vr"], key
        if attribute["vr"] in ("FL", "FD", "DS") and expected:
            assert ours[key]["Value"] == pytest.approx(expected), key
        elif attribute["vr"] != "SQ":
            assert ours[key].get("Value") == expected, key
    assert ours["7FE00010"] == {"vr": "OW", "BulkDataURI": "bulkdata/7FE00010"}
    json.dumps(ours)  # serialisable as is


@pytest.mark.parametrize("path", CHARSET_FILES, ids=lambda p: p.name)
def test_text_in_every_character_set_decodes_as_pydicom_decodes_it(path: Path) -> None:
    ours = dataset_to_dicom_json(dcmread(path))
    theirs = dcmread(path).to_json_dict()
    for key, attribute in theirs.items():
        if attribute["vr"] in ("PN", "LO", "SH", "ST", "LT", "UT", "SQ") and key in ours:
            assert ours[key].get("Value") == attribute.get("Value"), key


def test_split_by_level_puts_patient_and_study_series_and_the_rest_apart() -> None:
    model = dataset_to_dicom_json(dcmread(CT_SMALL), bulkdata_uri=relative_bulkdata_uri)
    study, series, instance = split_by_level(model)
    assert {"00100010", "00100020", "0020000D", "00080020", "00080005"} <= set(study)
    assert {"0020000E", "00080060", "00200011", "00200052"} <= set(series)
    assert {"00080018", "00200013", "7FE00010", "00280010"} <= set(instance)
    assert not (set(instance) & (set(study) | set(series)))
    assert series["00080005"] == study["00080005"]  # each level readable on its own
    assert set(study) | set(series) | set(instance) == set(model)


def test_level_attributes_are_those_of_a_pass_over_the_model_in_its_order() -> None:
    template = datagen.small_template("CT")
    for ds in (dcmread(CT_SMALL), dcmread(io.BytesIO(template.header + datagen.small_pixels()))):
        model = dataset_to_dicom_json(ds, bulkdata_uri=relative_bulkdata_uri)
        study, series = level_attributes(model)
        in_model_order = [
            {key: value for key, value in model.items() if int(key, 16) in tags}
            for tags in (STUDY_LEVEL_TAGS, SERIES_LEVEL_TAGS)
        ]
        if "00080005" in model:  # repeated in the series part
            in_model_order[1]["00080005"] = model["00080005"]
        assert list(study.items()) == list(in_model_order[0].items())
        assert list(series.items()) == list(in_model_order[1].items())
        assert split_by_level(model)[:2] == (study, series)


def test_relative_bulkdata_uris_become_absolute_in_serialized_json() -> None:
    base = "http://h/v1/p/dicomWeb/studies/1/series/2/instances/3"
    stored = json.dumps(
        {
            "7FE00010": {"vr": "OW", "BulkDataURI": "bulkdata/7FE00010"},
            "00204000": {"vr": "LT", "Value": ['"BulkDataURI": "bulkdata/x"']},
        }
    )
    rewritten = json.loads(absolutize_bulkdata_uris(stored, base))
    assert rewritten["7FE00010"]["BulkDataURI"] == f"{base}/bulkdata/7FE00010"
    assert rewritten["00204000"]["Value"] == ['"BulkDataURI": "bulkdata/x"']


def test_the_docstring_examples_hold() -> None:
    import doctest

    from dicomql.dicom import jsonmodel

    result = doctest.testmod(jsonmodel)
    assert result.attempted > 0 and result.failed == 0
