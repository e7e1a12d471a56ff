"""The SQL engine: runs StackQL statements against the Cloud Healthcare API through a
:class:`~dicomql.provider.client.Client` — templates filled, statement parsed, API calls
planned and made, and the rows shaped relationally in an in-memory SQLite workspace."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sqlglot import exp

from dicomql._version import __version__
from dicomql.config import DEFAULT_PAGE_LIMIT
from dicomql.errors import JSONValueError, ProgrammingError
from dicomql.provider.client import Client
from dicomql.provider.registry import Field, Method, Registry, Resource, suggest
from dicomql.sql import bigquery_tables, metadata, mutations, procedures
from dicomql.sql.dialect import StackQL
from dicomql.sql.dicom_rows import dicom_rows
from dicomql.sql.lexer import split_statements
from dicomql.sql.parser import Describe, Explain, Relational, Show, Statement, parse
from dicomql.sql.planner import (
    Scan,
    all_parameters,
    derived_feeding_parameters,
    plan_select,
    render,
)
from dicomql.sql.relational import Workspace
from dicomql.sql.responses import dicom_accept, payload_of, warnings_of
from dicomql.sql.results import Result
from dicomql.sql.templates import bind
from dicomql.sql.templates import render as render_template


class Engine:
    """Runs one statement at a time; holds no state between statements but its client.

    Args:
        client: the API client (its transport decides who answers).
        registry: resources and methods; the packaged discovery document by default.
        page_limit: list methods follow ``nextPageToken`` up to this many pages (None: all).
        on_progress: called with the operation JSON each time ``/*+ AWAIT */`` polls.
        search_page_size: QIDO ``limit`` of each page a metadata table reads.
        bigquery_dir: where the embedded service's BigQuery stand-in keeps its DuckDB files
            (``"bq://project.dataset.table"`` tables); None: not readable here.
    """

    def __init__(
        self,
        client: Client,
        registry: Registry | None = None,
        *,
        page_limit: int | None = DEFAULT_PAGE_LIMIT,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        search_page_size: int = metadata.PAGE_SIZE,
        bigquery_dir: Path | None = None,
    ) -> None:
        self.client = client
        self.search_page_size = search_page_size
        self.bigquery_dir = bigquery_dir
        self.registry = registry or Registry.load()
        self.page_limit = page_limit
        self.on_progress = on_progress
        self._handlers: dict[str, Callable[[Statement, Workspace], Result]] = {
            "select": self._select,
            "insert": mutations.insert(self),
            "update": mutations.update(self),
            "delete": mutations.delete(self),
            "exec": procedures.exec_(self),
            "show": self._show,
            "describe": self._describe,
            "explain": self._explain,
        }

    def execute(
        self,
        sql: str,
        variables: Mapping[str, Any] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> Result:
        """Run one statement.

        Args:
            sql: the statement; a trailing ``;`` is optional.
            variables: values of ``{{ name }}`` templates.
            parameters: values of DB-API ``:name`` placeholders.

        Raises:
            SQLSyntaxError: it does not parse.
            ProgrammingError: unknown resource/method/column, missing parameter.
            ApiError: the API answered with an error.
            TransportError: the API could not be reached.
        """
        pieces = split_statements(sql)
        if len(pieces) != 1:
            raise ProgrammingError(
                f"execute() takes one statement, got {len(pieces)}; use execute_script()"
            )
        return self._run(pieces[0][1], variables, parameters)

    def execute_script(
        self, text: str, variables: Mapping[str, Any] | None = None
    ) -> Iterator[Result]:
        """Run each statement of ``text`` (split on ``;`` outside quotes and comments)."""
        for _, piece in split_statements(text):
            yield self._run(piece, variables, None)

    def _run(
        self,
        text: str,
        variables: Mapping[str, Any] | None,
        parameters: Mapping[str, Any] | None,
    ) -> Result:
        filled = bind(render_template(text, variables), parameters)
        statement = parse(filled)
        with Workspace() as workspace:
            try:
                return self._handlers[statement.kind](statement, workspace)
            except JSONValueError as exc:
                raise exc.located(filled) from exc

    # --- SELECT ------------------------------------------------------------------------------

    def query(
        self, tree: exp.Expression, workspace: Workspace
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Plan ``tree``, fetch what it names into ``workspace`` and run it there."""
        tree = tree.copy()
        bigquery_tables.load_tables(tree, workspace, self.bigquery_dir)
        derived: dict[str, str] = {}
        # A subquery feeding a JOIN parameter is run first, so its values can be called with.
        for subquery in derived_feeding_parameters(tree, self.registry):
            columns, rows = self.query(subquery.this, workspace)
            temp = f"_derived_{workspace.next_id()}"
            workspace.load(
                temp,
                columns,
                [dict(zip(columns, r, strict=True)) for r in rows],
                label=f"subquery {subquery.alias}",
            )
            derived[subquery.alias] = temp
            subquery.replace(
                exp.Table(
                    this=exp.to_identifier(temp),
                    alias=exp.TableAlias(this=exp.to_identifier(subquery.alias)),
                )
            )
        rewritten, scans = plan_select(
            tree, self.registry, derived, lambda: f"_scan_{workspace.next_id()}", copy=False
        )
        for scan in scans:
            self._fetch(scan, workspace)
        return workspace.query(render(rewritten))

    def _select(self, statement: Statement, workspace: Workspace) -> Result:
        assert isinstance(statement, Relational)
        columns, rows = self.query(statement.tree, workspace)
        return Result(columns, rows, len(rows), "select", warnings=workspace.warnings)

    def _fetch(self, scan: Scan, workspace: Workspace) -> None:
        method, resource = scan.method, scan.resource
        dependent: dict[str, list[Any]] = {}
        uid_lists: list[dict[str, str]] = [{}]
        for dependency in scan.dependent:
            workspace.check_column(
                dependency.table, dependency.column, f"{dependency.alias}.{dependency.column}"
            )
            _, values = workspace.query(
                f'SELECT DISTINCT "{dependency.column}" FROM "{dependency.table}" '
                f'WHERE "{dependency.column}" IS NOT NULL'
            )
            found = [v for (v,) in values]
            if not dependency.qido:
                dependent[dependency.parameter] = found
            elif len(found) <= metadata.MAX_PUSHED_UIDS:
                # No UID: an empty list, no call (the join keeps nothing).
                dependent[f"\0{dependency.parameter}"] = found
                size = metadata.UIDS_PER_REQUEST
                uid_lists = [
                    {dependency.parameter: ",".join(map(str, found[i : i + size]))}
                    for i in range(0, len(found), size)
                ]
        fields: list[Field] = []
        if scan.page_shape:
            fields = self.registry.fields(method.response_schema or "")
        elif not method.is_dicomweb:
            fields = resource.fields(method)
        columns = [f.name for f in fields]
        integers = [f.name for f in fields if f.is_integer]
        rows: list[dict[str, Any]] = []
        empty = any(not v for v in dependent.values())
        dependent = {k: v for k, v in dependent.items() if not k.startswith("\0")}
        calls = [] if empty else [{**c, **u} for c in scan.calls(dependent) for u in uid_lists]
        # Path parameters the statement uses but the rows lack: read from each row's name.
        ids = [c for c in scan.referenced if c in all_parameters(resource) and c not in scan.given]
        for params in calls:
            if scan.qido is not None:
                params = {**scan.qido.query(), **params}
            # One statement naming the same call twice (a self-join, a subquery) calls once.
            key = (method.id, tuple(sorted((k, repr(v)) for k, v in params.items())))
            if key not in workspace.payloads:
                if scan.qido is not None:
                    pages = self.search_pages(
                        method, params, workspace.warnings, cap=scan.qido.limit
                    )
                else:
                    pages = self.pages(method, params, workspace.warnings)
                workspace.payloads[key] = list(pages)
            for payload in workspace.payloads[key]:
                if scan.qido is not None:
                    keep = None if scan.qido.includefield == "all" else scan.referenced
                    page_rows = list(metadata.typed_rows(payload, keep))
                else:
                    page_rows = self._page_rows(method, payload, scan.page_shape)
                for row in page_rows:
                    if ids and isinstance(row.get("name"), str):
                        for name, value in ids_from_name(row["name"]).items():
                            row.setdefault(name, value)
                    for name, values in scan.given.items():
                        row.setdefault(
                            name, params.get(name, values[0] if len(values) == 1 else None)
                        )
                    for name in dependent:
                        row.setdefault(name, params[name])
                    for name in integers:
                        row[name] = _integer(row.get(name))
                rows.extend(page_rows)
        seen = dict.fromkeys(columns)
        for row in rows:
            seen.update(dict.fromkeys(row))
        seen.update(dict.fromkeys(scan.given))
        seen.update(dict.fromkeys(dependent))
        seen.update(dict.fromkeys(ids))
        if scan.qido is not None:
            # Columns the statement names exist even when no match has them (NULL).
            seen.update(dict.fromkeys(sorted(c for c in scan.referenced if metadata.is_column(c))))
        workspace.load(scan.temp, list(seen), rows, label=resource.id)

    def search_pages(
        self,
        method: Method,
        params: dict[str, Any],
        warnings: list[str] | None = None,
        *,
        cap: int | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """QIDO pages (PS3.18 8.3.4.4 ``limit``/``offset``) until one says it is the last —
        shorter than asked and without ``Warning: 299 … additional results`` — or
        ``page_limit`` pages were read, or ``cap`` matches (a LIMIT the server can apply)."""
        offset = 0
        fetched = 0
        while True:
            size = self.search_page_size
            if cap is not None:
                size = min(size, cap - offset)
                if size <= 0:
                    return
            query = {**params, "limit": size}
            if offset:
                query["offset"] = offset
            response = self.client.call(method, query, accept="application/dicom+json")
            page = payload_of(response)
            page = page if isinstance(page, list) else []
            texts = warnings_of(response)
            more = any("additional results" in t for t in texts) or len(page) >= size
            if warnings is not None:
                warnings += [f"{method.name}: {t}" for t in texts if "additional results" not in t]
            yield page
            fetched += 1
            if not more or not page:
                return
            if self.page_limit is not None and fetched >= self.page_limit:
                if warnings is not None:
                    warnings.append(
                        f"{method.resource}.{method.name}: stopped after {fetched} pages of "
                        f"{self.search_page_size} (the page limit; --page-limit 0 follows all); "
                        "more results exist"
                    )
                return
            offset += len(page)

    def pages(
        self, method: Method, params: dict[str, Any], warnings: list[str] | None = None
    ) -> Iterator[Any]:
        """Each page's payload, following ``nextPageToken`` up to ``page_limit`` pages; a page
        cap reached with pages left, and a response's ``Warning: 299``, go to ``warnings``."""
        params = dict(params)
        follows = "pageToken" in method.parameters
        fetched = 0
        while True:
            response = self.client.call(method, params, accept=dicom_accept(method))
            if warnings is not None:
                warnings += [f"{method.name}: {text}" for text in warnings_of(response)]
            payload = payload_of(response)
            yield payload
            fetched += 1
            token = payload.get("nextPageToken") if isinstance(payload, dict) else None
            if not follows or not token:
                return
            if self.page_limit is not None and fetched >= self.page_limit:
                if warnings is not None:
                    warnings.append(
                        f"{method.resource}.{method.name}: stopped after {fetched} pages "
                        "(the page limit; --page-limit 0 follows all); more results exist"
                    )
                return
            params["pageToken"] = token

    def _page_rows(self, method: Method, payload: Any, page_shape: bool) -> list[dict[str, Any]]:
        if isinstance(payload, list):
            return dicom_rows(payload)[1]
        if not isinstance(payload, dict):
            return [{"contentType": "", "size": len(payload or b"")}]
        if page_shape or not method.object_key:
            return [dict(payload)] if payload else []
        return [dict(item) for item in payload.get(method.object_key) or []]

    def _explain(self, statement: Statement, workspace: Workspace) -> Result:
        """One row per planned table — its method, the request(s) it makes and what the server
        filters — and a last row with the query SQLite runs over the fetched rows."""
        assert isinstance(statement, Explain)
        tree = statement.query.tree.copy()
        derived = {}
        for subquery in derived_feeding_parameters(tree, self.registry):
            derived[subquery.alias] = f"subquery {subquery.alias}"
        rewritten, scans = plan_select(tree, self.registry, derived, copy=False)
        columns = ["step", "table", "method", "request", "server_filters", "relational"]
        rows: list[tuple[Any, ...]] = []
        for step, scan in enumerate(scans, start=1):
            rows.append(
                (
                    step,
                    f"{scan.resource.id} {scan.alias}",
                    f"{scan.method.resource}.{scan.method.name}",
                    "\n".join(_requests(scan, self.search_page_size)),
                    "; ".join(
                        [
                            f"{p} = {v[0]!r}" if len(v) == 1 else f"{p} IN {tuple(v)!r}"
                            for p, v in scan.params.items()
                        ]
                        + (scan.qido.pushed if scan.qido is not None else [])
                    ),
                    None,
                )
            )
        for table in tree.find_all(exp.Table):
            if table.name.startswith(bigquery_tables.PREFIX):
                where = self.bigquery_dir or "(only on the embedded backend)"
                read = f"read {table.name} from the BigQuery stand-in in {where}"
                rows.append((len(rows) + 1, table.name, "DuckDB", read, None, None))
        rows.append((len(rows) + 1, None, "SQLite", None, None, render(rewritten)))
        return Result(columns, rows, len(rows), "explain")

    # --- SHOW / DESCRIBE ---------------------------------------------------------------------

    def _show(self, statement: Statement, workspace: Workspace) -> Result:
        assert isinstance(statement, Show)
        columns, rows = _SHOWS[statement.what](self.registry, statement)
        if statement.like is not None:
            pattern = _like(statement.like)
            rows = [row for row in rows if pattern.fullmatch(str(row[0]))]
        return Result(columns, rows, len(rows), "show")

    def _describe(self, statement: Statement, workspace: Workspace) -> Result:
        assert isinstance(statement, Describe)
        resource = self.registry.resource(statement.resource)
        if resource.name in metadata.TABLES:
            rows: list[tuple[Any, ...]] = [
                (n, t, d) for n, t, d in metadata.describe(resource.name)
            ]
            return Result(["name", "type", "description"], list(rows), len(rows), "describe")
        columns = ["name", "type", "description"]
        if statement.extended:
            columns += ["schema", "method"]
        rows = []
        seen: set[str] = set()
        for method in resource.verb_methods("select") or list(resource.methods.values())[:1]:
            for f in resource.fields(method):
                if f.name in seen:
                    continue
                seen.add(f.name)
                row: tuple[Any, ...] = (f.name, f.type_name, f.description)
                if statement.extended:
                    row += (f.ref, method.name)
                rows.append(row)
        return Result(columns, rows, len(rows), "describe")

    # --- shared helpers ----------------------------------------------------------------------

    def resource(self, table: exp.Table) -> Resource:
        if not isinstance(table, exp.Table):
            # e.g. DELETE FROM (SELECT 1): an AttributeError before (tests/reliability/test_fuzz)
            given = table.sql(dialect=StackQL) if isinstance(table, exp.Expression) else repr(table)
            raise ProgrammingError(
                f"expected a resource such as google.healthcare.dicom_stores, got {given}"
            )
        name = ".".join(part.name for part in table.parts)
        return self.registry.resource(name)

    def method_parameter_error(self, name: str, method: Method) -> ProgrammingError:
        return ProgrammingError(
            f"unknown parameter '{name}' of {method.resource}.{method.name}"
            f"{suggest(name, method.parameters)}"
        )


Rows = tuple[list[str], list[tuple[Any, ...]]]


def _show_providers(registry: Registry, statement: Show) -> Rows:
    return ["name", "version"], [("google", f"v1 ({registry.revision})")]


def _show_version(registry: Registry, statement: Show) -> Rows:
    return ["version"], [(__version__,)]


def _show_services(registry: Registry, statement: Show) -> Rows:
    return ["name", "title", "version"], [
        (s, "Cloud Healthcare API", "v1") for s in registry.services()
    ]


def _show_resources(registry: Registry, statement: Show) -> Rows:
    resources = registry.resources(statement.target or "google.healthcare")
    return ["name", "id", "title"], [(r.name, r.id, r.title) for r in resources]


def _show_methods(registry: Registry, statement: Show) -> Rows:
    resource = registry.resource(statement.target or "")
    columns = ["MethodName", "RequiredParams", "SQLVerb"]
    if statement.extended:
        columns += ["OptionalParams", "Description"]
    rows = []
    search = metadata.search_method(resource)
    methods = list(resource.methods.values()) + ([search] if search is not None else [])
    for method in methods:
        verb = "select" if method is search else method.sql_verb
        row: tuple[Any, ...] = (
            method.name,
            ", ".join(method.required_parameters),
            verb.upper(),
        )
        if statement.extended:
            row += (", ".join(method.optional_parameters), method.description)
        rows.append(row)
    return columns, rows


def _show_insert(registry: Registry, statement: Show) -> Rows:
    """StackQL's INSERT template: the create method's parameters and body fields (only the
    required parameters under ``/*+ REQUIRED */``), each filled from a ``{{ name }}``."""
    resource = registry.resource(statement.target or "")
    methods = resource.verb_methods("insert")
    if not methods:
        raise ProgrammingError(f"{resource.id} has no INSERT method (use EXEC)")
    method = methods[0]
    required = "REQUIRED" in statement.hints
    names: list[tuple[str, str]] = [
        (p.name, p.type) for p in method.parameters.values() if p.required or not required
    ]
    if not required:
        names += [(f"data__{f.name}", f.type) for f in registry.fields(method.request_schema or "")]
    # Numbers and booleans unquoted, as StackQL writes them; objects travel as JSON text.
    values = [
        f"   {{{{ {name} }}}}"
        if kind in ("integer", "number", "boolean")
        else f"  '{{{{ {name} }}}}'"
        for name, kind in names
    ]
    text = (
        f"INSERT INTO {resource.id}(\n"
        + ",\n".join(f"  {name}" for name, _ in names)
        + "\n)\nSELECT\n"
        + ",\n".join(values)
        + "\n;"
    )
    return ["insert_statement"], [(text,)]


_SHOWS: dict[str, Callable[[Registry, Show], Rows]] = {
    "PROVIDERS": _show_providers,
    "VERSION": _show_version,
    "SERVICES": _show_services,
    "RESOURCES": _show_resources,
    "METHODS": _show_methods,
    "INSERT": _show_insert,
}


def _requests(scan: Scan, page_size: int) -> list[str]:
    """The requests a scan makes: one per combination of its values; a value another table
    gives shows as ``{alias.column}``, one request per distinct value."""
    from urllib.parse import urlencode

    method = scan.method
    placeholders = {
        d.parameter: [f"{{{d.alias}.{d.column},...}}" if d.qido else f"{{{d.alias}.{d.column}}}"]
        for d in scan.dependent
    }
    values = {**scan.params, **placeholders}
    query_extra = dict(scan.qido.query()) if scan.qido is not None else {}
    if scan.qido is not None:
        cap = scan.qido.limit
        query_extra["limit"] = str(page_size if cap is None else min(page_size, cap))
    names = list(values)
    requests = []
    for combination in itertools.product(*(values[n] for n in names)):
        params = dict(zip(names, combination, strict=True))
        path = _fill_path(method.flat_path, params)
        query = {
            k: v
            for k, v in params.items()
            if k not in method.parameters or (method.parameters[k].location == "query")
        }
        query.update(query_extra)
        requests.append(
            f"{method.http_method} /{path}" + (f"?{urlencode(query, safe='{},.')}" if query else "")
        )
    return requests


def _fill_path(template: str, params: Mapping[str, Any]) -> str:
    """``template`` with each ``{name}`` replaced by its parameter; unknown names stay."""
    return re.sub(r"\{(\w+)\}", lambda m: str(params.get(m.group(1), m.group(0))), template)


def ids_from_name(name: str) -> dict[str, str]:
    """``projects/p/locations/l/datasets/d/dicomStores/s`` → projectsId, locationsId,
    datasetsId, dicomStoresId: the flat path parameters a resource name spells.

    >>> ids_from_name("projects/p/locations/l/datasets/d")["datasetsId"]
    'd'
    """
    parts = name.split("/")
    return {f"{parts[i]}Id": parts[i + 1] for i in range(0, len(parts) - 1, 2)}


def _integer(value: Any) -> Any:
    """An int64 field's JSON string as a number, so it compares and sorts as one."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return value
    return value


def _like(pattern: str) -> re.Pattern[str]:
    """A SQL LIKE pattern as a case-insensitive regex (% any run, _ one character)."""
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.compile(regex, re.IGNORECASE | re.DOTALL)
