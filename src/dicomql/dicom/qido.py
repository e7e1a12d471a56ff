"""QIDO-RS query parameters (PS3.18 8.3.4, 10.6) parsed into matches under their matching rules
(PS3.4 C.2.2.2); ``store.qido_sql`` turns the matches into SQL over the index tables.

Searchable attributes per level follow the Cloud Healthcare conformance statement ("Search
transaction"); :mod:`dicomql.dicom.attributes` says which column holds each. Limits: default 100
results for studies and 1,000 for series and instances, at most 5,000 studies or series and 50,000
instances per request (larger limits are clamped with a Warning), offset at most 1,000,000.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from pydicom.datadict import keyword_for_tag, tag_for_keyword

from dicomql.dicom.attributes import BY_KEYWORD, BY_TAG, IndexedAttribute, Level
from dicomql.dicom.limits import MAX_FUZZY_TOKENS, MAX_QIDO_UIDS, MAX_QIDO_VALUE_CHARS

DEFAULT_LIMIT = {Level.STUDY: 100, Level.SERIES: 1000, Level.INSTANCE: 1000}
MAX_LIMIT = {Level.STUDY: 5000, Level.SERIES: 5000, Level.INSTANCE: 50000}
MAX_OFFSET = 1_000_000

# The levels whose attributes a search at each level may match on (PS3.18 10.6.1.2: a series
# search may use study attributes, an instance search study and series attributes).
_SEARCHABLE_LEVELS = {
    Level.STUDY: (Level.STUDY,),
    Level.SERIES: (Level.STUDY, Level.SERIES),
    Level.INSTANCE: (Level.STUDY, Level.SERIES, Level.INSTANCE),
}
_HEX_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
# PS3.18 10.6.1.2.3 allows comma-separated UID lists; PS3.4 C.2.2.2.2 uses backslash.
_UID_SEPARATORS = re.compile(r"[,\\]")
# Cloud Healthcare fuzzymatching tokenises names on component, group and word separators, as
# ingest does for ``person_name_tokens`` (dicom.parse.person_name_tokens).
_NAME_TOKEN_SEPARATORS = re.compile(r"[\^=\s,]+")


# ModalitiesInStudy (PS3.4 C.6.1.1.2, a study-level matching key) is the backslash-joined
# column ingest maintains from the study's series, not a column filled from one instance, so it
# is declared here and not in dicom.attributes.
MODALITIES_IN_STUDY = IndexedAttribute(
    "ModalitiesInStudy", 0x00080061, "CS", Level.STUDY, "modalities_in_study", searchable=False
)
# PS3.18 Table 10.6.1-5 (required matching keys) beyond Google's list, matched under
# ``--conformance standard``. RequestAttributesSequence's ScheduledProcedureStepID and
# RequestedProcedureID are not indexed (docs/service.md).
STANDARD_KEYS = frozenset(
    {
        "StudyTime",
        "StudyID",
        "ModalitiesInStudy",
        "SeriesNumber",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "SOPClassUID",
        "InstanceNumber",
    }
)


class QueryError(ValueError):
    """A QIDO-RS query the service cannot run; the message is shown to the user (HTTP 400)."""


class MatchKind(Enum):
    SINGLE = "single"  # PS3.4 C.2.2.2.1 single value matching
    LIST = "list"  # C.2.2.2.2 list of UID matching
    WILDCARD = "wildcard"  # C.2.2.2.4 wild card matching (* and ?)
    RANGE = "range"  # C.2.2.2.5 range matching (DA, TM)
    FUZZY = "fuzzy"  # Cloud Healthcare fuzzymatching: token-prefix match on person names


@dataclass(frozen=True)
class Match:
    attribute: IndexedAttribute
    kind: MatchKind
    values: tuple[str, ...]  # SINGLE/WILDCARD: 1; LIST: n; RANGE: (low, high), "" = open


@dataclass(frozen=True)
class SearchQuery:
    """A parsed QIDO-RS request at one level."""

    level: Level
    matches: tuple[Match, ...] = ()
    # Attributes named with an empty value (universal matching, PS3.4 C.2.2.2.3): returned only.
    returned_tags: frozenset[int] = frozenset()
    include_all: bool = False
    include_tags: frozenset[int] = frozenset()
    limit: int = 100
    offset: int = 0
    fuzzy: bool = False
    warnings: tuple[str, ...] = field(default=())


def resolve_attribute(name: str) -> int:
    """The tag named by a keyword (``PatientID``) or 8 hex digits (``00100020``).

    >>> hex(resolve_attribute("PatientID")), hex(resolve_attribute("0020000d"))
    ('0x100020', '0x20000d')
    """
    if _HEX_TAG.match(name):
        return int(name, 16)
    tag = tag_for_keyword(name)
    if tag is None:
        raise QueryError(f"Unknown DICOM attribute {name!r}: give a keyword or 8 hex digits.")
    return int(tag)


def parse_search(
    params: Iterable[tuple[str, str]], level: Level, *, standard: bool = False
) -> SearchQuery:
    """Parse QIDO-RS query parameters for a search at ``level``.

    Args:
        params: the query string's (name, value) pairs, repeated names allowed.
        level: the level searched (studies, series or instances).
        standard: also match the keys PS3.18 requires beyond Google's list
            (:data:`STANDARD_KEYS`; ``--conformance standard``).

    Raises:
        QueryError: an unknown or unsupported attribute, a malformed value or paging parameter.

    >>> q = parse_search([("PatientID", "p1"), ("limit", "10")], Level.STUDY)
    >>> q.matches[0].attribute.keyword, q.matches[0].kind.value, q.limit
    ('PatientID', 'single', 10)
    """
    pairs = list(params)
    fuzzy = False
    include_all = False
    include_tags: set[int] = set()
    limit_text: str | None = None
    offset_text: str | None = None
    criteria: list[tuple[str, str]] = []
    for name, value in pairs:
        if name == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise QueryError(f"fuzzymatching must be true or false, not {value!r}.")
            fuzzy = value.lower() == "true"
        elif name == "includefield":
            for item in (part.strip() for part in value.split(",")):
                if not item:
                    continue
                if item == "all":
                    include_all = True
                else:
                    include_tags.add(resolve_attribute(item))
        elif name == "limit":
            limit_text = value
        elif name == "offset":
            offset_text = value
        else:
            criteria.append((name, value))

    warnings: list[str] = []
    limit = DEFAULT_LIMIT[level]
    if limit_text is not None:
        limit = _non_negative(limit_text, "limit")
        if limit == 0:
            limit = DEFAULT_LIMIT[level]
        elif limit > MAX_LIMIT[level]:
            warnings.append(
                f"The number of results exceeded the maximum limit of {MAX_LIMIT[level]};"
                f" the limit was set to {MAX_LIMIT[level]}."
            )
            limit = MAX_LIMIT[level]
    offset = 0 if offset_text is None else _non_negative(offset_text, "offset")
    if offset > MAX_OFFSET:
        raise QueryError(f"offset must be at most {MAX_OFFSET}, not {offset}.")

    matches: list[Match] = []
    returned: set[int] = set()
    for name, value in criteria:
        attribute = _searchable(name, level, standard)
        if value == "":
            returned.add(attribute.tag)
            continue
        matches.append(_match(attribute, value, fuzzy))
    return SearchQuery(
        level=level,
        matches=tuple(matches),
        returned_tags=frozenset(returned),
        include_all=include_all,
        include_tags=frozenset(include_tags),
        limit=limit,
        offset=offset,
        fuzzy=fuzzy,
        warnings=tuple(warnings),
    )


def _non_negative(text: str, name: str) -> int:
    # isascii too: str.isdigit accepts "²", which int() refuses (a 500; tests/reliability fuzz).
    if not (text.isascii() and text.isdigit()):
        raise QueryError(f"{name} must be a non-negative integer, not {text!r}.")
    return int(text)


def _searchable(name: str, level: Level, standard: bool = False) -> IndexedAttribute:
    tag = resolve_attribute(name)
    attribute = BY_TAG.get(tag) or (MODALITIES_IN_STUDY if tag == MODALITIES_IN_STUDY.tag else None)
    keyword = keyword_for_tag(tag) or f"{tag:08X}"
    allowed = STANDARD_KEYS if standard else frozenset()
    if attribute is None or not (attribute.searchable or attribute.keyword in allowed):
        supported = ", ".join(
            a.keyword
            for lvl in _SEARCHABLE_LEVELS[level]
            for a in (*BY_KEYWORD.values(), MODALITIES_IN_STUDY)
            if a.level is lvl and (a.searchable or a.keyword in allowed)
        )
        raise QueryError(
            f"{keyword} is not a supported search attribute; supported at {level.value.lower()}"
            f" level: {supported}."
        )
    if attribute.level not in _SEARCHABLE_LEVELS[level]:
        raise QueryError(
            f"{keyword} is an attribute of the {attribute.level.value.lower()} level and cannot"
            f" be searched at {level.value.lower()} level."
        )
    return attribute


def _check_length(attribute: IndexedAttribute, value: str) -> None:
    if len(value) > MAX_QIDO_VALUE_CHARS:
        raise QueryError(
            f"{attribute.keyword}: a matching value may be at most {MAX_QIDO_VALUE_CHARS}"
            f" characters, not {len(value)}."
        )


def _match(attribute: IndexedAttribute, value: str, fuzzy: bool) -> Match:
    if attribute.vr != "UI":  # a UID list is checked UID by UID
        _check_length(attribute, value)
    if attribute.vr == "IS":
        # PS3.4 C.2.2.2.1: single value matching only for numbers.
        if not (value.strip().lstrip("+-").isascii() and value.strip().lstrip("+-").isdigit()):
            raise QueryError(f"{attribute.keyword}: {value!r} is not an integer.")
        number = int(value)
        if not -(2**31) <= number < 2**31:
            raise QueryError(f"{attribute.keyword}: {value!r} is out of range.")
        return Match(attribute, MatchKind.SINGLE, (str(number),))
    if attribute.vr == "UI":
        uids = tuple(uid.strip() for uid in _UID_SEPARATORS.split(value) if uid.strip())
        if len(uids) > MAX_QIDO_UIDS:
            raise QueryError(
                f"{attribute.keyword}: a UID list may hold at most {MAX_QIDO_UIDS} UIDs,"
                f" not {len(uids)}."
            )
        for uid in uids:
            _check_length(attribute, uid)
        if len(uids) > 1:
            return Match(attribute, MatchKind.LIST, uids)
        return Match(attribute, MatchKind.SINGLE, uids or ("",))
    if attribute.vr in ("DA", "TM"):
        return _range_or_single(attribute, value)
    if attribute.vr == "PN":
        folded = value.casefold()
        if fuzzy:
            tokens = tuple(t for t in _NAME_TOKEN_SEPARATORS.split(folded.replace("*", "")) if t)
            tokens = tuple(dict.fromkeys(tokens))  # one lookup per distinct token
            if len(tokens) > MAX_FUZZY_TOKENS:
                raise QueryError(
                    f"{attribute.keyword}: fuzzy matching takes at most {MAX_FUZZY_TOKENS}"
                    f" name tokens, not {len(tokens)}."
                )
            if tokens:
                return Match(attribute, MatchKind.FUZZY, tokens)
        kind = MatchKind.WILDCARD if ("*" in value or "?" in value) else MatchKind.SINGLE
        return Match(attribute, kind, (folded,))
    if "*" in value or "?" in value:
        return Match(attribute, MatchKind.WILDCARD, (value,))
    return Match(attribute, MatchKind.SINGLE, (value,))


def _range_or_single(attribute: IndexedAttribute, value: str) -> Match:
    pattern = _DATE if attribute.vr == "DA" else _TIME
    what = "date (YYYYMMDD)" if attribute.vr == "DA" else "time (HHMMSS.FFFFFF)"
    if "-" in value:
        low, _, high = value.partition("-")
        if (low and not pattern.match(low)) or (high and not pattern.match(high)) or "-" in high:
            raise QueryError(f"{attribute.keyword}: {value!r} is not a {what} range.")
        if not low and not high:
            raise QueryError(f"{attribute.keyword}: a range needs at least one end.")
        return Match(attribute, MatchKind.RANGE, (low, high))
    if not pattern.match(value):
        raise QueryError(f"{attribute.keyword}: {value!r} is not a {what}.")
    return Match(attribute, MatchKind.SINGLE, (value,))
