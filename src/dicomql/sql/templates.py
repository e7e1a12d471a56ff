"""Filling StackQL ``{{ name }}`` templates and DB-API ``:name`` parameters.

Values are never spliced as SQL: each is rendered as a literal (a string literal with its
quotes doubled) or, inside a string literal, as escaped text. Where a placeholder is the whole
of a JSON string value inside a literal — the StackQL docs' ``"config": "{{ config }}"`` — an
object or array value fills it as JSON, so the documented EXEC bodies work as written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from dicomql.errors import ProgrammingError
from dicomql.sql.lexer import CODE, STRING, segments

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w.-]*)\s*\}\}")
_IN_STRING = re.compile(r'"' + _PLACEHOLDER.pattern + r'"|' + _PLACEHOLDER.pattern)
_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def sql_literal(value: Any) -> str:
    """``value`` as a SQL literal.

    >>> sql_literal("it's")
    "'it''s'"
    >>> sql_literal({"a": 1})
    '\\'{"a": 1}\\''
    """
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict | list):
        value = json.dumps(value)
    return "'" + str(value).replace("'", "''") + "'"


def _text(value: Any) -> str:
    """``value`` as text inside a string literal (quotes not yet doubled)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _as_json(value: Any) -> Any:
    """An object/array for a value meant as JSON: a dict, list, or JSON text of one."""
    if isinstance(value, dict | list):
        return value
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return None
        return parsed if isinstance(parsed, dict | list) else None
    return None


def _lookup(variables: Mapping[str, Any], name: str, kind: str) -> Any:
    if name not in variables:
        raise ProgrammingError(f"{kind} '{name}' has no value")
    return variables[name]


def render(sql: str, variables: Mapping[str, Any] | None) -> str:
    """Fill every ``{{ name }}`` of ``sql`` (comments are left alone).

    >>> render("WHERE a = '{{ a }}' AND b = {{b}}", {"a": "x'y", "b": "z"})
    "WHERE a = 'x''y' AND b = 'z'"

    Raises:
        ProgrammingError: a placeholder has no value; the message names it.
    """
    if "{{" not in sql:
        return sql
    values = variables or {}
    out: list[str] = []
    for segment in segments(sql):
        piece = sql[segment.start : segment.end]
        if segment.kind == CODE:
            piece = _PLACEHOLDER.sub(
                lambda m: sql_literal(_lookup(values, m.group(1), "template variable")), piece
            )
        elif segment.kind == STRING:
            piece = "'" + _render_in_string(piece[1:-1].replace("''", "'"), values) + "'"
        out.append(piece)
    return "".join(out)


def _render_in_string(body: str, values: Mapping[str, Any]) -> str:
    """Fill placeholders inside one string literal's (unescaped) body; returns it escaped."""

    def fill(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            # "{{ x }}" as a whole JSON string value: an object/array fills it as JSON.
            value = _lookup(values, match.group(1), "template variable")
            as_json = _as_json(value)
            return json.dumps(as_json if as_json is not None else _text(value))
        return _text(_lookup(values, match.group(2), "template variable"))

    body = _IN_STRING.sub(fill, body)
    return body.replace("'", "''")


def bind(sql: str, parameters: Mapping[str, Any] | None) -> str:
    """Fill DB-API ``:name`` placeholders (outside strings and comments) with literals.

    >>> bind("WHERE a = :a", {"a": "x"})
    "WHERE a = 'x'"

    Raises:
        ProgrammingError: a placeholder has no value; the message names it.
    """
    if parameters is None:
        return sql
    out: list[str] = []
    for segment in segments(sql):
        piece = sql[segment.start : segment.end]
        if segment.kind == CODE:
            piece = _PARAMETER.sub(
                lambda m: sql_literal(_lookup(parameters, m.group(1), "parameter")), piece
            )
        out.append(piece)
    return "".join(out)
