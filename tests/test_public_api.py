"""The names ``import dicomql`` promises; adding or removing one is a deliberate change."""

from __future__ import annotations

from pathlib import Path

import dicomql


def test_public_names_are_pinned() -> None:
    assert dicomql.__all__ == [
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


def test_public_names_are_sorted_and_all_exist() -> None:
    assert dicomql.__all__ == sorted(dicomql.__all__)
    for name in dicomql.__all__:
        assert hasattr(dicomql, name), name


def test_errors_form_the_pep_249_tree() -> None:
    assert issubclass(dicomql.DatabaseError, dicomql.Error)
    assert issubclass(dicomql.InterfaceError, dicomql.Error)
    assert issubclass(dicomql.ApiError, dicomql.DatabaseError)
    assert issubclass(dicomql.SQLSyntaxError, dicomql.ProgrammingError)
    assert issubclass(dicomql.TransportError, dicomql.OperationalError)
    assert not issubclass(dicomql.Warning, dicomql.Error)


def test_connect_returns_a_dbapi_connection(tmp_path: Path) -> None:
    from dicomql import dbapi

    with dicomql.connect(data_dir=tmp_path / "data") as connection:
        assert isinstance(connection, dbapi.Connection)
        assert connection.cursor().execute("SHOW SERVICES").fetchall()[0][0] == (
            "google.healthcare"
        )
