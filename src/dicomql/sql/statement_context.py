"""What the statement handlers (``mutations``, ``procedures``) use of the engine that runs them.

A Protocol, which :class:`dicomql.sql.engine.Engine` satisfies, so that the handlers name the few
things they need without importing the engine, which imports them to build its dispatch table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlglot import exp

    from dicomql.errors import ProgrammingError
    from dicomql.provider.client import Client
    from dicomql.provider.registry import Method, Registry, Resource
    from dicomql.sql.relational import Workspace


class StatementContext(Protocol):
    client: Client
    registry: Registry
    on_progress: Callable[[dict[str, Any]], None] | None

    def query(
        self, tree: exp.Expression, workspace: Workspace
    ) -> tuple[list[str], list[tuple[Any, ...]]]: ...

    def resource(self, table: exp.Table) -> Resource: ...

    def method_parameter_error(self, name: str, method: Method) -> ProgrammingError: ...
