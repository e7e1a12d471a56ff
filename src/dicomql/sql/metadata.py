"""DICOM metadata as tables: ``google.healthcare.studies``, ``series`` and ``instances`` are QIDO-RS
searches of a store (PS3.18 10.6), one row per match, columns named by DICOM keyword, values
typed by VR. WHERE terms QIDO can answer become search keys; every term also runs relationally
over the rows, so a server that matches more loosely (names, case) never changes the answer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from dicomql.provider.registry import Method, Resource
from dicomql.sql.qido_keys import is_attribute
from dicomql.sql.terms import conjuncts, is_literal, literal_value

# Table → the store-level search method of dicom_stores that fills it.
TABLES = {
    "studies": "search_for_studies",
    "series": "search_for_series",
    "instances": "search_for_instances",
}
# Attributes Cloud Healthcare searches on at each level (DICOM conformance statement, Search
# transaction: a series search also takes study keys, an instance search study and series
# keys); dicom/attributes.py gives the embedded service the same set.
_STUDY_KEYS = frozenset(
    {
        "StudyInstanceUID",
        "PatientName",
        "PatientID",
        "AccessionNumber",
        "ReferringPhysicianName",
        "StudyDate",
    }
)
SEARCHABLE = {
    "studies": _STUDY_KEYS,
    "series": _STUDY_KEYS | {"SeriesInstanceUID", "Modality"},
    "instances": _STUDY_KEYS | {"SeriesInstanceUID", "Modality", "SOPInstanceUID"},
}
# Attributes QIDO-RS returns by default at each level (PS3.18 Tables 10.6.3-3 to 10.6.3-5,
# with the study's in every series and instance match): what DESCRIBE lists. Others are asked
# for with includefield when a statement names them.
DEFAULT_COLUMNS = {
    "studies": (
        "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy",
        "ReferringPhysicianName", "PatientName", "PatientID", "PatientBirthDate",
        "PatientSex", "StudyInstanceUID", "StudyID", "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    "series": (
        "Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber",
        "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
    ),
    "instances": (
        "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns",
        "BitsAllocated", "NumberOfFrames",
    ),
}  # fmt: skip
_SQL_TYPES = {"DA": "DATE", "TM": "TIME", "PN": "TEXT (PN Alphabetic group)"}
# UID keys: another table's UIDs go to the server as a UID list, at most this many a request
# (about 6 KB of URL).
UID_KEYS = frozenset({"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"})
UIDS_PER_REQUEST = 100
# Past this many UIDs one read of the whole store is cheaper than the lists.
MAX_PUSHED_UIDS = 2000
# Matches asked per request; a full page means there may be more (offset pages on).
PAGE_SIZE = 5000
FUZZY = "fuzzymatching"
_RANGE_VRS = ("DA", "TM")
_INTEGER_VRS = frozenset({"IS", "SL", "SS", "UL", "US", "SV", "UV"})
_REAL_VRS = frozenset({"DS", "FL", "FD"})


@dataclass
class QidoPlan:
    """What a metadata scan asks the server: search keys and the SQL they came from."""

    level: str
    keys: dict[str, str] = field(default_factory=dict)
    pushed: list[str] = field(default_factory=list)
    includefield: str | None = None
    # The server's matches are exactly the rows WHERE keeps (no term left to SQL, none matched
    # more loosely): then a LIMIT may go to the server too.
    exact: bool = True
    # Matches to read at most (a pushed LIMIT + OFFSET); None reads to the end.
    limit: int | None = None

    def query(self) -> dict[str, str]:
        """The QIDO query parameters (without paging)."""
        query = dict(self.keys)
        if self.includefield:
            query["includefield"] = self.includefield
        return query


_GROUPS = ("_Ideographic", "_Phonetic")


def is_column(name: str) -> bool:
    """Whether ``name`` is a metadata table column: a DICOM attribute, or a PN's other group.

    >>> is_column("PatientName_Ideographic"), is_column("dicomStoresId")
    (True, False)
    """
    base = name.removesuffix(_GROUPS[0]).removesuffix(_GROUPS[1])
    return is_attribute(base) and (base == name or vr_of(base) == "PN")


def describe(level: str) -> list[tuple[str, str, str]]:
    """(column, SQL type, description) of a metadata table's default columns."""
    levels = list(TABLES)[: list(TABLES).index(level) + 1]
    rows = []
    for keyword in (k for lvl in levels for k in DEFAULT_COLUMNS[lvl]):
        vr = vr_of(keyword) or "UN"
        sql_type = _SQL_TYPES.get(vr) or (
            "INTEGER" if vr in _INTEGER_VRS else "REAL" if vr in _REAL_VRS else "TEXT"
        )
        searchable = "; a QIDO search key" if keyword in SEARCHABLE[level] else ""
        rows.append((keyword, sql_type, f"VR {vr}{searchable}"))
    return rows


def search_method(resource: Resource) -> Method | None:
    """The QIDO search a metadata table reads (``dicom_stores.search_for_studies`` for
    ``studies``), or None for any other resource."""
    if resource.name not in TABLES:
        return None
    return resource.registry.resource("dicom_stores").method(TABLES[resource.name])


def method_of(resource: Resource, name: str) -> Method:
    """``resource.method(name)``, where a metadata table also answers to its search method's
    names of either generation (``search_for_studies``,
    ``projects_locations_datasets_dicomStores_searchForStudies``).

    Raises:
        ProgrammingError: no such method.
    """
    search = search_method(resource)
    if search is not None:
        wanted = name.replace("_", "").lower()
        if wanted in (n.replace("_", "").lower() for n in (search.name, *search.aliases)):
            return search
    return resource.method(name)


def vr_of(keyword: str) -> str | None:
    from pydicom.datadict import dictionary_VR

    try:
        return str(dictionary_VR(keyword))
    except KeyError:
        return None


def plan_qido(
    select: exp.Select, alias: str, level: str, referenced: set[str], star: bool, only: bool
) -> QidoPlan:
    """Search keys for ``alias``'s table from the WHERE terms of ``select``.

    Equality (single value), IN of UIDs (a UID list), LIKE (wildcards ``*``/``?``), and
    comparisons or BETWEEN on dates and times (a range) of searchable attributes go to the
    server; ``fuzzymatching = true`` asks for fuzzy name matching, and its name equalities are
    then the server's alone. ``only``: the table is alone in its FROM, so unqualified columns
    are its own.
    """
    plan = QidoPlan(level)
    searchable = SEARCHABLE[level]
    ranges: dict[str, list[str]] = {}
    terms = conjuncts(select.args.get("where"))
    fuzzy_terms = [t for t in terms if _column_of(t, alias, only) == FUZZY]
    fuzzy = any(
        isinstance(t, exp.EQ) and is_literal(t.right) and literal_value(t.right) is True
        for t in fuzzy_terms
    )
    for term in fuzzy_terms:
        if fuzzy:
            plan.keys[FUZZY] = "true"
            plan.pushed.append(term.sql())
            plan.exact = False
        term.replace(exp.true())
    for term in terms:
        keyword = _column_of(term, alias, only)
        if keyword is None or keyword not in searchable or keyword in plan.keys:
            if not (isinstance(term, exp.Boolean) and term.this is True):
                plan.exact = False  # a term SQL alone decides
            continue
        vr = vr_of(keyword)
        value = _key_value(term, vr)
        if value is None:
            bounds = _range_bounds(term, vr)
            if bounds is None:
                plan.exact = False
                continue
            if isinstance(term, exp.GT | exp.LT):
                plan.exact = False  # the range includes the end SQL then drops
            low, high = bounds
            current = ranges.setdefault(keyword, ["", ""])
            current[0] = max(current[0], low)
            current[1] = min(current[1], high) if current[1] and high else current[1] or high
            plan.pushed.append(term.sql())
            continue
        plan.keys[keyword] = value
        plan.pushed.append(term.sql())
        if vr == "PN" or isinstance(term, exp.Like):
            plan.exact = False  # names and wildcards match as the server does (case)
        if fuzzy and vr == "PN" and isinstance(term, exp.EQ):
            # Fuzzy: the server's token-prefix match decides; SQL equality would undo it.
            term.replace(exp.true())
    for keyword, (low, high) in ranges.items():
        if keyword not in plan.keys:
            plan.keys[keyword] = f"{low}-{high}"
    if star:
        plan.includefield = "all"
    else:
        wanted = sorted(n for n in referenced if is_attribute(n))
        plan.includefield = ",".join(wanted) or None
    return plan


def pushed_limit(select: exp.Select) -> int | None:
    """LIMIT + OFFSET of a lone table's SELECT that SQL would cut from the matches in their
    order (no ORDER BY, GROUP BY, DISTINCT, aggregate or window), else None."""
    limit = select.args.get("limit")
    if limit is None or any(
        select.args.get(clause) for clause in ("order", "group", "having", "distinct", "joins")
    ):
        return None
    if select.find(exp.AggFunc) or select.find(exp.Window):
        return None
    offset = select.args.get("offset")
    try:
        count = int(literal_value(limit.expression))
        skip = int(literal_value(offset.expression)) if offset is not None else 0
    except (ValueError, TypeError, AttributeError):
        return None
    return count + skip if count >= 0 and skip >= 0 else None


def _column_of(term: exp.Expr, alias: str, only: bool) -> str | None:
    column = term.this if isinstance(term, exp.Between | exp.In | exp.Like) else None
    if isinstance(term, exp.EQ | exp.GT | exp.GTE | exp.LT | exp.LTE):
        column = term.left if isinstance(term.left, exp.Column) else term.right
    if not isinstance(column, exp.Column):
        return None
    if column.table != alias and not (only and not column.table):
        return None
    return column.name


def _dicom_text(value: Any, vr: str | None) -> str | None:
    """A SQL literal as the QIDO value of ``vr``: ISO dates and times lose their separators."""
    if isinstance(value, bool) or value is None:
        return None
    text = str(value)
    if vr == "DA":
        text = text.replace("-", "")
        return text if len(text) == 8 and text.isdigit() else None
    if vr == "TM":
        text = text.replace(":", "")
        return text if text[:2].isdigit() else None
    if any(c in text for c in "*?\\"):
        return None  # QIDO would read them as wildcards or a value list
    return text


def _key_value(term: exp.Expr, vr: str | None) -> str | None:
    if isinstance(term, exp.EQ):
        other = term.right if isinstance(term.left, exp.Column) else term.left
        return _dicom_text(literal_value(other), vr) if is_literal(other) else None
    if isinstance(term, exp.In) and vr == "UI":
        items = term.expressions
        if not items or not all(is_literal(i) for i in items):
            return None
        values = [_dicom_text(literal_value(i), vr) for i in items]
        return ",".join(v for v in values if v) if all(values) else None
    if isinstance(term, exp.Like) and vr not in ("UI", "DA", "TM") and is_literal(term.expression):
        pattern = literal_value(term.expression)
        if not isinstance(pattern, str) or any(c in pattern for c in "*?\\"):
            return None
        return pattern.replace("%", "*").replace("_", "?")
    return None


def _range_bounds(term: exp.Expr, vr: str | None) -> tuple[str, str] | None:
    """(low, high) of a comparison or BETWEEN on a date or time; '' is an open end. Strict
    comparisons become inclusive ranges: the SQL term, run afterwards, drops the end."""
    if vr not in _RANGE_VRS:
        return None
    if isinstance(term, exp.Between):
        low_node, high_node = term.args.get("low"), term.args.get("high")
        if low_node is None or high_node is None:
            return None
        if not (is_literal(low_node) and is_literal(high_node)):
            return None
        low = _dicom_text(literal_value(low_node), vr)
        high = _dicom_text(literal_value(high_node), vr)
        return (low, high) if low and high else None
    if not isinstance(term, exp.GT | exp.GTE | exp.LT | exp.LTE):
        return None
    column_left = isinstance(term.left, exp.Column)
    other = term.right if column_left else term.left
    if not is_literal(other):
        return None
    value = _dicom_text(literal_value(other), vr)
    if not value:
        return None
    lower = isinstance(term, exp.GT | exp.GTE) == column_left
    return (value, "") if lower else ("", value)


# --- typed rows ------------------------------------------------------------------------------


def typed_rows(
    datasets: list[dict[str, Any]], keep: set[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Rows of a QIDO response, one column per keyword, values typed by VR (see
    :func:`typed_value`); a PN gives its Alphabetic group, and ``…_Ideographic`` /
    ``…_Phonetic`` columns when it has those groups. ``keep``: only these columns (the ones a
    statement names), which spares typing and storing the rest."""
    from dicomql.sql.dicom_rows import column_name, one_or_array

    for dataset in datasets:
        row: dict[str, Any] = {}
        for tag, element in dataset.items():
            name = column_name(tag)
            if (
                keep is not None
                and name not in keep
                and not (element.get("vr") == "PN" and any(name + g in keep for g in _GROUPS))
            ):
                continue
            vr = element.get("vr")
            if vr == "PN":
                for group in ("Ideographic", "Phonetic"):
                    values = [
                        v.get(group) for v in element.get("Value") or [] if isinstance(v, dict)
                    ]
                    if any(values):
                        row[f"{name}_{group}"] = one_or_array([v for v in values if v])
            row[name] = typed_value(element)
        yield row


def typed_value(element: dict[str, Any]) -> Any:
    """A DICOM JSON element as a typed SQL value.

    DA → ``YYYY-MM-DD`` (sorts and compares as a date), TM → ``HH:MM:SS.ffffff``, IS and the
    binary integers → INTEGER, DS/FL/FD → REAL, PN → its Alphabetic group, several values → a
    JSON array, a sequence → JSON text, bulk data → its URI.

    >>> typed_value({"vr": "DA", "Value": ["20200131"]})
    '2020-01-31'
    >>> typed_value({"vr": "IS", "Value": ["12"]}), typed_value({"vr": "DS", "Value": [0.5, 1]})
    (12, '[0.5, 1.0]')
    """
    from dicomql.sql.dicom_rows import element_value

    return element_value(element, _typed)


def _typed(value: Any, vr: str | None) -> Any:
    if vr == "DA" and isinstance(value, str) and len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    if vr == "TM" and isinstance(value, str) and len(value) >= 2:
        return _iso_time(value)
    try:
        if vr in _INTEGER_VRS:
            return int(value)
        if vr in _REAL_VRS:
            return float(value)
    except (TypeError, ValueError):
        return value
    return value


def _iso_time(value: str) -> str:
    """``HHMMSS.ffffff`` (parts optional) as ``HH:MM:SS.ffffff``; anything else unchanged."""
    digits, dot, fraction = value.partition(".")
    if not digits.isdigit() or len(digits) not in (2, 4, 6):
        return value
    parts = [digits[i : i + 2] for i in range(0, len(digits), 2)]
    parts += ["00"] * (3 - len(parts))
    return ":".join(parts) + (dot + fraction if fraction else "")
