"""INSERT, UPDATE and DELETE: rows of ``data__`` fields and parameters become create, patch and
delete calls; RETURNING runs over the API's answer."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlglot import exp

from dicomql.errors import JSONValueError, ProgrammingError
from dicomql.provider.registry import Method, Resource, suggest
from dicomql.sql.dialect import StackQL
from dicomql.sql.parser import Relational, Statement
from dicomql.sql.planner import choose_method, conjuncts, is_literal, literal_value
from dicomql.sql.procedures import await_operation, one_row
from dicomql.sql.relational import Workspace
from dicomql.sql.results import Result
from dicomql.sql.statement_context import StatementContext

PREFIX = StackQL.DATA_PREFIX


def _unset(value: Any) -> bool:
    # An empty template value means "not set" (StackQL's documented templates).
    return value is None or value == ""


def split_row(
    engine: StatementContext, resource: Resource, verb: str, values: dict[str, Any]
) -> tuple[Method, dict[str, Any], dict[str, Any]]:
    """(method, params, body) for one row of ``data__`` fields and parameters."""
    data = {k[len(PREFIX) :]: v for k, v in values.items() if k.startswith(PREFIX)}
    params = {k: v for k, v in values.items() if not k.startswith(PREFIX)}
    method = choose_method(resource, verb, {k for k, v in params.items() if not _unset(v)})
    for name in params:
        if name not in method.parameters:
            fields = [PREFIX + f.name for f in engine.registry.fields(method.request_schema or "")]
            raise ProgrammingError(
                f"unknown column '{name}' for {verb.upper()} on {resource.id}"
                f"{suggest(name, [*method.parameters, *fields])}"
            )
    body: dict[str, Any] = {}
    schema = method.request_schema or ""
    for name, value in data.items():
        field = engine.registry.field_of(schema, name)
        if field is None:
            known = [PREFIX + f.name for f in engine.registry.fields(schema)]
            raise ProgrammingError(
                f"unknown column '{PREFIX}{name}' for {verb.upper()} on {resource.id}"
                f"{suggest(PREFIX + name, known)}"
            )
        if _unset(value):
            continue
        if field.is_json and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise JSONValueError(PREFIX + name, value, exc.msg, exc.pos) from exc
        body[name] = value
    return method, {k: v for k, v in params.items() if not _unset(v)}, body


def _call(
    engine: StatementContext,
    statement: Statement,
    method: Method,
    params: dict[str, Any],
    body: Any,
) -> tuple[dict[str, Any], str | None]:
    """Make the call; under /*+ AWAIT */ an operation's response replaces it."""
    response = engine.client.call(method, params, body)
    payload: dict[str, Any] = response.json() if response.content else {}
    if method.returns_operation and "AWAIT" in statement.hints:
        payload = await_operation(engine, payload)
        payload.pop("@type", None)
        return payload, None
    name = payload.get("name") if method.returns_operation else None
    return payload, name


def _returning(
    engine: StatementContext,
    workspace: Workspace,
    tree: exp.Expression,
    resource: Resource,
    payloads: list[dict[str, Any]],
) -> tuple[list[str], list[tuple[Any, ...]]]:
    returning = tree.args.get("returning")
    if returning is None:
        return [], []
    get = next(iter(resource.verb_methods("select")), None)
    columns = [f.name for f in resource.fields(get)] if get else []
    for payload in payloads:
        columns += [k for k in payload if k not in columns]
    workspace.load("_returned", columns, payloads, label=resource.id)
    projection = ", ".join(e.sql(dialect=StackQL) for e in returning.expressions)
    return workspace.query(f"SELECT {projection} FROM _returned")


def insert(engine: StatementContext) -> Callable[[Statement, Workspace], Result]:
    def run(statement: Statement, workspace: Workspace) -> Result:
        assert isinstance(statement, Relational)
        tree = statement.tree
        target = tree.this
        if not isinstance(target, exp.Schema) or not isinstance(target.this, exp.Table):
            raise ProgrammingError(
                "INSERT needs a column list: INSERT INTO res (data__field, param, …) SELECT …"
            )
        resource = engine.resource(target.this)
        names = [column.name for column in target.expressions]
        source = tree.expression
        if isinstance(source, exp.Values):
            _, rows = workspace.query(source.sql(dialect=StackQL))
        else:
            _, rows = engine.query(source, workspace)
        payloads, started = [], []
        for row in rows:
            if len(row) != len(names):
                raise ProgrammingError(
                    f"INSERT names {len(names)} columns but gives {len(row)} values"
                )
            method, params, body = split_row(
                engine, resource, "insert", dict(zip(names, row, strict=True))
            )
            payload, operation = _call(engine, statement, method, params, body)
            payloads.append(payload)
            if operation:
                started.append(operation)
        columns, returned = _returning(engine, workspace, tree, resource, payloads)
        message = f"{len(rows)} {resource.name} inserted"
        if started:
            message += "; operations started: " + ", ".join(started)
        result = Result(columns, returned, len(rows), "insert", message)
        result.operations = started
        return result

    return run


def where_parameters(tree: exp.Expression, resource: Resource) -> dict[str, Any]:
    """The ``param = literal`` terms of an UPDATE/DELETE WHERE clause (all must be)."""
    params: dict[str, Any] = {}
    for term in conjuncts(tree.args.get("where")):
        if (
            isinstance(term, exp.EQ)
            and isinstance(term.left, exp.Column)
            and is_literal(term.right)
        ):
            params[term.left.name] = literal_value(term.right)
            continue
        raise ProgrammingError(
            f"WHERE of UPDATE/DELETE on {resource.id} takes only parameter equalities "
            f"such as projectsId = 'p'; got {term.sql(dialect=StackQL)}"
        )
    return params


def update(engine: StatementContext) -> Callable[[Statement, Workspace], Result]:
    def run(statement: Statement, workspace: Workspace) -> Result:
        assert isinstance(statement, Relational)
        tree = statement.tree
        resource = engine.resource(tree.this)
        assignments = tree.expressions
        names = [a.left.name for a in assignments]
        projection = ", ".join(a.right.sql(dialect=StackQL) for a in assignments)
        _, (values,) = workspace.query(f"SELECT {projection}")
        row = dict(zip(names, values, strict=True))
        row.update(where_parameters(tree, resource))
        method, params, body = split_row(engine, resource, "update", row)
        if "updateMask" in method.parameters and not params.get("updateMask"):
            # Google's patch replaces only the fields named in updateMask; derive it from SET.
            params["updateMask"] = ",".join(body)
        if not body:
            raise ProgrammingError(f"UPDATE on {resource.id} sets no field (all are empty)")
        payload, _ = _call(engine, statement, method, params, body)
        columns, returned = _returning(engine, workspace, tree, resource, [payload])
        return Result(columns, returned, 1, "update", f"1 {resource.name} updated")

    return run


def delete(engine: StatementContext) -> Callable[[Statement, Workspace], Result]:
    def run(statement: Statement, workspace: Workspace) -> Result:
        assert isinstance(statement, Relational)
        tree = statement.tree
        resource = engine.resource(tree.this)
        params = where_parameters(tree, resource)
        method = choose_method(resource, "delete", {k for k, v in params.items() if not _unset(v)})
        for name in params:
            if name not in method.parameters:
                raise engine.method_parameter_error(name, method)
        response = engine.client.call(method, {k: v for k, v in params.items() if not _unset(v)})
        payload = response.json() if response.content else {}
        if method.returns_operation and payload.get("name"):
            if "AWAIT" in statement.hints:
                await_operation(engine, payload)
                return Result([], [], 1, "delete", f"operation {payload['name']} done")
            result = one_row(payload, "delete", f"operation {payload['name']} started")
            result.rowcount = 1
            result.operations = [payload["name"]]
            return result
        return Result([], [], 1, "delete", f"1 {resource.name} deleted")

    return run
