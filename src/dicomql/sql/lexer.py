"""The lexical view of a text, from the StackQL dialect's one tokenizer (sqlglot's): which
stretches are code, string literals, quoted identifiers or comments — for template filling,
statement splitting, hints and the shell."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from sqlglot.errors import TokenError
from sqlglot.tokens import Token, TokenType

from dicomql.errors import SQLSyntaxError
from dicomql.sql.dialect import StackQL

CODE = "code"
STRING = "string"
IDENTIFIER = "identifier"
COMMENT = "comment"
HINT = "hint"

_TOKENIZER = StackQL().tokenizer_class
_HINT_WORD = re.compile(r"[A-Za-z_]+")
_UNTERMINATED = {"'": "string", '"': "identifier", "`": "identifier", "[": "identifier"}


@dataclass(frozen=True)
class Segment:
    kind: str
    start: int
    end: int


def tokenize(text: str) -> list[Token]:
    """The StackQL dialect's tokens of ``text``; comments ride on the tokens (sqlglot's way).

    Raises:
        SQLSyntaxError: a string, identifier or block comment is not closed.
    """
    try:
        return _TOKENIZER().tokenize(text)
    except TokenError as exc:
        offset = exc.start or 0
        if text[offset : offset + 1].isalpha() and text[offset + 1 : offset + 2] == "'":
            # x'…', N'…': closed but not valid (x'0g'), or its quote is not closed.
            if text.find("'", offset + 2) >= 0:
                description = "Invalid literal"
            else:
                description, offset = "Unterminated string", offset + 1
        elif text.startswith("/*", offset):
            description = "Unterminated comment"
        elif text[offset : offset + 1] in _UNTERMINATED:
            description = f"Unterminated {_UNTERMINATED[text[offset]]}"
        else:
            description = "Invalid token"
        raise syntax_error(description, text, offset) from exc


def segments(text: str, tokens: list[Token] | None = None) -> Iterator[Segment]:
    """Split ``text`` into code, 'strings', "identifiers", -- and /* comments */.

    ``/*+ … */`` comments are hints (StackQL's ``/*+ AWAIT */``). ``tokens``: the text's tokens,
    if already made.

    >>> [s.kind for s in segments("SELECT 'a' -- x")]
    ['code', 'string', 'code', 'comment']

    Raises:
        SQLSyntaxError: a string, identifier or block comment is not closed.
    """
    code_start: int | None = None  # adjacent tokens and spaces of code make one segment
    for segment in _segments(text, tokenize(text) if tokens is None else tokens):
        if segment.kind == CODE:
            code_start = segment.start if code_start is None else code_start
            continue
        if code_start is not None:
            yield Segment(CODE, code_start, segment.start)
            code_start = None
        yield segment
    if code_start is not None:
        yield Segment(CODE, code_start, len(text))


def _segments(text: str, tokens: list[Token]) -> Iterator[Segment]:
    offset = 0
    for token in [*tokens, None]:
        start = token.start if token is not None else len(text)
        yield from _between(text, offset, start)
        if token is None:
            break
        kind = CODE
        if token.token_type == TokenType.STRING:
            kind = STRING
        elif token.token_type == TokenType.IDENTIFIER:
            kind = IDENTIFIER
        yield Segment(kind, token.start, token.end + 1)
        offset = token.end + 1


def _between(text: str, start: int, end: int) -> Iterator[Segment]:
    """The gap between two tokens: white space (code) and the comments the tokenizer skipped."""
    offset = start
    while offset < end:
        if text[offset].isspace():
            stop = offset + 1
            while stop < end and text[stop].isspace():
                stop += 1
            yield Segment(CODE, offset, stop)
        elif text.startswith("/*", offset):
            close = text.find("*/", offset + 2, end)
            stop = end if close < 0 else close + 2
            yield Segment(HINT if text.startswith("/*+", offset) else COMMENT, offset, stop)
        else:  # "--" up to the end of the line
            newline = text.find("\n", offset, end)
            stop = end if newline < 0 else newline
            yield Segment(COMMENT, offset, stop)
        offset = stop


def split_statements(text: str) -> list[tuple[int, str]]:
    """Statements of a script with their offsets: split on ``;`` outside quotes and comments.

    A final statement without ``;`` counts; blank and comment-only pieces are dropped.

    >>> [s for _, s in split_statements("SHOW SERVICES; SHOW SERVICES")]
    ['SHOW SERVICES', ' SHOW SERVICES']
    """
    pieces: list[tuple[int, str, bool]] = []
    start, has_code = 0, False
    for token in tokenize(text):
        if token.token_type == TokenType.SEMICOLON:
            pieces.append((start, text[start : token.start], has_code))
            start, has_code = token.end + 1, False
        else:
            has_code = True
    pieces.append((start, text[start:], has_code))
    return [(offset, piece) for offset, piece, has_code in pieces if has_code]


def hints(text: str, tokens: list[Token] | None = None) -> set[str]:
    """The upper-cased words of every ``/*+ … */`` hint: ``{'AWAIT', 'SHOWRESULTS'}``.

    ``tokens``: the text's tokens, if already made.
    """
    found: set[str] = set()
    for segment in segments(text, tokens):
        if segment.kind == HINT:
            body = text[segment.start + 3 : segment.end - 2]
            found.update(word.upper() for word in _HINT_WORD.findall(body))
    return found


def position(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of ``offset`` in ``text``."""
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


def syntax_error(
    description: str, text: str, offset: int, end: int | None = None
) -> SQLSyntaxError:
    """An SQLSyntaxError pointing at ``offset`` of ``text``."""
    line, column = position(text, offset)
    return SQLSyntaxError(
        description,
        sql=text,
        line=line,
        column=column,
        start=offset,
        end=end if end is not None else offset,
        highlight=text[offset : end if end is not None else offset + 1],
    )
