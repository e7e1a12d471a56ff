"""The errors a dicomql client raises, named as PEP 249 names them.

    Warning
    Error
    ├── InterfaceError
    ├── DeployError                   a stack could not be built, tested or torn down
    │   └── ManifestError             a stack manifest or query file is wrong; has file/line
    └── DatabaseError
        ├── DataError
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
        lines = self.sql.splitlines()
        if 0 < self.line <= len(lines):
            text = lines[self.line - 1]
            caret = " " * (self.column - 1) + "^"
            message = f"{message}\n  {text}\n  {caret}"
        return message


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
