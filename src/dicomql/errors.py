"""The errors a dicomql client raises, named as PEP 249 names them.

    Warning
    Error
    ├── InterfaceError
    ├── DeployError                   a stack could not be built, tested or torn down
    │   └── ManifestError             a stack manifest or query file is wrong; has file/line
    └── DatabaseError
        ├── DataError
        │   └── JSONValueError        a data__ value or @@json does not parse; has line/column
        ├── OperationalError
        │   └── TransportError        the backend could not be reached
        ├── IntegrityError
        ├── InternalError
        ├── ProgrammingError
        │   └── SQLSyntaxError        the statement does not parse; has line/column
        ├── NotSupportedError
        └── ApiError                  the backend answered with google.rpc.Status

The embedded service has its own error classes (``dicomql.service.errors``); the two meet only
through the HTTP contract: the provider turns an error response into an :class:`ApiError`.
"""

from __future__ import annotations

import builtins
from typing import Any


def caret_lines(sql: str, line: int, column: int) -> str:
    """The line of ``sql`` at ``line`` and a caret under ``column``, indented two spaces; a
    statement of a script is padded to its place in the script, so leading blanks are cut."""
    lines = sql.splitlines()
    if not 0 < line <= len(lines):
        return ""
    text = lines[line - 1]
    cut = min(len(text) - len(text.lstrip()), column - 1)
    return f"\n  {text[cut:]}\n  {' ' * (column - 1 - cut)}^"


class Warning(builtins.Warning):
    """An important warning, such as data truncation."""


class Error(Exception):
    """Base of every dicomql error."""


class InterfaceError(Error):
    """The DB-API interface was misused (a closed cursor, say)."""


class DatabaseError(Error):
    """An error about the data or the backend."""


class DataError(DatabaseError):
    """A value could not be processed (bad JSON in a data__ field, say)."""


class JSONValueError(DataError):
    """A JSON value in a statement (a ``data__`` field, ``@@json``) does not parse.

    ``position`` is the offset of the fault inside ``document``; :meth:`located` turns it into
    the line and column of the statement (or script) the document was written in.
    """

    def __init__(self, what: str, document: str, reason: str, position: int) -> None:
        self.what = what
        self.document = document
        self.reason = reason
        self.position = position
        super().__init__(f"{what} is not valid JSON: {reason} (character {position + 1})")

    def located(self, sql: str) -> DataError:
        """The same error, its line and column counted in ``sql`` when the document is there
        as a quoted literal (else itself)."""
        literal = "'" + self.document.replace("'", "''") + "'"
        start = sql.find(literal)
        if start < 0:
            return self
        offset = start + 1 + len(self.document[: self.position].replace("'", "''"))
        line = sql.count("\n", 0, offset) + 1
        column = offset - (sql.rfind("\n", 0, offset) + 1) + 1
        return DataError(
            f"{self.what} is not valid JSON: {self.reason} at line {line}, column {column}"
            + caret_lines(sql, line, column)
        )


class OperationalError(DatabaseError):
    """The backend is not working as expected."""


class TransportError(OperationalError):
    """The request never got an answer: connection refused, timeout, TLS failure."""


class IntegrityError(DatabaseError):
    """A relational integrity rule would be broken."""


class InternalError(DatabaseError):
    """dicomql itself is in an inconsistent state."""


class ProgrammingError(DatabaseError):
    """The statement is wrong: unknown resource, missing parameter, bad method."""


class NotSupportedError(DatabaseError):
    """A feature the backend or dialect does not support."""


class SQLSyntaxError(ProgrammingError):
    """The statement does not parse.

    The message reads ``Expected FROM at line 1, column 8`` followed by the line and a caret.
    """

    def __init__(
        self,
        description: str,
        *,
        sql: str = "",
        line: int = 1,
        column: int = 1,
        start: int = 0,
        end: int = 0,
        highlight: str = "",
    ) -> None:
        self.description = description
        self.sql = sql
        self.line = line
        self.column = column
        self.start = start
        self.end = end
        self.highlight = highlight
        super().__init__(self._render())

    def _render(self) -> str:
        message = f"{self.description} at line {self.line}, column {self.column}"
        return message + caret_lines(self.sql, self.line, self.column)


class ApiError(DatabaseError):
    """The backend answered with an error (Google's ``{"error": {code, message, status}}``)."""

    def __init__(
        self,
        code: int,
        status: str,
        message: str,
        *,
        details: list[Any] | None = None,
        method: str = "",
        url: str = "",
    ) -> None:
        self.code = code
        self.status = status
        self.message = message
        self.details = details or []
        self.method = method
        self.url = url
        super().__init__(f"{code} {status}: {message}")


class DeployError(Error):
    """A stack could not be built, tested or torn down (``dicomql deploy``)."""


class ManifestError(DeployError):
    """A stack manifest or query file is wrong.

    The message reads ``stackql_manifest.yml:12:7: resources[1].props[0]: 'value' or 'values'
    is required``: the file, line and column, where in the document, and what is wrong.
    """

    def __init__(
        self, description: str, *, path: str = "", line: int = 0, column: int = 0, where: str = ""
    ) -> None:
        self.description = description
        self.path = path
        self.line = line
        self.column = column
        self.where = where
        place = ":".join(str(part) for part in (path, line or "", column or "") if part != "")
        prefix = f"{place}: " if place else ""
        scope = f"{where}: " if where else ""
        super().__init__(f"{prefix}{scope}{description}")
