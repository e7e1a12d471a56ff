from __future__ import annotations

import pytest

from dicomql.dicom.attributes import Level
from dicomql.dicom.parse import person_name_tokens
from dicomql.dicom.qido import (
    MAX_OFFSET,
    MatchKind,
    QueryError,
    parse_search,
    resolve_attribute,
)

S, R, I = Level.STUDY, Level.SERIES, Level.INSTANCE  # noqa: E741


@pytest.mark.parametrize(
    ("param", "value", "level", "keyword", "kind", "values"),
    [
        ("PatientID", "p1", S, "PatientID", MatchKind.SINGLE, ("p1",)),
        ("00100020", "p1", S, "PatientID", MatchKind.SINGLE, ("p1",)),
        ("0020000d", "1.2", S, "StudyInstanceUID", MatchKind.SINGLE, ("1.2",)),
        ("StudyInstanceUID", "1.2,1.3", S, "StudyInstanceUID", MatchKind.LIST, ("1.2", "1.3")),
        ("StudyInstanceUID", "1.2\\1.3", S, "StudyInstanceUID", MatchKind.LIST, ("1.2", "1.3")),
        ("AccessionNumber", "A*", S, "AccessionNumber", MatchKind.WILDCARD, ("A*",)),
        ("AccessionNumber", "A?1", S, "AccessionNumber", MatchKind.WILDCARD, ("A?1",)),
        ("StudyDate", "20200101", S, "StudyDate", MatchKind.SINGLE, ("20200101",)),
        ("StudyDate", "20200101-", S, "StudyDate", MatchKind.RANGE, ("20200101", "")),
        ("StudyDate", "-20201231", S, "StudyDate", MatchKind.RANGE, ("", "20201231")),
        (
            "StudyDate",
            "20200101-20201231",
            S,
            "StudyDate",
            MatchKind.RANGE,
            ("20200101", "20201231"),
        ),
        ("PatientName", "DOE^John", S, "PatientName", MatchKind.SINGLE, ("doe^john",)),
        ("PatientName", "Do*", S, "PatientName", MatchKind.WILDCARD, ("do*",)),
        ("ReferringPhysicianName", "X", S, "ReferringPhysicianName", MatchKind.SINGLE, ("x",)),
        ("Modality", "CT", R, "Modality", MatchKind.SINGLE, ("CT",)),
        ("PatientID", "p1", R, "PatientID", MatchKind.SINGLE, ("p1",)),
        ("SeriesInstanceUID", "1.2,1.3", I, "SeriesInstanceUID", MatchKind.LIST, ("1.2", "1.3")),
        ("SOPInstanceUID", "1.9", I, "SOPInstanceUID", MatchKind.SINGLE, ("1.9",)),
    ],
)
def test_each_matching_rule_is_recognised_from_its_value(
    param: str,
    value: str,
    level: Level,
    keyword: str,
    kind: MatchKind,
    values: tuple[str, ...],
) -> None:
    (match,) = parse_search([(param, value)], level).matches
    assert (match.attribute.keyword, match.kind, match.values) == (keyword, kind, values)


def test_fuzzymatching_turns_person_names_into_case_folded_tokens() -> None:
    query = parse_search([("PatientName", "Jo^DO"), ("fuzzymatching", "true")], S)
    (match,) = query.matches
    assert (match.kind, match.values) == (MatchKind.FUZZY, ("jo", "do"))
    # Non-name attributes are not affected by fuzzymatching.
    query = parse_search([("PatientID", "p1"), ("fuzzymatching", "true")], S)
    assert query.matches[0].kind is MatchKind.SINGLE


def test_fuzzymatching_false_keeps_exact_name_matching() -> None:
    query = parse_search([("PatientName", "Jo"), ("fuzzymatching", "false")], S)
    assert query.matches[0].kind is MatchKind.SINGLE


def test_fuzzy_query_tokens_split_on_components_groups_and_words_as_ingest_does() -> None:
    name = "Doe^John Paul=ドウ^ジョン"
    (match,) = parse_search([("PatientName", name), ("fuzzymatching", "true")], S).matches
    assert set(match.values) == person_name_tokens(name)


@pytest.mark.parametrize(
    ("params", "level", "message"),
    [
        ([("NoSuchKeyword", "1")], S, "Unknown DICOM attribute 'NoSuchKeyword'"),
        ([("patientid", "1")], S, "Unknown DICOM attribute 'patientid'"),
        ([("StudyDescription", "x")], S, "StudyDescription is not a supported search attribute"),
        ([("00081030", "x")], S, "StudyDescription is not a supported search attribute"),
        ([("Modality", "CT")], S, "Modality is an attribute of the series level"),
        ([("SOPInstanceUID", "1.2")], R, "SOPInstanceUID is an attribute of the instance level"),
        ([("StudyDate", "2020")], S, "is not a date"),
        ([("StudyDate", "20200101-2020")], S, "is not a date (YYYYMMDD) range"),
        ([("StudyDate", "-")], S, "a range needs at least one end"),
        ([("StudyDate", "2020-01-01")], S, "range"),
        ([("limit", "-1")], S, "limit must be a non-negative integer"),
        ([("limit", "ten")], S, "limit must be a non-negative integer"),
        ([("offset", "x")], S, "offset must be a non-negative integer"),
        ([("offset", str(MAX_OFFSET + 1))], S, f"offset must be at most {MAX_OFFSET}"),
        ([("fuzzymatching", "yes")], S, "fuzzymatching must be true or false"),
        ([("includefield", "NotAKeyword")], S, "Unknown DICOM attribute 'NotAKeyword'"),
    ],
)
def test_bad_queries_are_refused_with_a_message_naming_the_problem(
    params: list[tuple[str, str]], level: Level, message: str
) -> None:
    with pytest.raises(QueryError) as raised:
        parse_search(params, level)
    assert message in str(raised.value)


def test_unsupported_attribute_message_lists_what_can_be_searched() -> None:
    with pytest.raises(QueryError) as raised:
        parse_search([("StudyDescription", "x")], S)
    assert "PatientName" in str(raised.value) and "StudyDate" in str(raised.value)


@pytest.mark.parametrize(
    ("level", "default", "maximum"), [(S, 100, 5000), (R, 1000, 5000), (I, 1000, 50000)]
)
def test_limit_defaults_and_caps_per_level(level: Level, default: int, maximum: int) -> None:
    assert parse_search([], level).limit == default
    assert parse_search([("limit", "7")], level).limit == 7
    capped = parse_search([("limit", str(maximum + 1))], level)
    assert capped.limit == maximum
    assert f"maximum limit of {maximum}" in capped.warnings[0]
    assert parse_search([("limit", str(maximum))], level).warnings == ()


def test_offset_defaults_to_zero_and_accepts_the_maximum() -> None:
    assert parse_search([], S).offset == 0
    assert parse_search([("offset", str(MAX_OFFSET))], S).offset == MAX_OFFSET


def test_includefield_accepts_repeats_comma_lists_keywords_tags_and_all() -> None:
    query = parse_search(
        [("includefield", "StudyDescription,00081032"), ("includefield", "Manufacturer")], S
    )
    assert query.include_tags == {0x00081030, 0x00081032, 0x00080070}
    assert not query.include_all
    assert parse_search([("includefield", "all")], S).include_all


def test_an_empty_value_is_universal_matching_and_only_asks_for_the_attribute() -> None:
    query = parse_search([("PatientID", "")], S)
    assert query.matches == ()
    assert query.returned_tags == {0x00100020}


def test_attributes_resolve_from_keyword_or_tag() -> None:
    assert resolve_attribute("PatientID") == resolve_attribute("00100020") == 0x00100020


def test_the_docstring_examples_hold() -> None:
    import doctest

    from dicomql.dicom import qido

    result = doctest.testmod(qido)
    assert result.attempted > 0 and result.failed == 0
