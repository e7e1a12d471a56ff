"""Templating for stacks: globals, per-environment props and ``.iql`` queries, with Jinja2.

stackql-deploy renders with Jinja (its Rust rewrite with Jinja-compatible Tera), so manifests use
Jinja features: ``{{ x | tojson }}``, ``{% for %}`` and stackql-deploy's own filters
(``from_json``, ``merge_lists``, ``merge_objects``, ``base64_encode``,
``generate_patch_document``). dicomql renders in Jinja's sandbox with undefined names an error.

Context, later entries winning: ``-e KEY=VALUE`` variables (also as ``vars.KEY``), ``stack_name``
and ``stack_env``, globals, earlier resources' exports (also as ``<resource>.<export>``), this
resource's props, and ``this.<column>`` captured by its ``exists`` query.

Queries are escaped by where each value lands, with :func:`dicomql.sql.templates.render` (the
escaper of the SQL engine's own ``{{ name }}`` templates): Jinja writes each ``{{ expression }}``
of a query as a numbered placeholder and keeps its value; the placeholders are then filled as a
SQL literal (outside quotes), text with doubled quotes (in a string literal) or JSON-escaped text
(in a JSON string of a literal that holds JSON), so no value can close the string it stands in.
"""

from __future__ import annotations

import base64
import json
import re
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from jinja2 import (
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
    Undefined,
    meta,
    pass_context,
)
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

from dicomql.deploy.manifest import Manifest, Resource, Variable
from dicomql.deploy.queries import Query
from dicomql.errors import ManifestError, ProgrammingError
from dicomql.sql import templates
from dicomql.sql.lexer import COMMENT, HINT, IDENTIFIER, segments

MASK = "****"
# The render-context key under which a query's expression values are collected, and the name of
# the placeholder each becomes (``{{ __dq0 }}``, ``{{ __dq1 }}`` …) for templates.render.
_SLOTS = "__dicomql_slots__"
_SLOT_PREFIX = "__dq"
_SLOT = re.compile(r"\{\{ (" + _SLOT_PREFIX + r"\d+) \}\}")


def from_json(value: Any) -> Any:
    """``'{"a": 1}' | from_json`` → a dict (stackql-deploy filter)."""
    return json.loads(value) if isinstance(value, str) else value


def base64_encode(value: Any) -> str:
    return base64.b64encode(str(value).encode()).decode()


def merge_lists(first: Any, second: Any) -> list[Any]:
    """Union of two lists (or JSON lists), without duplicates, in first-seen order."""
    merged: list[Any] = []
    seen: set[str] = set()
    for item in [*_as(list, first), *_as(list, second)]:
        key = json.dumps(item, sort_keys=True)
        if key not in seen:
            seen.add(key)
            merged.append(item)
    return merged


def merge_objects(first: Any, second: Any) -> dict[str, Any]:
    """Shallow merge of two objects (or JSON objects); the second wins."""
    return {**_as(dict, first), **_as(dict, second)}


def generate_patch_document(properties: Mapping[str, Any]) -> str:
    """An RFC 6902 ``add`` patch for each property (stackql-deploy's Cloud Control filter)."""
    patch = [
        {"op": "add", "path": f"/{key}", "value": _maybe_json(value)}
        for key, value in properties.items()
    ]
    return json.dumps(patch)


class SQLFragment(str):
    """SQL written by a filter (``json_matches``): printed as is, its quotes not doubled."""


_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def json_matches(value: Any, column: str) -> SQLFragment:
    """A SQL condition that JSON ``column`` equals ``value`` (an object, array or JSON text).

    Objects match whatever the order of their keys (a store's labels come back in the
    service's order, not the manifest's); arrays match in order. For a statecheck:
    ``AND {{ labels | json_matches('labels') }}``.

    >>> print(json_matches('{"env": "dev"}', "labels"))
    (SELECT COUNT(*) FROM json_each(labels, '$')) = 1 AND json_extract(labels, '$."env"') = 'dev'
    """
    if not _COLUMN.match(column):
        raise ValueError(f"json_matches: '{column}' is not a column name")
    terms: list[str] = []
    _match_terms(column, "$", _maybe_json(value), terms)
    return SQLFragment(" AND ".join(terms))


def _match_terms(column: str, path: str, desired: Any, terms: list[str]) -> None:
    where = "'" + path.replace("'", "''") + "'"
    if isinstance(desired, dict):
        terms.append(f"(SELECT COUNT(*) FROM json_each({column}, {where})) = {len(desired)}")
        for key, item in desired.items():
            _match_terms(column, f'{path}."{key}"', item, terms)
    elif isinstance(desired, list):
        terms.append(f"coalesce(json_array_length({column}, {where}), 0) = {len(desired)}")
        for index, item in enumerate(desired):
            _match_terms(column, f"{path}[{index}]", item, terms)
    elif desired is None:
        terms.append(f"json_type({column}, {where}) = 'null'")
    elif isinstance(desired, bool):
        # SQLite's json_extract gives 1 and 0 for JSON true and false.
        terms.append(f"json_extract({column}, {where}) = {int(desired)}")
    elif isinstance(desired, int | float):
        terms.append(f"json_extract({column}, {where}) = {desired!r}")
    else:
        literal = "'" + str(desired).replace("'", "''") + "'"
        terms.append(f"json_extract({column}, {where}) = {literal}")


def _as(kind: type, value: Any) -> Any:
    value = _maybe_json(value)
    if not isinstance(value, kind):
        raise TypeError(f"expected a {kind.__name__} or JSON {kind.__name__}, got {value!r}")
    return value


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


@pass_context
def _slot(context: Context, value: Any) -> str:
    """Jinja's finalize for queries: an expression's value becomes a numbered placeholder,
    filled by :func:`_fill` for where it stands; SQL written by a filter is kept as is."""
    if isinstance(value, SQLFragment):
        return str(value)
    if isinstance(value, Undefined):
        value = str(value)  # StrictUndefined raises here, inside the template's frame
    slots: dict[str, Any] = context[_SLOTS]
    name = f"{_SLOT_PREFIX}{len(slots)}"
    slots[name] = value
    return "{{ " + name + " }}"


def _fill(sql: str, slots: Mapping[str, Any]) -> str:
    """Fill the placeholders of a rendered query, each escaped for where it stands.

    Code, strings and JSON inside strings go to templates.render; a placeholder left in a
    quoted identifier or a comment is written as text that cannot end it.
    """
    sql = templates.render(sql, slots)
    if _SLOT.search(sql) is None:
        return sql
    out: list[str] = []
    for segment in segments(sql):
        piece = sql[segment.start : segment.end]
        if segment.kind == IDENTIFIER:
            piece = _SLOT.sub(lambda m: _text(slots[m.group(1)]).replace('"', '""'), piece)
        elif segment.kind in (COMMENT, HINT):
            piece = _SLOT.sub(lambda m: _comment_text(slots[m.group(1)]), piece)
        out.append(piece)
    return "".join(out)


def _text(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "" if value is None else str(value)


def _comment_text(value: Any) -> str:
    """A value inside a comment: on one line, and never the end of a block comment."""
    return " ".join(_text(value).splitlines()).replace("*/", "* /")


def _slot_message(message: str, slots: Mapping[str, Any]) -> str:
    """An escaping error's message, naming the value rather than its placeholder."""
    message = _SLOT.sub("{{ … }}", message)
    return re.sub(
        r"template variable '(" + _SLOT_PREFIX + r"\d+)'",
        lambda m: f"the value {_text(slots.get(m.group(1)))!r:.60}",
        message,
    )


def _environment(*, sql: bool) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=_slot if sql else None,
    )
    env.filters.update(
        from_json=from_json,
        base64_encode=base64_encode,
        merge_lists=merge_lists,
        merge_objects=merge_objects,
        generate_patch_document=generate_patch_document,
        json_matches=json_matches,
    )
    return env


class Renderer:
    """Renders a manifest's values and queries for one environment.

    Args:
        manifest: the validated stack.
        stack_env: the environment (``dev``, ``prd`` …) chosen on the command line.
        variables: ``-e KEY=VALUE`` values.
    """

    def __init__(self, manifest: Manifest, stack_env: str, variables: Mapping[str, str]) -> None:
        self.manifest = manifest
        self.stack_env = stack_env
        self.variables = dict(variables)
        self._sql = _environment(sql=True)
        self._text = _environment(sql=False)
        self.secrets: set[str] = set()

    # -- contexts -----------------------------------------------------------------------------

    def global_context(self) -> dict[str, Any]:
        """Variables, ``stack_name``/``stack_env`` and the rendered globals, in manifest order."""
        context: dict[str, Any] = {
            **self.variables,
            "vars": types.MappingProxyType(dict(self.variables)),
            "stack_name": self.manifest.name,
            "stack_env": self.stack_env,
        }
        for variable in self.manifest.globals:
            value = self.value(variable, context)
            if value in ("", None):
                raise self._error(variable, "is empty after rendering")
            context[variable.name] = value
            if variable.protected:
                self._remember_secret(value)
        return context

    def resource_context(self, resource: Resource, base: Mapping[str, Any]) -> dict[str, Any]:
        """``base`` (globals and exports so far) plus the resource's rendered props."""
        context = dict(base)
        for prop in resource.props:
            context[prop.name] = self.value(prop, context)
            if prop.protected:
                self._remember_secret(context[prop.name])
        return context

    def value(self, variable: Variable, context: Mapping[str, Any]) -> Any:
        """A global's or prop's value in this environment, every string in it rendered.

        Objects and lists become JSON text, as stackql-deploy passes them to queries
        (``'{{ labels }}'`` gives ``'{"env": "dev"}'``).
        """
        raw = variable.value_for(self.stack_env)
        try:
            rendered = self._render_value(raw, context)
        except TemplateError as exc:
            raise self._error(variable, f"cannot be rendered: {_describe(exc)}") from exc
        if isinstance(rendered, dict | list):
            return json.dumps(rendered)
        return rendered

    def _render_value(self, raw: Any, context: Mapping[str, Any]) -> Any:
        if isinstance(raw, str):
            if "{" not in raw:
                return raw
            return self._text.from_string(raw).render(context)
        if isinstance(raw, dict):
            return {key: self._render_value(item, context) for key, item in raw.items()}
        if isinstance(raw, list):
            return [self._render_value(item, context) for item in raw]
        return raw

    # -- queries and conditions ---------------------------------------------------------------

    def query(self, query: Query, path: Path, context: Mapping[str, Any]) -> str:
        """The rendered SQL of one anchored query.

        Raises:
            ManifestError: naming the query file and line of a syntax error or undefined name.
        """
        slots: dict[str, Any] = {}
        try:
            rendered = self._sql.from_string(query.template).render({**context, _SLOTS: slots})
            return _fill(rendered, slots).strip()
        except ProgrammingError as exc:
            raise ManifestError(
                f"query '{query.anchor}' cannot be rendered: {_slot_message(str(exc), slots)}",
                path=str(path),
                line=query.line,
            ) from exc
        except TemplateError as exc:
            line = query.line + _template_line(exc)
            raise ManifestError(
                f"query '{query.anchor}' cannot be rendered: {_describe(exc)}",
                path=str(path),
                line=line,
            ) from exc

    def text(self, template: str, context: Mapping[str, Any], *, resource: Resource) -> str:
        """Render a manifest string (a script's ``run``) without SQL quoting."""
        try:
            return self._text.from_string(template).render(context)
        except TemplateError as exc:
            raise ManifestError(
                f"cannot be rendered: {_describe(exc)}",
                path=str(resource.location.path),
                line=resource.location.line,
                where=resource.name,
            ) from exc

    def condition(self, resource: Resource, context: Mapping[str, Any]) -> bool:
        """Evaluate a resource's ``if`` as a Jinja expression (stackql-deploy used ``eval``)."""
        assert resource.condition is not None
        try:
            source = self._text.from_string(resource.condition).render(context)
            return bool(self._text.compile_expression(source)(**context))
        except TemplateError as exc:
            raise ManifestError(
                f"'if' condition {resource.condition!r} cannot be evaluated: {_describe(exc)}",
                path=str(resource.location.path),
                line=resource.location.line,
                where=resource.name,
            ) from exc

    def names_in(self, template: str) -> set[str]:
        """The context names a template uses (for the dependencies between resources)."""
        try:
            return set(meta.find_undeclared_variables(self._text.parse(template)))
        except TemplateSyntaxError:
            return set()

    # -- masking ------------------------------------------------------------------------------

    def remember_secrets(self, values: Iterable[Any]) -> None:
        for value in values:
            self._remember_secret(value)

    def _remember_secret(self, value: Any) -> None:
        text = "" if value is None else str(value)
        if text:
            self.secrets.add(text)

    def mask(self, text: str) -> str:
        """``text`` with every protected value replaced by ``****``."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            # As written, in a SQL string (quotes doubled) and in a JSON string in one.
            in_json = json.dumps(secret)[1:-1]
            for form in (secret, in_json, in_json.replace("'", "''"), secret.replace("'", "''")):
                text = text.replace(form, MASK)
        return text

    def _error(self, variable: Variable, message: str) -> ManifestError:
        return ManifestError(
            f"'{variable.name}' {message}",
            path=str(variable.location.path),
            line=variable.location.line,
            column=variable.location.column,
        )


def _describe(exc: TemplateError) -> str:
    if isinstance(exc, TemplateSyntaxError):
        return f"template syntax error: {exc.message}"
    return str(exc.message if exc.message else exc)


def _template_line(exc: TemplateError) -> int:
    """The 1-based line inside a template where rendering failed (0 if unknown)."""
    if isinstance(exc, TemplateSyntaxError):
        return exc.lineno
    line = 0
    traceback = exc.__traceback__
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == "<template>":
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line
