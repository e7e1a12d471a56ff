"""StackQL statements: text → typed statement. A dispatch table maps the leading keyword to one
parse function; SELECT/INSERT/UPDATE/DELETE go through sqlglot (the StackQL dialect), EXEC, SHOW
and DESCRIBE through a small hand-written front."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from dicomql.sql.dialect import StackQL
from dicomql.sql.lexer import blank_comments, hints, syntax_error
from dicomql.sql.templates import sql_literal


@dataclass
class Statement:
    """A parsed statement; ``text`` is the statement as given, ``hints`` its ``/*+ … */`` words."""

    text: str
    hints: frozenset[str] = field(default_factory=frozenset, kw_only=True)
    kind = "statement"

    def sql(self) -> str:
        raise NotImplementedError


@dataclass
class Relational(Statement):
    """SELECT, INSERT, UPDATE or DELETE: a sqlglot tree in the StackQL dialect."""

    tree: exp.Expression

    @property
    def kind(self) -> str:  # type: ignore[override]
        return _RELATIONAL_KINDS[type(self.tree)]

    def sql(self) -> str:
        return self.tree.sql(dialect=StackQL)


_RELATIONAL_KINDS: dict[type[exp.Expression], str] = {
    exp.Select: "select",
    exp.Union: "select",
    exp.Intersect: "select",
    exp.Except: "select",
    exp.Insert: "insert",
    exp.Update: "update",
    exp.Delete: "delete",
}


@dataclass
class ExecParameter:
    name: str
    value: object
    offset: int


@dataclass
class Exec(Statement):
    """``EXEC resource.method @p='v', … @@json='{…}'``."""

    resource: str
    method: str
    parameters: list[ExecParameter]
    body: str | None = None
    kind = "exec"

    def sql(self) -> str:
        parts = [f"@{p.name}={sql_literal(p.value)}" for p in self.parameters]
        if self.body is not None:
            parts.append(f"@@json={sql_literal(self.body)}")
        head = f"EXEC {self.resource}.{self.method}"
        return f"{head} {', '.join(parts)}" if parts else head


@dataclass
class Show(Statement):
    """``SHOW [EXTENDED] PROVIDERS | SERVICES | RESOURCES IN svc | METHODS IN res
    [LIKE 'pattern']``, ``SHOW INSERT [/*+ REQUIRED */] INTO res``, ``SHOW VERSION``."""

    what: str
    target: str | None = None
    like: str | None = None
    extended: bool = False
    kind = "show"

    def sql(self) -> str:
        text = "SHOW " + ("EXTENDED " if self.extended else "") + self.what
        if self.what == "INSERT":
            return f"{text} INTO {self.target}"
        if self.target:
            text += f" IN {self.target}"
        if self.like is not None:
            text += f" LIKE {sql_literal(self.like)}"
        return text


@dataclass
class Describe(Statement):
    """``DESCRIBE [EXTENDED] resource``."""

    resource: str
    extended: bool = False
    kind = "describe"

    def sql(self) -> str:
        return "DESCRIBE " + ("EXTENDED " if self.extended else "") + self.resource


@dataclass
class Explain(Statement):
    """``EXPLAIN [QUERY PLAN] SELECT …``: the calls a SELECT would make, not made."""

    query: Relational
    kind = "explain"

    def sql(self) -> str:
        return "EXPLAIN " + self.query.sql()


# --- the hand-written front: tokens of EXEC / SHOW / DESCRIBE -------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<quoted>"(?:[^"]|"")*")
  | (?P<param>@@?[A-Za-z_][\w.-]*)
  | (?P<number>-?\d+(?:\.\d+)?(?![\w.]))
  | (?P<name>[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*)
  | (?P<punct>[=,()])
    """,
    re.VERBOSE,
)


@dataclass
class _Token:
    kind: str
    text: str
    offset: int

    @property
    def upper(self) -> str:
        return self.text.upper()


class _Tokens:
    """A cursor over the hand-written front's tokens, with errors that point into the text."""

    def __init__(self, text: str, code: str) -> None:
        self.text = text
        self.items: list[_Token] = []
        offset = 0
        while offset < len(code):
            match = _TOKEN.match(code, offset)
            if match is None:
                raise syntax_error(f"Unexpected '{code[offset]}'", text, offset)
            if match.lastgroup != "space":
                self.items.append(_Token(match.lastgroup or "", match.group(), offset))
            offset = match.end()
        self.index = 0
        self.end = len(code.rstrip())

    def peek(self) -> _Token | None:
        return self.items[self.index] if self.index < len(self.items) else None

    def next(self, expected: str) -> _Token:
        token = self.peek()
        if token is None:
            raise syntax_error(f"Expected {expected}", self.text, self.end)
        self.index += 1
        return token

    def expect_word(self, *words: str) -> _Token:
        token = self.peek()
        if token is None or token.upper not in words:
            raise self.error(" or ".join(words), token)
        self.index += 1
        return token

    def error(self, expected: str, token: _Token | None) -> Exception:
        offset = token.offset if token else self.end
        return syntax_error(f"Expected {expected}", self.text, offset)

    def accept(self, *words: str) -> bool:
        token = self.peek()
        if token is not None and token.upper in words:
            self.index += 1
            return True
        return False

    def done(self) -> None:
        token = self.peek()
        if token is not None:
            raise syntax_error(f"Unexpected '{token.text}'", self.text, token.offset)


def _unquote(token: _Token) -> str:
    return token.text[1:-1].replace(token.text[0] * 2, token.text[0])


def _value(token: _Token) -> object:
    if token.kind == "string":
        return _unquote(token)
    if token.kind == "number":
        return float(token.text) if "." in token.text else int(token.text)
    if token.upper in ("TRUE", "FALSE"):
        return token.upper == "TRUE"
    if token.upper == "NULL":
        return None
    return token.text


def _parse_exec(text: str, code: str) -> Statement:
    tokens = _Tokens(text, code)
    tokens.expect_word("EXEC", "EXECUTE")
    target = tokens.next("a resource method such as google.healthcare.dicom_stores.get")
    if target.kind != "name" or target.text.count(".") < 1:
        raise tokens.error("a resource method such as google.healthcare.dicom_stores.get", target)
    resource, _, method = target.text.rpartition(".")
    parameters: list[ExecParameter] = []
    body: str | None = None
    while (token := tokens.peek()) is not None:
        if token.kind != "param":
            raise tokens.error("@parameter=value", token)
        tokens.index += 1
        equals = tokens.next("=")
        if equals.text != "=":
            raise tokens.error("=", equals)
        value_token = tokens.next("a value")
        if value_token.kind not in ("string", "number", "name"):
            raise tokens.error("a value", value_token)
        if token.text.startswith("@@"):
            if token.text.lower() != "@@json":
                raise syntax_error("Expected @@json", text, token.offset)
            body = str(_value(value_token))
        else:
            parameters.append(ExecParameter(token.text[1:], _value(value_token), token.offset))
        # Commas are optional: the StackQL docs' "--required," comments swallow them.
        tokens.accept(",")
    return Exec(text, resource, method, parameters, body)


def _parse_show(text: str, code: str) -> Statement:
    tokens = _Tokens(text, code)
    tokens.expect_word("SHOW")
    extended = tokens.accept("EXTENDED")
    what = tokens.expect_word(
        "PROVIDERS", "SERVICES", "RESOURCES", "METHODS", "INSERT", "VERSION"
    ).upper
    target: str | None = None
    if what == "INSERT":
        # SHOW INSERT [/*+ REQUIRED */] INTO resource: an INSERT template (StackQL).
        tokens.expect_word("INTO")
        target_token = tokens.next("a resource name")
        if target_token.kind != "name":
            raise tokens.error("a resource name", target_token)
        tokens.done()
        return Show(text, what, target_token.text, None, extended)
    if what in ("PROVIDERS", "VERSION"):
        pass
    elif tokens.accept("IN", "FROM"):
        target_token = tokens.next("a service or resource name")
        if target_token.kind != "name":
            raise tokens.error("a service or resource name", target_token)
        target = target_token.text
    elif what != "SERVICES":
        raise tokens.error("IN", tokens.peek())
    like: str | None = None
    if tokens.accept("LIKE"):
        pattern = tokens.next("a pattern")
        if pattern.kind != "string":
            raise tokens.error("a quoted pattern", pattern)
        like = _unquote(pattern)
    tokens.done()
    return Show(text, what, target, like, extended)


def _parse_describe(text: str, code: str) -> Statement:
    tokens = _Tokens(text, code)
    tokens.expect_word("DESCRIBE", "DESC")
    extended = tokens.accept("EXTENDED")
    target = tokens.next("a resource name")
    if target.kind != "name":
        raise tokens.error("a resource name", target)
    tokens.done()
    return Describe(text, target.text, extended)


# --- SELECT / INSERT / UPDATE / DELETE through sqlglot ---------------------------------------

_CLAUSES_AFTER_FROM = {
    TokenType.WHERE,
    TokenType.GROUP_BY,
    TokenType.ORDER_BY,
    TokenType.HAVING,
    TokenType.LIMIT,
}


def _check_from(text: str, code: str) -> None:
    """``SELECT … WHERE`` without FROM: say so where FROM was expected (sqlglot accepts it)."""
    try:
        tokens = sqlglot.tokenize(code, read=StackQL)
    except TokenError as exc:
        raise syntax_error(f"Invalid token: {exc}", text, 0) from exc
    depth = 0
    for token in tokens:
        if token.token_type == TokenType.L_PAREN:
            depth += 1
        elif token.token_type == TokenType.R_PAREN:
            depth -= 1
        elif depth == 0 and token.token_type == TokenType.FROM:
            return
        elif (depth == 0 and token.token_type in _CLAUSES_AFTER_FROM) or (
            depth == 0
            and token.token_type == TokenType.VAR
            and difflib.SequenceMatcher(None, token.text.upper(), "FROM").ratio() >= 0.75
        ):
            raise syntax_error("Expected FROM", text, token.start, token.end + 1)


def _parse_relational(text: str, code: str) -> Statement:
    is_select = code.lstrip()[:6].upper() == "SELECT"
    try:
        trees = sqlglot.parse(code, read=StackQL)
    except ParseError as exc:
        if is_select:
            _check_from(text, code)
        raise _from_parse_error(text, code, exc) from exc
    except TokenError as exc:
        raise syntax_error(f"Invalid token: {exc}", text, 0) from exc
    trees = [tree for tree in trees if tree is not None]
    if is_select and trees and not (trees[0].args.get("from") or trees[0].args.get("from_")):
        # Only a FROM-less SELECT is worth a second look (a tokenizer pass).
        _check_from(text, code)
    if len(trees) != 1:
        raise syntax_error("Expected one statement", text, 0)
    tree = trees[0]
    if type(tree) not in _RELATIONAL_KINDS:
        raise syntax_error(
            "Expected SELECT, INSERT, UPDATE, DELETE, EXEC, SHOW or DESCRIBE", text, 0
        )
    return Relational(text, tree)


def _from_parse_error(text: str, code: str, exc: ParseError) -> Exception:
    error = exc.errors[0] if exc.errors else {}
    description = str(error.get("description", str(exc)))
    highlight = str(error.get("highlight") or "")
    line = int(error.get("line") or 1)
    col = int(error.get("col") or 1)
    # sqlglot reports the column where the offending token ends.
    lines = code.split("\n")
    offset = sum(len(ln) + 1 for ln in lines[: line - 1]) + max(col - len(highlight), 0)
    if description.startswith("Required keyword: 'expression'"):
        if highlight.isalpha() and highlight.upper() not in ("AND", "OR", "NOT", "LIKE", "IN"):
            # sqlglot stopped at the next clause's keyword: the expression is missing before it.
            description = "Expected an expression"
        else:
            description = f"Expected an expression after '{highlight}'"
            offset += len(highlight)
    elif description.startswith("Expecting "):
        description = "Expected " + description.removeprefix("Expecting ")
    elif "Unexpected token" in description or "Invalid expression" in description:
        description = f"Unexpected '{highlight}'"
    return syntax_error(description, text, min(offset, len(text)))


def _parse_explain(text: str, code: str) -> Statement:
    match = re.match(r"\s*EXPLAIN(\s+QUERY\s+PLAN)?\b", code, re.IGNORECASE)
    assert match is not None  # the dispatch table chose this function by the keyword
    # Blank the keyword so that positions in errors still point into ``text``.
    inner = " " * match.end() + code[match.end() :]
    query = _parse_relational(text, inner)
    if query.kind != "select":
        raise syntax_error("Expected SELECT after EXPLAIN", text, match.end())
    assert isinstance(query, Relational)
    return Explain(text, query)


_PARSERS: dict[str, Callable[[str, str], Statement]] = {
    "SELECT": _parse_relational,
    "WITH": _parse_relational,
    "INSERT": _parse_relational,
    "UPDATE": _parse_relational,
    "DELETE": _parse_relational,
    "EXEC": _parse_exec,
    "EXECUTE": _parse_exec,
    "SHOW": _parse_show,
    "DESCRIBE": _parse_describe,
    "DESC": _parse_describe,
    "EXPLAIN": _parse_explain,
}


def parse(text: str) -> Statement:
    """Parse one statement (templates already filled).

    >>> parse("SHOW SERVICES").kind
    'show'

    Raises:
        SQLSyntaxError: the statement does not parse; it points at the line and column.
    """
    code = blank_comments(text)
    stripped = code.lstrip()
    if not stripped:
        raise syntax_error("Expected a statement", text, len(text))
    offset = len(code) - len(stripped)
    first = re.match(r"[A-Za-z]+", stripped)
    keyword = first.group().upper() if first else ""
    parse_function = _PARSERS.get(keyword)
    if parse_function is None:
        raise syntax_error(
            "Expected SELECT, INSERT, UPDATE, DELETE, EXEC, SHOW, DESCRIBE or EXPLAIN", text, offset
        )
    statement = parse_function(text, code)
    statement.hints = frozenset(hints(text))
    return statement
