"""StackQL statements: text → typed statement. The StackQL dialect (sqlglot, extended with EXEC,
SHOW and DESCRIBE in :mod:`dicomql.sql.dialect`) tokenizes and parses every statement; this
module turns its trees into typed statements and its errors into SQLSyntaxError."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from sqlglot import exp
from sqlglot.errors import ParseError
from sqlglot.tokens import Token, TokenType

from dicomql.sql.dialect import DescribeStatement, ExecStatement, ShowStatement, StackQL
from dicomql.sql.lexer import hints, syntax_error, tokenize
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


# --- SELECT / INSERT / UPDATE / DELETE ------------------------------------------------------

_CLAUSES_AFTER_FROM = {
    TokenType.WHERE,
    TokenType.GROUP_BY,
    TokenType.ORDER_BY,
    TokenType.HAVING,
    TokenType.LIMIT,
}


def _check_from(text: str, tokens: list[Token]) -> None:
    """``SELECT … WHERE`` without FROM: say so where FROM was expected (sqlglot accepts it)."""
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


def _syntax_error(text: str, exc: ParseError) -> Exception:
    """The first of sqlglot's structured errors; the dialect's parser adds the offsets."""
    error = exc.errors[0] if exc.errors else {}
    description = str(error.get("description") or exc)
    offset = error.get("start")
    if offset is None:  # not raised through the dialect's parser: sqlglot's line and column
        highlight = str(error.get("highlight") or "")
        line, col = int(error.get("line") or 1), int(error.get("col") or 1)
        # sqlglot reports the column where the offending token ends.
        lines = text.split("\n")
        offset = sum(len(ln) + 1 for ln in lines[: line - 1]) + max(col - len(highlight), 0)
    return syntax_error(description, text, min(int(offset), len(text)))


def _statement(text: str, tree: exp.Expr, hints_: frozenset[str]) -> Statement:
    if isinstance(tree, ExecStatement):
        resource, _, method = str(tree.this).rpartition(".")
        parameters = [ExecParameter(str(a.this), a.args.get("value")) for a in tree.expressions]
        return Exec(text, resource, method, parameters, tree.args.get("body"), hints=hints_)
    if isinstance(tree, ShowStatement):
        return Show(
            text,
            str(tree.this),
            tree.args.get("target"),
            tree.args.get("like"),
            bool(tree.args.get("extended")),
            hints=hints_,
        )
    if isinstance(tree, DescribeStatement):
        return Describe(text, str(tree.this), bool(tree.args.get("extended")), hints=hints_)
    if not isinstance(tree, exp.Expression) or type(tree) not in _RELATIONAL_KINDS:
        raise syntax_error(
            "Expected SELECT, INSERT, UPDATE, DELETE, EXEC, SHOW or DESCRIBE", text, 0
        )
    return Relational(text, tree, hints=hints_)


def _parse_tokens(text: str, tokens: list[Token], hints_: frozenset[str]) -> Statement:
    is_select = tokens[0].token_type == TokenType.SELECT
    try:
        parsed = StackQL().parser().parse(tokens, text)
    except ParseError as exc:
        if is_select:
            _check_from(text, tokens)
        raise _syntax_error(text, exc) from exc
    trees = [tree for tree in parsed if tree is not None]
    if is_select and trees and not (trees[0].args.get("from") or trees[0].args.get("from_")):
        # Only a FROM-less SELECT is worth a second look.
        _check_from(text, tokens)
    if len(trees) != 1:
        raise syntax_error("Expected one statement", text, 0)
    return _statement(text, trees[0], hints_)


# The leading keywords a statement may start with (the dialect's statement table has more).
_LEADING = {
    TokenType.SELECT,
    TokenType.WITH,
    TokenType.INSERT,
    TokenType.UPDATE,
    TokenType.DELETE,
    TokenType.EXECUTE,
    TokenType.SHOW,
    TokenType.DESCRIBE,
    TokenType.DESC,
}


def parse(text: str) -> Statement:
    """Parse one statement (templates already filled).

    >>> parse("SHOW SERVICES").kind
    'show'

    Raises:
        SQLSyntaxError: the statement does not parse; it points at the line and column.
    """
    tokens = tokenize(text)
    found = frozenset(hints(text, tokens))
    for token in tokens:
        # Comments (hints included) are read; sqlglot would write them into the SQL it generates.
        token.comments = []
    if not tokens:
        raise syntax_error("Expected a statement", text, len(text))
    first = tokens[0]
    if first.text.upper() == "EXPLAIN":
        # EXPLAIN [QUERY PLAN] SELECT …: the calls a SELECT would make.
        rest = tokens[1:]
        if [t.text.upper() for t in rest[:2]] == ["QUERY", "PLAN"]:
            rest = rest[2:]
        if not rest or rest[0].token_type not in (TokenType.SELECT, TokenType.WITH):
            offset = rest[0].start if rest else len(text.rstrip())
            raise syntax_error("Expected SELECT after EXPLAIN", text, offset)
        query = _parse_tokens(text, rest, found)
        if not isinstance(query, Relational) or query.kind != "select":
            raise syntax_error("Expected SELECT after EXPLAIN", text, rest[0].start)
        return Explain(text, query, hints=found)
    if first.token_type not in _LEADING:
        raise syntax_error(
            "Expected SELECT, INSERT, UPDATE, DELETE, EXEC, SHOW, DESCRIBE or EXPLAIN",
            text,
            first.start,
        )
    return _parse_tokens(text, tokens, found)
