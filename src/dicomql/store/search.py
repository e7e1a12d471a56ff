"""Index queries behind QIDO-RS search and WADO-RS metadata, and their results as DICOM JSON.

Every query leads with the store and an indexed column (a UID, a searchable attribute's index or
the ``(store_pk, pk)`` index used for paging) and orders by primary key, so a selective search
costs the same in a store of ten instances or ten million. Counts and ModalitiesInStudy come from
the counters ingest maintains, never from COUNT(*) on the request path.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydicom.tag import Tag
from sqlalchemy import (
    Connection,
    Integer,
    Select,
    Table,
    Text,
    bindparam,
    cast,
    exc,
    literal_column,
    select,
)
from sqlalchemy.sql.elements import BindParameter

from dicomql.dicom.attributes import INDEXED_ATTRIBUTES, Level
from dicomql.dicom.jsonmodel import absolutize_bulkdata_uris, person_name_groups
from dicomql.dicom.qido import SearchQuery
from dicomql.dicom.tags import RETRIEVE_URL_KEY, SOP_INSTANCE_UID_KEY, json_key
from dicomql.store.names import dicomweb_path
from dicomql.store.prepared import PreparedSelect
from dicomql.store.qido_sql import STORE_PK, MatchShape, bind_matches, match_conditions
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
_COLUMNS = {level: tuple(a for a in INDEXED_ATTRIBUTES if a.level is level) for level in Level}
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


# Columns a search reads besides the level's indexed attributes: the stored DICOM JSON and the
# counters of the computed attributes.
_READ_COLUMNS = frozenset(
    {"attributes", "modalities_in_study", "number_of_series", "number_of_instances"}
)


@functools.cache
def _columns(level: Level) -> tuple[Any, ...]:
    """The level's columns a result is built from, labelled (built once: every search selects
    them); not the rest (keys, sizes, times), which would cost their decoding on every row.
    Its DICOM JSON is fetched unparsed, so it is parsed only for the rows that need it
    (``_LevelPlan.apply``); a search answering the level's indexed columns only never parses it.
    """
    table = {Level.STUDY: studies, Level.SERIES: series, Level.INSTANCE: instances}[level]
    read = _READ_COLUMNS | {a.column for a in _COLUMNS[level]}
    return tuple(
        cast(c, Text).label(_PREFIX[level] + c.name)
        if c.name == "attributes"
        else c.label(_PREFIX[level] + c.name)
        for c in table.c
        if c.name in read
    )


# Bind parameters of every search statement besides the store and the matches' values.
_LIMIT: BindParameter[int] = bindparam("page_limit", type_=Integer)
_OFFSET: BindParameter[int] = bindparam("page_offset", type_=Integer)
_SCOPE_STUDY: BindParameter[str] = bindparam("scope_study_instance_uid")
_SCOPE_SERIES: BindParameter[str] = bindparam("scope_series_instance_uid")


def search_statement(query: SearchQuery, scope: Scope, store_pk: int, dialect: str) -> Select:
    """The SELECT for one page of a QIDO search, its values bound (as :func:`search` runs it)."""
    prepared, values = _bound_search(query, scope, store_pk, dialect)
    return prepared.statement.params(values)


def _bound_search(
    query: SearchQuery, scope: Scope, store_pk: int, dialect: str
) -> tuple[PreparedSelect, dict[str, Any]]:
    """The statement of the query's shape (built and compiled once per shape) and its bind
    parameters."""
    shapes, values = bind_matches(query, dialect)
    values[STORE_PK.key] = store_pk
    values[_LIMIT.key] = query.limit + 1
    values[_OFFSET.key] = query.offset
    if scope.study_instance_uid is not None:
        values[_SCOPE_STUDY.key] = scope.study_instance_uid
    if scope.series_instance_uid is not None:
        values[_SCOPE_SERIES.key] = scope.series_instance_uid
    statement = _shaped_statement(
        query.level,
        shapes,
        scope.study_instance_uid is not None,
        scope.series_instance_uid is not None,
        dialect,
    )
    return statement, values


# Bounded: a shape is the level, the scope's UIDs given, each match's attribute and rule and its
# number of values; clients use a few, but a UID list or fuzzy name of any length is a new one.
@functools.lru_cache(maxsize=256)
def _shaped_statement(
    level: Level,
    shapes: tuple[MatchShape, ...],
    study_scoped: bool,
    series_scoped: bool,
    dialect: str,
) -> PreparedSelect:
    """The SELECT for one page of a QIDO search (one row past the page, to detect more), with
    the bind parameters of :func:`_bound_search`. Prepared: SQLAlchemy's execution of such a
    statement (its cache key, parameters and result set-up) cost about twice what SQLite then
    spent on a selective search (a study's series).

    The level searched is driven from the most selective constraint: its own matched columns,
    else its parent's rows (``series.study_pk IN (matching studies)``), else the store's
    ``(store_pk, pk)`` index. A plain join would let the planner walk every instance of the
    store in pk order looking for the few whose study matches.
    """
    by_level = match_conditions(shapes, dialect)
    study_filters = list(by_level[Level.STUDY])
    if study_scoped:
        study_filters.append(studies.c.study_instance_uid == _SCOPE_STUDY)
    series_filters = list(by_level[Level.SERIES])
    if series_scoped:
        series_filters.append(series.c.series_instance_uid == _SCOPE_SERIES)
    matching_studies = select(studies.c.pk).where(studies.c.store_pk == STORE_PK, *study_filters)

    # With a filter, SQLite may still prefer walking (store_pk, pk) to skip the sort; the unary
    # plus (SQLite's documented way to disqualify an ORDER BY term from index use) keeps the
    # filter's index in charge. Without a filter, the walk is exactly right.
    narrowed = bool(shapes) or study_scoped or series_scoped

    def order(table: Table) -> Any:
        return literal_column(f"+{table.name}.pk") if narrowed else table.c.pk

    if level is Level.STUDY:
        statement = select(*_columns(Level.STUDY)).order_by(order(studies))
        conditions = [studies.c.store_pk == STORE_PK, *study_filters]
    elif level is Level.SERIES:
        statement = (
            select(*_columns(Level.STUDY), *_columns(Level.SERIES))
            .select_from(series.join(studies, studies.c.pk == series.c.study_pk))
            .order_by(order(series))
        )
        conditions = [*series_filters]
        if series_filters or not study_filters:
            conditions.append(series.c.store_pk == STORE_PK)
        if study_filters:
            conditions.append(series.c.study_pk.in_(matching_studies))
    else:
        statement = (
            select(
                *_columns(Level.STUDY),
                *_columns(Level.SERIES),
                *_columns(Level.INSTANCE),
            )
            .select_from(
                instances.join(series, series.c.pk == instances.c.series_pk).join(
                    studies, studies.c.pk == instances.c.study_pk
                )
            )
            .order_by(order(instances))
        )
        conditions = list(by_level[Level.INSTANCE])
        if conditions:
            conditions.append(instances.c.store_pk == STORE_PK)
        if series_filters:
            matching_series = (
                select(series.c.pk)
                .select_from(series.join(studies, studies.c.pk == series.c.study_pk))
                .where(series.c.store_pk == STORE_PK, *series_filters, *study_filters)
            )
            conditions.append(instances.c.series_pk.in_(matching_series))
        elif study_filters:
            conditions.append(instances.c.study_pk.in_(matching_studies))
        if not conditions:
            conditions.append(instances.c.store_pk == STORE_PK)
    return PreparedSelect(statement.where(*conditions).limit(_LIMIT).offset(_OFFSET))


class QueryTimeout(Exception):
    """An index query ran past its statement timeout and was cancelled."""


# SQLite calls the progress handler every this many virtual-machine instructions (well under a
# millisecond), so a cancelled query stops promptly without the checks costing anything visible.
_PROGRESS_STEPS = 1000
_QUERY_CANCELED = "57014"  # PostgreSQL's SQLSTATE for a statement cancelled by statement_timeout


@contextmanager
def statement_timeout(conn: Connection, seconds: float | None) -> Iterator[None]:
    """Cancel the queries run (and fetched) in this block past ``seconds``: QueryTimeout.

    Scoped to a request's own queries, never set on the connection: migrations, operation
    workers' long transactions and the janitor run on the same pools and must not be cut.
    PostgreSQL gets ``SET LOCAL statement_timeout`` (the transaction's, so it ends with it; a
    cancelled statement aborts the transaction, rolled back here). SQLite has no statement
    timeout; a progress handler aborts the running statement once the deadline has passed.
    """
    if seconds is None:
        yield
        return
    if conn.dialect.name == "postgresql":
        milliseconds = max(1, round(seconds * 1000))
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {milliseconds}")
        try:
            yield
        except exc.OperationalError as error:
            if getattr(error.orig, "sqlstate", None) != _QUERY_CANCELED:
                raise
            conn.rollback()
            raise QueryTimeout(seconds) from error
        conn.exec_driver_sql("SET LOCAL statement_timeout TO DEFAULT")
        return
    dbapi = conn.connection.dbapi_connection
    if not isinstance(dbapi, sqlite3.Connection):
        yield
        return
    deadline = time.monotonic() + seconds
    dbapi.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
    try:
        yield
    except exc.OperationalError as error:
        if "interrupted" not in str(error.orig):
            raise
        raise QueryTimeout(seconds) from error
    finally:
        dbapi.set_progress_handler(None, 0)


def search(
    conn: Connection,
    store_pk: int,
    query: SearchQuery,
    scope: Scope,
    dicomweb_url: str,
    *,
    timeout: float | None = None,
    defaults: bool = True,
) -> SearchResult:
    """Run a QIDO-RS search and render its page of results as DICOM JSON objects.

    Args:
        dicomweb_url: the absolute ``…/dicomWeb`` URL of the store, for RetrieveURL.
        timeout: seconds the query (and fetching its rows) may take, else QueryTimeout.
        defaults: with each level's default attributes (PS3.18 Table 10.6.3-3); without, only
            the matched, returned and included ones and the parent UIDs (a C-FIND answers
            with the requested keys only, so it need not build the rest).
    """
    prepared, values = _bound_search(query, scope, store_pk, conn.dialect.name)
    with statement_timeout(conn, timeout):
        labels, selected = prepared.select(conn, values)
    rows = [dict(zip(labels, row, strict=True)) for row in selected]
    more = len(rows) > query.limit
    plans = _plans(query, scope, defaults)
    retrieve = _RETRIEVE_URL[query.level]
    matches = []
    for row in rows[: query.limit]:
        out: dict[str, Any] = {}
        for plan in plans:
            plan.apply(row, out)
        if plans[-1].retrieve_url:
            out[RETRIEVE_URL_KEY] = {"vr": "UR", "Value": [retrieve(dicomweb_url, row)]}
        matches.append(dict(sorted(out.items())))
    return SearchResult(matches, more)


# Attributes the index computes rather than stores, per level (PS3.18 Table 10.6.3-3), by tag
# and by DICOM JSON key. Everything this service stores is ONLINE.
_COMPUTED_KEYWORDS = (
    "InstanceAvailability",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "NumberOfSeriesRelatedInstances",
)
_AVAILABILITY, _MODALITIES, _STUDY_SERIES, _STUDY_INSTANCES, _SERIES_INSTANCES = (
    Tag(keyword) for keyword in _COMPUTED_KEYWORDS
)
_COMPUTED = {
    Level.STUDY: frozenset({_AVAILABILITY, _MODALITIES, _STUDY_SERIES, _STUDY_INSTANCES}),
    Level.SERIES: frozenset({_SERIES_INSTANCES}),
    Level.INSTANCE: frozenset({_AVAILABILITY}),
}
(
    _AVAILABILITY_KEY,
    _MODALITIES_KEY,
    _STUDY_SERIES_KEY,
    _STUDY_INSTANCES_KEY,
    _SERIES_INSTANCES_KEY,
) = (json_key(keyword) for keyword in _COMPUTED_KEYWORDS)
_RETRIEVE_URL = {
    Level.STUDY: lambda base, row: f"{base}/{dicomweb_path(row['st_study_instance_uid'])}",
    Level.SERIES: lambda base, row: (
        f"{base}/{dicomweb_path(row['st_study_instance_uid'], row['se_series_instance_uid'])}"
    ),
    Level.INSTANCE: lambda base, row: (
        base
        + "/"
        + dicomweb_path(
            row["st_study_instance_uid"],
            row["se_series_instance_uid"],
            row["in_sop_instance_uid"],
        )
    ),
}


@dataclass(frozen=True)
class _LevelPlan:
    """What one level contributes to each result, worked out once per request."""

    level: Level
    columns: tuple[tuple[str, str, str], ...]  # (row label, tag key, VR) of wanted columns
    keys: tuple[str, ...]  # wanted tag keys looked up in the stored DICOM JSON
    computed: frozenset[int]
    include_all: bool
    retrieve_url: bool

    def apply(self, row: dict[str, Any], out: dict[str, Any]) -> None:
        """Indexed columns first, then the stored DICOM JSON (exact VRs, every PN group) for
        the wanted keys, or all of it for ``includefield=all``; then the computed attributes.

        A column that is empty, or holds a person name, is answered from the stored DICOM JSON
        when the level's is at hand: PS3.18 F.2.5 keeps an attribute that is present but empty
        as ``{"vr": …}``, and F.2.2 splits a name into its Alphabetic, Ideographic and Phonetic
        groups, neither of which the column keeps.
        """
        attributes = row.get(_PREFIX[self.level] + "attributes")
        for label, key, vr in self.columns:
            value = row[label]
            if (value is None or value == "" or vr == "PN") and attributes:
                attributes, stored = _stored(attributes, key)
                if stored is not None:
                    out[key] = stored
                    continue
            if value is None or value == "":
                continue
            if vr == "PN":
                out[key] = {"vr": "PN", "Value": [person_name_groups(value)]}
            elif vr in _NUMERIC_VRS:
                out[key] = {"vr": vr, "Value": [int(value)]}
            else:
                out[key] = {"vr": vr, "Value": [value]}
        if attributes and self.include_all:
            if isinstance(attributes, str):
                attributes = json.loads(attributes)
            out.update(attributes)
        elif attributes:
            for key in self.keys:
                attributes, found = _stored(attributes, key)
                if found is not None:
                    out[key] = found
        if self.computed:
            self._apply_computed(row, out)

    def _apply_computed(self, row: dict[str, Any], out: dict[str, Any]) -> None:
        computed = self.computed
        if _AVAILABILITY in computed:
            out[_AVAILABILITY_KEY] = {"vr": "CS", "Value": ["ONLINE"]}
        if self.level is Level.STUDY:
            modalities = row["st_modalities_in_study"]
            if _MODALITIES in computed and modalities:
                out[_MODALITIES_KEY] = {"vr": "CS", "Value": modalities.split("\\")}
            if _STUDY_SERIES in computed:
                out[_STUDY_SERIES_KEY] = {"vr": "IS", "Value": [row["st_number_of_series"]]}
            if _STUDY_INSTANCES in computed:
                out[_STUDY_INSTANCES_KEY] = {"vr": "IS", "Value": [row["st_number_of_instances"]]}
        elif self.level is Level.SERIES and _SERIES_INSTANCES in computed:
            out[_SERIES_INSTANCES_KEY] = {"vr": "IS", "Value": [row["se_number_of_instances"]]}


def _stored(attributes: Any, key: str) -> tuple[Any, Any]:
    """The stored DICOM JSON's value for ``key`` (None without one) and the JSON, parsed only
    if it may hold the key. Its text names every key it holds, quoted as is (no JSON writer
    escapes hex digits), so a text without the quoted key does not: most wanted keys are
    another level's (a series search's StudyInstanceUID, its study's Modality), and parsing
    a level's JSON for each row to find them absent cost more than the search."""
    if isinstance(attributes, str):
        if f'"{key}"' not in attributes:
            return attributes, None
        attributes = json.loads(attributes)
    return attributes, attributes.get(key)


def _level_plan(
    level: Level, tags: frozenset[int], include_all: bool, searched: bool
) -> _LevelPlan:
    columns = tuple(
        (_PREFIX[level] + a.column, f"{a.tag:08X}", a.vr)
        for a in _COLUMNS[level]
        if include_all or a.tag in tags
    )
    column_tags = {a.tag for a in _COLUMNS[level]}
    keys = tuple(
        f"{tag:08X}" for tag in sorted(tags - column_tags - _COMPUTED[level] - {RETRIEVE_URL})
    )
    computed = _COMPUTED[level] if include_all else _COMPUTED[level] & tags
    return _LevelPlan(
        level, columns, keys, computed, include_all, searched and RETRIEVE_URL in tags
    )


def _plans(query: SearchQuery, scope: Scope, defaults: bool = True) -> tuple[_LevelPlan, ...]:
    """The levels each result is built from, highest first; the searched level last.

    PS3.18 10.6.3.3: a series found outside a study carries its study's attributes, an
    instance found outside a series its series' (and outside a study its study's). Parent
    UIDs are always returned so results can be addressed. Without ``defaults``, no level adds
    its default attributes.
    """
    matched = frozenset(match.attribute.tag for match in query.matches)
    return _plans_of(
        query.level,
        matched | query.returned_tags | query.include_tags,
        query.include_all,
        scope.study_instance_uid is not None,
        scope.series_instance_uid is not None,
        defaults,
    )


# Bounded: the tags wanted are those a client asks for, of any number.
@functools.lru_cache(maxsize=256)
def _plans_of(
    level: Level,
    wanted: frozenset[int],
    everything: bool,
    study_scoped: bool,
    series_scoped: bool,
    defaults: bool,
) -> tuple[_LevelPlan, ...]:
    study_defaults, series_defaults, instance_defaults = (
        (STUDY_DEFAULTS, SERIES_DEFAULTS, INSTANCE_DEFAULTS) if defaults else (frozenset(),) * 3
    )
    if level is Level.STUDY:
        return (_level_plan(Level.STUDY, study_defaults | wanted, everything, True),)
    study_tags = wanted | {0x0020000D}
    if not study_scoped:
        study_tags |= study_defaults - {RETRIEVE_URL}
    study = _level_plan(Level.STUDY, study_tags - {RETRIEVE_URL}, everything, False)
    if level is Level.SERIES:
        return (study, _level_plan(Level.SERIES, series_defaults | wanted, everything, True))
    series_tags = wanted | {0x0020000E}
    if not series_scoped:
        series_tags |= series_defaults - {RETRIEVE_URL}
    series_plan = _level_plan(Level.SERIES, series_tags - {RETRIEVE_URL}, everything, False)
    instance = _level_plan(Level.INSTANCE, instance_defaults | wanted, everything, True)
    return (study, series_plan, instance)


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
        path = dicomweb_path(row.study_instance_uid, row.series_instance_uid, row.sop_instance_uid)
        url = f"{dicomweb_url}/{path}"
        yield absolutize_bulkdata_uris(_full_instance_json(row), url)


_STUDY_INSTANCE_UID = json_key("StudyInstanceUID")
_SERIES_INSTANCE_UID = json_key("SeriesInstanceUID")


def _full_instance_json(row: Any) -> str:
    """The instance's stored DICOM JSON; if ingest kept only the instance-level part, the study
    and series parts are merged back so metadata is always the whole header."""
    stored: str = row.attributes or "{}"
    if f'"{_STUDY_INSTANCE_UID}"' in stored:
        return stored
    merged: dict[str, Any] = {}
    for part in (row.study_attributes, row.series_attributes, stored):
        parsed = json.loads(part) if part else None
        if isinstance(parsed, dict):
            merged.update(parsed)
    merged.setdefault(_STUDY_INSTANCE_UID, {"vr": "UI", "Value": [row.study_instance_uid]})
    merged.setdefault(_SERIES_INSTANCE_UID, {"vr": "UI", "Value": [row.series_instance_uid]})
    merged.setdefault(SOP_INSTANCE_UID_KEY, {"vr": "UI", "Value": [row.sop_instance_uid]})
    return json.dumps(dict(sorted(merged.items())))
