"""The planner: which API calls a statement needs. For each resource a SELECT names it picks the
method from the equality parameters in WHERE/ON (the most specific method whose required
parameters are all given) and rewrites the query to run over the fetched rows."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from dicomql.errors import ProgrammingError
from dicomql.provider.registry import Method, Registry, Resource, suggest
from dicomql.sql import metadata
from dicomql.sql.dialect import StackQL
from dicomql.sql.terms import conjuncts, is_literal, literal_value


@dataclass
class DependentParameter:
    """A parameter whose values come from another table's column (``ON s.datasetsId = d.id``):
    another scan, or a derived table materialised before this scan."""

    parameter: str
    table: str
    column: str
    scan: Scan | None = None
    alias: str = ""  # the other table's name in the statement
    # A metadata table's QIDO UID key fed by another table's UIDs (a UID list), not a path
    # parameter.
    qido: bool = False


@dataclass
class Scan:
    """One resource reference in a query, planned as one or more calls of ``method``."""

    resource: Resource
    method: Method
    params: dict[str, list[Any]]
    alias: str
    temp: str
    page_shape: bool = False
    # Every parameter the statement gave for this scan (also empty ones): row columns.
    given: dict[str, list[Any]] = field(default_factory=dict)
    dependent: list[DependentParameter] = field(default_factory=list)
    # Column names the statement uses of this table (columns even when no row has them).
    referenced: set[str] = field(default_factory=set)
    # A metadata table's QIDO search keys (studies, series, instances).
    qido: metadata.QidoPlan | None = None

    def calls(
        self, dependent_values: dict[str, list[Any]] | None = None
    ) -> Iterator[dict[str, Any]]:
        """The parameter sets to call ``method`` with: one per combination of values."""
        values = {**self.params, **(dependent_values or {})}
        names = list(values)
        for combination in itertools.product(*(values[n] for n in names)):
            yield dict(zip(names, combination, strict=True))


def resource_name(table: exp.Table) -> str:
    return ".".join(part.name for part in table.parts)


def table_resource(table: exp.Table, registry: Registry, ctes: set[str]) -> Resource | None:
    """The resource a FROM/JOIN table names, None for a CTE or subquery alias."""
    if not table.args.get("db"):
        if table.name in ctes:
            return None
        names = {r.name for r in registry.resources()}
        if table.name not in names:
            return None
    return registry.resource(resource_name(table))


def verb_methods(resource: Resource, verb: str) -> list[Method]:
    """The methods a SQL verb may use; SELECT on studies, series and instances is the store's
    QIDO search of that level (sql/metadata.py)."""
    search = metadata.search_method(resource) if verb == "select" else None
    return [search] if search is not None else resource.verb_methods(verb)


def all_parameters(resource: Resource, verb: str = "select") -> set[str]:
    return {p for m in verb_methods(resource, verb) for p in m.parameters}


def choose_method(resource: Resource, verb: str, given: set[str]) -> Method:
    """The most specific ``verb`` method whose required parameters are all in ``given``.

    Raises:
        ProgrammingError: none fits; the message names the missing parameters.
    """
    methods = verb_methods(resource, verb)
    if not methods:
        raise ProgrammingError(
            f"{resource.id} has no {verb.upper()} method; "
            f"its methods are {', '.join(resource.methods)} (use EXEC)"
        )
    fitting = [m for m in methods if set(m.required_parameters) <= given]
    if fitting:
        return max(fitting, key=lambda m: len(m.required_parameters))
    closest = min(methods, key=lambda m: len(set(m.required_parameters) - given))
    missing = [p for p in closest.required_parameters if p not in given]
    raise ProgrammingError(
        f"missing required parameter{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
        f"for {verb.upper()} on {resource.id} (method {closest.name})"
    )


def _page_fields(resource: Resource, method: Method) -> set[str]:
    """Top-level response fields that are not fields of a listed item (dicomStores, …)."""
    if not method.object_key or not method.response_schema:
        return set()
    page = {f.name for f in resource.registry.fields(method.response_schema)}
    return page - {f.name for f in resource.fields(method)}


def _select_scope_tables(select: exp.Select) -> list[exp.Table]:
    tables: list[exp.Table] = []
    from_ = select.args.get("from") or select.args.get("from_")
    if from_ is not None and isinstance(from_.this, exp.Table):
        tables.append(from_.this)
    for join in select.args.get("joins") or []:
        if isinstance(join.this, exp.Table):
            tables.append(join.this)
    return tables


def _alias(table: exp.Table) -> str:
    return table.alias_or_name


def plan_select(
    tree: exp.Expression,
    registry: Registry,
    derived: dict[str, str] | None = None,
    new_name: Callable[[], str] | None = None,
    *,
    copy: bool = True,
) -> tuple[exp.Expression, list[Scan]]:
    """Plan a query: returns the rewritten query (over temp tables) and the scans to fetch.

    Param equalities (``projectsId = 'p'``, ``datasetsId IN ('a', 'b')``) become call
    parameters and are removed from the query; the fetched rows carry them as columns.
    ``derived`` maps aliases of already materialised tables to their names; a JOIN equality
    with one of their columns feeds a parameter (one call per distinct value). ``copy=False``
    rewrites ``tree`` in place.
    """
    derived = derived or {}
    counter = itertools.count()
    new_name = new_name or (lambda: f"_scan_{next(counter)}")
    if copy:
        tree = tree.copy()
    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    scans: list[Scan] = []
    selects = [tree] if isinstance(tree, exp.Select) else []
    selects += [s for s in tree.find_all(exp.Select) if s is not tree]
    for select in selects:
        tables = [
            (table, resource)
            for table in _select_scope_tables(select)
            if (resource := table_resource(table, registry, ctes)) is not None
        ]
        if not tables:
            continue
        by_alias = {_alias(t): (t, r) for t, r in tables}
        terms = conjuncts(select.args.get("where"))
        for join in select.args.get("joins") or []:
            terms += conjuncts(join.args.get("on"))
        params: dict[str, dict[str, list[Any]]] = {alias: {} for alias in by_alias}
        joins: dict[str, list[tuple[str, str, str]]] = {alias: [] for alias in by_alias}
        sources = set(by_alias) | set(derived)
        for term in terms:
            _take_parameter(term, by_alias, params, joins, sources)
        _break_mutual_joins(by_alias, params, joins)
        local: dict[str, Scan] = {}
        for alias, (table, resource) in by_alias.items():
            given = {p for p, values in params[alias].items() if values != [""]}
            given |= {p for p, _, _ in joins[alias]}
            try:
                method = choose_method(resource, "select", given)
            except ProgrammingError as exc:
                raise ProgrammingError(f"{exc}{_why_missing(select, alias, resource)}") from exc
            accepted = set(method.parameters)
            page_fields = _page_fields(resource, method)
            referenced = {c.name for c in tree.find_all(exp.Column) if c.table in ("", alias)}
            scan = Scan(
                resource=resource,
                method=method,
                params={
                    p: v
                    for p, v in params[alias].items()
                    if p in accepted and v != [""] and v != [None]
                },
                alias=alias,
                temp=new_name(),
                page_shape=bool(page_fields & referenced),
                given=params[alias],
                referenced=referenced,
            )
            if resource.name in metadata.TABLES:
                star = any(
                    isinstance(e, exp.Star)
                    or (isinstance(e, exp.Column) and isinstance(e.this, exp.Star))
                    for e in select.expressions
                )
                only = len(by_alias) == 1 and not select.args.get("joins")
                scan.qido = metadata.plan_qido(select, alias, resource.name, referenced, star, only)
                if only and scan.qido.exact:
                    scan.qido.limit = metadata.pushed_limit(select)
            local[alias] = scan
            scans.append(scan)
            table.replace(
                exp.Table(
                    this=exp.to_identifier(scan.temp),
                    alias=exp.TableAlias(this=exp.to_identifier(alias)),
                )
            )
        for alias, dependencies in joins.items():
            for parameter, other, column in dependencies:
                if parameter in local[alias].params:
                    continue
                if other in local:
                    local[alias].dependent.append(
                        DependentParameter(
                            parameter, local[other].temp, column, local[other], other
                        )
                    )
                elif other in derived:
                    local[alias].dependent.append(
                        DependentParameter(parameter, derived[other], column, alias=other)
                    )
        _push_uid_joins(select, local)
    return tree, _ordered(scans)


def _push_uid_joins(select: exp.Select, local: dict[str, Scan]) -> None:
    """``ON se.StudyInstanceUID = st.StudyInstanceUID``: the series search gets the studies'
    UIDs as a QIDO UID list (PS3.18 10.6.1.2.3) instead of reading the whole store. The higher
    level feeds the lower; a table whose rows an outer join keeps is never narrowed."""
    joins = select.args.get("joins") or []
    if any(join.side in ("RIGHT", "FULL") for join in joins):
        return
    narrowable = {join.this.alias_or_name for join in joins if join.side == "LEFT"}
    any_left = bool(narrowable)
    terms = conjuncts(select.args.get("where"))
    for join in joins:
        terms += conjuncts(join.args.get("on"))
    levels = list(metadata.TABLES)
    for term in terms:
        if not (
            isinstance(term, exp.EQ)
            and isinstance(term.left, exp.Column)
            and isinstance(term.right, exp.Column)
        ):
            continue
        pairs = [(term.left, term.right), (term.right, term.left)]
        # The lower level (instances) is the one narrowed by the higher (studies).
        pairs.sort(
            key=lambda pair: (
                -levels.index(local[pair[0].table].resource.name)
                if pair[0].table in local and local[pair[0].table].qido is not None
                else 0
            )
        )
        for column, other in pairs:
            scan, source = local.get(column.table), local.get(other.table)
            if scan is None or source is None or scan is source or scan.qido is None:
                continue
            if column.name not in metadata.UID_KEYS or column.name in scan.qido.keys:
                continue
            if any_left and column.table not in narrowable:
                continue
            if _waits_on(source, scan) or any(d.qido for d in scan.dependent):
                continue
            scan.dependent.append(
                DependentParameter(column.name, source.temp, other.name, source, other.table, True)
            )
            break


def _waits_on(scan: Scan, other: Scan) -> bool:
    """Whether ``scan`` is fetched after ``other`` (it depends on it, maybe through others)."""
    return any(
        d.scan is other or (d.scan is not None and _waits_on(d.scan, other)) for d in scan.dependent
    )


def _can_choose(resource: Resource, given: set[str]) -> bool:
    return any(set(m.required_parameters) <= given for m in verb_methods(resource, "select"))


def _break_mutual_joins(
    by_alias: dict[str, tuple[exp.Table, Resource]],
    params: dict[str, dict[str, list[Any]]],
    joins: dict[str, list[tuple[str, str, str]]],
) -> None:
    """``ON st.dicomStoresId = s.dicomStoresId``: both sides are parameters. The side that can
    be called with its WHERE values alone (``dicom_stores.list``) is fetched first and feeds the
    other; the equality still joins the rows (their IDs come from each row's ``name``)."""
    literal = {a: {p for p, v in params[a].items() if v != [""]} for a in by_alias}
    for alias, (_, resource) in by_alias.items():
        for entry in list(joins[alias]):
            _, other, _ = entry
            if other not in by_alias or not any(o == alias for _, o, _ in joins[other]):
                continue
            if _can_choose(resource, literal[alias]) and not _can_choose(
                by_alias[other][1], literal[other]
            ):
                joins[alias].remove(entry)


def _why_missing(select: exp.Select, alias: str, resource: Resource) -> str:
    """Why a required parameter seems missing: it was filtered with something other than = or
    IN, or WHERE names a column that looks like it (``projectId``, ``projectsid``)."""
    parameters = all_parameters(resource)
    known = parameters | {
        f.name for m in resource.verb_methods("select") for f in resource.fields(m)
    }
    terms = conjuncts(select.args.get("where"))
    for join in select.args.get("joins") or []:
        terms += conjuncts(join.args.get("on"))
    reasons: list[str] = []
    for term in terms:
        for column in term.find_all(exp.Column):
            if column.table not in ("", alias):
                continue
            if column.name in parameters:
                reasons.append(
                    f"{column.name} is a parameter of the API call, given only by = or IN "
                    f"(not by {term.key.upper()}); filter the fetched rows on another column"
                )
            elif column.name not in known and (hint := suggest(column.name, parameters)):
                reasons.append(f"WHERE names '{column.name}'{hint}")
    return "".join(f"; {reason}" for reason in dict.fromkeys(reasons))


def _ordered(scans: list[Scan]) -> list[Scan]:
    """Scans a dependent scan reads from come first."""
    ordered: list[Scan] = []

    def visit(scan: Scan, seen: tuple[int, ...]) -> None:
        if scan in ordered:
            return
        if id(scan) in seen:
            feeds = ", ".join(
                f"{waiting.alias}.{d.parameter} from {d.scan.alias}.{d.column}"
                for waiting in scans
                if id(waiting) in seen
                for d in waiting.dependent
                if d.scan is not None
            )
            raise ProgrammingError(
                f"JOIN parameters wait on each other ({feeds}): each is a call parameter, known "
                "only once the other table is fetched; give one of them in WHERE, or join on a "
                "column the other table returns"
            )
        for dependency in scan.dependent:
            if dependency.scan is not None:
                visit(dependency.scan, (*seen, id(scan)))
        ordered.append(scan)

    for scan in scans:
        visit(scan, ())
    return ordered


def _take_parameter(
    term: exp.Expr,
    by_alias: dict[str, tuple[exp.Table, Resource]],
    params: dict[str, dict[str, list[Any]]],
    joins: dict[str, list[tuple[str, str, str]]],
    sources: set[str],
) -> None:
    """Record ``term`` as a call parameter if it is one; then drop it from the query."""
    if isinstance(term, exp.EQ):
        left, right = term.left, term.right
        if isinstance(right, exp.Column) and not isinstance(left, exp.Column):
            left, right = right, left
        if not isinstance(left, exp.Column):
            return
        if isinstance(right, exp.Column):
            _take_join_parameter(left, right, by_alias, joins, sources)
            _take_join_parameter(right, left, by_alias, joins, sources)
            return
        if not is_literal(right):
            return
        values = [literal_value(right)]
    elif isinstance(term, exp.In) and isinstance(term.this, exp.Column):
        items = term.expressions
        if not items or not all(is_literal(i) for i in items):
            return
        left, values = term.this, [literal_value(i) for i in items]
    else:
        return
    targets = _targets(left, by_alias)
    if not targets:
        return
    for alias in targets:
        params[alias][left.name] = values
    term.replace(exp.true())


def _take_join_parameter(
    column: exp.Column,
    other: exp.Column,
    by_alias: dict[str, tuple[exp.Table, Resource]],
    joins: dict[str, list[tuple[str, str, str]]],
    sources: set[str],
) -> None:
    if not column.table or not other.table or other.table not in sources:
        return
    for alias in _targets(column, by_alias):
        if alias != other.table:
            joins[alias].append((column.name, other.table, other.name))


def _targets(column: exp.Column, by_alias: dict[str, tuple[exp.Table, Resource]]) -> list[str]:
    """Aliases of the scope's resources that take ``column`` as a SELECT parameter."""
    candidates = [column.table] if column.table else list(by_alias)
    targets = []
    for alias in candidates:
        if alias not in by_alias:
            continue
        _, resource = by_alias[alias]
        if column.name in all_parameters(resource):
            targets.append(alias)
    return targets


def derived_feeding_parameters(tree: exp.Expression, registry: Registry) -> list[exp.Subquery]:
    """Aliased subqueries in FROM/JOIN whose columns a JOIN equality feeds into a resource
    parameter (``JOIN dicom_stores s ON s.datasetsId = d.id`` with ``d`` a subquery)."""
    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    found: list[exp.Subquery] = []
    for select in tree.find_all(exp.Select):
        from_ = select.args.get("from") or select.args.get("from_")
        items = [from_.this] if from_ is not None else []
        items += [join.this for join in select.args.get("joins") or []]
        subqueries = {i.alias: i for i in items if isinstance(i, exp.Subquery) and i.alias}
        resources = {
            _alias(i): r
            for i in items
            if isinstance(i, exp.Table) and (r := table_resource(i, registry, ctes)) is not None
        }
        if not subqueries or not resources:
            continue
        for join in select.args.get("joins") or []:
            for term in conjuncts(join.args.get("on")):
                if not isinstance(term, exp.EQ):
                    continue
                left, right = term.left, term.right
                if not (isinstance(left, exp.Column) and isinstance(right, exp.Column)):
                    continue
                for column, other in ((left, right), (right, left)):
                    resource = resources.get(column.table)
                    if (
                        resource is not None
                        and column.name in all_parameters(resource)
                        and other.table in subqueries
                        and subqueries[other.table] not in found
                    ):
                        found.append(subqueries[other.table])
    return found


def render(tree: exp.Expression) -> str:
    return tree.sql(dialect=StackQL, copy=False)
