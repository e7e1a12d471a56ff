"""Reading an operation through the real ``dicomql exec`` starts none: no "operation … started",
and exec does not wait for it (on the embedded backend it waits only for those it started)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from dicomql.cli import main

SCOPE = "@projectsId='p', @locationsId='us', @datasetsId='ds'"


def test_exec_of_operations_get_prints_the_operation_and_neither_starts_nor_waits(
    tmp_path: Path,
) -> None:
    data = ["--data-dir", str(tmp_path / "data")]

    def exec_json(sql: str) -> list[dict[str, str]]:
        result = CliRunner().invoke(main, ["exec", sql, "-o", "json", *data])
        assert result.exit_code == 0, result.output
        assert "started" not in result.stderr and "Waiting" not in result.stderr
        return json.loads(result.stdout) if result.stdout.strip() else []

    exec_json(
        "INSERT /*+ AWAIT */ INTO google.healthcare.datasets (projectsId, locationsId, datasetId)"
        " SELECT 'p', 'us', 'ds'"
    )
    (operation,) = exec_json(
        "SELECT name FROM google.healthcare.operations WHERE projectsId = 'p'"
        " AND locationsId = 'us' AND datasetsId = 'ds'"
    )
    name = operation["name"]
    got = exec_json(
        f"EXEC google.healthcare.operations.get {SCOPE}, @operationsId='{name.rsplit('/', 1)[1]}'"
    )
    assert [row["name"] for row in got] == [name]
