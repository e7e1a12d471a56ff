"""QIDO-RS matches (:mod:`dicomql.dicom.qido`) as SQLAlchemy conditions on the index tables:
each matching rule of PS3.4 C.2.2.2 in the SQL of SQLite or PostgreSQL.

A match becomes a :class:`MatchShape` (its attribute, the rule matching it, how many values the
rule takes) and the values themselves. Conditions are built from the shapes alone, with named
bind parameters for the values, so a statement built once serves every request of the same shape
(``store.search`` caches them): building and cache-keying a statement per request cost more CPU
than running a selective search.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Integer, Table, and_, bindparam, or_, select, true
from sqlalchemy.sql.elements import BindParameter

from dicomql.dicom.attributes import IndexedAttribute, Level
from dicomql.dicom.qido import MODALITIES_IN_STUDY, Match, MatchKind, SearchQuery
from dicomql.store.schema import instances, person_name_tokens, series, studies

TABLE_OF_LEVEL: dict[Level, Table] = {
    Level.STUDY: studies,
    Level.SERIES: series,
    Level.INSTANCE: instances,
}
# The searched store's pk, a bind parameter of every search statement.
STORE_PK: BindParameter[int] = bindparam("store_pk", type_=Integer)

# A rule's condition on the column, from the names of its bind parameters.
Rule = Callable[[IndexedAttribute, ColumnElement[Any], tuple[str, ...], str], ColumnElement[bool]]


@dataclass(frozen=True)
class MatchShape:
    """What a match's condition depends on, values aside."""

    attribute: IndexedAttribute
    rule: Rule
    arity: int  # how many bind parameters the rule takes


def bind_matches(query: SearchQuery, dialect: str) -> tuple[tuple[MatchShape, ...], dict[str, Any]]:
    """The shapes of the query's matches and the values of their bind parameters, by name."""
    shapes = []
    values: dict[str, Any] = {}
    for i, match in enumerate(query.matches):
        rule, arguments = _rule(match, dialect)
        shapes.append(MatchShape(match.attribute, rule, len(arguments)))
        for j, argument in enumerate(arguments):
            values[_parameter(i, j)] = argument
    return tuple(shapes), values


def match_conditions(
    shapes: tuple[MatchShape, ...], dialect: str
) -> dict[Level, list[ColumnElement[bool]]]:
    """SQLAlchemy conditions for the matches of these shapes (values as the bind parameters of
    :func:`bind_matches`), grouped by the level of the table each one constrains (person-name
    fuzzy matching constrains ``studies.pk``)."""
    conditions: dict[Level, list[ColumnElement[bool]]] = {level: [] for level in Level}
    for i, shape in enumerate(shapes):
        attribute = shape.attribute
        table = TABLE_OF_LEVEL[attribute.level]
        if attribute.vr == "PN":
            column = table.c[f"{attribute.column}_key"]
        else:
            column = table.c[attribute.column]
        names = tuple(_parameter(i, j) for j in range(shape.arity))
        conditions[attribute.level].append(shape.rule(attribute, column, names, dialect))
    return conditions


def _parameter(match: int, value: int) -> str:
    return f"m{match}_{value}"


def _rule(match: Match, dialect: str) -> tuple[Rule, tuple[Any, ...]]:
    """The rule matching ``match`` and the values of its bind parameters."""
    attribute = match.attribute
    value = match.values[0]
    if attribute is MODALITIES_IN_STUDY:
        # A backslash-joined multi-valued column matches when any of its values matches
        # (PS3.4 C.2.2.2.1 and C.2.2.2.4 on each value).
        if match.kind is MatchKind.SINGLE and dialect != "sqlite":
            escaped = _like_escaped(value)
            likes = (f"{escaped}\\\\%", f"%\\\\{escaped}", f"%\\\\{escaped}\\\\%")
            return _equal_or_patterns, (value, *likes)
        if match.kind is MatchKind.SINGLE:
            plain = _glob_escaped(value)
            return _equal_or_patterns, (value, f"{plain}\\*", f"*\\{plain}", f"*\\{plain}\\*")
        # Wildcards: each stored value is tried against the pattern.
        patterns = (value, f"{value}\\*", f"*\\{value}", f"*\\{value}\\*")
        return _any_pattern, tuple(_pattern(pattern, dialect) for pattern in patterns)
    if attribute.vr == "IS":
        return _equal, (int(value),)
    if match.kind is MatchKind.SINGLE:
        if attribute.vr == "PN" and "=" not in value:
            # A name stored with ideographic or phonetic groups ("Yamada^Tarou=山田^太郎")
            # matches a query naming only its alphabetic group (PS3.5 6.2.1.2).
            return _name_or_its_alphabetic_group, (
                _prefix(value, dialect),
                value,
                _prefix(value + "=", dialect),
            )
        return _equal, (value,)
    if match.kind is MatchKind.LIST:
        return _in_list, (list(match.values),)
    if match.kind is MatchKind.WILDCARD:
        return _any_pattern, (_pattern(value, dialect),)
    if match.kind is MatchKind.RANGE:
        # DA and TM values compare correctly as text; a partial time as the upper bound covers
        # the whole hour/minute it names (PS3.4 C.2.2.2.5.1), hence the padding.
        low, high = match.values
        if high and attribute.vr == "TM":
            high += "\x7f"
        if low and high:
            return _between, (low, high)
        if low:
            return _at_least, (low,)
        if high:
            return _at_most, (high,)
        return _anything, ()
    # Fuzzy: every query token is the prefix of a token of the name (Cloud Healthcare
    # fuzzymatching): "jo" and "do" match "John^Doe", "ohn" does not.
    return _fuzzy, tuple(_prefix(token, dialect) for token in match.values)


# Values -------------------------------------------------------------------------------------
#
# ``*``/``?`` wildcards are case-sensitive as the column is (keys are already case-folded).
# SQLite's LIKE ignores ASCII case and cannot use an index; GLOB is case-sensitive and does, so
# SQLite gets GLOB (with its ``[`` class syntax escaped) and other databases LIKE with escapes.


def _glob_escaped(value: str) -> str:
    return value.replace("[", "[[]").replace("*", "[*]").replace("?", "[?]")


def _like_escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _pattern(value: str, dialect: str) -> str:
    """A QIDO wildcard pattern as the dialect's pattern (see :func:`_matches`)."""
    if dialect == "sqlite":
        return value.replace("[", "[[]")
    return _like_escaped(value).replace("*", "%").replace("?", "_")


def _prefix(prefix: str, dialect: str) -> str:
    """The dialect's pattern matching values that start with ``prefix`` (wildcards dropped)."""
    wildcard_free = prefix.replace("*", "").replace("?", "")
    if dialect == "sqlite":
        return wildcard_free.replace("[", "[[]") + "*"
    return _like_escaped(wildcard_free) + "%"


# Rules --------------------------------------------------------------------------------------


def _matches(column: ColumnElement[str], name: str, dialect: str) -> ColumnElement[bool]:
    """The column matches the dialect's pattern bound to ``name``: GLOB on SQLite, else LIKE."""
    if dialect == "sqlite":
        return column.op("GLOB")(bindparam(name))
    return column.like(bindparam(name), escape="\\")


def _equal(
    attribute: IndexedAttribute, column: ColumnElement[Any], names: tuple[str, ...], dialect: str
) -> ColumnElement[bool]:
    return column == bindparam(names[0])


def _in_list(
    attribute: IndexedAttribute, column: ColumnElement[Any], names: tuple[str, ...], dialect: str
) -> ColumnElement[bool]:
    return column.in_(bindparam(names[0], expanding=True))


def _any_pattern(
    attribute: IndexedAttribute, column: ColumnElement[Any], names: tuple[str, ...], dialect: str
) -> ColumnElement[bool]:
    if len(names) == 1:
        return _matches(column, names[0], dialect)
    return or_(*(_matches(column, name, dialect) for name in names))


def _equal_or_patterns(
    attribute: IndexedAttribute, column: ColumnElement[Any], names: tuple[str, ...], dialect: str
) -> ColumnElement[bool]:
    equal, *patterns = names
    return or_(column == bindparam(equal), *(_matches(column, p, dialect) for p in patterns))


def _name_or_its_alphabetic_group(
    attribute: IndexedAttribute, column: ColumnElement[Any], names: tuple[str, ...], dialect: str
) -> ColumnElement[bool]:
    # The leading prefix condition is what lets the index serve the OR.
    prefix, name, group_prefix = names
    return and_(
        _matches(column, prefix, dialect),
        or_(column == bindparam(name), _matches(column, group_prefix, dialect)),
    )


def _between(
    attribute: IndexedAttribute, column: ColumnElement[Any], names: tuple[str, ...], dialect: str
) -> ColumnElement[bool]:
    return and_(column >= bindparam(names[0]), column <= bindparam(names[1]))


def _at_least(
    attribute: IndexedAttribute, column: ColumnElement[Any], names: tuple[str, ...], dialect: str
) -> ColumnElement[bool]:
    return column >= bindparam(names[0])


def _at_most(
    attribute: IndexedAttribute, column: ColumnElement[Any], names: tuple[str, ...], dialect: str
) -> ColumnElement[bool]:
    return column <= bindparam(names[0])


def _anything(
    attribute: IndexedAttribute, column: ColumnElement[Any], names: tuple[str, ...], dialect: str
) -> ColumnElement[bool]:
    return true()


def _fuzzy(
    attribute: IndexedAttribute, column: ColumnElement[Any], names: tuple[str, ...], dialect: str
) -> ColumnElement[bool]:
    """One indexed prefix lookup in the name tokens per query token."""
    conditions: list[ColumnElement[bool]] = []
    for name in names:
        study_pks = select(person_name_tokens.c.study_pk).where(
            person_name_tokens.c.store_pk == STORE_PK,
            person_name_tokens.c.keyword == attribute.keyword,
            _matches(person_name_tokens.c.token, name, dialect),
        )
        conditions.append(studies.c.pk.in_(study_pks))
    return and_(*conditions) if len(conditions) > 1 else conditions[0]
