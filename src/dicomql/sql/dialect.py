"""The StackQL dialect for sqlglot: SQLite's grammar (StackQL materialises responses in SQLite)
with StackQL's verbs added through sqlglot's own extension points — the tokenizer's keyword
table and the parser's statement table, the way T-SQL adds EXECUTE. One tokenizer serves every
statement, the template filler, the script splitter and the shell.

Syntax errors are sqlglot ``ParseError``s whose ``errors[0]`` carries, besides sqlglot's
``description``, ``line`` and ``col``, the ``start`` and ``end`` offsets into the statement text;
:mod:`dicomql.sql.parser` turns them into :class:`~dicomql.errors.SQLSyntaxError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar, cast

from sqlglot import exp
from sqlglot.dialects.sqlite import SQLite
from sqlglot.errors import ErrorLevel, ParseError, TokenError
from sqlglot.generators.sqlite import SQLiteGenerator
from sqlglot.parser import Parser
from sqlglot.parsers.sqlite import SQLiteParser
from sqlglot.tokens import Token, TokenType


class ExecStatement(exp.Expression):
    """``EXEC resource.method @name=value, … @@json='{…}'``: ``this`` is ``resource.method``,
    ``expressions`` the :class:`ExecArgument` list, ``body`` the ``@@json`` text."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True, "expressions": False, "body": False}


class ExecArgument(exp.Expression):
    """``@name=value``: ``this`` is the name, ``value`` a Python str, int, float, bool or None."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True, "value": False}


class ShowStatement(exp.Expression):
    """``SHOW [EXTENDED] what [IN target] [LIKE 'pattern']`` or ``SHOW INSERT INTO target``."""

    arg_types: ClassVar[dict[str, bool]] = {
        "this": True,
        "target": False,
        "like": False,
        "extended": False,
    }


class DescribeStatement(exp.Expression):
    """``DESCRIBE [EXTENDED] resource``."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True, "extended": False}


# A word of EXEC/SHOW/DESCRIBE is a run of adjacent tokens: google.healthcare.dicom_stores,
# my-project, @update.mask — sqlglot splits them at every dot and dash.
_WORD_PIECE = re.compile(r"[\w.-]+")
_NAME = re.compile(r"[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*")
_RESOURCE_METHOD = re.compile(r"[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)+")
_PARAMETER_NAME = re.compile(r"[A-Za-z_][\w.-]*")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
SHOW_WHAT = ("PROVIDERS", "SERVICES", "RESOURCES", "METHODS", "INSERT", "VERSION")
# Binary operators spelled as words: a missing right operand is missing *after* them.
_WORD_OPERATORS = {TokenType.AND, TokenType.OR, TokenType.NOT, TokenType.LIKE, TokenType.IN}


class StackQL(SQLite):
    """StackQL's SQL: SQLite expressions over API resources named ``service.resource``, plus
    EXEC, SHOW and DESCRIBE."""

    # Body fields of INSERT/UPDATE carry this prefix: data__labels is the body's "labels".
    DATA_PREFIX = "data__"

    class Tokenizer(SQLite.Tokenizer):
        KEYWORDS: ClassVar[dict[str, TokenType]] = {
            **SQLite.Tokenizer.KEYWORDS,
            "EXEC": TokenType.EXECUTE,
        }
        # sqlglot swallows the rest of a "command" (SHOW, EXECUTE, …) as one string; StackQL's
        # verbs have a grammar, and a template placeholder or ';' in them must be seen.
        COMMANDS: ClassVar[set[TokenType]] = set()

        def tokenize(self, sql: str) -> list[Token]:
            try:
                return super().tokenize(sql)
            except TokenError as error:
                # sqlglot's message names no offset we can use; its scanner's start does.
                error.start = error.end = self._core._start
                raise

    class Generator(SQLiteGenerator):
        # StackQL's own statements written back, for errors that quote what was parsed (a
        # DESCRIBE where a resource was expected; tests/reliability/test_fuzz.py).
        TRANSFORMS: ClassVar[dict[type[exp.Expr], Callable[..., str]]] = {
            **SQLiteGenerator.TRANSFORMS,
            DescribeStatement: lambda _, e: " ".join(
                ["DESCRIBE", *(["EXTENDED"] if e.args.get("extended") else []), str(e.this)]
            ),
            ShowStatement: lambda _, e: f"SHOW {e.this}",
            ExecStatement: lambda _, e: f"EXEC {e.this}",
        }

    class Parser(SQLiteParser):
        STATEMENT_PARSERS: ClassVar[dict[TokenType, Any]] = {
            **SQLiteParser.STATEMENT_PARSERS,
            TokenType.EXECUTE: lambda self: self._parse_exec_statement(),
            TokenType.SHOW: lambda self: self._parse_show_statement(),
            TokenType.DESCRIBE: lambda self: self._parse_describe_statement(),
            TokenType.DESC: lambda self: self._parse_describe_statement(),
        }

        # --- one whole statement, errors with offsets --------------------------------------

        def parse(self, raw_tokens: list[Token], sql: str) -> list[exp.Expr | None]:
            whole_statement = cast("Callable[[Parser], exp.Expr | None]", type(self)._whole)
            return self._parse(whole_statement, raw_tokens, sql)

        def _whole(self) -> exp.Expr | None:
            """One statement and nothing after it (sqlglot would say "Invalid expression")."""
            statement = self._parse_statement()
            if self._curr:
                self.raise_error(f"Unexpected '{self._raw(self._curr)}'", self._curr)
            return statement

        def raise_error(self, message: str, token: Token | None = None) -> None:
            token = token or self._curr or self._prev or Token.string("")
            try:
                super().raise_error(message, token)
            except ParseError as error:
                error.errors[0].update(start=token.start, end=token.end)
                raise
            self.errors[-1].errors[0].update(start=token.start, end=token.end)

        def _raise_at(self, message: str, offset: int) -> None:
            """An error at ``offset``, where no token stands (after the last one, say)."""
            line = self.sql.count("\n", 0, offset) + 1
            column = offset - self.sql.rfind("\n", 0, offset)
            token = Token(TokenType.STRING, "", line, column, offset, offset - 1)
            self.raise_error(message, token)

        def _expected(self, what: str) -> None:
            """``Expected what`` at the current token, or just past the last one."""
            if self._curr:
                self.raise_error(f"Expected {what}", self._curr)
            else:
                self._raise_at(f"Expected {what}", self._prev.end + 1 if self._prev else 0)

        def validate_expression(self, expression: Any, args: list | None = None) -> Any:
            if (
                self.error_level != ErrorLevel.IGNORE
                and "expression" in expression.required_args
                and expression.args.get("expression") is None
            ):
                # An operator without its right operand: sqlglot stopped at the next clause's
                # keyword (the operand is missing before it) or at a word operator.
                token = self._curr or self._prev
                if token.token_type in _WORD_OPERATORS or not token.text[:1].isalpha():
                    self._raise_at(
                        f"Expected an expression after '{self._raw(token)}'", token.end + 1
                    )
                else:
                    self.raise_error("Expected an expression", token)
                return expression
            return super().validate_expression(expression, args)

        def _match_l_paren(self, expression: exp.Expr | None = None) -> None:
            if not self._match(TokenType.L_PAREN, expression=expression):
                self.raise_error("Expected (")

        def _match_r_paren(self, expression: exp.Expr | None = None) -> None:
            if not self._match(TokenType.R_PAREN, expression=expression):
                self.raise_error("Expected )")

        def _parse_wrapped(self, parse_method: Callable[[], Any], optional: bool = False) -> Any:
            if not optional and not self._match(TokenType.L_PAREN, advance=False):
                self._expected("(")
            return super()._parse_wrapped(parse_method, optional)

        def _parse_table_parts(self, *args: Any, **kwargs: Any) -> Any:
            if not self._curr and not kwargs.get("is_db_reference") and not kwargs.get("fast"):
                self._expected("a table name")  # sqlglot would print its end-of-input token
            return super()._parse_table_parts(*args, **kwargs)

        # --- StackQL's verbs ---------------------------------------------------------------

        def _raw(self, token: Token) -> str:
            return self.sql[token.start : token.end + 1]

        def _word(self) -> Token | None:
            """The run of adjacent word tokens at the cursor as one VAR token (None if none)."""
            first = self._curr
            if not first or not self._is_word_piece(first):
                return None
            last = first
            self._advance()
            while self._curr and self._is_connected() and self._is_word_piece(self._curr):
                last = self._curr
                self._advance()
            text = self.sql[first.start : last.end + 1]
            return Token(TokenType.VAR, text, last.line, last.col, first.start, last.end)

        @staticmethod
        def _is_word_piece(token: Token) -> bool:
            return token.token_type not in (
                TokenType.STRING,
                TokenType.IDENTIFIER,
            ) and bool(_WORD_PIECE.fullmatch(token.text))

        def _name(self, what: str, pattern: re.Pattern[str] = _NAME) -> str:
            start = self._index
            word = self._word()
            if word is None or not pattern.fullmatch(word.text):
                self._retreat(start)
                self._expected(what)
            assert word is not None  # _expected raised
            return word.text

        def _done(self) -> None:
            if self._curr:
                self.raise_error(f"Unexpected '{self._raw(self._curr)}'", self._curr)

        def _parse_exec_statement(self) -> ExecStatement:
            target = self._name(
                "a resource method such as google.healthcare.dicom_stores.get", _RESOURCE_METHOD
            )
            arguments: list[ExecArgument] = []
            body: str | None = None
            while self._curr:
                at = self._curr
                if not self._match(TokenType.PARAMETER):
                    self._expected("@parameter=value")
                double = self._is_connected() and self._match(TokenType.PARAMETER)
                if not self._is_connected():
                    self.raise_error("Expected @parameter=value", at)
                name = self._name("@parameter=value", _PARAMETER_NAME)
                if not self._match(TokenType.EQ):
                    self._expected("=")
                value = self._exec_value()
                if double:
                    if name.lower() != "json":
                        self.raise_error("Expected @@json", at)
                    body = str(value)
                else:
                    arguments.append(ExecArgument(this=name, value=value))
                # Commas are optional: the StackQL docs' "--required," comments swallow them.
                self._match(TokenType.COMMA)
            return ExecStatement(this=target, expressions=arguments, body=body)

        def _exec_value(self) -> object:
            token = self._curr
            if not token:
                self._expected("a value")
            if token.token_type == TokenType.STRING:
                self._advance()
                return token.text
            if token.token_type in (TokenType.TRUE, TokenType.FALSE):
                self._advance()
                return token.token_type == TokenType.TRUE
            if token.token_type == TokenType.NULL:
                self._advance()
                return None
            word = self._word()
            if word is None:
                self._expected("a value")
            assert word is not None
            if _NUMBER.fullmatch(word.text):
                return float(word.text) if "." in word.text else int(word.text)
            if not _NAME.fullmatch(word.text):
                self.raise_error("Expected a value", token)
            return word.text

        def _parse_show_statement(self) -> ShowStatement:
            extended = self._match_text_seq("EXTENDED")
            if not self._curr or self._curr.text.upper() not in SHOW_WHAT:
                self._expected(" or ".join(SHOW_WHAT))
            what = self._curr.text.upper()
            self._advance()
            target: str | None = None
            like: str | None = None
            if what == "INSERT":
                # SHOW INSERT [/*+ REQUIRED */] INTO resource: an INSERT template (StackQL).
                if not self._match(TokenType.INTO):
                    self._expected("INTO")
                target = self._name("a resource name")
            elif what in ("PROVIDERS", "VERSION"):
                pass
            elif self._match_set((TokenType.IN, TokenType.FROM)):
                target = self._name("a service or resource name")
            elif what != "SERVICES":
                self._expected("IN")
            if what != "INSERT" and self._match(TokenType.LIKE):
                if not self._curr:
                    self._expected("a pattern")
                if not self._match(TokenType.STRING):
                    self._expected("a quoted pattern")
                like = self._prev.text
            self._done()
            return ShowStatement(this=what, target=target, like=like, extended=extended)

        def _parse_describe_statement(self) -> DescribeStatement:
            extended = self._match_text_seq("EXTENDED")
            resource = self._name("a resource name")
            self._done()
            return DescribeStatement(this=resource, extended=extended)
