"""QIDO-RS matches (:mod:`dicomql.dicom.qido`) as SQLAlchemy conditions on the index tables:
each matching rule of PS3.4 C.2.2.2 in the SQL of SQLite or PostgreSQL."""

from __future__ import annotations

from sqlalchemy import ColumnElement, Table, and_, or_, select

from dicomql.dicom.attributes import Level
from dicomql.dicom.qido import MODALITIES_IN_STUDY, Match, MatchKind, SearchQuery
from dicomql.store.schema import instances, person_name_tokens, series, studies

TABLE_OF_LEVEL: dict[Level, Table] = {
    Level.STUDY: studies,
    Level.SERIES: series,
    Level.INSTANCE: instances,
}


def match_conditions(
    query: SearchQuery, store_pk: int, dialect: str
) -> dict[Level, list[ColumnElement[bool]]]:
    """SQLAlchemy conditions for the query's matches, grouped by the level of the table each
    one constrains (person-name fuzzy matching constrains ``studies.pk``)."""
    conditions: dict[Level, list[ColumnElement[bool]]] = {level: [] for level in Level}
    for match in query.matches:
        conditions[match.attribute.level].append(_condition(match, store_pk, dialect))
    return conditions


def _condition(match: Match, store_pk: int, dialect: str) -> ColumnElement[bool]:
    attribute = match.attribute
    table = TABLE_OF_LEVEL[attribute.level]
    if attribute.vr == "PN":
        column = table.c[f"{attribute.column}_key"]
    else:
        column = table.c[attribute.column]
    if attribute is MODALITIES_IN_STUDY:
        return _any_of_multiple(column, match, dialect)
    if attribute.vr == "IS":
        return column == int(match.values[0])
    if match.kind is MatchKind.SINGLE:
        if attribute.vr == "PN" and "=" not in match.values[0]:
            # A name stored with ideographic or phonetic groups ("Yamada^Tarou=山田^太郎")
            # matches a query naming only its alphabetic group (PS3.5 6.2.1.2).
            # The leading prefix condition is what lets the index serve the OR.
            name = match.values[0]
            return and_(
                _prefix(column, name, dialect),
                or_(column == name, _prefix(column, name + "=", dialect)),
            )
        return column == match.values[0]
    if match.kind is MatchKind.LIST:
        return column.in_(match.values)
    if match.kind is MatchKind.WILDCARD:
        return _pattern(column, match.values[0], dialect)
    if match.kind is MatchKind.RANGE:
        return _range(column, attribute.vr, *match.values)
    return _fuzzy(match, store_pk, dialect)


def _any_of_multiple(column: ColumnElement[str], match: Match, dialect: str) -> ColumnElement[bool]:
    """A backslash-joined multi-valued column (ModalitiesInStudy) matches when any of its
    values matches (PS3.4 C.2.2.2.1 and C.2.2.2.4 on each value)."""
    value = match.values[0]
    if match.kind is MatchKind.SINGLE and dialect != "sqlite":
        escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return or_(
            column == value,
            column.like(f"{escaped}\\\\%", escape="\\"),
            column.like(f"%\\\\{escaped}", escape="\\"),
            column.like(f"%\\\\{escaped}\\\\%", escape="\\"),
        )
    if match.kind is MatchKind.SINGLE:
        plain = value.replace("[", "[[]").replace("*", "[*]").replace("?", "[?]")
        return or_(
            column == value,
            column.op("GLOB")(f"{plain}\\*"),
            column.op("GLOB")(f"*\\{plain}"),
            column.op("GLOB")(f"*\\{plain}\\*"),
        )
    # Wildcards: each stored value is tried against the pattern.
    return or_(
        _pattern(column, value, dialect),
        _pattern(column, f"{value}\\*", dialect),
        _pattern(column, f"*\\{value}", dialect),
        _pattern(column, f"*\\{value}\\*", dialect),
    )


def _pattern(column: ColumnElement[str], value: str, dialect: str) -> ColumnElement[bool]:
    """``*``/``?`` wildcards, case-sensitive as the column is (keys are already case-folded).

    SQLite's LIKE ignores ASCII case and cannot use an index; GLOB is case-sensitive and does, so
    SQLite gets GLOB (with its ``[`` class syntax escaped) and other databases LIKE with escapes.
    """
    if dialect == "sqlite":
        return column.op("GLOB")(value.replace("[", "[[]"))
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(escaped.replace("*", "%").replace("?", "_"), escape="\\")


def _prefix(column: ColumnElement[str], prefix: str, dialect: str) -> ColumnElement[bool]:
    wildcard_free = prefix.replace("*", "").replace("?", "")
    if dialect == "sqlite":
        return column.op("GLOB")(wildcard_free.replace("[", "[[]") + "*")
    escaped = wildcard_free.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(escaped + "%", escape="\\")


def _range(column: ColumnElement[str], vr: str, low: str, high: str) -> ColumnElement[bool]:
    # DA and TM values compare correctly as text; a partial time as the upper bound covers the
    # whole hour/minute it names (PS3.4 C.2.2.2.5.1), hence the padding.
    conditions = []
    if low:
        conditions.append(column >= low)
    if high:
        conditions.append(column <= (high + "\x7f" if vr == "TM" else high))
    return and_(*conditions)


def _fuzzy(match: Match, store_pk: int, dialect: str) -> ColumnElement[bool]:
    """Every query token is the prefix of a token of the name (Cloud Healthcare fuzzymatching):
    "jo" and "do" match "John^Doe", "ohn" does not. One indexed prefix lookup per token."""
    conditions: list[ColumnElement[bool]] = []
    for token in match.values:
        study_pks = select(person_name_tokens.c.study_pk).where(
            person_name_tokens.c.store_pk == store_pk,
            person_name_tokens.c.keyword == match.attribute.keyword,
            _prefix(person_name_tokens.c.token, token, dialect),
        )
        conditions.append(studies.c.pk.in_(study_pks))
    return and_(*conditions) if len(conditions) > 1 else conditions[0]
