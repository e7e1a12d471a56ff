"""Index queries behind QIDO-RS search and WADO-RS metadata, and their results as DICOM JSON.

Every query leads with the store and an indexed column (a UID, a searchable attribute's index or
the ``(store_pk, pk)`` index used for paging) and orders by primary key, so a selective search
costs the same in a store of ten instances or ten million. Counts and ModalitiesInStudy come from
the counters ingest maintains, never from COUNT(*) on the request path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, Text, cast, select

from dicomql.dicom.attributes import INDEXED_ATTRIBUTES, IndexedAttribute, Level
from dicomql.dicom.jsonmodel import absolutize_bulkdata_uris
from dicomql.dicom.qido import SearchQuery, match_conditions
from dicomql.store.schema import instances, series, studies

# PS3.18 Table 10.6.3-3: attributes returned by default at each level (plus
# SpecificCharacterSet and TimezoneOffsetFromUTC, returned when the stored data has them).
STUDY_DEFAULTS = frozenset(
    {
        0x00080005,  # SpecificCharacterSet
        0x00080020,  # StudyDate
        0x00080030,  # StudyTime
        0x00080050,  # AccessionNumber
        0x00080056,  # InstanceAvailability
        0x00080061,  # ModalitiesInStudy
        0x00080090,  # ReferringPhysicianName
        0x00080201,  # TimezoneOffsetFromUTC
        0x00081190,  # RetrieveURL
        0x00100010,  # PatientName
        0x00100020,  # PatientID
        0x00100030,  # PatientBirthDate
        0x00100040,  # PatientSex
        0x0020000D,  # StudyInstanceUID
        0x00200010,  # StudyID
        0x00201206,  # NumberOfStudyRelatedSeries
        0x00201208,  # NumberOfStudyRelatedInstances
    }
)
SERIES_DEFAULTS = frozenset(
    {
        0x00080005,  # SpecificCharacterSet
        0x00080060,  # Modality
        0x00080201,  # TimezoneOffsetFromUTC
        0x0008103E,  # SeriesDescription
        0x00081190,  # RetrieveURL
        0x0020000E,  # SeriesInstanceUID
        0x00200011,  # SeriesNumber
        0x00201209,  # NumberOfSeriesRelatedInstances
        0x00400244,  # PerformedProcedureStepStartDate
        0x00400245,  # PerformedProcedureStepStartTime
        0x00400275,  # RequestAttributesSequence
    }
)
INSTANCE_DEFAULTS = frozenset(
    {
        0x00080005,  # SpecificCharacterSet
        0x00080016,  # SOPClassUID
        0x00080018,  # SOPInstanceUID
        0x00080056,  # InstanceAvailability
        0x00080201,  # TimezoneOffsetFromUTC
        0x00081190,  # RetrieveURL
        0x00200013,  # InstanceNumber
        0x00280010,  # Rows
        0x00280011,  # Columns
        0x00280100,  # BitsAllocated
        0x00280008,  # NumberOfFrames
    }
)
_DEFAULTS = {
    Level.STUDY: STUDY_DEFAULTS,
    Level.SERIES: SERIES_DEFAULTS,
    Level.INSTANCE: INSTANCE_DEFAULTS,
}
_COLUMNS = {level: tuple(a for a in INDEXED_ATTRIBUTES if a.level is level) for level in Level}
_COLUMN_TAGS = frozenset(a.tag for a in INDEXED_ATTRIBUTES)
_PREFIX = {Level.STUDY: "st_", Level.SERIES: "se_", Level.INSTANCE: "in_"}
_NUMERIC_VRS = frozenset({"IS", "DS", "US", "UL", "SS", "SL"})

RETRIEVE_URL = 0x00081190


@dataclass(frozen=True)
class Scope:
    """The UIDs fixed by a QIDO path: ``studies/{study}/series``, ``…/{series}/instances``."""

    study_instance_uid: str | None = None
    series_instance_uid: str | None = None


@dataclass(frozen=True)
class SearchResult:
    matches: list[dict[str, Any]]
    more: bool  # more results exist past this page


def _columns(level: Level, with_attributes: bool = True) -> list[Any]:
    table = {Level.STUDY: studies, Level.SERIES: series, Level.INSTANCE: instances}[level]
    skip = {"attributes"} if not with_attributes else set()
    return [c.label(_PREFIX[level] + c.name) for c in table.c if c.name not in skip]


def search_statement(query: SearchQuery, scope: Scope, store_pk: int, dialect: str) -> Select:
    """The SELECT for one page of a QIDO search (one row past the page, to detect more)."""
    level = query.level
    need_instance_attributes = query.include_all or bool(query.include_tags - _COLUMN_TAGS)
    conditions = [studies.c.store_pk == store_pk, *match_conditions(query, store_pk, dialect)]
    if scope.study_instance_uid is not None:
        conditions.append(studies.c.study_instance_uid == scope.study_instance_uid)
    if level is Level.STUDY:
        statement = select(*_columns(Level.STUDY)).order_by(studies.c.pk)
    elif level is Level.SERIES:
        statement = (
            select(*_columns(Level.STUDY), *_columns(Level.SERIES))
            .select_from(series.join(studies, studies.c.pk == series.c.study_pk))
            .order_by(series.c.pk)
        )
        conditions.append(series.c.store_pk == store_pk)
    else:
        statement = (
            select(
                *_columns(Level.STUDY),
                *_columns(Level.SERIES),
                *_columns(Level.INSTANCE, with_attributes=need_instance_attributes),
            )
            .select_from(
                instances.join(series, series.c.pk == instances.c.series_pk).join(
                    studies, studies.c.pk == instances.c.study_pk
                )
            )
            .order_by(instances.c.pk)
        )
        conditions += [series.c.store_pk == store_pk, instances.c.store_pk == store_pk]
    if scope.series_instance_uid is not None:
        conditions.append(series.c.series_instance_uid == scope.series_instance_uid)
    return statement.where(*conditions).limit(query.limit + 1).offset(query.offset)


def search(
    conn: Connection, store_pk: int, query: SearchQuery, scope: Scope, dicomweb_url: str
) -> SearchResult:
    """Run a QIDO-RS search and render its page of results as DICOM JSON objects.

    Args:
        dicomweb_url: the absolute ``…/dicomWeb`` URL of the store, for RetrieveURL.
    """
    statement = search_statement(query, scope, store_pk, conn.dialect.name)
    rows = conn.execute(statement).mappings().all()
    more = len(rows) > query.limit
    wanted = _wanted(query)
    render = _RENDERERS[query.level]
    return SearchResult(
        [render(row, wanted, scope, dicomweb_url) for row in rows[: query.limit]], more
    )


@dataclass(frozen=True)
class _Wanted:
    tags: frozenset[int]  # requested beyond the defaults: matched, universal, includefield
    include_all: bool


def _wanted(query: SearchQuery) -> _Wanted:
    matched = frozenset(match.attribute.tag for match in query.matches)
    return _Wanted(matched | query.returned_tags | query.include_tags, query.include_all)


def _render_study(row: Any, wanted: _Wanted, scope: Scope, base: str) -> dict[str, Any]:
    study_uid = row["st_study_instance_uid"]
    out = _level_json(row, Level.STUDY, STUDY_DEFAULTS | wanted.tags, wanted.include_all)
    _computed_study(out, row, STUDY_DEFAULTS | wanted.tags, f"{base}/studies/{study_uid}")
    return dict(sorted(out.items()))


def _render_series(row: Any, wanted: _Wanted, scope: Scope, base: str) -> dict[str, Any]:
    study_uid = row["st_study_instance_uid"]
    series_uid = row["se_series_instance_uid"]
    # PS3.18 10.6.3.3.2: outside a study, each series carries its study's attributes too.
    study_tags = wanted.tags | {0x0020000D}
    if scope.study_instance_uid is None:
        study_tags |= STUDY_DEFAULTS - {RETRIEVE_URL}
    out = _level_json(row, Level.STUDY, study_tags, wanted.include_all)
    _computed_study(out, row, study_tags, None)
    series_tags = SERIES_DEFAULTS | wanted.tags
    out.update(_level_json(row, Level.SERIES, series_tags, wanted.include_all))
    url = f"{base}/studies/{study_uid}/series/{series_uid}"
    _computed_series(out, row, series_tags, url)
    return dict(sorted(out.items()))


def _render_instance(row: Any, wanted: _Wanted, scope: Scope, base: str) -> dict[str, Any]:
    study_uid = row["st_study_instance_uid"]
    series_uid = row["se_series_instance_uid"]
    sop_uid = row["in_sop_instance_uid"]
    study_tags = wanted.tags | {0x0020000D}
    series_tags = wanted.tags | {0x0020000E}
    if scope.study_instance_uid is None:
        study_tags |= STUDY_DEFAULTS - {RETRIEVE_URL}
    if scope.series_instance_uid is None:
        series_tags |= SERIES_DEFAULTS - {RETRIEVE_URL}
    out = _level_json(row, Level.STUDY, study_tags, wanted.include_all)
    _computed_study(out, row, study_tags, None)
    out.update(_level_json(row, Level.SERIES, series_tags, wanted.include_all))
    _computed_series(out, row, series_tags, None)
    instance_tags = INSTANCE_DEFAULTS | wanted.tags
    out.update(_level_json(row, Level.INSTANCE, instance_tags, wanted.include_all))
    if 0x00080056 in instance_tags:
        out["00080056"] = _cs("ONLINE")
    if RETRIEVE_URL in instance_tags:
        url = f"{base}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
        out["00081190"] = {"vr": "UR", "Value": [url]}
    return dict(sorted(out.items()))


_RENDERERS = {
    Level.STUDY: _render_study,
    Level.SERIES: _render_series,
    Level.INSTANCE: _render_instance,
}


def _computed_study(out: dict[str, Any], row: Any, tags: frozenset[int], url: str | None) -> None:
    if 0x00080056 in tags:
        out["00080056"] = _cs("ONLINE")  # InstanceAvailability: everything here is online
    if 0x00080061 in tags and row["st_modalities_in_study"]:
        out["00080061"] = {"vr": "CS", "Value": row["st_modalities_in_study"].split("\\")}
    if 0x00201206 in tags:
        out["00201206"] = {"vr": "IS", "Value": [row["st_number_of_series"]]}
    if 0x00201208 in tags:
        out["00201208"] = {"vr": "IS", "Value": [row["st_number_of_instances"]]}
    if url is not None and RETRIEVE_URL in tags:
        out["00081190"] = {"vr": "UR", "Value": [url]}


def _computed_series(out: dict[str, Any], row: Any, tags: frozenset[int], url: str | None) -> None:
    if 0x00201209 in tags:
        out["00201209"] = {"vr": "IS", "Value": [row["se_number_of_instances"]]}
    if url is not None and RETRIEVE_URL in tags:
        out["00081190"] = {"vr": "UR", "Value": [url]}


def _cs(value: str) -> dict[str, Any]:
    return {"vr": "CS", "Value": [value]}


def _level_json(row: Any, level: Level, tags: frozenset[int], include_all: bool) -> dict[str, Any]:
    """The level's attributes: indexed columns first, then the stored DICOM JSON (exact VRs and
    all PN groups) for the wanted tags, or all of it for ``includefield=all``."""
    prefix = _PREFIX[level]
    out: dict[str, Any] = {}
    for attribute in _COLUMNS[level]:
        if include_all or attribute.tag in tags:
            value = row[prefix + attribute.column]
            if value is not None and value != "":
                out[f"{attribute.tag:08X}"] = _column_json(attribute, value)
    attributes = row.get(prefix + "attributes")
    if isinstance(attributes, str):
        attributes = json.loads(attributes)
    if attributes:
        if include_all:
            out.update(attributes)
        else:
            for tag in tags:
                key = f"{tag:08X}"
                if key in attributes:
                    out[key] = attributes[key]
    return out


def _column_json(attribute: IndexedAttribute, value: Any) -> dict[str, Any]:
    if attribute.vr == "PN":
        return {"vr": "PN", "Value": [{"Alphabetic": value}]}
    if attribute.vr in _NUMERIC_VRS:
        return {"vr": attribute.vr, "Value": [int(value)]}
    return {"vr": attribute.vr, "Value": [value]}


# WADO-RS metadata -------------------------------------------------------------------------


def find_study_pk(conn: Connection, store_pk: int, study_instance_uid: str) -> int | None:
    return conn.execute(
        select(studies.c.pk).where(
            studies.c.store_pk == store_pk, studies.c.study_instance_uid == study_instance_uid
        )
    ).scalar()


def find_series_pk(conn: Connection, study_pk: int, series_instance_uid: str) -> int | None:
    return conn.execute(
        select(series.c.pk).where(
            series.c.study_pk == study_pk, series.c.series_instance_uid == series_instance_uid
        )
    ).scalar()


def find_instance_pk(conn: Connection, series_pk: int, sop_instance_uid: str) -> int | None:
    return conn.execute(
        select(instances.c.pk).where(
            instances.c.series_pk == series_pk, instances.c.sop_instance_uid == sop_instance_uid
        )
    ).scalar()


def instance_metadata(
    conn: Connection,
    dicomweb_url: str,
    *,
    study_pk: int,
    series_pk: int | None = None,
    instance_pk: int | None = None,
    batch_size: int = 500,
) -> Iterator[str]:
    """Serialized DICOM JSON of each instance in scope, BulkDataURIs made absolute.

    Rows stream from the database in batches (a server-side cursor on PostgreSQL), so a study of
    100,000 instances never sits in memory as one list.
    """
    text = cast(instances.c.attributes, Text).label("attributes")
    statement = (
        select(
            studies.c.study_instance_uid,
            series.c.series_instance_uid,
            instances.c.sop_instance_uid,
            text,
            cast(series.c.attributes, Text).label("series_attributes"),
            cast(studies.c.attributes, Text).label("study_attributes"),
        )
        .select_from(
            instances.join(series, series.c.pk == instances.c.series_pk).join(
                studies, studies.c.pk == instances.c.study_pk
            )
        )
        .where(instances.c.study_pk == study_pk)
        .order_by(instances.c.pk)
    )
    if series_pk is not None:
        statement = statement.where(instances.c.series_pk == series_pk)
    if instance_pk is not None:
        statement = statement.where(instances.c.pk == instance_pk)
    result = conn.execution_options(stream_results=True, yield_per=batch_size).execute(statement)
    for row in result:
        url = (
            f"{dicomweb_url}/studies/{row.study_instance_uid}/series/{row.series_instance_uid}"
            f"/instances/{row.sop_instance_uid}"
        )
        yield absolutize_bulkdata_uris(_full_instance_json(row), url)


def _full_instance_json(row: Any) -> str:
    """The instance's stored DICOM JSON; if ingest kept only the instance-level part, the study
    and series parts are merged back so metadata is always the whole header."""
    stored: str = row.attributes or "{}"
    if '"0020000D"' in stored:
        return stored
    merged: dict[str, Any] = {}
    for part in (row.study_attributes, row.series_attributes, stored):
        if part:
            merged.update(json.loads(part))
    merged.setdefault("0020000D", {"vr": "UI", "Value": [row.study_instance_uid]})
    merged.setdefault("0020000E", {"vr": "UI", "Value": [row.series_instance_uid]})
    merged.setdefault("00080018", {"vr": "UI", "Value": [row.sop_instance_uid]})
    return json.dumps(dict(sorted(merged.items())))
