"""Running SQL for a person at the command line (``exec`` and ``shell``): statements of a script
one by one, rows printed in the chosen format, messages and errors on stderr, dicomql errors
turned into click exceptions (the CLI's edge)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING

import click

from dicomql.errors import ApiError, Error, ProgrammingError

if TYPE_CHECKING:
    from dicomql.config import ConnectionConfig
    from dicomql.dbapi import Connection
    from dicomql.output import AwaitProgress
    from dicomql.sql.results import Result


def error_message(exc: Error) -> str:
    """One line for an API error (Google's code, status and message); a syntax error keeps
    its caret lines."""
    if isinstance(exc, ApiError):
        return f"{exc.code} {exc.status}: {exc.message}"
    return str(exc) or type(exc).__name__


class Session:
    """A connection plus how its results are printed.

    Args:
        connection: where statements run.
        output: one of :data:`dicomql.output.FORMATS`.
        out, err: rows go to ``out``; messages, progress and errors to ``err``.
        fail_fast: stop a script at its first error and raise (``exec``), or print the error
            and go on with the next input (``shell``).
    """

    def __init__(
        self,
        connection: Connection,
        output: str,
        *,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
        fail_fast: bool = True,
        progress: AwaitProgress | None = None,
    ) -> None:
        self.connection = connection
        self.output = output
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.fail_fast = fail_fast
        self.progress = progress
        # Statements that failed without stopping the session (the shell goes on).
        self.failures = 0

    @classmethod
    @contextmanager
    def open(
        cls, config: ConnectionConfig, output: str, *, fail_fast: bool = True
    ) -> Iterator[Session]:
        """A session on a new connection, closed on exit; a progress bar if stderr is a TTY."""
        from dicomql.dbapi import Connection

        progress = None
        if sys.stderr.isatty():
            from dicomql.output import AwaitProgress

            progress = AwaitProgress(sys.stderr)
        try:
            connection = Connection(config, on_progress=progress)
        except Error as exc:
            raise click.ClickException(error_message(exc)) from exc
        try:
            yield cls(connection, output, fail_fast=fail_fast, progress=progress)
        finally:
            connection.close()

    def run_script(self, text: str) -> bool:
        """Run each statement of ``text``; True if all succeeded.

        Raises:
            click.ClickException: a statement failed and ``fail_fast`` is set.
        """
        from dicomql.sql.lexer import position, split_statements

        try:
            pieces = split_statements(text)
        except Error as exc:
            # An unterminated string or comment: no statement can be cut out of the text.
            return self._fail(error_message(exc), exc)
        config = self.connection.config
        for number, (offset, piece) in enumerate(pieces, start=1):
            try:
                # Blank lines and spaces before the statement: the lines and columns its
                # errors name are the script's, not the statement's.
                line, column = position(text, offset)
                padded = "\n" * (line - 1) + " " * (column - 1) + piece
                result = self.connection.engine.execute(padded, variables=config.variables)
            except (Error, OSError) as exc:
                # OSError: a data dir or @path that cannot be read or written.
                message = error_message(exc) if isinstance(exc, Error) else str(exc)
                if len(pieces) > 1:
                    line, _ = position(text, offset + len(piece) - len(piece.lstrip()))
                    message = f"statement {number} (line {line}): {message}"
                return self._fail(message, exc)
            finally:
                if self.progress is not None:
                    self.progress.finish()
            self.show(result)
            if result.error:
                failure = ProgrammingError(result.error)
                message = result.error
                if len(pieces) > 1:
                    message = f"statement {number}: {message}"
                return self._fail(message, failure)
        return True

    def _fail(self, message: str, exc: BaseException) -> bool:
        """Raise (``fail_fast``) or print the error and count it."""
        if self.fail_fast:
            raise click.ClickException(message) from exc
        click.echo(f"Error: {message}", file=self.err)
        self.failures += 1
        return False

    def show(self, result: Result) -> None:
        """Print a result's rows (if it has columns) and its message."""
        from dicomql.output import write

        if result.columns:
            write(self.output, result.columns, result.rows, self.out)
            self.out.flush()
        if result.message:
            click.echo(result.message, file=self.err)
        for warning in result.warnings:
            click.echo(f"Warning: {warning}", file=self.err)
