"""What a statement returns: column names, rows, a row count, its kind and a message."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Result:
    """The outcome of one statement.

    ``kind`` is select, insert, update, delete, exec, show or describe; ``rowcount`` counts the
    rows returned (SELECT, SHOW, DESCRIBE) or the API objects written (INSERT, UPDATE, DELETE).
    """

    columns: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    rowcount: int = -1
    kind: str = "select"
    message: str | None = None
    # The statement ran and has rows, but part of it failed (files of a folder upload): the CLI
    # prints the rows, then this, and fails.
    error: str | None = None
    # Said on stderr: results cut short (a page cap, QIDO's ``Warning: 299``).
    warnings: list[str] = field(default_factory=list)
    # Long-running operations the statement started and did not wait for (no /*+ AWAIT */).
    operations: list[str] = field(default_factory=list)

    def records(self) -> list[dict[str, Any]]:
        """The rows as dicts keyed by column name."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]
