"""The lexical layer shared by template filling, statement splitting and hint extraction:
which stretches of a text are code, string literals, quoted identifiers or comments."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from dicomql.errors import SQLSyntaxError

CODE = "code"
STRING = "string"
IDENTIFIER = "identifier"
COMMENT = "comment"
HINT = "hint"

_HINT_WORD = re.compile(r"[A-Za-z_]+")


@dataclass(frozen=True)
class Segment:
    kind: str
    start: int
    end: int


def segments(text: str) -> Iterator[Segment]:
    """Split ``text`` into code, 'strings', "identifiers", -- and /* comments */.

    ``/*+ … */`` comments are hints (StackQL's ``/*+ AWAIT */``).

    >>> [s.kind for s in segments("SELECT 'a' -- x")]
    ['code', 'string', 'code', 'comment']

    Raises:
        SQLSyntaxError: a string, identifier or block comment is not closed.
    """
    i, n, start = 0, len(text), 0
    while i < n:
        char = text[i]
        two = text[i : i + 2]
        if char in "'\"`":
            if start < i:
                yield Segment(CODE, start, i)
            end = _closing_quote(text, i)
            yield Segment(STRING if char == "'" else IDENTIFIER, i, end)
            i = start = end
        elif two == "--":
            if start < i:
                yield Segment(CODE, start, i)
            end = text.find("\n", i)
            end = n if end < 0 else end
            yield Segment(COMMENT, i, end)
            i = start = end
        elif two == "/*":
            if start < i:
                yield Segment(CODE, start, i)
            close = text.find("*/", i + 2)
            if close < 0:
                raise syntax_error("Unterminated comment", text, i)
            kind = HINT if text.startswith("/*+", i) else COMMENT
            yield Segment(kind, i, close + 2)
            i = start = close + 2
        else:
            i += 1
    if start < n:
        yield Segment(CODE, start, n)


def _closing_quote(text: str, i: int) -> int:
    """Index just past the quote closing the literal opened at ``i`` (doubled quotes escape)."""
    quote = text[i]
    j = i + 1
    while True:
        k = text.find(quote, j)
        if k < 0:
            what = "string" if quote == "'" else "identifier"
            raise syntax_error(f"Unterminated {what}", text, i)
        if text.startswith(quote * 2, k):
            j = k + 2
            continue
        return k + 1


def split_statements(text: str) -> list[tuple[int, str]]:
    """Statements of a script with their offsets: split on ``;`` outside quotes and comments.

    A final statement without ``;`` counts; blank and comment-only pieces are dropped.

    >>> [s for _, s in split_statements("SHOW SERVICES; SHOW SERVICES")]
    ['SHOW SERVICES', ' SHOW SERVICES']
    """
    pieces: list[tuple[int, str]] = []
    start = 0
    for segment in segments(text):
        if segment.kind != CODE:
            continue
        for offset in range(segment.start, segment.end):
            if text[offset] == ";":
                pieces.append((start, text[start:offset]))
                start = offset + 1
    pieces.append((start, text[start:]))
    return [(offset, piece) for offset, piece in pieces if blank_comments(piece).strip()]


def blank_comments(text: str) -> str:
    """``text`` with every comment and hint replaced by spaces (newlines kept), so that
    offsets, lines and columns still point into the original."""
    out = []
    for segment in segments(text):
        piece = text[segment.start : segment.end]
        if segment.kind in (COMMENT, HINT):
            piece = re.sub(r"[^\n]", " ", piece)
        out.append(piece)
    return "".join(out)


def hints(text: str) -> set[str]:
    """The upper-cased words of every ``/*+ … */`` hint: ``{'AWAIT', 'SHOWRESULTS'}``."""
    found: set[str] = set()
    for segment in segments(text):
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
