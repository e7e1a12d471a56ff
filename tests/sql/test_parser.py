"""The StackQL dialect's parser: statements round-trip, hints and quirks parse, and syntax
errors point at the exact line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomql.errors import SQLSyntaxError
from dicomql.sql.lexer import split_statements
from dicomql.sql.parser import Exec, Show, parse

IDENTITY = [
    line
    for line in (Path(__file__).parent / "fixtures" / "identity.sql").read_text().splitlines()
    if line.strip()
]


@pytest.mark.parametrize("sql", IDENTITY)
def test_statement_round_trips_unchanged(sql: str) -> None:
    assert parse(sql).sql() == sql


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("select 1", "select"),
        ("WITH t AS (SELECT 1) SELECT * FROM t", "select"),
        ("insert into x (a) values (1)", "insert"),
        ("update x set a = 1", "update"),
        ("delete from x", "delete"),
        ("exec a.b", "exec"),
        ("EXECUTE a.b", "exec"),
        ("show services", "show"),
        ("describe a.b", "describe"),
        ("DESC a.b", "describe"),
    ],
)
def test_leading_keyword_chooses_the_statement_kind(sql: str, kind: str) -> None:
    assert parse(sql).kind == kind


def test_exec_parameters_may_be_separated_by_line_breaks_alone() -> None:
    # The StackQL docs' "--required," comments swallow the commas.
    statement = parse(
        "EXEC google.healthcare.dicom_stores.deidentify \n"
        "@projectsId='p' --required, \n"
        "@locationsId='l' --required\n"
        "@@json=\n'{\"a\": 1}'"
    )
    assert isinstance(statement, Exec)
    assert [(p.name, p.value) for p in statement.parameters] == [
        ("projectsId", "p"),
        ("locationsId", "l"),
    ]
    assert statement.body == '{"a": 1}'


def test_exec_values_keep_their_types() -> None:
    statement = parse("EXEC a.b @s='it''s', @n=10, @f=1.5, @t=true, @z=NULL")
    assert isinstance(statement, Exec)
    assert [p.value for p in statement.parameters] == ["it's", 10, 1.5, True, None]


@pytest.mark.parametrize(
    "sql",
    [
        "EXEC /*+ AWAIT */ google.healthcare.dicom_stores.export @projectsId='p'",
        "/*+ AWAIT, SHOWRESULTS */ EXEC google.healthcare.dicom_stores.export @projectsId='p'",
        "INSERT /*+ AWAIT */ INTO google.healthcare.datasets (projectsId) SELECT 'p'",
    ],
)
def test_hints_are_read_wherever_they_stand(sql: str) -> None:
    assert "AWAIT" in parse(sql).hints


def test_comment_swallowing_the_final_semicolon_still_ends_the_statement() -> None:
    text = "SELECT name FROM google.healthcare.dicom_stores\nWHERE projectsId = 'p' -- required;"
    pieces = split_statements(text)
    assert len(pieces) == 1
    assert parse(pieces[0][1]).kind == "select"


def test_script_splits_on_semicolons_outside_quotes_and_comments() -> None:
    text = "SHOW SERVICES; SELECT ';' AS a -- x; y\n; /* ; */ DESCRIBE a.b"
    assert [parse(piece).kind for _, piece in split_statements(text)] == [
        "show",
        "select",
        "describe",
    ]


def test_comments_may_stand_anywhere_in_exec_show_and_describe() -> None:
    statement = parse("SHOW /* which */ METHODS IN -- here\n google.healthcare.dicom_stores")
    assert isinstance(statement, Show)
    assert statement.sql() == "SHOW METHODS IN google.healthcare.dicom_stores"
    statement = parse("EXEC a.b /* x */ @p=my-project, @n=-3")
    assert isinstance(statement, Exec)
    assert [(p.name, p.value) for p in statement.parameters] == [("p", "my-project"), ("n", -3)]


def test_show_like_keeps_its_pattern() -> None:
    statement = parse("SHOW METHODS IN google.healthcare.dicom_stores LIKE 'search%'")
    assert isinstance(statement, Show)
    assert (statement.what, statement.like) == ("METHODS", "search%")


@pytest.mark.parametrize(
    ("sql", "message", "line", "column"),
    [
        ("SELECT WHERE projectsId = 'p'", "Expected FROM", 1, 8),
        ("SELECT name WHERE a = 1", "Expected FROM", 1, 13),
        ("SELECT * FORM x", "Expected FROM", 1, 10),
        ("SELECT name,\n  labels\nWHERE projectsId = 'p'", "Expected FROM", 3, 1),
        ("SELECT name FROM x WHERE (a = 1", "Expected )", 1, 31),
        (
            "SELECT name\nFROM google.healthcare.dicom_stores\nWHERE projectsId = ",
            "Expected an expression after '='",
            3,
            19,
        ),
        ("SELECT name FROM x WHERE a = 'b' AND AND", "Expected an expression after 'AND'", 1, 41),
        ("UPDATE x SET\n  data__a = \nWHERE b = 1", "Expected an expression", 3, 1),
        (
            "FETCH x",
            "Expected SELECT, INSERT, UPDATE, DELETE, EXEC, SHOW, DESCRIBE or EXPLAIN",
            1,
            1,
        ),
        (
            "  \n  SHOUT x",
            "Expected SELECT, INSERT, UPDATE, DELETE, EXEC, SHOW, DESCRIBE or EXPLAIN",
            2,
            3,
        ),
        ("EXEC google.healthcare.dicom_stores.get @a 'b'", "Expected =", 1, 44),
        ("EXEC google.healthcare.dicom_stores.get\n  @a='b' x", "Expected @parameter=value", 2, 10),
        ("EXEC", "Expected a resource method such as google.healthcare.dicom_stores.get", 1, 5),
        ("EXEC a.b @a='unclosed", "Unterminated string", 1, 13),
        ("EXEC a.b @@body='{}'", "Expected @@json", 1, 10),
        ("SHOW RESOURCES", "Expected IN", 1, 15),
        (
            "SHOW TABLES",
            "Expected PROVIDERS or SERVICES or RESOURCES or METHODS or INSERT or VERSION",
            1,
            6,
        ),
        ("DESCRIBE", "Expected a resource name", 1, 9),
        ("SELECT name FROM", "Expected a table name", 1, 17),
        ("WITH t SELECT 1", "Expected (", 1, 8),
        ("EXPLAIN DELETE FROM x", "Expected SELECT after EXPLAIN", 1, 9),
        ("SELECT x'0g'", "Invalid literal", 1, 8),
        ("SELECT x'00", "Unterminated string", 1, 9),
    ],
)
def test_syntax_error_points_at_line_and_column(
    sql: str, message: str, line: int, column: int
) -> None:
    with pytest.raises(SQLSyntaxError) as caught:
        parse(sql)
    error = caught.value
    assert (error.description, error.line, error.column) == (message, line, column)
    assert str(error).startswith(f"{message} at line {line}, column {column}\n")


def test_select_without_from_or_where_is_plain_sqlite() -> None:
    assert parse("SELECT 1 + 1 AS two").kind == "select"


def test_syntax_error_message_draws_a_caret_under_the_column() -> None:
    with pytest.raises(SQLSyntaxError) as caught:
        parse("SELECT * FORM x")
    assert str(caught.value) == (
        "Expected FROM at line 1, column 10\n  SELECT * FORM x\n           ^"
    )
