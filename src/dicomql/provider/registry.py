"""The provider registry: StackQL resources and methods for google.healthcare, built from Google's
discovery document (the authority on paths, parameters and schemas) joined with StackQL's
resource → method → SQL-verb mapping (``_stackql.py``, generated)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dicomql import google_api
from dicomql.errors import ProgrammingError
from dicomql.provider._stackql import RESOURCES as STACKQL_RESOURCES

SERVICE = "google.healthcare"
SQL_VERBS = ("select", "insert", "update", "delete", "exec")

# Methods the StackQL document keeps in a separate resource but that users reach for on the
# store itself (the DICOM store metrics are a property of the store).
EXTRA_METHODS: dict[str, dict[str, dict[str, Any]]] = {
    "dicom_stores": {
        "get_dicomstore_metrics": {
            "http_method": "GET",
            "flat_path": "v1/projects/{projectsId}/locations/{locationsId}/datasets/"
            "{datasetsId}/dicomStores/{dicomStoresId}:getDICOMStoreMetrics",
            "object_key": None,
        },
    },
}

_FLAT_PARAM = re.compile(r"\{(\w+)\}")


def suggest(name: str, candidates: Iterable[str]) -> str:
    """A ``; did you mean 'x'?`` suffix naming the closest candidate, or ''."""
    options = list(candidates)
    lowered = {option.lower(): option for option in options}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f"; did you mean '{lowered[close[0]]}'?" if close else ""


def _normalise(name: str) -> str:
    """search_for_studies, searchForStudies and get_dicomstore_metrics meet on one spelling."""
    return name.replace("_", "").replace("-", "").lower()


@dataclass(frozen=True)
class Parameter:
    """One SQL-visible parameter of a method: a flat path segment or a query parameter."""

    name: str
    location: str  # "path" or "query"
    required: bool
    type: str = "string"
    format: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Field:
    """One field of a schema, as a column of a resource."""

    name: str
    type: str
    description: str = ""
    ref: str | None = None
    format: str | None = None

    @property
    def is_integer(self) -> bool:
        """int64 and uint64 travel as JSON strings (Google's JSON mapping) but are numbers."""
        return self.type == "string" and self.format in ("int64", "uint64")

    @property
    def type_name(self) -> str:
        """The type as DESCRIBE shows it: ``string (int64)`` for an int64 field."""
        return f"{self.type} ({self.format})" if self.is_integer else self.type

    @property
    def is_json(self) -> bool:
        """Objects and arrays travel as JSON text in rows and in ``data__`` literals."""
        return self.type in ("object", "array", "any")


@dataclass(frozen=True)
class Method:
    """A method of a resource: one HTTP call of the Cloud Healthcare API."""

    name: str
    resource: str
    id: str
    http_method: str
    path: str
    flat_path: str
    parameters: Mapping[str, Parameter]
    discovery_parameters: Mapping[str, Mapping[str, Any]]
    request_schema: str | None
    response_schema: str | None
    sql_verb: str
    object_key: str | None
    description: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def returns_operation(self) -> bool:
        return self.response_schema == "Operation"

    @property
    def required_parameters(self) -> list[str]:
        return [p.name for p in self.parameters.values() if p.required]

    @property
    def optional_parameters(self) -> list[str]:
        return [p.name for p in self.parameters.values() if not p.required]

    @property
    def is_dicomweb(self) -> bool:
        """DICOMweb methods answer with DICOM (JSON or binary), not a google.* message."""
        return "/dicomWeb" in self.flat_path


@dataclass(frozen=True)
class Resource:
    """A StackQL resource such as ``google.healthcare.dicom_stores``."""

    name: str
    service: str
    title: str
    methods: Mapping[str, Method]
    sql_verbs: Mapping[str, tuple[str, ...]]
    registry: Registry = field(repr=False, compare=False)

    @property
    def id(self) -> str:
        return f"{self.service}.{self.name}"

    def method(self, name: str) -> Method:
        """The method called ``name`` in either generation's spelling.

        Raises:
            ProgrammingError: no such method; the message suggests the closest name.
        """
        if name in self.methods:
            return self.methods[name]
        wanted = _normalise(name)
        for method in self.methods.values():
            if wanted in (_normalise(alias) for alias in (method.name, *method.aliases)):
                return method
        names = [*self.methods, *(a for m in self.methods.values() for a in m.aliases)]
        raise ProgrammingError(f"unknown method '{name}' of {self.id}{suggest(name, names)}")

    def verb_methods(self, verb: str) -> list[Method]:
        """Methods reachable by a SQL verb, most preferred first (StackQL's order)."""
        return [self.methods[name] for name in self.sql_verbs.get(verb, ())]

    def fields(self, method: Method) -> list[Field]:
        """Columns a SELECT through ``method`` yields: the item schema's fields for a list."""
        if method.response_schema is None:
            return []
        schema = method.response_schema
        if method.object_key:
            item = self.registry.field_of(schema, method.object_key)
            if item is not None and item.ref:
                schema = item.ref
        return self.registry.fields(schema)


class Registry:
    """Resources and methods of google.healthcare, generated from the discovery document."""

    def __init__(self, discovery: Mapping[str, Any]) -> None:
        self._discovery = discovery
        self._schemas: Mapping[str, Any] = discovery["schemas"]
        by_flat_path = {
            (m["httpMethod"], m["flatPath"]): m for m in _discovery_methods(discovery["resources"])
        }
        self._resources: dict[str, Resource] = {}
        for name, spec in STACKQL_RESOURCES.items():
            method_specs = {**spec["methods"], **EXTRA_METHODS.get(name, {})}
            verbs = {verb: tuple(names) for verb, names in spec["sql_verbs"].items()}
            verb_of = {m: verb for verb, names in verbs.items() for m in names}
            methods: dict[str, Method] = {}
            for method_name, method_spec in method_specs.items():
                discovered = by_flat_path.get(
                    (method_spec["http_method"], method_spec["flat_path"])
                )
                if discovered is None:
                    continue
                methods[method_name] = _method(
                    method_name,
                    f"{SERVICE}.{name}",
                    discovered,
                    verb_of.get(method_name, "exec"),
                    method_spec["object_key"],
                )
            self._resources[name] = Resource(
                name=name,
                service=SERVICE,
                title=spec["title"],
                methods=methods,
                sql_verbs=verbs,
                registry=self,
            )

    @classmethod
    def load(cls) -> Registry:
        """The registry of the packaged discovery document (``google_api/healthcare.v1.json``)."""
        return cls(google_api.discovery())

    @property
    def revision(self) -> str:
        return str(self._discovery.get("revision", ""))

    def services(self) -> list[str]:
        return [SERVICE]

    def resources(self, service: str = SERVICE) -> list[Resource]:
        if service != SERVICE:
            raise ProgrammingError(f"unknown service '{service}'{suggest(service, [SERVICE])}")
        return list(self._resources.values())

    def resource(self, name: str) -> Resource:
        """The resource called ``google.healthcare.name`` (or plain ``name``).

        Raises:
            ProgrammingError: no such resource; the message suggests the closest name.
        """
        service, _, short = name.rpartition(".")
        if service and service != SERVICE:
            raise ProgrammingError(f"unknown service '{service}'{suggest(service, [SERVICE])}")
        if short in self._resources:
            return self._resources[short]
        ids = [r.id for r in self._resources.values()]
        raise ProgrammingError(f"unknown resource '{name}'{suggest(name, ids)}")

    def schema(self, name: str) -> Mapping[str, Any]:
        return self._schemas.get(name, {})

    def fields(self, schema: str) -> list[Field]:
        properties = self.schema(schema).get("properties", {})
        return [_field(name, spec) for name, spec in properties.items()]

    def field_of(self, schema: str, name: str) -> Field | None:
        spec = self.schema(schema).get("properties", {}).get(name)
        if spec is None:
            return None
        if spec.get("type") == "array" and "$ref" in spec.get("items", {}):
            return Field(name, "array", spec.get("description", ""), spec["items"]["$ref"])
        return _field(name, spec)


def _field(name: str, spec: Mapping[str, Any]) -> Field:
    ref = spec.get("$ref")
    kind = "object" if ref else spec.get("type", "string")
    if kind == "array" and "$ref" in spec.get("items", {}):
        ref = spec["items"]["$ref"]
    return Field(name, kind, spec.get("description", ""), ref, spec.get("format"))


def _discovery_methods(resources: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    for resource in resources.values():
        yield from resource.get("methods", {}).values()
        yield from _discovery_methods(resource.get("resources", {}))


def _method(
    name: str, resource: str, spec: Mapping[str, Any], verb: str, object_key: str | None
) -> Method:
    flat_path = spec["flatPath"]
    parameters: dict[str, Parameter] = {
        p: Parameter(p, "path", True) for p in _FLAT_PARAM.findall(flat_path)
    }
    for p, p_spec in spec.get("parameters", {}).items():
        if p_spec.get("location") == "query":
            parameters[p] = Parameter(
                p,
                "query",
                bool(p_spec.get("required", False)),
                p_spec.get("type", "string"),
                p_spec.get("format"),
                p_spec.get("description", ""),
            )
    discovery_id: str = spec["id"]
    old_name = discovery_id.removeprefix("healthcare.").replace(".", "_")
    return Method(
        name=name,
        resource=resource,
        id=discovery_id,
        http_method=spec["httpMethod"],
        path=spec["path"],
        flat_path=flat_path,
        parameters=parameters,
        discovery_parameters=spec.get("parameters", {}),
        request_schema=spec.get("request", {}).get("$ref"),
        response_schema=spec.get("response", {}).get("$ref"),
        sql_verb=verb,
        object_key=object_key,
        description=spec.get("description", ""),
        aliases=(old_name, discovery_id.rsplit(".", 1)[1]),
    )
