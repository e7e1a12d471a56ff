"""EXEC and long-running operations: ``EXEC res.method @p='v' @@json='{…}'``, DICOMweb search
and store from SQL, and ``/*+ AWAIT */`` polling of Healthcare operations."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from dicomql.errors import ApiError, DataError, JSONValueError, ProgrammingError
from dicomql.google_api import Code
from dicomql.provider.registry import Method, Registry, suggest
from dicomql.sql import metadata, qido_keys, retrieved, stow_report, uploads
from dicomql.sql.dicom_rows import dicom_rows
from dicomql.sql.parser import Exec, Statement
from dicomql.sql.relational import Workspace
from dicomql.sql.responses import decode_data, dicom_accept, payload_of, warnings_of
from dicomql.sql.results import Result
from dicomql.sql.statement_context import StatementContext

# Pseudo-parameters of a DICOMweb EXEC: the Accept header, and a file to write the bytes to.
ACCEPT = "accept"
OUTPUT = "output"
FIRST_POLL_DELAY = 0.1
MAX_POLL_DELAY = 2.0


def finished(engine: StatementContext, operation: dict[str, Any]) -> dict[str, Any]:
    """Poll ``operations.get`` until ``operation`` is done; return the finished operation.

    The delay grows from 0.1 s to 2 s. ``engine.on_progress`` sees every poll's JSON.

    Raises:
        ApiError: the operation finished with an ``error`` (google.rpc.Status).
    """
    get = engine.registry.resource("google.healthcare.operations").method("get")
    delay = FIRST_POLL_DELAY
    while True:
        if engine.on_progress is not None:
            engine.on_progress(operation)
        if operation.get("done"):
            break
        time.sleep(delay)
        delay = min(delay * 1.5, MAX_POLL_DELAY)
        operation = engine.client.call(get, {"name": operation["name"]}).json()
    error = operation.get("error")
    if error:
        code = Code.of(int(error.get("code") or Code.UNKNOWN))  # no code, or OK: UNKNOWN
        message = str(error.get("message", "")) or f"operation {operation.get('name')} failed"
        raise ApiError(
            code.http_status,
            code.name,
            message + (f" ({counts})" if (counts := counters(operation, some=True)) else ""),
            details=list(error.get("details") or []),
        )
    return operation


def await_operation(engine: StatementContext, operation: dict[str, Any]) -> dict[str, Any]:
    """Poll until ``operation`` is done; return its ``response`` (see :func:`finished`)."""
    response: dict[str, Any] = finished(engine, operation).get("response") or {}
    return response


def counters(operation: dict[str, Any], *, some: bool = False) -> str:
    """``12 succeeded, 1 failed`` from OperationMetadata.counter (int64 strings), or ''
    (also for zero counts when ``some``)."""
    counter = (operation.get("metadata") or {}).get("counter") or {}
    if not counter:
        return ""
    success, failure = (int(counter.get(key) or 0) for key in ("success", "failure"))
    if some and not success + failure:
        return ""
    return f"{success} succeeded, {failure} failed"


def result_of_operation(
    engine: StatementContext, operation: dict[str, Any], statement: Statement, kind: str
) -> Result:
    """An operation's result: awaited (its response) under ``/*+ AWAIT */``, else itself."""
    if "AWAIT" not in statement.hints:
        result = one_row(operation, kind, message=f"operation {operation.get('name')} started")
        result.operations = [str(operation.get("name"))]
        return result
    final = finished(engine, operation)
    response: dict[str, Any] = dict(final.get("response") or {})
    response.pop("@type", None)
    # The final counters of an import, export or de-identify (a bare "done" said nothing).
    counts = counters(final)
    done = f"operation {operation.get('name')} done" + (f": {counts}" if counts else "")
    return one_row(response, kind, message=done)


def one_row(payload: dict[str, Any], kind: str, message: str | None = None) -> Result:
    if not payload:
        return Result([], [], 0, kind, message)
    columns = list(payload)
    row = tuple(json.dumps(v) if isinstance(v, dict | list) else v for v in payload.values())
    return Result(columns, [row], 1, kind, message)


def parse_body(text: str | None, what: str = "@@json") -> dict[str, Any]:
    """A request body from JSON text; top-level "" values are unset (StackQL templates)."""
    if text is None or not text.strip():
        return {}
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JSONValueError(what, text, exc.msg, exc.pos) from exc
    if not isinstance(body, dict):
        raise DataError(f"{what} must be a JSON object")
    return {k: v for k, v in body.items() if v != "" and v is not None}


def check_body_fields(registry: Registry, method: Method, body: dict[str, Any]) -> None:
    if not method.request_schema:
        if body:
            raise ProgrammingError(f"{method.resource}.{method.name} takes no request body")
        return
    known = {f.name for f in registry.fields(method.request_schema)}
    for name in body:
        if name not in known:
            raise ProgrammingError(
                f"unknown field '{name}' of {method.request_schema}{suggest(name, known)}"
            )


def exec_(engine: StatementContext) -> Callable[[Statement, Workspace], Result]:
    def run(statement: Statement, workspace: Workspace) -> Result:
        assert isinstance(statement, Exec)
        resource = engine.registry.resource(statement.resource)
        method = metadata.method_of(resource, statement.method)
        params: dict[str, Any] = {}
        extras: dict[str, Any] = {}
        for parameter in statement.parameters:
            target = params if parameter.name in method.parameters else extras
            target[parameter.name] = parameter.value
        missing = [p for p in method.required_parameters if params.get(p) in (None, "")]
        if missing:
            raise ProgrammingError(
                f"missing required parameter{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)} for {resource.id}.{method.name}"
            )
        body = parse_body(statement.body)
        if method.request_schema == "HttpBody":
            return _store(engine, method, params, extras, body)
        if extras and not (method.is_dicomweb and method.http_method == "GET"):
            name = next(iter(extras))
            raise engine.method_parameter_error(name, method)
        # A DICOMweb GET may choose its media type (rendered JPEG/PNG, frames as octet-stream,
        # PS3.18 8.7.3) and write what comes back to a file.
        accept = extras.pop(ACCEPT, None) if method.is_dicomweb else None
        output = extras.pop(OUTPUT, None) if method.is_dicomweb else None
        # DICOMweb GETs take QIDO keys and options as query parameters (PS3.18 10.6.1).
        for name in extras:
            qido_keys.check_key(name)
        params.update(extras)
        check_body_fields(engine.registry, method, body)
        response = engine.client.call(
            method,
            params,
            body or (None if method.http_method in ("GET", "DELETE") else {}),
            accept=str(accept) if accept else dicom_accept(method),
        )
        if output is not None:
            return retrieved.write_parts(response, Path(str(output)).expanduser())
        return _result(engine, method, response, statement)

    return run


def _result(
    engine: StatementContext, method: Method, response: httpx.Response, statement: Statement
) -> Result:
    payload = payload_of(response)
    if isinstance(payload, list):
        columns, objects = dicom_rows(payload)
        values = [tuple(row.get(c) for c in columns) for row in objects]
        warnings = [f"{method.name}: {text}" for text in warnings_of(response)]
        return Result(columns, values, len(values), "exec", warnings=warnings)
    if isinstance(payload, bytes):
        content_type = response.headers.get("content-type", "")
        return Result(["contentType", "size"], [(content_type, len(payload))], 1, "exec")
    if method.returns_operation and "name" in payload:
        if method.http_method == "GET" and "AWAIT" not in statement.hints:
            # Reading an operation (operations.get) starts none: nothing to say or wait for.
            return one_row(payload, "exec")
        return result_of_operation(engine, payload, statement, "exec")
    if method.object_key:
        items = payload.get(method.object_key) or []
        columns = list(dict.fromkeys(k for item in items for k in item))
        rows = [
            tuple(json.dumps(v) if isinstance(v := i.get(c), dict | list) else v for c in columns)
            for i in items
        ]
        return Result(columns, rows, len(rows), "exec")
    return one_row(payload, "exec", message=None if payload else "OK")


def _store(
    engine: StatementContext,
    method: Method,
    params: dict[str, Any],
    extras: dict[str, Any],
    body: dict[str, Any],
) -> Result:
    """store_instances: HttpBody bytes from @@json, or the DICOM files of @path."""
    path = extras.pop("path", None)
    if extras:
        raise engine.method_parameter_error(next(iter(extras)), method)
    rows: list[tuple[Any, ...]] = []
    error: str | None = None
    if path is not None:
        files = uploads.dicom_files(str(path))
        for batch in uploads.batches(files):
            boundary = uploads.new_boundary()
            response = engine.client.call(
                method,
                params,
                content=uploads.multipart_body(batch, boundary),
                content_type=uploads.multipart_content_type(boundary),
                accept="application/dicom+json",
                check=False,
            )
            rows += stow_report.store_rows(response, batch)
        stored = sum(1 for row in rows if row[0] == "stored")
        message = f"{stored} of {len(files)} files stored"
        failures = [row for row in rows if row[0] == "failed"]
        if failures:
            # Each failed file named on stderr, and the command fails (exit 1).
            lines = [f"  {row[1] or '(file unknown)'}: {row[5]} {row[6]}" for row in failures]
            error = f"{len(failures)} of {len(files)} files failed:\n" + "\n".join(lines)
    else:
        data = body.get("data")
        if not data:
            raise ProgrammingError(
                f"{method.resource}.{method.name} needs @path='file or folder' "
                'or @@json=\'{"contentType": …, "data": base64}\''
            )
        response = engine.client.call(
            method,
            params,
            content=decode_data(str(data)),
            content_type=str(body.get("contentType") or "application/dicom"),
            accept="application/dicom+json",
            check=False,
        )
        rows = stow_report.store_rows(response)
        message = None
    return Result(list(stow_report.COLUMNS), rows, len(rows), "exec", message, error)
