"""The StackQL dialect for sqlglot: SQLite's grammar (StackQL materialises responses in SQLite),
with StackQL's feature flags as class attributes."""

from __future__ import annotations

from sqlglot.dialects.sqlite import SQLite


class StackQL(SQLite):
    """StackQL's SQL: SQLite expressions over API resources named ``service.resource``.

    EXEC, SHOW and DESCRIBE are parsed by the hand-written front in :mod:`dicomql.sql.parser`;
    this dialect covers SELECT, INSERT, UPDATE and DELETE.
    """

    # Body fields of INSERT/UPDATE carry this prefix: data__labels is the body's "labels".
    DATA_PREFIX = "data__"
