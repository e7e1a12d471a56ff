"""The interactive shell driven through prompt_toolkit's pipe input: multi-line statements,
results, errors that do not end the session, completion, and leaving."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from dicomql.config import ConnectionConfig
from dicomql.dbapi import Connection
from dicomql.session import Session
from dicomql.shell import SQLCompleter, run_shell, statement_complete


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    connection = Connection(ConnectionConfig.build(data_dir=tmp_path / "data"))
    try:
        yield Session(connection, "csv", out=io.StringIO(), err=io.StringIO(), fail_fast=False)
    finally:
        connection.close()


def drive(session: Session, keys: str, history: Path | None = None) -> None:
    with create_pipe_input() as pipe:
        pipe.send_text(keys)
        pipe.close()  # end of input: the shell sees Ctrl-D unless it left before
        run_shell(session, history=history, input=pipe, output=DummyOutput())


def test_shell_runs_a_multi_line_statement_shows_errors_and_exits(
    session: Session, tmp_path: Path
) -> None:
    history = tmp_path / "state" / "history"
    drive(
        session,
        "SHOW\r"
        "  SERVICES;\r"
        "SELECT FROM nowhere;\r"
        "SHOW RESOURCES IN google.healthcare LIKE 'dicom%';\r"
        ".exit\r"
        "SHOW SERVICES;\r",  # never read: the shell has left
        history=history,
    )
    out = session.out.getvalue()  # type: ignore[attr-defined]
    err = session.err.getvalue()  # type: ignore[attr-defined]
    assert out.count("google.healthcare,Cloud Healthcare API,v1") == 1
    assert "dicom_stores" in out
    assert err.startswith("Error: ")
    assert "+SHOW\n+  SERVICES;" in history.read_text()  # one entry, two lines


def test_shell_leaves_at_end_of_input(session: Session) -> None:
    drive(session, "SHOW SERVICES;\r")
    assert "google.healthcare" in session.out.getvalue()  # type: ignore[attr-defined]


def test_api_errors_are_printed_and_the_shell_continues(session: Session) -> None:
    drive(
        session,
        "SELECT name FROM google.healthcare.dicom_stores WHERE projectsId = 'p' "
        "AND locationsId = 'us' AND datasetsId = 'nope';\r"
        "SHOW SERVICES;\rquit\r",
    )
    assert "404 NOT_FOUND" in session.err.getvalue()  # type: ignore[attr-defined]
    assert "google.healthcare" in session.out.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "complete"),
    [
        ("SHOW SERVICES;", True),
        ("SHOW SERVICES", False),
        ("SELECT ';", False),
        ("SELECT 'a;'", False),
        ("SELECT 1; -- done", True),
        ("SELECT 1 /* ; */", False),
        (".exit", True),
        ("", True),
    ],
)
def test_a_statement_is_complete_at_a_closing_semicolon(text: str, complete: bool) -> None:
    assert statement_complete(text) is complete


def test_completion_offers_resources_methods_and_columns(session: Session) -> None:
    completer = SQLCompleter(session.connection.engine.registry)

    def complete(text: str) -> list[str]:
        document = Document(text, len(text))
        return [c.text for c in completer.get_completions(document, CompleteEvent())]

    assert "google.healthcare.dicom_stores" in complete("SELECT * FROM google.healthcare.dic")
    assert "google.healthcare.dicom_stores.search_for_studies" in complete(
        "EXEC google.healthcare.dicom_stores.search_for_st"
    )
    assert "@dicomStoresId" in complete("EXEC x @dicomSt")
    assert "notificationConfig" in complete("SELECT notif")
    assert "SELECT" in complete("sel")


def test_piped_input_runs_statements_without_prompts_and_fails_if_one_did(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from dicomql.cli import main

    result = CliRunner().invoke(
        main,
        ["shell", "--data-dir", str(tmp_path / "d"), "-o", "csv", "--history", str(tmp_path / "h")],
        input="SHOW\nSERVICES;\nSELECT FROM;\nSHOW SERVICES;\n.exit\nSHOW SERVICES;\n",
    )
    assert result.exit_code == 1  # a statement failed; the ones after it still ran
    assert result.stdout.count("google.healthcare,Cloud Healthcare API,v1") == 2
    assert "dicomql>" not in result.stdout
    assert result.stderr.startswith("Error: ")
