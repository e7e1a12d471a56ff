"""Printing results (cells, formats) and the AWAIT progress bar fed by operation polls."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from dicomql.config import ConnectionConfig
from dicomql.dbapi import Connection
from dicomql.output import AwaitProgress, cell_text, write


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        (True, "true"),
        (3, "3"),
        ({"env": "dev", "n": [1, 2]}, '{"env":"dev","n":[1,2]}'),
        ('{"env": "dev"}', '{"env":"dev"}'),
        ("[not json", "[not json"),
        ("plain", "plain"),
    ],
)
def test_cells_print_json_compactly_and_null_as_empty(value: Any, text: str) -> None:
    assert cell_text(value) == text


def test_table_in_a_pipe_is_ascii_and_never_truncates_values() -> None:
    out = io.StringIO()
    long_name = "projects/p/locations/us/datasets/ds/dicomStores/" + "x" * 150
    write("table", ["name", "labels"], [(long_name, '{"a": "b"}')], out)
    assert long_name in out.getvalue()
    assert out.getvalue().isascii()


def test_csv_quotes_cells_that_need_it() -> None:
    out = io.StringIO()
    write("csv", ["a", "b"], [("x,y", 'say "hi"')], out)
    assert out.getvalue() == 'a,b\n"x,y","say ""hi"""\n'


def test_json_keeps_unicode_and_nests_json_text() -> None:
    out = io.StringIO()
    write("json", ["name", "labels"], [("Müller^Jörg", '{"team": "radiología"}')], out)
    assert json.loads(out.getvalue()) == [{"name": "Müller^Jörg", "labels": {"team": "radiología"}}]
    assert "Müller" in out.getvalue()


def operation(success: int, failure: int, pending: int, done: bool = False) -> dict[str, Any]:
    return {
        "name": "projects/p/locations/us/datasets/ds/operations/1",
        "done": done,
        "metadata": {
            "apiMethodName": "google.cloud.healthcare.v1.dicom.DicomService.ImportDicomData",
            "counter": {"success": str(success), "failure": str(failure), "pending": str(pending)},
        },
    }


def test_progress_tracks_the_operation_counter() -> None:
    progress = AwaitProgress(io.StringIO())
    progress(operation(0, 0, 10))
    progress(operation(6, 1, 3))
    (task,) = progress._progress.tasks
    assert (task.completed, task.total, task.fields["failed"]) == (7, 10, 1)
    assert task.description == "ImportDicomData"
    progress(operation(9, 1, 0, done=True))
    assert progress._progress.tasks[0].completed == 10
    progress.finish()
    assert progress._progress.tasks == []


def test_await_reports_each_poll_to_on_progress(tmp_path: Path) -> None:
    polls: list[dict[str, Any]] = []
    config = ConnectionConfig.build(data_dir=tmp_path / "data")
    with Connection(config, on_progress=polls.append) as connection:
        connection.execute(
            "INSERT /*+ AWAIT */ INTO google.healthcare.datasets "
            "(projectsId, locationsId, datasetId) SELECT 'p', 'us', 'ds'"
        )
    assert polls
    assert polls[-1]["done"] is True
    assert polls[-1]["name"].startswith("projects/p/locations/us/datasets/ds/operations/")


def test_expanded_display_prints_one_block_per_row() -> None:
    from dicomql.output import write_expanded

    out = io.StringIO()
    write_expanded(["name", "labels"], [("a", '{"env": "dev"}'), ("b", None)], out)
    assert out.getvalue().splitlines() == [
        "-[ RECORD 1 ]" + "-" * 4,
        "name   | a",
        'labels | {"env":"dev"}',
        "-[ RECORD 2 ]" + "-" * 4,
        "name   | b",
        "labels | ",
    ]


def test_a_table_is_too_wide_when_its_cells_and_borders_exceed_the_width() -> None:
    from dicomql.output import table_too_wide

    assert not table_too_wide(["a", "b"], [("x" * 10, "y" * 10)], 40)
    assert table_too_wide(["a", "b"], [("x" * 30, "y" * 10)], 40)
