"""The DICOM attributes the index keeps as columns, by query/retrieve level.

This table is the one place that says which attribute lives in which index column; ingest
fills the columns from it and QIDO matches against them. Levels and searchable attributes follow
the Cloud Healthcare DICOM conformance statement (Search transaction) and PS3.18 10.6.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Level(StrEnum):
    STUDY = "STUDY"
    SERIES = "SERIES"
    INSTANCE = "INSTANCE"


@dataclass(frozen=True)
class IndexedAttribute:
    keyword: str
    tag: int
    vr: str
    level: Level
    column: str
    # A person name also has a case-folded ``{column}_key`` column (and tokens for fuzzy matching).
    searchable: bool = True


def _a(
    keyword: str, tag: int, vr: str, level: Level, column: str, searchable: bool = True
) -> IndexedAttribute:
    return IndexedAttribute(keyword, tag, vr, level, column, searchable)


S, R, I = Level.STUDY, Level.SERIES, Level.INSTANCE  # noqa: E741

INDEXED_ATTRIBUTES: tuple[IndexedAttribute, ...] = (
    _a("StudyInstanceUID", 0x0020000D, "UI", S, "study_instance_uid"),
    _a("PatientName", 0x00100010, "PN", S, "patient_name"),
    _a("PatientID", 0x00100020, "LO", S, "patient_id"),
    _a("AccessionNumber", 0x00080050, "SH", S, "accession_number"),
    _a("ReferringPhysicianName", 0x00080090, "PN", S, "referring_physician_name"),
    _a("StudyDate", 0x00080020, "DA", S, "study_date"),
    _a("StudyTime", 0x00080030, "TM", S, "study_time", searchable=False),
    _a("PatientBirthDate", 0x00100030, "DA", S, "patient_birth_date", searchable=False),
    _a("PatientSex", 0x00100040, "CS", S, "patient_sex", searchable=False),
    _a("StudyID", 0x00200010, "SH", S, "study_id", searchable=False),
    _a("StudyDescription", 0x00081030, "LO", S, "study_description", searchable=False),
    _a("SeriesInstanceUID", 0x0020000E, "UI", R, "series_instance_uid"),
    _a("Modality", 0x00080060, "CS", R, "modality"),
    _a("SeriesNumber", 0x00200011, "IS", R, "series_number", searchable=False),
    _a("SeriesDescription", 0x0008103E, "LO", R, "series_description", searchable=False),
    _a(
        "PerformedProcedureStepStartDate",
        0x00400244,
        "DA",
        R,
        "performed_procedure_step_start_date",
        searchable=False,
    ),
    _a(
        "PerformedProcedureStepStartTime",
        0x00400245,
        "TM",
        R,
        "performed_procedure_step_start_time",
        searchable=False,
    ),
    _a("SOPInstanceUID", 0x00080018, "UI", I, "sop_instance_uid"),
    _a("SOPClassUID", 0x00080016, "UI", I, "sop_class_uid", searchable=False),
    _a("InstanceNumber", 0x00200013, "IS", I, "instance_number", searchable=False),
    _a("Rows", 0x00280010, "US", I, "rows", searchable=False),
    _a("Columns", 0x00280011, "US", I, "columns", searchable=False),
    _a("BitsAllocated", 0x00280100, "US", I, "bits_allocated", searchable=False),
    _a("NumberOfFrames", 0x00280008, "IS", I, "number_of_frames", searchable=False),
)

BY_KEYWORD = {attribute.keyword: attribute for attribute in INDEXED_ATTRIBUTES}
BY_TAG = {attribute.tag: attribute for attribute in INDEXED_ATTRIBUTES}
