"""dicomql: query, deploy and manage DICOM stores with SQL.

The DB-API entry point is :func:`connect`; errors follow PEP 249 (see :mod:`dicomql.errors`).
"""

from __future__ import annotations

from dicomql._version import __version__
from dicomql.errors import (
    ApiError,
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    SQLSyntaxError,
    TransportError,
    Warning,
)

apilevel = "2.0"
threadsafety = 1
paramstyle = "named"


def connect(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
    """Open a DB-API connection; see :func:`dicomql.dbapi.connect`."""
    from dicomql.dbapi import connect as _connect

    return _connect(*args, **kwargs)  # type: ignore[arg-type]


__all__ = [
    "ApiError",
    "DataError",
    "DatabaseError",
    "Error",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "NotSupportedError",
    "OperationalError",
    "ProgrammingError",
    "SQLSyntaxError",
    "TransportError",
    "Warning",
    "__version__",
    "apilevel",
    "connect",
    "paramstyle",
    "threadsafety",
]
