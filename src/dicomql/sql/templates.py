"""Filling StackQL ``{{ name }}`` templates and DB-API ``:name`` parameters.

Values are never spliced as text of another language; each is escaped for the context it fills:

- outside quotes (SQL code): one SQL literal (a string literal with its quotes doubled);
- inside a SQL string literal: text, with its quotes doubled;
- inside a JSON string of a literal that holds JSON (``@@json='{"a": "x{{ v }}"}'``): JSON string
  escaping, so a ``"`` cannot close the string and add request fields; where the placeholder is
  the whole JSON string — the StackQL docs' ``"config": "{{ config }}"`` — an object or array
  value fills it as JSON, so the documented EXEC bodies work as written;
- as a bare JSON value (``{"pageSize": {{ n }}}``): exactly one JSON value, else an error.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from dicomql.errors import ProgrammingError
from dicomql.sql.lexer import CODE, STRING, segments

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w.-]*)\s*\}\}")
_WHOLE_STRING = re.compile(r'"' + _PLACEHOLDER.pattern + r'"')
_IN_STRING = re.compile(_WHOLE_STRING.pattern + "|" + _PLACEHOLDER.pattern)
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
    if isinstance(value, float) and not math.isfinite(value):
        # repr would be nan/inf: a column name, not a literal.
        raise ProgrammingError(f"{value!r} is not a SQL literal; pass it as a string")
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
    if _holds_json(body):
        return _render_json(body, values).replace("'", "''")

    def fill(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return _whole_json_string(_lookup(values, match.group(1), "template variable"))
        return _text(_lookup(values, match.group(2), "template variable"))

    body = _IN_STRING.sub(fill, body)
    return body.replace("'", "''")


def _holds_json(body: str) -> bool:
    """Whether a literal's body is a JSON object or array (with placeholders in it)."""
    return _PLACEHOLDER.sub("0", body).lstrip()[:1] in ("{", "[")


def _whole_json_string(value: Any) -> str:
    """``"{{ x }}"`` as a whole JSON string value: an object/array fills it as JSON."""
    as_json = _as_json(value)
    return json.dumps(as_json if as_json is not None else _text(value))


def _render_json(body: str, values: Mapping[str, Any]) -> str:
    """Fill the placeholders of JSON text, each escaped for where it stands.

    >>> print(_render_json('{"a": "x-{{ v }}", "n": {{ n }}}', {"v": 'q"', "n": "5"}))
    {"a": "x-q\\"", "n": 5}
    """
    out: list[str] = []
    in_string = False
    index = 0
    while index < len(body):
        whole = None if in_string else _WHOLE_STRING.match(body, index)
        placeholder = whole or _PLACEHOLDER.match(body, index)
        if placeholder is not None:
            name = placeholder.group(1)
            value = _lookup(values, name, "template variable")
            if whole is not None:
                out.append(_whole_json_string(value))
            elif in_string:
                out.append(json.dumps(_text(value))[1:-1])  # JSON string escaping, no quotes
            else:
                out.append(_json_value(name, value))
            index = placeholder.end()
            continue
        character = body[index]
        if in_string and character == "\\":
            out.append(body[index : index + 2])  # an escape: the next character is not a quote
            index += 2
            continue
        if character == '"':
            in_string = not in_string
        out.append(character)
        index += 1
    return "".join(out)


def _json_value(name: str, value: Any) -> str:
    """``value`` as exactly one JSON value, for a placeholder standing bare in JSON text.

    Raises:
        ProgrammingError: the value is not one JSON value (text that is not JSON, or more).
    """
    if isinstance(value, str):
        try:
            value = json.loads(value, parse_constant=_no_constant)
        except (json.JSONDecodeError, ValueError):
            raise ProgrammingError(
                f"template variable '{name}' stands as a bare JSON value, but {value!r:.80} is "
                f'not one JSON value; quote the placeholder ("{{{{ {name} }}}}") for a string'
            ) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ProgrammingError(f"template variable '{name}': {value!r} is not a JSON value")
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ProgrammingError(
            f"template variable '{name}': {type(value).__name__} is not a JSON value"
        ) from exc


def _no_constant(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


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
