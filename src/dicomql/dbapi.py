"""The PEP 249 (DB-API 2.0) interface: ``connect()`` → Connection → Cursor over the SQL engine.

Statements run against the API as they are executed; there are no transactions (the Cloud
Healthcare API has none), so ``commit`` does nothing and ``rollback`` is not supported.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Unpack

from dicomql.config import ConnectionConfig, ConnectOptions
from dicomql.errors import InterfaceError, NotSupportedError, ProgrammingError

if TYPE_CHECKING:
    import httpx

    from dicomql.sql.engine import Engine, Result

Description = tuple[str, "str | None", None, None, None, None, None]


class _TypeObject:
    """A PEP 249 type object: equal to each type code it stands for."""

    def __init__(self, *codes: str) -> None:
        self.codes = frozenset(codes)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _TypeObject):
            return self.codes == other.codes
        return other in self.codes

    def __hash__(self) -> int:
        return hash(self.codes)

    def __repr__(self) -> str:
        return f"<type {'|'.join(sorted(self.codes))}>"


# Type codes are the JSON types of the values in a column (the API speaks JSON).
STRING = _TypeObject("string")
NUMBER = _TypeObject("integer", "number")
BOOLEAN = _TypeObject("boolean")
JSON = _TypeObject("object", "array")
BINARY = _TypeObject("binary")
DATETIME = _TypeObject("datetime")
ROWID = _TypeObject("rowid")


def type_code(values: Iterator[Any]) -> str | None:
    """The JSON type of a column's first non-NULL value, or None if all are NULL."""
    for value in values:
        if value is None:
            continue
        if isinstance(value, bool):
            return "boolean"
        if isinstance(value, int):
            return "integer"
        if isinstance(value, float):
            return "number"
        if isinstance(value, dict):
            return "object"
        if isinstance(value, list | tuple):
            return "array"
        if isinstance(value, bytes):
            return "binary"
        return "string"
    return None


def connect(
    data_dir: str | os.PathLike[str] | None = None, **options: Unpack[ConnectOptions]
) -> Connection:
    """Open a connection to a DICOM store backend.

    Every setting but ``data_dir`` is a keyword (``config.ConnectOptions`` types them once for
    this function and ``ConnectionConfig.build``).

    Args:
        data_dir: run the embedded service over this directory (the default backend; also
            ``$DICOMQL_DATA_DIR``, else ``~/.local/share/dicomql``).
        endpoint: send requests to this Cloud Healthcare API base URL (``dicomql serve``).
        token: bearer token for ``endpoint`` (``dicomql serve --auth-token``).
        backend: ``"google"`` for Google's Cloud Healthcare API.
        credentials: a Google key file; without it, Application Default Credentials.
        database_url: the embedded service's index (PostgreSQL, say) instead of SQLite.
        page_limit: pages a list follows (20 by default; ``None``: all).
        variables: ``{{ name }}`` template values for every statement.
        timeout: seconds to wait for one HTTP exchange (60 by default).
        conformance: the embedded service's profile: ``"google"`` (the default) serves what
            Cloud Healthcare's DICOM conformance statement documents, ``"standard"`` also what
            PS3.18 requires beyond it.
        import_roots: folders the embedded service may read import and filter files from and
            write file-system exports to; the current directory by default (``dicomql serve``
            allows none unless given ``--import-root``).
        blob_url: where the embedded service keeps instance blobs: ``s3://bucket/prefix``,
            ``gs://bucket/prefix``, ``memory://prefix`` or a ``file://`` directory (also
            ``$DICOMQL_BLOB_URL``; ``dicomql serve --blob-url``); files in ``data_dir`` by
            default.
        workers: the embedded service's long-running-operation workers (``dicomql serve
            --workers``; 2 by default, 0 runs none in this process).

    Raises:
        InterfaceError: the arguments contradict each other.
        OperationalError: Google credentials could not be loaded.
    """
    config = ConnectionConfig.build(data_dir=data_dir, **options)
    if config.blob_url is not None:
        from dicomql.store.object_blobs import check_blob_url

        try:
            check_blob_url(config.blob_url)
        except ValueError as exc:
            raise InterfaceError(str(exc)) from exc
    return Connection(config)


class Connection:
    """A PEP 249 connection: one HTTP client, one engine."""

    def __init__(
        self,
        config: ConnectionConfig,
        *,
        http: httpx.Client | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        from dicomql.provider.backends import open_http
        from dicomql.provider.client import Client
        from dicomql.sql.engine import Engine

        self.config = config
        self._http = http if http is not None else open_http(config)
        self.engine: Engine = Engine(
            Client(self._http),
            page_limit=config.page_limit,
            on_progress=on_progress,
            # The embedded service's BigQuery stand-in (docs/operations.md), read by
            # "bq://project.dataset.table" tables in the same session.
            bigquery_dir=(
                config.data_dir / "bigquery"
                if config.backend == "embedded" and config.data_dir is not None
                else None
            ),
        )
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the HTTP client (and stop the embedded service, if it was started)."""
        if self._closed:
            return
        self._closed = True
        auth = self._http.auth
        self._http.close()
        close_auth = getattr(auth, "close", None)
        if close_auth is not None:
            close_auth()

    def commit(self) -> None:
        """Nothing to do: every statement takes effect when it is executed."""
        self._check_open()

    def rollback(self) -> None:
        """The Cloud Healthcare API has no transactions to roll back."""
        self._check_open()
        raise NotSupportedError("rollback: statements take effect at once; nothing to roll back")

    def cursor(self) -> Cursor:
        self._check_open()
        return Cursor(self)

    def execute(self, operation: str, parameters: Mapping[str, Any] | None = None) -> Cursor:
        """A new cursor that has executed ``operation`` (as sqlite3's shortcut)."""
        return self.cursor().execute(operation, parameters)

    def _check_open(self) -> None:
        if self._closed:
            raise InterfaceError("the connection is closed")

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class Cursor:
    """A PEP 249 cursor: executes one statement at a time and holds its rows."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.arraysize = 1
        self.description: list[Description] | None = None
        self.rowcount = -1
        self.message: str | None = None
        self._rows: list[tuple[Any, ...]] = []
        self._position = 0
        self._executed = False
        self._closed = False

    def execute(self, operation: str, parameters: Mapping[str, Any] | None = None) -> Cursor:
        """Run one statement; ``parameters`` fill its ``:name`` and ``{{ name }}`` places.

        Values are bound as literals, never spliced as SQL text.

        Raises:
            ProgrammingError: parameters are not a mapping, or the statement is wrong.
            ApiError: the API refused the call.
            TransportError: the API could not be reached.
        """
        self._check_open()
        if parameters is not None and not isinstance(parameters, Mapping):
            raise ProgrammingError(
                "parameters must be a mapping of names (paramstyle 'named': WHERE a = :a)"
            )
        variables = {**self.connection.config.variables, **(parameters or {})}
        self._reset()
        result = self.connection.engine.execute(
            operation, variables=variables, parameters=parameters
        )
        self._load(result)
        return self

    def executemany(self, operation: str, seq_of_parameters: Sequence[Mapping[str, Any]]) -> Cursor:
        """Run ``operation`` once per parameter mapping; ``rowcount`` is the total."""
        total = 0
        counted = False
        for parameters in seq_of_parameters:
            self.execute(operation, parameters)
            if self.rowcount >= 0:
                total += self.rowcount
                counted = True
        self.rowcount = total if counted else -1
        return self

    def _reset(self) -> None:
        self.description = None
        self.rowcount = -1
        self.message = None
        self._rows = []
        self._position = 0
        self._executed = False

    def _load(self, result: Result) -> None:
        self._executed = True
        self.message = result.message
        rows = [tuple(row) for row in result.rows]
        if result.columns:
            self.description = [
                (name, type_code(row[i] for row in rows), None, None, None, None, None)
                for i, name in enumerate(result.columns)
            ]
            self._rows = rows
        rowcount = result.rowcount
        self.rowcount = rowcount if rowcount is not None and rowcount >= 0 else len(rows)

    def fetchone(self) -> tuple[Any, ...] | None:
        self._check_result()
        if self._position >= len(self._rows):
            return None
        row = self._rows[self._position]
        self._position += 1
        return row

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        self._check_result()
        count = self.arraysize if size is None else size
        rows = self._rows[self._position : self._position + count]
        self._position += len(rows)
        return rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        self._check_result()
        rows = self._rows[self._position :]
        self._position = len(self._rows)
        return rows

    def close(self) -> None:
        self._closed = True
        self._rows = []

    def setinputsizes(self, sizes: object) -> None:
        """Accepted and ignored (PEP 249 allows it)."""

    def setoutputsize(self, size: object, column: object = None) -> None:
        """Accepted and ignored (PEP 249 allows it)."""

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        while (row := self.fetchone()) is not None:
            yield row

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise InterfaceError("the cursor is closed")
        self.connection._check_open()

    def _check_result(self) -> None:
        self._check_open()
        if not self._executed:
            raise ProgrammingError("no statement has been executed")
        if self.description is None:
            raise ProgrammingError("the last statement returned no rows")
