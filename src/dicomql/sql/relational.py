"""The relational workspace: fetched API rows in an in-memory SQLite database, where
projections, WHERE, json_extract, GROUP BY, ORDER BY, LIMIT, JOINs and subqueries run."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dicomql.errors import ProgrammingError
from dicomql.provider.registry import suggest


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_value(value: Any) -> Any:
    """A JSON value as stored in SQLite: objects and arrays as JSON text."""
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


class Workspace:
    """One statement's in-memory SQLite database; closed when the statement ends."""

    def __init__(self) -> None:
        self._db = sqlite3.connect(":memory:")
        self._columns: dict[str, list[str]] = {}
        self._labels: dict[str, str] = {}
        self._next_id = 0
        self._booleans: set[str] = set()
        # Payloads fetched in this statement, by (method id, parameters).
        self.payloads: dict[tuple[str, tuple[tuple[str, str], ...]], list[Any]] = {}
        # Results cut short while fetching (page cap, QIDO Warning: 299), said to the user.
        self.warnings: list[str] = []

    def next_id(self) -> int:
        """A number for a new temp table's name, unique in this workspace."""
        self._next_id += 1
        return self._next_id

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def load(
        self,
        table: str,
        columns: Sequence[str],
        rows: Iterable[Mapping[str, Any]],
        *,
        label: str = "",
    ) -> None:
        """Create ``table`` with ``columns`` (deduplicated case-insensitively) and fill it."""
        unique: dict[str, str] = {}
        for column in columns:
            unique.setdefault(column.lower(), column)
        names = list(unique.values())
        self._columns[table] = names
        self._labels[table] = label or table
        if not names:
            names = ["_"]
        self._db.execute(f"CREATE TABLE {_quote(table)} ({', '.join(map(_quote, names))})")
        placeholders = ", ".join("?" for _ in names)
        rows = list(rows)
        # SQLite has no boolean type; remember JSON booleans so results can give them back.
        self._booleans.update(
            name for row in rows for name, value in row.items() if isinstance(value, bool)
        )
        self._db.executemany(
            f"INSERT INTO {_quote(table)} VALUES ({placeholders})",
            ([sql_value(row.get(name)) for name in names] for row in rows),
        )

    def check_column(self, table: str, column: str, shown: str) -> None:
        """Raise naming ``shown`` unless ``table`` has ``column`` (SQLite would read a missing
        double-quoted name as a string literal and call the API with the column's name).

        Raises:
            ProgrammingError: no such column; the message suggests the closest.
        """
        known = self._columns.get(table, [])
        if column.lower() not in (c.lower() for c in known):
            where = self._labels.get(table, table)
            raise ProgrammingError(f"unknown column '{shown}' in {where}{suggest(column, known)}")

    def query(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run ``sql``; SQLite's complaints become ProgrammingError naming the column."""
        try:
            cursor = self._db.execute(sql)
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        columns = [d[0] for d in cursor.description or []]
        rows = [tuple(row) for row in cursor.fetchall()]
        flags = [
            index
            for index, name in enumerate(columns)
            if name in self._booleans and all(row[index] in (0, 1, None) for row in rows)
        ]
        if flags:
            rows = [
                tuple(bool(v) if i in flags and v is not None else v for i, v in enumerate(row))
                for row in rows
            ]
        return columns, rows

    def _translate(self, exc: sqlite3.Error) -> ProgrammingError:
        text = str(exc)
        match = re.match(r"no such column: (.+)", text)
        if match:
            name = match.group(1)
            short = name.rsplit(".", 1)[-1]
            known = [c for cols in self._columns.values() for c in cols]
            where = ", ".join(sorted(set(self._labels.values()))) or "the statement"
            return ProgrammingError(f"unknown column '{name}' in {where}{suggest(short, known)}")
        return ProgrammingError(f"cannot evaluate the statement: {text}")
