"""The list ``filter`` language (AIP-160 subset): label restrictions for dicomStores.list, and
the same grammar over a few plain fields for locations.list and operations.list.

Grammar, as AIP-160 gives it (note that OR binds tighter than AND, and juxtaposition is AND)::

    filter      : [expression]
    expression  : sequence {"AND" sequence}
    sequence    : factor {factor}
    factor      : term {"OR" term}
    term        : ["NOT" | "-"] simple
    simple      : restriction | "(" expression ")"
    restriction : member (("=" | ":") value | ":" "*")  |  member ":" key
    member      : field ["." key]          e.g. labels.env, labels."my key", done

``labels.k=v`` holds when the label ``k`` is exactly ``v``; ``labels.k:*`` and ``labels:k`` when
the label exists. The Healthcare API documents no inequality operator (``!=``) and supports
filtering on labels only, so anything else is refused with 400 naming the problem.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from dicomql.service.errors import InvalidArgument

Predicate = Callable[[Mapping[str, Any]], bool]

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<operator><=|>=|!=|[=:<>().*-])
    | (?P<word>[^\s"'=:<>!().]+)
    """,
    re.VERBOSE,
)
_KEYWORDS = {"AND", "OR", "NOT"}


@dataclass(frozen=True)
class _Token:
    kind: str  # "string", "operator", "word", "keyword", "end"
    text: str
    position: int

    def describe(self) -> str:
        return "the end of the filter" if self.kind == "end" else f"'{self.text}'"


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise _error(text, position, f"unexpected character '{text[position]}'")
        kind = match.lastgroup or "space"
        value = match.group()
        if kind == "string":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        elif kind == "word" and value in _KEYWORDS:
            kind = "keyword"
        if kind != "space":
            tokens.append(_Token(kind, value, position))
        position = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _error(text: str, position: int, problem: str) -> InvalidArgument:
    return InvalidArgument(f'Invalid filter "{text}" at position {position + 1}: {problem}.')


class _Parser:
    def __init__(self, text: str, fields: Collection[str], map_fields: Collection[str]) -> None:
        self.text = text
        self.fields = fields
        self.map_fields = map_fields
        self.tokens = _tokenize(text)
        self.index = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def fail(self, problem: str, token: _Token | None = None) -> InvalidArgument:
        token = token or self.token
        return _error(self.text, token.position, problem)

    def at(self, kind: str, text: str | None = None) -> bool:
        return self.token.kind == kind and (text is None or self.token.text == text)

    def parse(self) -> Predicate:
        if self.at("end"):
            return lambda _resource: True
        predicate = self.expression()
        if not self.at("end"):
            raise self.fail(f"unexpected {self.token.describe()}")
        return predicate

    def expression(self) -> Predicate:
        parts = [self.sequence()]
        while self.at("keyword", "AND"):
            self.advance()
            parts.append(self.sequence())
        return _all(parts)

    def sequence(self) -> Predicate:
        parts = [self.factor()]
        while not (self.at("end") or self.at("operator", ")") or self.at("keyword", "AND")):
            parts.append(self.factor())
        return _all(parts)

    def factor(self) -> Predicate:
        parts = [self.term()]
        while self.at("keyword", "OR"):
            self.advance()
            parts.append(self.term())
        if len(parts) == 1:
            return parts[0]
        return lambda resource: any(part(resource) for part in parts)

    def term(self) -> Predicate:
        if self.at("keyword", "NOT") or self.at("operator", "-"):
            self.advance()
            inner = self.simple()
            return lambda resource: not inner(resource)
        return self.simple()

    def simple(self) -> Predicate:
        if self.at("operator", "("):
            opening = self.advance()
            if self.at("operator", ")"):
                raise self.fail("empty parentheses")
            inner = self.expression()
            if not self.at("operator", ")"):
                raise self.fail(f"missing ')' to close the '(' at position {opening.position + 1}")
            self.advance()
            return inner
        return self.restriction()

    def name(self, what: str) -> str:
        if self.token.kind in ("word", "string"):
            return self.advance().text
        raise self.fail(f"expected {what}, found {self.token.describe()}")

    def restriction(self) -> Predicate:
        start = self.token
        if start.kind != "word":
            raise self.fail(
                f"expected a restriction such as labels.key=value, found {start.describe()}"
            )
        field = self.advance().text
        if field not in self.fields:
            raise self.fail(
                f"cannot filter on '{field}'; only {', '.join(sorted(self.fields))} may be used",
                start,
            )
        key: str | None = None
        if self.at("operator", "."):
            self.advance()
            key = self.name("a key after '.'")
            if field not in self.map_fields:
                raise self.fail(f"'{field}' has no keys", start)
        elif field in self.map_fields and not self.at("operator", ":"):
            raise self.fail(f"expected '{field}.key', e.g. {field}.env=prod", start)
        operator = self.token
        if operator.kind != "operator" or operator.text not in ("=", ":"):
            if operator.text == "!=":
                raise self.fail("there is no inequality operator '!='; write NOT a=b instead")
            if operator.text in ("<", "<=", ">", ">="):
                raise self.fail(f"operator '{operator.text}' is not supported on {field}")
            raise self.fail(f"expected '=' or ':' after '{field}', found {operator.describe()}")
        self.advance()
        if key is None and field in self.map_fields:
            # labels:key — the map has the key (AIP-160 "has" on a map).
            present = self.name("a label key after ':'")
            return lambda resource: present in (resource.get(field) or {})
        if operator.text == ":" and self.at("operator", "*"):
            self.advance()
            return _presence(field, key)
        if self.at("operator", "*"):
            raise self.fail("'*' is only allowed after ':' (has), as in labels.key:*")
        value = self.value()
        return _equality(field, key, value)

    def value(self) -> str:
        token = self.token
        if token.kind == "word" and self.tokens[self.index + 1].text == ".":
            raise self.fail("a value containing '.' must be quoted")
        if token.kind in ("word", "string"):
            return self.advance().text
        if token.kind == "operator" and token.text == "-":
            # A value may start with a dash (labels allow '-'): join it with the next word.
            self.advance()
            if self.token.kind == "word":
                return "-" + self.advance().text
        raise self.fail(f"expected a value, found {token.describe()}")


def _all(parts: list[Predicate]) -> Predicate:
    if len(parts) == 1:
        return parts[0]
    return lambda resource: all(part(resource) for part in parts)


def _scalar(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _presence(field: str, key: str | None) -> Predicate:
    if key is None:
        return lambda resource: resource.get(field) not in (None, "", False)
    return lambda resource: key in (resource.get(field) or {})


def _equality(field: str, key: str | None, value: str) -> Predicate:
    if key is None:
        return lambda resource: _scalar(resource.get(field)) == value
    return lambda resource: _scalar((resource.get(field) or {}).get(key)) == value


def parse_filter(
    text: str | None,
    *,
    fields: Collection[str] = ("labels",),
    map_fields: Collection[str] = ("labels",),
) -> Predicate:
    """Compile ``text`` into a predicate over a resource's JSON.

    Args:
        text: the ``filter`` query parameter; empty or None matches everything.
        fields: the top-level resource fields a restriction may name.
        map_fields: which of them are string maps addressed as ``field.key``.

    Raises:
        InvalidArgument: the filter is malformed or names an unsupported field or operator;
            the message says what and where.
    """
    try:
        return _Parser(text or "", fields, map_fields).parse()
    except RecursionError as exc:
        raise InvalidArgument("Invalid filter: it is nested too deeply.") from exc
