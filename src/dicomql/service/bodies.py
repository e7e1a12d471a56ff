"""Reading requests as Google's front end does: JSON bodies checked against the discovery
document's schemas (unknown fields and wrong types → 400), a size cap on bodies, and query
parameters checked against the method's declared parameters.

Messages follow the wording of Google's front end, e.g.
``Invalid JSON payload received. Unknown name "foo" at 'dicom_store': Cannot find field.``
Field paths in messages use proto (snake_case) names, as Google's do; bodies may spell fields
either way (proto3 JSON mapping) and come back normalised to the JSON (camelCase) names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from typing import Any

from starlette.requests import Request

from dicomql.google_api import discovery, type_url
from dicomql.service.errors import InvalidArgument, PayloadTooLarge
from dicomql.service.validation import snake_case

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


@cache
def _methods() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}

    def walk(resource: Mapping[str, Any]) -> None:
        for method in resource.get("methods", {}).values():
            found[method["id"]] = method
        for child in resource.get("resources", {}).values():
            walk(child)

    walk(discovery())
    return found


def method(method_id: str) -> dict[str, Any]:
    """A method of the discovery document by id, e.g. ``healthcare.projects.locations.get``."""
    return _methods()[method_id]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 once it exceeds ``limit`` bytes.

    Cloud Healthcare caps every request but STOW at 10 MB; the cap is checked against
    Content-Length first and then while streaming, so an oversized body is never buffered.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request payload size exceeds the limit: {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request payload size exceeds the limit: {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request, schema: str, field: str, limit: int) -> dict[str, Any]:
    """The body parsed as the discovery schema ``schema``; an empty body is an empty message.

    Args:
        request: the incoming request.
        schema: the discovery schema of the body, e.g. ``DicomStore``.
        field: the request message's field that holds the body (``dicom_store``), used in
            error messages; empty when the body is the whole request message.
        limit: the body size cap in bytes (``ServiceConfig.max_request_bytes``).

    Raises:
        PayloadTooLarge: the body exceeds ``limit``.
        InvalidArgument: malformed JSON, not an object, an unknown field or a wrong type.
    """
    raw = await read_body(request, limit)
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(
            f"Invalid JSON payload received. {exc.msg} at line {exc.lineno}, column {exc.colno}."
        ) from exc
    except (UnicodeDecodeError, RecursionError) as exc:
        raise InvalidArgument(
            "Invalid JSON payload received. The body is not UTF-8 encoded JSON."
        ) from exc
    except ValueError as exc:
        # Python refuses to convert integers of more than 4,300 digits (CVE-2020-10735).
        raise InvalidArgument(f"Invalid JSON payload received. {exc}.") from exc
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(
            'Invalid JSON payload received. Unknown name "": Root element must be a message.'
        )
    conformed: dict[str, Any] = _message(value, schema, field)
    return conformed


def _unknown(name: str, path: str) -> InvalidArgument:
    where = f" at '{path}'" if path else ""
    return InvalidArgument(
        f'Invalid JSON payload received. Unknown name "{name}"{where}: Cannot find field.'
    )


def _invalid_value(path: str, expected: str, value: Any) -> InvalidArgument:
    shown = json.dumps(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return InvalidArgument(
        f"Invalid JSON payload received. Invalid value at '{path}' ({expected}), {shown}"
    )


@cache
def _field_names(schema: str) -> dict[str, str]:
    properties = discovery()["schemas"][schema].get("properties", {})
    names = {snake_case(name): name for name in properties}
    names.update({name: name for name in properties})
    return names


def _message(value: dict[str, Any], schema: str, path: str) -> dict[str, Any]:
    properties = discovery()["schemas"][schema].get("properties", {})
    names = _field_names(schema)
    result: dict[str, Any] = {}
    for name, item in value.items():
        canonical = names.get(name)
        if canonical is None:
            raise _unknown(name, path)
        spec = properties[canonical]
        # proto3 JSON: null means "default"; output-only fields are ignored on input.
        if item is None or spec.get("readOnly"):
            continue
        child = f"{path}.{snake_case(canonical)}" if path else snake_case(canonical)
        converted = _value(item, spec, child)
        # proto3 JSON: a scalar, map or list field holding its default ("", false, 0, empty) is
        # indistinguishable from an absent one, and Google leaves it out of responses.
        if "$ref" not in spec and _is_default(converted, spec):
            continue
        result[canonical] = converted
    return result


def _is_default(value: Any, spec: Mapping[str, Any]) -> bool:
    if spec.get("type") == "string" and spec.get("format") in ("int64", "uint64"):
        return bool(value == "0")
    # 0 and 0.0 compare equal to False; "0" in a plain string field is a value, not a default.
    defaults: tuple[object, ...] = ("", False, [], {})
    return any(value == default for default in defaults)


def _value(value: Any, spec: Mapping[str, Any], path: str) -> Any:
    if "$ref" in spec:
        if not isinstance(value, dict):
            raise _invalid_value(path, type_url(spec["$ref"]), value)
        return _message(value, spec["$ref"], path)
    kind = spec.get("type")
    if kind == "array":
        if not isinstance(value, list):
            raise _invalid_value(
                path,
                "TYPE_MESSAGE" if "$ref" in spec["items"] else _scalar_type(spec["items"]),
                value,
            )
        return [_value(item, spec["items"], f"{path}[{i}]") for i, item in enumerate(value)]
    if kind == "object":
        if not isinstance(value, dict):
            raise _invalid_value(path, "TYPE_MESSAGE", value)
        entry = spec.get("additionalProperties")
        if entry is None:
            return value
        return {key: _value(item, entry, f"{path}[{key}]") for key, item in value.items()}
    if kind == "any":
        return value
    return _scalar(value, spec, path)


def _scalar_type(spec: Mapping[str, Any]) -> str:
    kind: str = spec.get("type", "")
    form: str | None = spec.get("format")
    if "enum" in spec:
        return "TYPE_ENUM"
    return {
        ("string", "int64"): "TYPE_INT64",
        ("string", "uint64"): "TYPE_UINT64",
        ("integer", "int32"): "TYPE_INT32",
        ("integer", "uint32"): "TYPE_UINT32",
        ("number", "double"): "TYPE_DOUBLE",
        ("number", "float"): "TYPE_FLOAT",
        ("boolean", None): "TYPE_BOOL",
    }.get((kind, form), "TYPE_BOOL" if kind == "boolean" else "TYPE_STRING")


def _scalar(value: Any, spec: Mapping[str, Any], path: str) -> Any:
    kind, form = spec.get("type"), spec.get("format")
    expected = _scalar_type(spec)
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        raise _invalid_value(path, expected, value)
    if (kind == "string" and form in ("int64", "uint64")) or kind == "integer":
        number = _integer(value)
        low, high = _INT32 if kind == "integer" else _INT64
        if form in ("uint32", "uint64"):
            low = 0
        if number is None or not low <= number <= high:
            raise _invalid_value(path, expected, value)
        return str(number) if kind == "string" else number
    if kind == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise _invalid_value(path, expected, value)
    if not isinstance(value, str):
        raise _invalid_value(path, expected, value)
    if "enum" in spec and value not in spec["enum"]:
        raise _invalid_value(path, expected, value)
    return value


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def query_params(request: Request, method_id: str) -> dict[str, Any]:
    """The method's query parameters, typed; unknown names and bad values → 400.

    Google's standard parameters (``alt``, ``fields``, ``prettyPrint``, ``$.xgafv`` …) are
    accepted and dropped: clients such as google-api-python-client always send ``alt=json``.
    """
    declared = method(method_id).get("parameters", {})
    standard = discovery().get("parameters", {})
    result: dict[str, Any] = {}
    for name, raw in request.query_params.multi_items():
        spec = declared.get(name)
        if spec is None or spec.get("location") != "query":
            if name in standard or (spec is not None and spec.get("location") == "path"):
                continue
            raise InvalidArgument(
                f'Invalid JSON payload received. Unknown name "{name}": Cannot bind query'
                f" parameter. Field '{name}' could not be found in request message."
            )
        parsed = _query_value(raw, spec, snake_case(name))
        if spec.get("repeated"):
            result.setdefault(name, []).append(parsed)
        else:
            result[name] = parsed
    return result


def _query_value(raw: str, spec: Mapping[str, Any], path: str) -> Any:
    kind = spec.get("type")
    if kind == "boolean":
        if raw in ("true", "false"):
            return raw == "true"
        raise InvalidArgument(f"Invalid value at '{path}' (TYPE_BOOL), \"{raw}\"")
    if kind == "integer":
        number = _integer(raw)
        if number is None or not _INT32[0] <= number <= _INT32[1]:
            raise InvalidArgument(f"Invalid value at '{path}' (TYPE_INT32), \"{raw}\"")
        return number
    return raw
