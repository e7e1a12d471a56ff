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
