"""De-identification of real DICOM files (deid-data's fake PHI, pydicom's bundled test files):
what each filter profile leaves, UID remapping and reference consistency, and that every output
is valid DICOM that writes and reads back."""

from __future__ import annotations

import copy
import doctest
import io
import pickle
import re
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import deid_data
import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from dicomql.dicom import deid
from dicomql.dicom.deid import Deidentifier, UidMap
from dicomql.dicom.deid import config as deid_config
from dicomql.dicom.deid import text as deid_text
from dicomql.dicom.deid import uids as deid_uids

BASIC = {"dicom": {"filterProfile": "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE"}}
DEID_DATA = sorted(Path(deid_data.__file__).parent.glob("data/*/*.dcm"))
# Only the files bundled in the pydicom wheel: get_testdata_files() would try to download more.
PYDICOM_FILES = sorted((Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm"))
UID_PATTERN = re.compile(r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))*$")
KEY = bytes(range(32))


def walk(ds: Dataset) -> Iterator[tuple[str, Any, str]]:
    """Every (VR, value, keyword) in ds, sequences included, multi-values flattened."""
    for element in ds.iterall():
        if element.VR == "SQ" or element.value is None:
            continue
        values = element.value if element.VM > 1 else [element.value]
        for value in values:
            yield element.VR, value, element.keyword


def sensitive(ds: Dataset) -> dict[str, set[str]]:
    """The original values a de-identified copy must not contain, by kind."""
    found: dict[str, set[str]] = {"name": set(), "id": set(), "date": set(), "uid": set()}
    with warnings.catch_warnings():
        # Reading the originals' own invalid values (e.g. IS "1A") is not what is under test.
        warnings.simplefilter("ignore")
        elements = list(walk(ds))
    for vr, value, keyword in elements:
        text = str(value).strip()
        if not text:
            continue
        if vr == "PN":
            if sum(character.isalnum() for character in text) >= 2:  # not just "^^"
                found["name"].add(text)
        elif vr in ("DA", "DT"):
            found["date"].add(text)
        elif (
            vr == "UI"
            and not text.startswith("1.2.840.10008.")
            and deid_uids.is_instance_uid_tag(pydicom.datadict.tag_for_keyword(keyword) or 0)
        ):
            found["uid"].add(text)
        elif keyword in ("PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID"):
            found["id"].add(text)
    return found


def survivors(original: dict[str, set[str]], output: Dataset) -> list[str]:
    left = []
    with warnings.catch_warnings():
        # Invalid values the original already had (checked separately) still read back.
        warnings.simplefilter("ignore")
        elements = list(walk(output))
    for vr, value, keyword in elements:
        text = str(value).strip()
        if not text:
            continue
        kind = {"PN": "name", "DA": "date", "DT": "date", "UI": "uid"}.get(vr)
        if kind == "uid" and not deid_uids.is_instance_uid_tag(
            pydicom.datadict.tag_for_keyword(keyword) or 0
        ):
            kind = None  # a class UID may share an instance UID's (bogus) value, e.g. "0"
        if kind and text in original[kind]:
            left.append(f"{keyword}={text!r}")
        if vr in ("LO", "SH", "LT", "ST", "UT", "UC", "PN") and text in original["id"]:
            left.append(f"{keyword}={text!r} (an ID)")
        if vr in ("LO", "SH", "LT", "ST", "UT", "UC"):
            left.extend(f"{keyword} contains {name!r}" for name in original["name"] if name in text)
    return left


def round_trip(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    back = pydicom.dcmread(buffer)
    back.PixelData if "PixelData" in back else None  # noqa: B018 - decode the whole file
    return back


def write_problems(ds: Dataset) -> tuple[Dataset, set[str]]:
    """The dataset read back after writing, and pydicom's complaints while writing it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        back = round_trip(ds)
    return back, {str(warning.message) for warning in caught}


def writes_cleanly(path: Path) -> bool:
    """Whether the untouched file is valid: all values decode, and it writes and reads back,
    without pydicom warnings or errors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            list(walk(round_trip(pydicom.dcmread(path))))
    except Exception:
        return False
    return True


@pytest.mark.parametrize("path", DEID_DATA, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_basic_profile_leaves_no_original_name_id_date_or_uid_in_deid_data(path: Path) -> None:
    original = pydicom.dcmread(path)
    secrets = sensitive(original)
    assert secrets["name"] and secrets["uid"]
    deidentifier = Deidentifier(BASIC)
    # Some of these files carry invalid values already; de-identification adds none.
    _, problems_before = write_problems(copy.deepcopy(original))
    output, problems = write_problems(deidentifier.deidentify(copy.deepcopy(original)))
    assert problems <= problems_before
    assert survivors(secrets, output) == []
    assert output.PatientIdentityRemoved == "YES"
    assert output.SOPClassUID == original.SOPClassUID
    assert output.file_meta.MediaStorageSOPInstanceUID == output.SOPInstanceUID
    assert not any(element.tag.is_private for element in output.iterall())


def test_basic_profile_on_every_bundled_pydicom_file_writes_valid_dicom_without_phi() -> None:
    checked = 0
    for path in PYDICOM_FILES:
        if not writes_cleanly(path):
            continue
        original = pydicom.dcmread(path)
        secrets = sensitive(original)
        output = Deidentifier(BASIC).deidentify(copy.deepcopy(original))
        back = round_trip(output)
        assert survivors(secrets, back) == [], path.name
        for vr, value, keyword in walk(back):
            if vr == "UI":
                assert UID_PATTERN.match(str(value)) and len(str(value)) <= 64, (path, keyword)
        checked += 1
    assert checked >= 40


def test_basic_profile_keeps_pixel_data_and_image_attributes_unchanged() -> None:
    original = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    output = Deidentifier(BASIC).deidentify(copy.deepcopy(original))
    assert output.PixelData == original.PixelData
    for keyword in ("Rows", "Columns", "BitsAllocated", "PixelSpacing", "Modality"):
        assert output[keyword].value == original[keyword].value
    assert (output.pixel_array == original.pixel_array).all()


def referencing_pair() -> tuple[Dataset, Dataset]:
    """Two instances of one patient: ``derived`` points at ``source`` by its SOP Instance UID."""

    frame_of_reference = generate_uid()

    def instance(sop_instance_uid: str, study: str, series: str) -> Dataset:
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.SOPInstanceUID = sop_instance_uid
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PatientName = "Doe^Jane"
        ds.PatientID = "MRN-4471"
        ds.StudyDate = "20200314"
        ds.Modality = "OT"
        ds.ImageComments = "Jane Doe seen 03/14/2020, call 555-123-4567 or jane.doe@example.org"
        return ds

    study, series = generate_uid(), generate_uid()
    source = instance(generate_uid(), study, series)
    derived = instance(generate_uid(), study, series)
    reference = Dataset()
    reference.ReferencedSOPClassUID = SecondaryCaptureImageStorage
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    derived.SourceImageSequence = Sequence([reference])
    derived.ReferencedImageSequence = Sequence([copy.deepcopy(reference)])
    return source, derived


@pytest.mark.parametrize(
    "config",
    [BASIC, {}, {"dicom": {"filterProfile": "DEIDENTIFY_TAG_CONTENTS"}}],
    ids=["basic", "keep-all", "tag-contents"],
)
def test_references_between_instances_map_to_the_referenced_instances_new_uid(
    config: dict[str, Any],
) -> None:
    source, derived = referencing_pair()
    deidentifier = Deidentifier(config, operation_key=KEY)
    # Separate UID maps stand for separate workers: the mapping needs no shared state.
    new_source = deidentifier.deidentify(copy.deepcopy(source), uid_map=deidentifier.uid_map())
    new_derived = deidentifier.deidentify(copy.deepcopy(derived), uid_map=deidentifier.uid_map())
    assert new_source.SOPInstanceUID != source.SOPInstanceUID
    for sequence in ("SourceImageSequence", "ReferencedImageSequence"):
        item = new_derived[sequence][0]
        assert item.ReferencedSOPInstanceUID == new_source.SOPInstanceUID
        assert item.ReferencedSOPClassUID == SecondaryCaptureImageStorage
    assert new_derived.StudyInstanceUID == new_source.StudyInstanceUID != source.StudyInstanceUID
    assert new_derived.SeriesInstanceUID == new_source.SeriesInstanceUID
    assert new_derived.FrameOfReferenceUID == new_source.FrameOfReferenceUID
    assert new_source.FrameOfReferenceUID != source.FrameOfReferenceUID
    assert new_derived.SOPClassUID == SecondaryCaptureImageStorage


def _deidentify_in_worker(deidentifier: Deidentifier, data: bytes) -> tuple[str, str]:
    ds = pydicom.dcmread(io.BytesIO(deid.deidentify_bytes(deidentifier, data)))
    return ds.SOPInstanceUID, ds.SourceImageSequence[0].ReferencedSOPInstanceUID


def test_deidentifier_pickles_and_maps_uids_identically_in_other_processes() -> None:
    source, derived = referencing_pair()
    derived.SOPInstanceUID = source.SOPInstanceUID  # both map the same UID, in two processes
    deidentifier = Deidentifier(BASIC)
    buffer = io.BytesIO()
    derived.save_as(buffer, enforce_file_format=True)
    expected = deidentifier.uid_map()(source.SOPInstanceUID)
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_deidentify_in_worker, [deidentifier] * 2, [buffer.getvalue()] * 2))
    assert results == [(expected, expected)] * 2
    assert pickle.loads(pickle.dumps(deidentifier)).operation_key == deidentifier.operation_key


def test_uid_map_gives_valid_2_25_uids_deterministic_per_key() -> None:
    first, again, other = UidMap(KEY), UidMap(KEY), UidMap(bytes(32))
    old = "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012345678901234"
    new = first(old)
    assert new == again(old) != other(old)
    assert new.startswith("2.25.") and len(new) <= 64 and UID_PATTERN.match(new)
    assert first("1.2.840.10008.5.1.4.1.1.2") == "1.2.840.10008.5.1.4.1.1.2"
    recording = UidMap(KEY, record=True)
    recording(old)
    assert recording.mapping == {old: new}


def test_skip_id_redaction_keeps_every_uid() -> None:
    source, derived = referencing_pair()
    config = {
        "dicom": {
            "filterProfile": "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE",
            "skipIdRedaction": True,
        }
    }
    output = Deidentifier(config).deidentify(copy.deepcopy(derived))
    assert output.SOPInstanceUID == derived.SOPInstanceUID
    assert output.StudyInstanceUID == derived.StudyInstanceUID
    assert output.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert "PatientName" in output and not output.PatientName


def test_keep_all_profile_keeps_values_and_private_tags_but_regenerates_uids() -> None:
    original = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    output = Deidentifier({"dicom": {"filterProfile": "KEEP_ALL_PROFILE"}}).deidentify(
        copy.deepcopy(original)
    )
    assert output.PatientName == original.PatientName
    assert output.StudyDate == original.StudyDate
    assert len(output) == len(original)
    assert output.SOPInstanceUID != original.SOPInstanceUID
    assert output.file_meta.MediaStorageSOPInstanceUID == output.SOPInstanceUID
    assert [e.tag for e in output if e.tag.is_private] == [
        e.tag for e in original if e.tag.is_private
    ]


def test_keep_list_keeps_only_listed_tags_plus_what_a_decodable_instance_needs() -> None:
    original = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    config = {"dicom": {"keepList": {"tags": ["PatientSex", "00180050"]}}}
    output = round_trip(Deidentifier(config).deidentify(copy.deepcopy(original)))
    assert output.PatientSex == original.PatientSex
    assert output.SliceThickness == original.SliceThickness
    assert "PatientName" not in output and "StudyDate" not in output
    assert not any(element.tag.is_private for element in output)
    assert (output.pixel_array == original.pixel_array).all()
    assert output.SOPInstanceUID != original.SOPInstanceUID


def test_remove_list_removes_only_listed_tags() -> None:
    original = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    config = {"dicom": {"removeList": {"tags": ["PatientName", "00100020"]}}}
    output = Deidentifier(config).deidentify(copy.deepcopy(original))
    assert "PatientName" not in output and "PatientID" not in output
    assert output.StudyDate == original.StudyDate
    assert len(output) == len(original) - 2


def test_minimal_keep_list_keeps_valid_image_and_empties_identifying_type_2_attributes() -> None:
    original = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    output = round_trip(
        Deidentifier({"dicom": {"filterProfile": "MINIMAL_KEEP_LIST_PROFILE"}}).deidentify(
            copy.deepcopy(original)
        )
    )
    for keyword in ("PatientName", "PatientID", "StudyDate", "AccessionNumber"):
        assert keyword in output and output[keyword].value in ("", None)
    for keyword in ("InstitutionName", "StationName", "StudyDescription", "SeriesDate"):
        assert keyword in original and keyword not in output
    assert output.Modality == "CT" and output.KVP == original.KVP
    assert (output.pixel_array == original.pixel_array).all()
    assert len(output) < 60


def tag_contents(**text: Any) -> dict[str, Any]:
    return {"dicom": {"filterProfile": "DEIDENTIFY_TAG_CONTENTS"}, "text": text}


def test_tag_contents_replaces_names_and_free_text_findings_with_their_info_type_by_default() -> (
    None
):
    _, derived = referencing_pair()
    output = round_trip(Deidentifier(tag_contents()).deidentify(copy.deepcopy(derived)))
    assert output.PatientName == "[PERSON_NAME]"
    assert output.PatientID == "[MEDICAL_RECORD_NUMBER]"
    assert output.StudyDate == ""  # "[DATE]" is not a DA value: redacted instead
    assert output.ImageComments == (
        "[PERSON_NAME] [PERSON_NAME] seen [DATE], call [PHONE_NUMBER] or [EMAIL_ADDRESS]"
    )
    assert output.Modality == "OT"


def test_tag_contents_date_shift_is_consistent_per_patient_and_within_100_days() -> None:
    key = "AAECAwQFBgcICQoLDA0ODw=="  # 16 bytes, base64
    config = tag_contents(additionalTransformations=[{"dateShiftConfig": {"cryptoKey": key}}])
    deidentifier = Deidentifier(config)
    first, second = referencing_pair()
    other = copy.deepcopy(second)
    other.PatientID = "MRN-9999"
    shifted = [
        deidentifier.deidentify(copy.deepcopy(ds)).StudyDate for ds in (first, second, other)
    ]
    assert shifted[0] == shifted[1] != "20200314"
    days = deid_text.date_shift_days(bytes(range(16)), "MRN-4471")
    assert 1 <= abs(days) <= 100
    assert shifted[0] == deid_text.shift_dicom_date("20200314", "DA", days)
    assert shifted[2] == deid_text.shift_dicom_date(
        "20200314", "DA", deid_text.date_shift_days(bytes(range(16)), "MRN-9999")
    )
    comments = deidentifier.deidentify(copy.deepcopy(first)).ImageComments
    assert deid_text.shift_text_date("03/14/2020", days) in comments


def test_tag_contents_crypto_hash_mask_and_exclusions_apply_by_info_type() -> None:
    key = "AAECAwQFBgcICQoLDA0ODw=="
    config = tag_contents(
        additionalTransformations=[
            {"infoTypes": ["MEDICAL_RECORD_NUMBER"], "cryptoHashConfig": {"cryptoKey": key}},
            {"infoTypes": ["PHONE_NUMBER"], "characterMaskConfig": {"maskingCharacter": "#"}},
            {"infoTypes": ["EMAIL_ADDRESS"], "redactConfig": {}},
        ],
        excludeInfoTypes=["PERSON_NAME"],
    )
    _, derived = referencing_pair()
    output = round_trip(Deidentifier(config).deidentify(copy.deepcopy(derived)))
    assert output.PatientID == deid_text.crypto_hash(bytes(range(16)), "MRN-4471")
    assert output.PatientName == "Doe^Jane"
    # (pydicom strips the trailing space of text values when reading)
    assert output.ImageComments == "Jane Doe seen [DATE], call ############ or"


def test_tag_contents_removes_private_tags_and_keeps_the_rest() -> None:
    original = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    output = round_trip(Deidentifier(tag_contents()).deidentify(copy.deepcopy(original)))
    assert not any(element.tag.is_private for element in output)
    assert output.PatientName == "[PERSON_NAME]"
    assert output.Rows == original.Rows


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ([], "config: expected a JSON object"),
        ({"dicom": {"filterProfile": "STRICT"}}, "config.dicom.filterProfile"),
        (
            {"dicom": {"filterProfile": "KEEP_ALL_PROFILE", "keepList": {"tags": []}}},
            "only one of filterProfile, keepList and removeList",
        ),
        ({"dicom": {"keepList": {"tags": ["PatientNam"]}}}, "config.dicom.keepList.tags[0]"),
        ({"dicom": {"skipIdRedaction": "yes"}}, "config.dicom.skipIdRedaction"),
        ({"dicom": {"filterprofile": "KEEP_ALL_PROFILE"}}, "unknown field 'filterprofile'"),
        ({"text": {"transformations": [{}]}}, "config.text.transformations[0]: exactly one"),
        (
            {"text": {"additionalTransformations": [{"cryptoHashConfig": {"cryptoKey": "abc"}}]}},
            "cryptoKey",
        ),
        (
            {"text": {"transformations": [{"characterMaskConfig": {"maskingCharacter": "ab"}}]}},
            "maskingCharacter",
        ),
        ({"image": {"textRedactionMode": "BLUR"}}, "config.image.textRedactionMode"),
        ({"image": {"customRegexes": [{"pattern": "("}]}}, "config.image.customRegexes[0]"),
        (
            {"image": {"customRegexes": [{"pattern": "(a)", "groupIndexes": [2]}]}},
            "groupIndexes",
        ),
    ],
)
def test_invalid_configs_raise_a_value_error_naming_the_field(config: Any, message: str) -> None:
    with pytest.raises(deid.DeidentifyConfigError) as caught:
        Deidentifier(config)
    assert isinstance(caught.value, ValueError)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "config",
    [
        {"text": {"transformations": [{"dateShiftConfig": {"kmsWrapped": {"cryptoKey": "k"}}}]}},
        {"text": {"transformations": [{"cryptoHashConfig": {"kmsWrapped": {"cryptoKey": "k"}}}]}},
    ],
)
def test_kms_wrapped_keys_are_refused_clearly(config: dict[str, Any]) -> None:
    with pytest.raises(deid.UnsupportedDeidentifyConfigError, match="give cryptoKey instead"):
        Deidentifier(config)


@pytest.mark.parametrize(
    "module", [deid_config, deid_text, deid_uids], ids=lambda m: m.__name__.rsplit(".", 1)[1]
)
def test_docstring_examples_hold(module: Any) -> None:
    failures, tried = doctest.testmod(module)
    assert tried > 0 and failures == 0


DESTINATION = "projects/p/locations/us/datasets/d/dicomStores/deid-out"


def test_deidentify_request_is_validated_with_its_config() -> None:
    request = deid.parse_request(
        {
            "destinationStore": DESTINATION,
            "config": BASIC,
            "filterConfig": {"resourcePathsGcsUri": "gs://b/paths.txt"},
        }
    )
    assert request.destination_store == DESTINATION
    assert request.options.filter_profile == "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE"
    assert request.config == BASIC
    assert request.resource_paths_gcs_uri == "gs://b/paths.txt"
    assert deid.parse_request({"destinationStore": DESTINATION}).options.filter_profile == (
        "KEEP_ALL_PROFILE"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "destinationStore: required"),
        ({"destinationStore": "deid-out"}, "destinationStore: must be projects/"),
        ({"destinationStore": DESTINATION, "config": {"dicom": []}}, "config.dicom"),
        ({"destinationStore": DESTINATION, "confg": {}}, "unknown field 'confg'"),
        (
            {"destinationStore": DESTINATION, "config": {}, "gcsConfigUri": "gs://b/c.json"},
            "only one of config and gcsConfigUri",
        ),
    ],
)
def test_invalid_deidentify_requests_name_the_problem(body: Any, message: str) -> None:
    with pytest.raises(deid.DeidentifyConfigError, match=re.escape(message)):
        deid.parse_request(body)


@pytest.mark.parametrize("path", DEID_DATA, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_tag_contents_leaves_no_original_name_id_or_date_in_deid_data(path: Path) -> None:
    original = pydicom.dcmread(path)
    secrets = sensitive(original)
    secrets["uid"] = set()  # UIDs are covered by the basic-profile test
    _, problems_before = write_problems(copy.deepcopy(original))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        list(walk(copy.deepcopy(original)))  # decoding the original's own invalid values warns
    problems_before |= {str(warning.message) for warning in caught}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        deidentified = Deidentifier(tag_contents()).deidentify(original)
    assert {str(warning.message) for warning in caught} <= problems_before
    output, problems = write_problems(deidentified)
    assert problems <= problems_before
    assert survivors(secrets, output) == []


def test_one_deidentifier_and_uid_map_shared_by_threads_give_the_sequential_result() -> None:
    from concurrent.futures import ThreadPoolExecutor

    # Valid files only: warnings filters are process-global, so threads must not need them.
    small = [path for path in PYDICOM_FILES if path.stat().st_size < 100_000]
    originals = [pydicom.dcmread(path) for path in small if writes_cleanly(path)][:10]
    assert len(originals) >= 5
    deidentifier = Deidentifier(tag_contents(), operation_key=KEY)
    shared = deidentifier.uid_map()

    def run(ds: Dataset) -> list[tuple[str, Any]]:
        output = deidentifier.deidentify(copy.deepcopy(ds), uid_map=shared)
        return [(e.keyword, str(e.value)) for e in output.iterall() if e.VR != "SQ"]

    sequential = [run(ds) for ds in originals]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(run, originals * 3)) == sequential * 3
