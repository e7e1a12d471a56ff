"""Statements of the ingest's hot path, compiled once per dialect and run with little of
SQLAlchemy in between.

``Connection.execute`` of a Core statement cost ~17 µs of CPU on SQLite before the database saw
it (cache key, compiled-cache lookup, parameter processing, result and event set-up): ~8 times
what SQLite then spends on an UPDATE of one row by its primary key, and a C-STORE runs six to
eight such statements. A :class:`Prepared` statement keeps the SQL text each dialect compiled,
the order of its parameters and their bind processors (JSON text, SQLite's datetime text), and
runs it on the connection's DBAPI connection on SQLite (~2 µs), or with
``Connection.exec_driver_sql`` elsewhere (PostgreSQL: its disconnect handling stays
SQLAlchemy's). Rows come back as the driver gives them (tuples, no result processing): the
statements read back keys and text only.

Errors are SQLAlchemy's, as from ``Connection.execute`` (``IntegrityError`` on a collision,
``DataError``, ``OperationalError``), so callers retry and report them as before.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement


@dataclass(frozen=True)
class _Compiled:
    sql: str
    # Per parameter, in the order the SQL names them (positional) or in any order (named): its
    # name in the values, its name in the SQL text, and its bind processor.
    names: tuple[str, ...]
    sql_names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    literals: dict[str, Any]  # the statement's own values (``count + 1``)
    positional: bool


class Prepared:
    """A Core statement compiled once per dialect, run with :meth:`rows` or :meth:`run`.

    Args:
        statement: its parameters are bound (``bindparam``) or literals of the statement.
        keys: for an INSERT, the columns it sets (each execution gives every one of them);
            a column left out that has a Python-side default is an error here, as those are
            filled in by SQLAlchemy's execution, which a Prepared statement bypasses.
    """

    def __init__(self, statement: ClauseElement, *, keys: Sequence[str] | None = None) -> None:
        self._statement = statement
        self._keys = list(keys) if keys is not None else None
        self._forms: weakref.WeakKeyDictionary[Dialect, _Compiled] = weakref.WeakKeyDictionary()

    def rows(self, conn: Connection, values: Mapping[str, Any]) -> list[Sequence[Any]]:
        """Run it in ``conn``'s transaction; the rows it returns (none for most DML)."""
        dialect = conn.dialect
        form = self._forms.get(dialect) or self._compile(dialect)
        if form.literals:
            values = {**form.literals, **values}
        given = map(values.__getitem__, form.names)
        parameters: Any
        if form.positional:
            parameters = tuple(
                [
                    value if process is None else process(value)
                    for value, process in zip(given, form.processors, strict=True)
                ]
            )
        else:
            parameters = {
                name: value if process is None else process(value)
                for name, value, process in zip(form.sql_names, given, form.processors, strict=True)
            }
        if dialect.name != "sqlite":
            result = conn.exec_driver_sql(form.sql, parameters)
            return list(result.all()) if result.returns_rows else []
        cursor = sqlite_execute(conn, form.sql, parameters)
        return sqlite_fetchall(conn, cursor, form.sql, parameters) if cursor.description else []

    def run(self, conn: Connection, values: Mapping[str, Any]) -> None:
        """Run it in ``conn``'s transaction, for its effect."""
        self.rows(conn, values)

    def scalar(self, conn: Connection, values: Mapping[str, Any]) -> Any:
        """The first column of the first row it returns, None without one."""
        found = self.rows(conn, values)
        return found[0][0] if found else None

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled: Any = self._statement.compile(dialect=dialect, column_keys=self._keys)
        if compiled.insert_prefetch or compiled.update_prefetch:
            raise ValueError("a Prepared statement must be given every column with a default")
        positional = compiled.positiontup is not None
        named = {name: bind for bind, name in compiled.bind_names.items()}
        names = compiled.positiontup if positional else list(named)
        escaped = compiled.escaped_bind_names or {}
        binds = [named[name] for name in names]
        form = _Compiled(
            sql=str(compiled),
            names=tuple(names),
            sql_names=tuple(escaped.get(name, name) for name in names),
            processors=tuple(
                bind.type.dialect_impl(dialect).bind_processor(dialect) for bind in binds
            ),
            literals={
                name: bind.effective_value
                for name, bind in zip(names, binds, strict=True)
                if not bind.required
            },
            positional=positional,
        )
        self._forms[dialect] = form
        return form


class PreparedSelect(Prepared):
    """A SELECT that on SQLite runs as a :class:`Prepared` statement, its rows as the driver
    gives them, unless it has an expanding parameter (a list bound to ``IN``) or a column whose
    type converts what the driver returns; then, and on other databases, by
    ``Connection.execute``, as before (PostgreSQL's rows keep SQLAlchemy's typing).
    """

    def __init__(self, statement: Select[Any]) -> None:
        super().__init__(statement)
        self.statement = statement
        self.labels = [str(column.key) for column in statement.selected_columns]
        self._direct: weakref.WeakKeyDictionary[Dialect, bool] = weakref.WeakKeyDictionary()

    def select(
        self, conn: Connection, values: Mapping[str, Any]
    ) -> tuple[list[str], Sequence[Sequence[Any]]]:
        """Run it in ``conn``; its column labels and rows."""
        dialect = conn.dialect
        direct = self._direct.get(dialect)
        if direct is None:
            direct = self._direct[dialect] = self._runs_direct(dialect)
        if direct:
            return self.labels, self.rows(conn, values)
        result = conn.execute(self.statement, values)
        return list(result.keys()), result.all()

    def _runs_direct(self, dialect: Dialect) -> bool:
        if dialect.name != "sqlite":
            return False
        compiled: Any = self.statement.compile(dialect=dialect)
        if any(bind.expanding for bind in compiled.binds.values()):
            return False
        return all(
            column.type.dialect_impl(dialect).result_processor(dialect, None) is None
            for column in self.statement.selected_columns
        )


def sqlite_execute(conn: Connection, sql: str, parameters: Sequence[Any] = ()) -> Any:
    """``sql`` run on ``conn``'s sqlite3 connection (its cursor), failing with SQLAlchemy's
    errors as ``Connection.execute`` would (the original as ``orig``)."""
    try:
        return conn.connection.dbapi_connection.execute(sql, parameters)  # type: ignore[union-attr]
    except conn.dialect.loaded_dbapi.Error as error:
        raise exc.DBAPIError.instance(
            sql, parameters, error, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect
        ) from error


def sqlite_fetchall(conn: Connection, cursor: Any, sql: str, parameters: Sequence[Any]) -> Any:
    """The rest of ``cursor``'s rows, failing as :func:`sqlite_execute` does: SQLite computes
    the rows as they are fetched, so an interrupted or failing query may fail only here."""
    try:
        return cursor.fetchall()
    except conn.dialect.loaded_dbapi.Error as error:
        raise exc.DBAPIError.instance(
            sql, parameters, error, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect
        ) from error
