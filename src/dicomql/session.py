"""Running SQL for a person at the command line (``exec`` and ``shell``): statements of a script
one by one, rows printed in the chosen format, messages and errors on stderr, dicomql errors
turned into click exceptions (the CLI's edge)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

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


def await_statement(operation: str) -> str:
    """The statement that waits for an operation by its name (``projects/…/operations/ID``)."""
    from dicomql.sql.engine import ids_from_name
    from dicomql.sql.templates import sql_literal

    parameters = ", ".join(f"@{k}={sql_literal(v)}" for k, v in ids_from_name(operation).items())
    return f"EXEC /*+ AWAIT */ google.healthcare.operations.get {parameters}"


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
        # Operations started without /*+ AWAIT */, and the one an AWAIT is polling now.
        self.started: list[str] = []
        self.awaiting: str | None = None
        # Table output as one block per row: "on", "off", or "auto" (when too wide for the
        # terminal), as psql's \x.
        self.expanded = "auto"

    def on_progress(self, operation: dict[str, Any]) -> None:
        """Each poll of an AWAIT: remember which operation it is, and draw the bar."""
        self.awaiting = None if operation.get("done") else str(operation.get("name") or "")
        if self.progress is not None:
            self.progress(operation)

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
        sessions: list[Session] = []
        try:
            connection = Connection(config, on_progress=lambda op: sessions[0].on_progress(op))
        except Error as exc:
            raise click.ClickException(error_message(exc)) from exc
        try:
            session = cls(connection, output, fail_fast=fail_fast, progress=progress)
            sessions.append(session)
            yield session
            session.finish_started()
        finally:
            connection.close()

    def finish_started(self) -> None:
        """On the embedded backend the operations run in this process: before it exits, wait
        for those started without AWAIT (Ctrl-C leaves them to resume with the next command)."""
        from dicomql.config import EMBEDDED

        if self.connection.config.backend != EMBEDDED:
            return
        for name in dict.fromkeys(self.started):
            click.echo(
                f"Waiting for operation {name}: on the embedded backend it runs in this process "
                "(Ctrl-C leaves it to resume with the next dicomql command on this data "
                "directory).",
                file=self.err,
            )
            try:
                self.run_script(await_statement(name))
            except KeyboardInterrupt:
                self._interrupted(name)
                raise SystemExit(130) from None

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
            except KeyboardInterrupt:
                # Ctrl-C: the statement is abandoned; an operation it awaited goes on.
                self._interrupted(self.awaiting)
                if self.fail_fast:
                    raise SystemExit(130) from None
                self.failures += 1
                return False
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
            self.awaiting = None
            self.started += result.operations
            self.show(result)
            if result.error:
                failure = ProgrammingError(result.error)
                message = result.error
                if len(pieces) > 1:
                    message = f"statement {number}: {message}"
                return self._fail(message, failure)
        return True

    def _expanded(self, result: Result) -> bool:
        """Expanded display: on, off, or auto — when a terminal is too narrow for the table."""
        if self.expanded != "auto":
            return self.expanded == "on"
        if not self.out.isatty():
            return False
        import shutil

        from dicomql.output import table_too_wide

        width = shutil.get_terminal_size().columns
        return table_too_wide(result.columns, result.rows, width)

    def _interrupted(self, operation: str | None) -> None:
        """Say what Ctrl-C left behind: the operation an AWAIT was polling keeps running."""
        if not operation:
            click.echo("Interrupted: the statement was cancelled.", file=self.err)
            return
        click.echo(
            f"Interrupted: operation {operation} goes on without waiting. Await it with:\n"
            f"  {await_statement(operation)};",
            file=self.err,
        )

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
            if self.output == "table" and self._expanded(result):
                from dicomql.output import write_expanded

                write_expanded(result.columns, result.rows, self.out)
            else:
                write(self.output, result.columns, result.rows, self.out)
            self.out.flush()
        if result.message:
            click.echo(result.message, file=self.err)
        for warning in result.warnings:
            click.echo(f"Warning: {warning}", file=self.err)
