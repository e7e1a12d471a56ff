"""Printing results: rich tables for people, JSON / JSON Lines / CSV / text for programs, and the
progress bar of a statement waiting on a long-running operation (``/*+ AWAIT */``)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from typing import IO, Any

FORMATS = ("table", "json", "csv", "jsonl", "text")


def cell_text(value: Any) -> str:
    """A cell as text: JSON values compact, NULL as empty, booleans as JSON spells them."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    # JSON-valued columns travel as JSON text; print them compactly.
    parsed = _json_value(value)
    if isinstance(parsed, dict | list):
        return json.dumps(parsed, separators=(",", ":"), ensure_ascii=False)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _json_value(value: Any) -> Any:
    """A cell for JSON output: JSON text becomes the object it spells."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return value
        if isinstance(parsed, dict | list):
            return parsed
    if isinstance(value, bytes):
        return value.hex()
    return value


def _records(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    return [
        {column: _json_value(value) for column, value in zip(columns, row, strict=False)}
        for row in rows
    ]


def write_json(columns: Sequence[str], rows: Sequence[Sequence[Any]], out: IO[str]) -> None:
    json.dump(_records(columns, rows), out, indent=2, ensure_ascii=False)
    out.write("\n")


def write_jsonl(columns: Sequence[str], rows: Sequence[Sequence[Any]], out: IO[str]) -> None:
    for record in _records(columns, rows):
        out.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
        out.write("\n")


def write_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]], out: IO[str]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([cell_text(value) for value in row] for row in rows)


def write_text(columns: Sequence[str], rows: Sequence[Sequence[Any]], out: IO[str]) -> None:
    """Tab-separated, header first: easy to read and to ``cut``."""
    out.write("\t".join(columns) + "\n")
    for row in rows:
        out.write("\t".join(cell_text(value) for value in row) + "\n")


def write_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], out: IO[str]) -> None:
    """A rich table; plain box characters and full width when ``out`` is not a terminal."""
    from rich.console import Console
    from rich.table import Table

    terminal = out.isatty()
    console = Console(
        file=out,
        width=None if terminal else 10_000,
        force_terminal=terminal,
        no_color=not terminal,
        highlight=False,
        soft_wrap=not terminal,
    )
    table = Table(show_lines=False, highlight=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(cell_text(value) for value in row))
    if not terminal:
        table.box = _ascii_box()
    console.print(table)


def write_expanded(columns: Sequence[str], rows: Sequence[Sequence[Any]], out: IO[str]) -> None:
    """psql's expanded display (``\\x``): one block per row, a line per column."""
    width = max((len(c) for c in columns), default=0)
    for number, row in enumerate(rows, start=1):
        out.write(f"-[ RECORD {number} ]" + "-" * max(width - 8, 4) + "\n")
        for column, value in zip(columns, row, strict=False):
            lines = cell_text(value).split("\n") or [""]
            out.write(f"{column.ljust(width)} | {lines[0]}\n")
            for line in lines[1:]:
                out.write(f"{' ' * width} | {line}\n")
    if not rows:
        out.write("(0 rows)\n")


def table_too_wide(columns: Sequence[str], rows: Sequence[Sequence[Any]], width: int) -> bool:
    """Whether a table of these rows is wider than ``width`` characters (psql's \\x auto)."""
    widths = [len(c) for c in columns]
    for row in rows[:200]:  # enough rows to judge; a long result is not scanned twice
        for index, value in enumerate(row[: len(widths)]):
            text = cell_text(value)
            widths[index] = max(
                widths[index], max((len(line) for line in text.split("\n")), default=0)
            )
    return sum(widths) + 3 * len(widths) + 1 > width


def _ascii_box() -> Any:
    from rich import box

    return box.ASCII


WRITERS: dict[str, Callable[[Sequence[str], Sequence[Sequence[Any]], IO[str]], None]] = {
    "table": write_table,
    "json": write_json,
    "csv": write_csv,
    "jsonl": write_jsonl,
    "text": write_text,
}


def write(fmt: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], out: IO[str]) -> None:
    """Print one result's rows in ``fmt`` (one of :data:`FORMATS`)."""
    WRITERS[fmt](columns, rows, out)


class AwaitProgress:
    """A rich progress bar fed by ``on_progress(operation)`` while ``/*+ AWAIT */`` polls.

    OperationMetadata.counter carries success/failure/pending as int64 JSON strings (Cloud
    Healthcare API reference, ProgressCounter); the bar's total is their sum.
    """

    def __init__(self, out: IO[str]) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            console=Console(file=out),
            transient=True,
        )
        self._tasks: dict[str, Any] = {}
        self._started = False

    def finish(self) -> None:
        """Take the bar down (after each statement); the next poll starts a new one."""
        if self._started:
            self._progress.stop()
            for task in self._tasks.values():
                self._progress.remove_task(task)
            self._tasks.clear()
            self._started = False

    def __call__(self, operation: dict[str, Any]) -> None:
        metadata = operation.get("metadata") or {}
        counter = metadata.get("counter") or {}
        success, failure, pending = (
            int(counter.get(key) or 0) for key in ("success", "failure", "pending")
        )
        if not self._started:
            self._progress.start()
            self._started = True
        name = str(operation.get("name", ""))
        label = metadata.get("apiMethodName", "").rsplit(".", 1)[-1] or "operation"
        if name not in self._tasks:
            self._tasks[name] = self._progress.add_task(label, total=None, failed=0)
        total = success + failure + pending
        self._progress.update(
            self._tasks[name],
            total=total or None,
            completed=success + failure,
            failed=failure,
        )
