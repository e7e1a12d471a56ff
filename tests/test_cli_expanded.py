"""Expanded display from the command line: ``exec -x`` and ``shell -x`` print one block per row
and a line per column (psql's ``-x``), also into a pipe, where the table is otherwise kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

STATEMENT = (
    "SELECT 'p' AS projectsId, 'a much longer value' AS note, 3 AS count "
    "UNION ALL SELECT 'q', 'x', 4"
)


def dicomql(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    """The real ``dicomql`` entry point in a child process, its output a pipe (not a TTY)."""
    return subprocess.run(
        [sys.executable, "-c", "from dicomql.cli import main; main()", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=False,
    )


EXPANDED = (
    "-[ RECORD 1 ]----\n"
    "projectsId | p\n"
    "note       | a much longer value\n"
    "count      | 3\n"
    "-[ RECORD 2 ]----\n"
    "projectsId | q\n"
    "note       | x\n"
    "count      | 4\n"
)


@pytest.mark.parametrize("flag", ["-x", "--expanded"])
def test_exec_expanded_prints_a_block_per_row_into_a_pipe(tmp_path: Path, flag: str) -> None:
    result = dicomql("exec", flag, STATEMENT, "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == EXPANDED


def test_exec_without_expanded_keeps_the_table_in_a_pipe(tmp_path: Path) -> None:
    result = dicomql("exec", STATEMENT, "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "RECORD" not in result.stdout and "a much longer value" in result.stdout


def test_shell_expanded_starts_on_and_backslash_x_turns_it_off(tmp_path: Path) -> None:
    script = f"{STATEMENT};\n\\x\n{STATEMENT};\n"
    result = dicomql("shell", "-x", "--data-dir", str(tmp_path), input=script)
    assert result.returncode == 0, result.stderr
    first, _, rest = result.stdout.partition("count      | 4\n")
    assert first + "count      | 4\n" == EXPANDED
    assert "RECORD" not in rest and "a much longer value" in rest
