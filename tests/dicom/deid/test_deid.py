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
from dataclasses import dataclass
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
from dicomql.dicom.deid import _minimal_keep_list as minimal_tables
from dicomql.dicom.deid import config as deid_config
from dicomql.dicom.deid import profiles as deid_profiles
from dicomql.dicom.deid import text as deid_text
from dicomql.dicom.deid import uids as deid_uids

BASIC = {"dicom": {"filterProfile": "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE"}}
MINIMAL = {"dicom": {"filterProfile": "MINIMAL_KEEP_LIST_PROFILE"}}
DEID_DATA = sorted(Path(deid_data.__file__).parent.glob("data/*/*.dcm"))
# Only the files bundled in the pydicom wheel: get_testdata_files() would try to download more.
PYDICOM_FILES = sorted((Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm"))
UID_PATTERN = re.compile(r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))*$")
KEY = bytes(range(32))
# Identifiers of a patient, visit, order or procedure (PatientID, OtherPatientIDs,
# AccessionNumber, StudyID, AdmissionID, RequestedProcedureID, …) are LO or SH values of
# attributes named so. Not among them: ImageID (0054,0400), which labels an image (Table E.1-1
# keeps it), and IssuerOfPatientID and the like, which name the assigning organisation.
ID_KEYWORD = re.compile(r"(ID|IDs|Number|Numbers|Identifier)$")
NOT_PERSONAL_IDS = frozenset({"ImageID"})
TEXT_VRS = ("LO", "SH", "LT", "ST", "UT", "UC")


def readable(path: Path) -> bool:
    """Whether ``path`` is a DICOM file (pydicom reads it without ``force``). Four of pydicom's
    test files are bare data sets without the Part 10 header; no store accepts them."""
    try:
        pydicom.dcmread(path, stop_before_pixels=True)
    except pydicom.errors.InvalidDicomError:
        return False
    return True


with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # reading the originals' own invalid values warns
    ALL_FILES = [path for path in DEID_DATA + PYDICOM_FILES if readable(path)]


def file_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def walk(ds: Dataset) -> Iterator[tuple[str, Any, str]]:
    """Every (VR, value, keyword) in ds, sequences included, multi-values flattened."""
    for element in ds.iterall():
        if element.VR == "SQ" or element.value is None:
            continue
        values = element.value if element.VM > 1 else [element.value]
        for value in values:
            yield element.VR, value, element.keyword


def flatten(ds: Dataset, prefix: tuple[int, ...] = ()) -> Iterator[tuple[tuple[int, ...], Any]]:
    """Every non-sequence element with its path (tags and item indexes from the top)."""
    # pydicom warns of the test files' invalid UIDs as it converts them; whether the warning
    # raises depends on filters other tests in the same xdist worker left behind.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        elements = list(ds)
    for element in elements:
        path = (*prefix, int(element.tag))
        if element.VR == "SQ":
            for index, item in enumerate(element.value or []):
                yield from flatten(item, (*path, index))
        else:
            yield path, element


def is_instance_uid(tag: int, value: str) -> bool:
    return not value.startswith("1.2.840.10008.") and deid_uids.is_instance_uid_tag(tag)


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
        elif vr == "UI" and is_instance_uid(pydicom.datadict.tag_for_keyword(keyword) or 0, text):
            found["uid"].add(text)
        elif (
            vr in ("LO", "SH")
            and ID_KEYWORD.search(keyword)
            and keyword not in NOT_PERSONAL_IDS
            and not keyword.startswith("IssuerOf")
        ):
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
        if vr in (*TEXT_VRS, "PN") and text in original["id"]:
            left.append(f"{keyword}={text!r} (an ID)")
        if vr in TEXT_VRS:
            left.extend(f"{keyword} contains {name!r}" for name in original["name"] if name in text)
    return left


def leaked_bytes(original: Dataset, output: Dataset) -> list[str]:
    """Original names, IDs and instance UIDs found anywhere in the written output (pixel data
    aside), whatever element holds them: private, unknown-VR and file meta ones included."""
    without_pixels = copy.deepcopy(output)
    if "PixelData" in without_pixels:
        del without_pixels.PixelData
    buffer = io.BytesIO()
    without_pixels.save_as(buffer)
    data = buffer.getvalue()
    secrets = sensitive(original)
    leaked = []
    for kind in ("name", "id", "uid"):
        for secret in secrets[kind]:
            if len(secret) < 4:  # "0", "1.2": would match by chance
                continue
            # A UID only as a whole: "1.2.3.4" is not leaked by "1.2.3.45".
            pattern = rb"(?<![0-9.])%s(?![0-9.])" % re.escape(secret.encode("latin-1", "replace"))
            if re.search(pattern, data):
                leaked.append(f"{kind} {secret!r}")
    return leaked


def round_trip(ds: Dataset, *, part10: bool = True) -> Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=part10)
    buffer.seek(0)
    back = pydicom.dcmread(buffer, force=not part10)
    back.PixelData if "PixelData" in back else None  # noqa: B018 - decode the whole file
    return back


def write_problems(ds: Dataset, *, part10: bool = True) -> tuple[Dataset, set[str]]:
    """The dataset read back after writing (every value decoded), and pydicom's complaints
    while writing and decoding it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        back = round_trip(ds, part10=part10)
        list(walk(back))
    return back, {str(warning.message) for warning in caught}


def write_mode(ds: Dataset) -> bool | None:
    """True if the untouched original writes as a Part 10 file; False if only as a bare data
    set (three of pydicom's test files lack the Media Storage SOP Class UID); None if pydicom
    cannot write it at all."""
    for part10 in (True, False):
        try:
            copy.deepcopy(ds).save_as(io.BytesIO(), enforce_file_format=part10)
        except (AttributeError, ValueError):
            continue
        except TypeError:  # pydicom cannot re-encode the file (SC_rgb_jpeg.dcm; see below)
            return None
        return part10
    return None


# SC_rgb_jpeg.dcm declares Explicit VR but is encoded Implicit VR: pydicom reads it and cannot
# write it back as read; the service decodes its elements first (deid.engine.deidentify_bytes,
# tests/service/test_deidentify_corpus.py), these tests use pydicom as it comes.
UNWRITABLE = {"SC_rgb_jpeg.dcm"}


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


@dataclass
class Deidentified:
    original: Dataset
    output: Dataset | None  # as read back from the written file; None if pydicom cannot write
    problems_before: set[str]  # pydicom's warnings on the untouched original
    problems_after: set[str]


def deidentify_file(path: Path, config: dict[str, Any]) -> Deidentified:
    """De-identify ``path`` as one worker would (its own UID map from the shared key), write
    the output and read it back."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = pydicom.dcmread(path)
        part10 = write_mode(original)
    deidentifier = Deidentifier(config, operation_key=KEY)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        deidentified = deidentifier.deidentify(copy.deepcopy(original))
    if part10 is None:
        with pytest.raises(TypeError), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            deidentified.save_as(io.BytesIO())
        return Deidentified(original, None, set(), set())
    _, problems_before = write_problems(copy.deepcopy(original), part10=part10)
    output, problems_after = write_problems(deidentified, part10=part10)
    return Deidentified(
        original, output, problems_before, problems_after | {str(w.message) for w in caught}
    )


def written(result: Deidentified) -> Dataset:
    if result.output is None:
        pytest.skip("pydicom cannot write this file even untouched (UNWRITABLE)")
    return result.output


@pytest.fixture(scope="module")
def basic_outputs() -> dict[Path, Deidentified]:
    return {path: deidentify_file(path, BASIC) for path in ALL_FILES}


def test_the_corpus_is_deid_data_and_pydicom_test_files_full_of_identifiers(
    basic_outputs: dict[Path, Deidentified],
) -> None:
    assert len(DEID_DATA) == 13 and len(ALL_FILES) == 13 + len(PYDICOM_FILES) - 4
    assert {path.name for path, result in basic_outputs.items() if result.output is None} == (
        UNWRITABLE
    )
    totals = {kind: 0 for kind in ("name", "id", "date", "uid")}
    for result in basic_outputs.values():
        for kind, values in sensitive(result.original).items():
            totals[kind] += len(values)
    # The checks below would pass vacuously on files without identifiers.
    assert totals["name"] > 50 and totals["id"] > 50 and totals["date"] > 100
    assert totals["uid"] > 200


@pytest.mark.parametrize("path", ALL_FILES, ids=file_id)
def test_basic_profile_leaves_no_original_name_id_date_or_uid_anywhere_in_the_output(
    path: Path, basic_outputs: dict[Path, Deidentified]
) -> None:
    result = basic_outputs[path]
    output = written(result)
    # Some files carry invalid values already; de-identification adds none, and the output
    # reads back with pydicom, every value decoded.
    assert result.problems_after <= result.problems_before
    assert survivors(sensitive(result.original), output) == []
    assert leaked_bytes(result.original, output) == []
    assert not any(element.tag.is_private for element in output.iterall())
    assert output.PatientIdentityRemoved == "YES"
    assert output.get("SOPClassUID") == result.original.get("SOPClassUID")
    meta = output.file_meta
    if "SOPInstanceUID" in output:
        assert meta.MediaStorageSOPInstanceUID == output.SOPInstanceUID
    # The original writer's AE title and implementation do not describe the new file.
    assert "SourceApplicationEntityTitle" not in meta
    assert meta.get("ImplementationClassUID") in (None, pydicom.uid.PYDICOM_IMPLEMENTATION_UID)


@pytest.mark.parametrize("path", ALL_FILES, ids=file_id)
def test_basic_profile_maps_every_instance_uid_where_it_stands_sequences_included(
    path: Path, basic_outputs: dict[Path, Deidentified]
) -> None:
    result = basic_outputs[path]
    uid_map = UidMap(KEY)
    before = dict(flatten(result.original))
    for where, element in flatten(written(result)):
        if element.VR != "UI":
            continue
        assert where in before, f"{where} is not in the original"
        new_values = element.value if element.VM > 1 else [element.value]
        old = before[where].value
        old_values = old if before[where].VM > 1 else [old]
        for old_uid, new_uid in zip(old_values, new_values, strict=True):
            old_uid = str(old_uid).strip("\0 ")
            if is_instance_uid(where[-1], old_uid):
                assert new_uid == uid_map(old_uid) != old_uid, where
                assert UID_PATTERN.match(new_uid) and len(new_uid) <= 64, where
            else:
                assert new_uid == old_uid, where  # class, syntax and scheme UIDs stay


def test_basic_profile_keeps_references_between_the_real_files_consistent(
    basic_outputs: dict[Path, Deidentified],
) -> None:
    # pydicom's SC_rgb_* files reference each other by SOP Instance UID; each file was
    # de-identified with its own UID map (as separate workers would).
    new_uid_of = {}
    results = [result for result in basic_outputs.values() if result.output is not None]
    for result in results:
        assert result.output is not None
        if "SOPInstanceUID" in result.original:
            new_uid_of[str(result.original.SOPInstanceUID)] = str(result.output.SOPInstanceUID)
    references = 0
    for result in results:
        assert result.output is not None
        before = dict(flatten(result.original))
        for where, element in flatten(result.output):
            if element.keyword != "ReferencedSOPInstanceUID":
                continue
            old = str(before[where].value)
            if old in new_uid_of:
                assert str(element.value) == new_uid_of[old]
                references += 1
    assert references >= 10
    # One old UID, one new UID, across every file; two old UIDs never become one.
    mapping: dict[str, set[str]] = {}
    for result in results:
        assert result.output is not None
        before = dict(flatten(result.original))
        for where, element in flatten(result.output):
            old = str(before[where].value).strip("\0 ") if where in before else ""
            if element.VR == "UI" and element.VM == 1 and is_instance_uid(where[-1], old):
                mapping.setdefault(old, set()).add(str(element.value))
    assert len(mapping) > 100
    assert all(len(new) == 1 for new in mapping.values())
    assert len({next(iter(new)) for new in mapping.values()}) == len(mapping)


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


# The storage SOP classes issue 5 names, by the IOD PS3.3 gives them.
COMMON_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2": "ct-image",
    "1.2.840.10008.5.1.4.1.1.4": "mr-image",
    "1.2.840.10008.5.1.4.1.1.1": "computed-radiography-image",
    "1.2.840.10008.5.1.4.1.1.1.1": "digital-x-ray-image",
    "1.2.840.10008.5.1.4.1.1.6.1": "ultrasound-image",
    "1.2.840.10008.5.1.4.1.1.3.1": "ultrasound-multi-frame-image",
    "1.2.840.10008.5.1.4.1.1.1.2": "digital-mammography-x-ray-image",
    "1.2.840.10008.5.1.4.1.1.128": "positron-emission-tomography-image",
    "1.2.840.10008.5.1.4.1.1.7": "secondary-capture-image",
    "1.2.840.10008.5.1.4.1.1.20": "nuclear-medicine-image",
    "1.2.840.10008.5.1.4.1.1.12.1": "x-ray-angiographic-image",
    "1.2.840.10008.5.1.4.1.1.481.1": "rt-image",
    "1.2.840.10008.5.1.4.1.1.481.2": "rt-dose",
    "1.2.840.10008.5.1.4.1.1.481.3": "rt-structure-set",
    "1.2.840.10008.5.1.4.1.1.481.5": "rt-plan",
    "1.2.840.10008.5.1.4.1.1.88.11": "basic-text-sr",
    "1.2.840.10008.5.1.4.1.1.88.22": "enhanced-sr",
    "1.2.840.10008.5.1.4.1.1.88.33": "comprehensive-sr",
    "1.2.840.10008.5.1.4.1.1.2.1": "enhanced-ct-image",
    "1.2.840.10008.5.1.4.1.1.4.1": "enhanced-mr-image",
    "1.2.840.10008.5.1.4.1.1.66.4": "segmentation",
}
# What the engine adds to every minimal-profile output (PS3.15 E.1.1).
DEIDENTIFICATION_MARKS = {"PatientIdentityRemoved", "DeidentificationMethod"}


def test_minimal_keep_lists_cover_the_common_storage_classes_from_ps3_3_tables() -> None:
    for sop_class_uid, iod in COMMON_SOP_CLASSES.items():
        assert minimal_tables.SOP_CLASS_IODS[sop_class_uid] == iod
        modules = dict(minimal_tables.IOD_MODULES[iod])
        assert modules["patient"] == modules["general-study"] == modules["sop-common"] == "M"
        tree = deid_profiles._required_attributes(sop_class_uid)
        assert tree is not None
        for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "SOPInstanceUID"):
            assert pydicom.datadict.tag_for_keyword(keyword) in tree, (iod, keyword)
        if "image-pixel" in modules:
            for keyword in ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation"):
                assert tree[pydicom.datadict.tag_for_keyword(keyword) or 0][0] == "1", iod
    enhanced_mr = deid_profiles._required_attributes("1.2.840.10008.5.1.4.1.1.4.1")
    assert enhanced_mr is not None
    shared = enhanced_mr[0x52009229][1]  # SharedFunctionalGroupsSequence
    assert 0x00289110 in shared  # … > PixelMeasuresSequence, a functional group Enhanced MR needs
    segmentation = deid_profiles._required_attributes("1.2.840.10008.5.1.4.1.1.66.4")
    assert segmentation is not None and 0x00620002 in segmentation  # SegmentSequence
    assert deid_profiles._required_attributes("1.2.3.4.private.class") is None


def missing_required(original: Dataset, output: Dataset, tree: Any, where: str = "") -> list[str]:
    """Required attributes (per the SOP class's tree) the original has and the output lost."""
    missing = []
    for tag, (_type, children) in tree.items():
        if tag not in original:
            continue
        name = f"{where}{pydicom.datadict.keyword_for_tag(tag) or hex(tag)}"
        if tag not in output:
            missing.append(name)
            continue
        element = original[tag]
        if element.VR == "SQ" and children and len(output[tag].value) == len(element.value):
            for index, (before, after) in enumerate(
                zip(element.value, output[tag].value, strict=True)
            ):
                missing += missing_required(before, after, children, f"{name}[{index}].")
    return missing


@pytest.fixture(scope="module")
def minimal_outputs() -> dict[Path, Deidentified]:
    return {path: deidentify_file(path, MINIMAL) for path in ALL_FILES}


@pytest.mark.parametrize("path", ALL_FILES, ids=file_id)
def test_minimal_keep_list_keeps_what_the_sop_class_requires_and_nothing_identifying(
    path: Path, minimal_outputs: dict[Path, Deidentified]
) -> None:
    result = minimal_outputs[path]
    output = written(result)
    original = result.original
    assert result.problems_after <= result.problems_before
    assert survivors(sensitive(original), output) == []
    assert leaked_bytes(original, output) == []
    assert not any(element.tag.is_private for element in output.iterall())
    if "PixelData" in original:
        assert output.PixelData == original.PixelData
    tree = deid_profiles._required_attributes(str(original.get("SOPClassUID", "")))
    if tree is None:  # no SOP Class UID: the fixed list for image objects
        assert {element.keyword for element in output} <= {
            pydicom.datadict.keyword_for_tag(tag)
            for tag in deid_profiles.MINIMAL_KEEP | deid_profiles.MINIMAL_EMPTY
        } | DEIDENTIFICATION_MARKS
        return
    assert missing_required(original, output, tree) == []
    allowed = set(tree) | deid_profiles.IMAGE_PIXEL | deid_profiles.IDENTITY
    extra = {element.keyword for element in output if element.tag not in allowed}
    assert extra <= DEIDENTIFICATION_MARKS
    assert len(output) < len(original) or len(original) < 40


def test_minimal_keep_list_keeps_an_sr_content_tree_without_its_text() -> None:
    original = pydicom.dcmread(pydicom.data.get_testdata_file("test-SR.dcm"))
    output = round_trip(Deidentifier(MINIMAL).deidentify(copy.deepcopy(original)))
    texts = [element.value for element in original.iterall() if element.keyword == "TextValue"]
    assert texts
    kept = [element.value for element in output.iterall() if element.keyword == "TextValue"]
    assert len(kept) == len(texts) and set(kept) == {"ANONYMIZED"}
    # The tree's structure is what a reader needs: every content item and its value type.
    assert [e.value for e in output.iterall() if e.keyword == "ValueType"] == [
        e.value for e in original.iterall() if e.keyword == "ValueType"
    ]


def test_minimal_keep_list_gives_type_1_identifying_attributes_a_dummy_and_empties_type_2() -> None:
    # Enhanced MR: ContentDate is Type 1 in its Multi-frame Functional Groups module (a dummy
    # keeps the object valid); StudyDate is Type 2 in General Study (emptied).
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
    ds.SOPInstanceUID = generate_uid()
    ds.ContentDate, ds.StudyDate, ds.PatientName = "20200314", "20200314", "Doe^Jane"
    ds.InstitutionName = "General Hospital"  # Type 3 in General Equipment: removed
    output = round_trip(Deidentifier(MINIMAL).deidentify(ds), part10=False)
    assert output.ContentDate == "19000101"
    assert output.StudyDate == "" and output.PatientName == ""
    assert "InstitutionName" not in output


def test_minimal_keep_list_profile_pickles_without_its_per_class_cache() -> None:
    deidentifier = Deidentifier(MINIMAL)
    deidentifier.deidentify(pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm")))
    copy_ = pickle.loads(pickle.dumps(deidentifier))
    output = copy_.deidentify(pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm")))
    assert output.Modality == "CT" and output.PatientName == ""


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
