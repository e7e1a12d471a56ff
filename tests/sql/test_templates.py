"""Templates and parameters: values are quoted, never spliced; JSON placeholders in bodies take
JSON; a missing value is an error naming it. Also collects the sql modules' doctests."""

from __future__ import annotations

import doctest
import json

import pytest

from dicomql.errors import ProgrammingError
from dicomql.sql import dicom_rows, lexer, parser, templates
from dicomql.sql.parser import Exec, Relational, parse
from dicomql.sql.templates import bind, render


@pytest.mark.parametrize("spacing", ["{{x}}", "{{ x }}", "{{ x}}", "{{  x  }}"])
def test_placeholders_accept_any_spacing(spacing: str) -> None:
    assert render(f"SELECT '{spacing}'", {"x": "v"}) == "SELECT 'v'"


def test_a_quote_in_a_value_cannot_end_the_string() -> None:
    sql = render("SELECT name FROM t WHERE a = '{{ x }}'", {"x": "' OR 1=1 --"})
    statement = parse(sql)
    assert isinstance(statement, Relational)
    where = statement.tree.args["where"].this
    assert where.right.this == "' OR 1=1 --"


def test_a_placeholder_outside_quotes_becomes_a_literal() -> None:
    assert render("SELECT {{ a }}, {{ b }}, {{ c }}", {"a": "x'y", "b": 3, "c": None}) == (
        "SELECT 'x''y', 3, NULL"
    )


def test_missing_value_is_named() -> None:
    with pytest.raises(ProgrammingError, match="template variable 'datasetsId' has no value"):
        render("WHERE datasetsId = '{{ datasetsId }}'", {"projectsId": "p"})


def test_placeholders_in_comments_are_left_alone() -> None:
    assert render("SELECT 1 -- {{ nothing }}", {}) == "SELECT 1 -- {{ nothing }}"


def test_object_value_fills_a_whole_json_string_as_json() -> None:
    sql = render(
        'EXEC a.b @@json=\'{"config": "{{ config }}", "dest": "{{ dest }}"}\'',
        {"config": {"dicom": {"keepList": {"tags": ["PatientID"]}}}, "dest": 'say "hi"'},
    )
    statement = parse(sql)
    assert isinstance(statement, Exec)
    assert json.loads(statement.body or "") == {
        "config": {"dicom": {"keepList": {"tags": ["PatientID"]}}},
        "dest": 'say "hi"',
    }


def test_json_text_value_fills_a_whole_json_string_as_json() -> None:
    sql = render('EXEC a.b @@json=\'{"c": "{{ c }}"}\'', {"c": '{"k": [1, 2]}'})
    statement = parse(sql)
    assert isinstance(statement, Exec)
    assert json.loads(statement.body or "") == {"c": {"k": [1, 2]}}


def test_bind_fills_named_parameters_outside_strings() -> None:
    sql = bind("SELECT ':a', :a, :b, x::text", {"a": "it's", "b": 2})
    assert sql == "SELECT ':a', 'it''s', 2, x::text"


def test_bind_names_a_missing_parameter() -> None:
    with pytest.raises(ProgrammingError, match="parameter 'b' has no value"):
        bind("SELECT :a, :b", {"a": 1})


@pytest.mark.parametrize("module", [templates, lexer, parser, dicom_rows])
def test_doctests(module: object) -> None:
    failures, _ = doctest.testmod(module)  # type: ignore[arg-type]
    assert failures == 0


INJECTION = 'out", "config": {"dicom": {"filterProfile": "DEIDENTIFY_TAG_CONTENTS"}}, "x": "'


def _exec_body(sql: str) -> object:
    statement = parse(sql)
    assert isinstance(statement, Exec)
    return json.loads(statement.body or "")


@pytest.mark.parametrize(
    "value", [INJECTION, '\\", "a": 1, "b": "\\', "'", "\\", '"', "\n\x00", "{{ other }}"]
)
def test_a_value_inside_a_json_string_is_json_escaped_and_adds_no_field(value: str) -> None:
    sql = render(
        'EXEC a.b @@json=\'{"destinationDataset": "projects/p/datasets/{{ dest }}"}\'',
        {"dest": value, "other": "x"},
    )
    assert _exec_body(sql) == {"destinationDataset": f"projects/p/datasets/{value}"}


def test_a_value_inside_a_json_key_or_nested_string_is_escaped_too() -> None:
    # An escaped quote (\") inside the template's string does not end it.
    sql = render(r"""EXEC a.b @@json='{"labels": {"k-{{ v }}": "a\"{{ v }}"}}'""", {"v": INJECTION})
    assert _exec_body(sql) == {"labels": {f"k-{INJECTION}": f'a"{INJECTION}'}}


@pytest.mark.parametrize(
    ("value", "expected"),
    [("5", 5), (5, 5), ("true", True), (None, None), ('{"a": [1]}', {"a": [1]}), (2.5, 2.5)],
)
def test_a_bare_json_placeholder_takes_exactly_one_json_value(
    value: object, expected: object
) -> None:
    sql = render("EXEC a.b @@json='{\"n\": {{ n }}}'", {"n": value})
    assert _exec_body(sql) == {"n": expected}


@pytest.mark.parametrize(
    "value", ['1, "filterConfig": {"a": 1}', "abc", '"a" "b"', "NaN", float("inf"), "", "1}, {"]
)
def test_a_bare_json_placeholder_refuses_anything_but_one_json_value(value: object) -> None:
    with pytest.raises(ProgrammingError, match="template variable 'n'"):
        render("EXEC a.b @@json='{\"n\": {{ n }}}'", {"n": value})


def test_a_value_in_a_plain_sql_string_is_sql_quoted() -> None:
    sql = render("SELECT name FROM t WHERE a = 'x-{{ v }}'", {"v": INJECTION + "' OR 1=1 --"})
    statement = parse(sql)
    assert isinstance(statement, Relational)
    assert statement.tree.args["where"].this.right.this == f"x-{INJECTION}' OR 1=1 --"


def test_a_non_finite_number_is_not_a_sql_literal() -> None:
    with pytest.raises(ProgrammingError, match="not a SQL literal"):
        render("SELECT {{ x }}", {"x": float("nan")})
