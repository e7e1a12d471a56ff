"""Resource query files (``resources/<name>.iql``): anchored query templates and their options.

A line starting ``/*+ anchor[, option=N …] */`` opens a query that runs until the next anchor,
as in stackql-deploy. StackQL's own hints (``/*+ AWAIT */``, ``/*+ SHOWRESULTS */``) are not
anchors and stay in the query.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicomql.deploy.manifest import Resource
from dicomql.errors import ManifestError

ANCHORS = (
    "exists",
    "statecheck",
    "create",
    "update",
    "createorupdate",
    "exports",
    "delete",
    "command",
    # stackql-deploy 2.0.6: a read printed when a resource drifts or a check fails.
    "troubleshoot",
)
# Options stackql-deploy reads from an anchor line; all are whole numbers.
OPTIONS = ("retries", "retry_delay", "postdelete_retries", "postdelete_retry_delay")
_HINTS = ("AWAIT", "SHOWRESULTS")
# Comments may come before the first anchor: SQL, block and Jinja comments.
_PREAMBLE = ("--", "/*", "{#", "#}", "*")
_ANCHOR_LINE = re.compile(r"^/\*\+\s*(?P<body>.*?)\s*\*/\s*$")


@dataclass(frozen=True)
class Query:
    """One anchored query template."""

    anchor: str
    template: str
    line: int
    options: dict[str, int] = field(default_factory=dict)

    def option(self, name: str, default: int) -> int:
        return self.options.get(name, default)


@dataclass(frozen=True)
class QueryFile:
    """The anchored queries of one resource."""

    path: Path
    queries: dict[str, Query]

    def get(self, anchor: str) -> Query | None:
        return self.queries.get(anchor)

    def __contains__(self, anchor: str) -> bool:
        return anchor in self.queries


def load_query_file(path: Path) -> QueryFile:
    """Read and split a ``.iql`` file.

    Raises:
        ManifestError: the file is missing, repeats an anchor, names an unknown anchor or option.
    """
    if not path.is_file():
        raise ManifestError("query file not found", path=str(path))
    return parse_queries(path.read_text(encoding="utf-8"), path)


def parse_queries(text: str, path: Path, *, first_line: int = 1) -> QueryFile:
    """Split ``text`` at its anchor lines (``first_line`` numbers inline ``sql`` in a manifest)."""
    queries: dict[str, Query] = {}
    anchor: str | None = None
    anchor_line = 0
    options: dict[str, int] = {}
    buffer: list[str] = []

    def close() -> None:
        if anchor is None:
            return
        # Leading blank lines stay so that template line n is file line anchor_line + n.
        body = "".join(buffer).rstrip()
        if not body.strip():
            raise ManifestError(f"anchor '{anchor}' has no query", path=str(path), line=anchor_line)
        queries[anchor] = Query(anchor, body, anchor_line, options)

    for offset, line in enumerate(text.splitlines(keepends=True)):
        number = first_line + offset
        match = _ANCHOR_LINE.match(line.strip())
        if match is None or match.group("body").upper() in _HINTS:
            if anchor is None and line.strip() and not line.lstrip().startswith(_PREAMBLE):
                raise ManifestError(
                    "text before the first anchor (start with a line like /*+ exists */)",
                    path=str(path),
                    line=number,
                )
            buffer.append(line)
            continue
        close()
        name, options = _parse_anchor(match.group("body"), path, number)
        if name in queries:
            raise ManifestError(
                f"anchor '{name}' appears twice (first at line {queries[name].line})",
                path=str(path),
                line=number,
            )
        anchor, anchor_line, buffer = name, number, []
    close()
    return QueryFile(path, queries)


def _parse_anchor(body: str, path: Path, line: int) -> tuple[str, dict[str, int]]:
    name, *parts = (part.strip() for part in body.split(","))
    if name not in ANCHORS:
        raise ManifestError(
            f"unknown anchor '{name}' (expected one of: {', '.join(ANCHORS)})",
            path=str(path),
            line=line,
        )
    options: dict[str, int] = {}
    for part in parts:
        key, sep, value = (piece.strip() for piece in part.partition("="))
        if not sep or key not in OPTIONS:
            raise ManifestError(
                f"unknown option '{part}' on anchor '{name}' "
                f"(expected {', '.join(f'{option}=N' for option in OPTIONS)})",
                path=str(path),
                line=line,
            )
        if not value.isdigit():
            raise ManifestError(
                f"option '{key}' needs a whole number, found '{value}'", path=str(path), line=line
            )
        options[key] = int(value)
    return name, options


def split_statements(sql: str) -> list[str]:
    """Split rendered SQL at top-level semicolons (not inside quotes or comments).

    >>> split_statements("SELECT 1; SELECT ';' AS x;")
    ['SELECT 1', "SELECT ';' AS x"]
    """
    statements: list[str] = []
    start = 0
    index = 0
    length = len(sql)
    while index < length:
        char = sql[index]
        if char in "'\"":
            # SQL doubles a quote to escape it, so scanning to the next one is enough.
            end = sql.find(char, index + 1)
            index = length if end < 0 else end + 1
            continue
        if sql.startswith("--", index):
            end = sql.find("\n", index)
            index = length if end < 0 else end + 1
            continue
        if sql.startswith("/*", index):
            end = sql.find("*/", index + 2)
            index = length if end < 0 else end + 2
            continue
        if char == ";":
            statements.append(sql[start:index])
            start = index + 1
        index += 1
    statements.append(sql[start:])
    return [statement.strip() for statement in statements if _has_code(statement)]


def _has_code(statement: str) -> bool:
    """Whether a statement has anything besides whitespace and ``--`` comments."""
    return any(
        line.strip() and not line.strip().startswith("--") for line in statement.splitlines()
    )


def check_anchors(resource: Resource, queries: QueryFile) -> None:
    def need(message: str) -> ManifestError:
        return ManifestError(
            message,
            path=str(queries.path if resource.sql is None else resource.location.path),
            line=0 if resource.sql is None else resource.location.line,
            where=resource.name,
        )

    if resource.type == "resource":
        if "create" not in queries and "createorupdate" not in queries:
            raise need("a resource needs a 'create' or 'createorupdate' query")
        if not {"exists", "statecheck", "createorupdate"} & set(queries.queries):
            raise need("a resource needs an 'exists' or 'statecheck' query")
    elif resource.type == "query" and "exports" not in queries:
        raise need("a query resource needs an 'exports' query (or 'sql')")
    elif resource.type == "command" and "command" not in queries:
        raise need("a command resource needs a 'command' query (or 'sql')")
    if resource.exports and resource.type != "script" and "exports" not in queries:
        raise need("the resource declares exports but has no 'exports' query")


def rows_of(result: Any) -> list[dict[str, Any]]:
    """An engine result as a list of column → value dicts."""
    rows = getattr(result, "rows", None) or []
    columns = [
        column if isinstance(column, str) else getattr(column, "name", None) or column[0]
        for column in getattr(result, "columns", None) or []
    ]
    return [
        dict(row) if isinstance(row, Mapping) else dict(zip(columns, row, strict=False))
        for row in rows
    ]


def count_of(row: Mapping[str, Any]) -> int | None:
    for key, value in row.items():
        if key.lower() == "count":
            try:
                return int(value)
            except (TypeError, ValueError):
                return 0
    return None


def check_passes(rows: Sequence[Mapping[str, Any]]) -> bool:
    """A statecheck passes when it counts at least one match, or returns a row."""
    if not rows:
        return False
    count = count_of(rows[0])
    return count > 0 if count is not None else True
