"""Build, test and tear down a stack: stackql-deploy's flows over dicomql's SQL engine.

- build: per resource, in order: ``exists`` → ``create`` if absent, else ``statecheck`` →
  ``update`` (or ``createorupdate``) on drift → ``statecheck`` again → ``exports``.
- test: every ``statecheck`` (``exists`` where there is none); drift is reported, not fixed.
- teardown: exports are collected in order, then resources are deleted in reverse order.

Before anything runs, every query of every resource is rendered once with placeholder exports
(:meth:`StackRunner.preflight`), so a bad manifest fails before it changes anything.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from jinja2 import UndefinedError

from dicomql.deploy.manifest import Manifest, Resource
from dicomql.deploy.queries import (
    Query,
    QueryFile,
    check_anchors,
    check_passes,
    count_of,
    load_query_file,
    parse_queries,
    rows_of,
    split_statements,
)
from dicomql.deploy.render import MASK, Renderer
from dicomql.deploy.report import (
    ABSENT,
    APPLIED,
    CREATED,
    DELETED,
    DRIFTED,
    EXPORTED,
    IN_STATE,
    KEPT,
    RAN,
    SKIPPED,
    UNCHANGED,
    UNKNOWN,
    UPDATED,
    Outcome,
    Report,
    Reporter,
    SilentReporter,
)
from dicomql.errors import ApiError, DeployError, Error, ManifestError

PLACEHOLDER = "<evaluated>"

# Defaults for the checks after a change, where a cloud may be eventually consistent.
POST_DEPLOY_RETRIES = 3
POST_DEPLOY_RETRY_DELAY = 1


class StatementEngine(Protocol):
    """What the runner needs of :class:`dicomql.sql.engine.Engine`."""

    def execute(self, sql: str) -> Any: ...


class StackRunner:
    """Runs one stack in one environment against an engine.

    Args:
        manifest: the validated stack.
        stack_env: the environment name.
        engine: executes one SQL statement (``dicomql.sql.engine.Engine``).
        variables: ``-e KEY=VALUE`` values.
        dry_run: run only reads (``exists``, ``statecheck``, ``exports``); print the changes.
        show_queries: pass every rendered query to the reporter.
        reporter: receives progress.
        sleep: waits between retries (tests pass a no-op).
    """

    def __init__(
        self,
        manifest: Manifest,
        stack_env: str,
        engine: StatementEngine,
        *,
        variables: Mapping[str, str] | None = None,
        dry_run: bool = False,
        show_queries: bool = False,
        reporter: Reporter | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.manifest = manifest
        self.stack_env = stack_env
        self.engine = engine
        self.dry_run = dry_run
        self.show_queries = show_queries
        self.reporter: Reporter = reporter or SilentReporter()
        self.renderer = Renderer(manifest, stack_env, variables or {})
        self._sleep = sleep
        self._queries: dict[str, QueryFile] = {}
        self._context: dict[str, Any] = {}
        # Resource name → the earlier resources whose exports it uses.
        self.depends_on: dict[str, set[str]] = {}
        self._not_there: set[str] = set()

    # -- validation ---------------------------------------------------------------------------

    def preflight(self) -> None:
        """Load every query file and render every query with placeholder exports.

        Raises:
            ManifestError: a query file is missing or wrong, an anchor the resource type needs
                is missing, or a template names something undefined.
        """
        context = self.renderer.global_context()
        exporters: dict[str, str] = {}
        for resource in self.manifest.resources:
            queries = self._query_file(resource)
            check_anchors(resource, queries)
            names = self._names_used(resource, queries)
            self.depends_on[resource.name] = {exporters[n] for n in names if n in exporters}
            exporters.update({export.alias: resource.name for export in resource.exports})
            exporters[resource.name] = resource.name
            resource_context = self.renderer.resource_context(resource, context)
            resource_context["this"] = _Anything()
            for query in queries.queries.values():
                self.renderer.query(query, queries.path, resource_context)
            if resource.run is not None:
                self.renderer.text(resource.run, resource_context, resource=resource)
            if resource.condition is not None:
                self.renderer.condition(resource, resource_context)
            self._set_exports(resource, context, {e.column: PLACEHOLDER for e in resource.exports})

    def _names_used(self, resource: Resource, queries: QueryFile) -> set[str]:
        templates = [query.template for query in queries.queries.values()]
        templates += [text for text in (resource.condition, resource.run) if text]
        for prop in resource.props:
            values = prop.values.values() if prop.values is not None else [prop.value]
            templates += [text for value in values for text in _strings(value)]
        names: set[str] = set()
        for template in templates:
            names |= self.renderer.names_in(template)
        return names

    def _kept(self) -> dict[str, str]:
        """Resources teardown keeps: protected ones, and what they depend on (deleting a
        dataset would delete the protected DICOM store inside it)."""
        kept: dict[str, str] = {}
        for resource in reversed(self.manifest.resources):
            if resource.keep_on_teardown:
                kept.setdefault(resource.name, "protected")
            if resource.name in kept:
                for dependency in self.depends_on.get(resource.name, ()):
                    kept.setdefault(dependency, f"{resource.name} depends on it")
        return kept

    def _query_file(self, resource: Resource) -> QueryFile:
        if resource.name not in self._queries:
            if resource.type == "script":
                queries = QueryFile(resource.query_file, {})
            elif resource.sql is not None:
                anchor = "exports" if resource.type == "query" else "command"
                text = resource.sql
                if not text.lstrip().startswith("/*+"):
                    text = f"/*+ {anchor} */\n{text}"
                queries = parse_queries(text, resource.location.path)
            else:
                queries = load_query_file(resource.query_file)
            self._queries[resource.name] = queries
        return self._queries[resource.name]

    # -- the three commands -------------------------------------------------------------------

    def build(self) -> Report:
        """Create or update every resource so the stack matches the manifest."""
        self.preflight()
        report = self._report("build")
        self._context = self.renderer.global_context()
        for resource, context in self._resources(report):
            if resource.type == "resource":
                outcome = self._build_resource(resource, context)
            elif resource.type == "query":
                outcome = Outcome(resource.name, EXPORTED)
            elif resource.type == "command":
                outcome = self._run_command(resource, context)
            else:
                outcome = self._run_script(resource, context)
            if resource.type != "script":
                planned = self._would_create(outcome)
                self._export(resource, context, required=not planned, planned=planned)
            self._finish(report, outcome)
        report.exports = self._stack_exports()
        return report

    def test(self) -> Report:
        """Check every resource against the manifest; change nothing."""
        self.preflight()
        report = self._report("test")
        self._context = self.renderer.global_context()
        for resource, context in self._resources(report, tolerate_missing=True):
            try:
                if resource.type == "resource":
                    outcome = self._test_resource(resource, context)
                elif resource.type == "query":
                    outcome = Outcome(resource.name, EXPORTED)
                else:
                    outcome = Outcome(resource.name, SKIPPED, f"{resource.type}s are not tested")
                if outcome.action not in (ABSENT, SKIPPED):
                    self._export(resource, context, required=False)
            except _Missing as missing:
                outcome = Outcome(resource.name, UNKNOWN, self._missing_detail(resource, missing))
            self._finish(report, outcome)
        report.exports = self._stack_exports()
        return report

    def teardown(self) -> Report:
        """Delete the stack's resources in reverse order, keeping protected ones."""
        self.preflight()
        report = self._report("teardown")
        self._context = self.renderer.global_context()
        kept = self._kept()
        # Exports first, in build order: later resources' delete queries may need them.
        for resource, context in self._resources(None, tolerate_missing=True):
            if resource.type in ("resource", "query"):
                try:
                    found = self._export(resource, context, required=False)
                except _Missing:
                    found = False
                if not found:
                    self._not_there.add(resource.name)
        for resource in reversed(self.manifest.resources):
            if resource.type != "resource":
                continue
            try:
                context = self.renderer.resource_context(resource, self._context)
                if resource.condition is not None and not self.renderer.condition(
                    resource, context
                ):
                    self._finish(report, Outcome(resource.name, SKIPPED, "its 'if' is false"))
                    continue
                if resource.name in kept:
                    outcome = Outcome(resource.name, KEPT, kept[resource.name])
                else:
                    outcome = self._teardown_resource(resource, context)
            except _Missing as missing:
                outcome = Outcome(resource.name, ABSENT, self._missing_detail(resource, missing))
            except ManifestError as exc:
                # A prop needs an export of a resource that is gone: so is this one.
                if not isinstance(exc.__cause__, UndefinedError):
                    raise
                outcome = Outcome(resource.name, ABSENT, self._missing_detail(resource, exc))
            self._finish(report, outcome)
        return report

    # -- per-resource flows -------------------------------------------------------------------

    def _build_resource(self, resource: Resource, context: dict[str, Any]) -> Outcome:
        queries = self._queries[resource.name]
        name = resource.name
        apply = queries.get("createorupdate")
        if apply is not None and "exists" not in queries and "statecheck" not in queries:
            self._mutate(resource, apply, context, "applying")
            return Outcome(name, APPLIED, dry_run=self.dry_run)
        self.reporter.resource(resource, "checking")
        exists, in_state = self._exists(resource, context)
        if not exists:
            create = queries.get("create") or apply
            assert create is not None  # preflight checked
            self._mutate(resource, create, context, "creating")
            action = CREATED
        else:
            if in_state is None:
                in_state = self._statecheck(resource, context)
            if in_state:
                return Outcome(name, UNCHANGED)
            update = queries.get("update") or apply
            if update is None:
                raise DeployError(
                    f"{name}: it differs from the manifest and has no 'update' or "
                    "'createorupdate' query to fix it"
                )
            self._mutate(resource, update, context, "updating")
            action = UPDATED
        if self.dry_run:
            return Outcome(name, action, dry_run=True)
        self._confirm(resource, context, action)
        return Outcome(name, action)

    def _confirm(self, resource: Resource, context: dict[str, Any], action: str) -> None:
        """After a change: re-capture ``this`` and wait for the statecheck to pass."""
        queries = self._queries[resource.name]
        check = queries.get("statecheck") or queries.get("exists")
        if check is None:
            return
        retries = check.option("retries", POST_DEPLOY_RETRIES)
        delay = check.option("retry_delay", POST_DEPLOY_RETRY_DELAY)
        for attempt in range(max(retries, 1)):
            exists, in_state = self._exists(resource, context, quiet=attempt > 0)
            if exists and (in_state or self._statecheck(resource, context, quiet=attempt > 0)):
                return
            if attempt + 1 < retries:
                self._sleep(delay)
        found = self._troubleshoot(resource, context)
        raise DeployError(
            f"{resource.name}: still not in the desired state after it was {action} "
            f"({retries} checks)"
            + (f"; found {found}" if found else "")
            + "; the statecheck query was:\n"
            + self.renderer.mask(self._render(resource, check, context))
        )

    def _troubleshoot(self, resource: Resource, context: dict[str, Any]) -> str:
        """What the ``troubleshoot`` query finds, as ``column=value`` text (masked); a
        diagnostic only, so its own failure is reported in its place."""
        query = self._queries[resource.name].get("troubleshoot")
        if query is None:
            return ""
        try:
            rows = self._read(resource, query, context, quiet=True)
        except DeployError as exc:
            return f"nothing (the troubleshoot query failed: {str(exc).splitlines()[0]})"
        if not rows:
            return "no rows"
        text = "; ".join(
            ", ".join(f"{column}={_text(value)}" for column, value in row.items()) for row in rows
        )
        return self.renderer.mask(text)

    def _test_resource(self, resource: Resource, context: dict[str, Any]) -> Outcome:
        self.reporter.resource(resource, "checking")
        exists, in_state = self._exists(resource, context)
        if not exists:
            return Outcome(resource.name, ABSENT, "it does not exist")
        if in_state is None:
            in_state = self._statecheck(resource, context)
        if in_state:
            return Outcome(resource.name, IN_STATE)
        detail = "its statecheck does not match the manifest"
        found = self._troubleshoot(resource, context)
        return Outcome(resource.name, DRIFTED, f"{detail}; found {found}" if found else detail)

    def _teardown_resource(self, resource: Resource, context: dict[str, Any]) -> Outcome:
        queries = self._queries[resource.name]
        delete = queries.get("delete")
        if delete is None:
            return Outcome(resource.name, SKIPPED, "it has no delete query")
        self.reporter.resource(resource, "checking")
        exists, _ = self._exists(resource, context)
        if not exists:
            return Outcome(resource.name, ABSENT, "nothing to delete")
        self._mutate(resource, delete, context, "deleting")
        if self.dry_run:
            return Outcome(resource.name, DELETED, dry_run=True)
        check = queries.get("exists") or queries.get("statecheck")
        retries = check.option("postdelete_retries", POST_DEPLOY_RETRIES) if check else 1
        delay = check.option("postdelete_retry_delay", POST_DEPLOY_RETRY_DELAY) if check else 0
        for attempt in range(max(retries, 1)):
            still, _ = self._exists(resource, context, quiet=True)
            if not still:
                return Outcome(resource.name, DELETED)
            if attempt + 1 < retries:
                self._sleep(delay)
        raise DeployError(f"{resource.name}: still exists after its delete query ran")

    def _run_command(self, resource: Resource, context: dict[str, Any]) -> Outcome:
        command = self._queries[resource.name].get("command")
        if command is None:
            return Outcome(resource.name, EXPORTED)
        self._mutate(resource, command, context, "running")
        return Outcome(resource.name, RAN, dry_run=self.dry_run)

    def _run_script(self, resource: Resource, context: dict[str, Any]) -> Outcome:
        assert resource.run is not None
        script = self.renderer.text(resource.run, context, resource=resource)
        self.reporter.query(resource, "run", self.renderer.mask(script))
        if self.dry_run:
            self._set_exports(
                resource, self._context, {e.column: PLACEHOLDER for e in resource.exports}
            )
            return Outcome(resource.name, RAN, dry_run=True)
        self.reporter.resource(resource, "running")
        done = subprocess.run(
            script, shell=True, capture_output=True, text=True, check=False, timeout=3600
        )
        if done.returncode != 0:
            raise DeployError(
                f"{resource.name}: script exited with {done.returncode}: {done.stderr.strip()}"
            )
        if resource.exports:
            try:
                values = json.loads(done.stdout)
            except ValueError as exc:
                raise DeployError(
                    f"{resource.name}: a script with exports must print a JSON object"
                ) from exc
            if not isinstance(values, dict):
                raise DeployError(f"{resource.name}: the script printed JSON but not an object")
            self._set_exports(resource, self._context, values, strict=True)
        return Outcome(resource.name, RAN)

    # -- checks -------------------------------------------------------------------------------

    def _exists(
        self, resource: Resource, context: dict[str, Any], *, quiet: bool = False
    ) -> tuple[bool, bool | None]:
        """Whether the resource exists, and (when the statecheck stood in) whether it is in
        the desired state; ``None`` when that is still to be checked."""
        queries = self._queries[resource.name]
        exists = queries.get("exists")
        if exists is None:
            statecheck = queries.get("statecheck")
            if statecheck is None:
                return False, None
            passed = check_passes(self._read(resource, statecheck, context, quiet=quiet))
            return passed, passed if passed else None
        rows = self._read(resource, exists, context, quiet=quiet)
        if not rows:
            return False, None
        row = rows[0]
        count = count_of(row)
        if count is not None:
            return count > 0, None
        # stackql-deploy's capture mode: the columns become ``this.<column>``.
        if all(value in (None, "") for value in row.values()):
            return False, None
        context["this"] = dict(row)
        return True, None

    def _statecheck(
        self, resource: Resource, context: dict[str, Any], *, quiet: bool = False
    ) -> bool:
        statecheck = self._queries[resource.name].get("statecheck")
        if statecheck is None:
            return True
        return check_passes(self._read(resource, statecheck, context, quiet=quiet))

    # -- exports ------------------------------------------------------------------------------

    def _export(
        self, resource: Resource, context: dict[str, Any], *, required: bool, planned: bool = False
    ) -> bool:
        """Run the exports query and publish its columns; False if it found nothing.

        ``planned``: the resource would be created by a dry run; its exports are placeholders.
        """
        exports = self._queries[resource.name].get("exports")
        if exports is None or not resource.exports:
            if exports is not None and resource.type == "query":
                return bool(self._read(resource, exports, context))
            return True
        if planned:
            values: Mapping[str, Any] = {e.column: PLACEHOLDER for e in resource.exports}
            self.reporter.query(resource, "exports", self._render(resource, exports, context))
        else:
            rows = self._read(resource, exports, context)
            if len(rows) > 1:
                raise DeployError(
                    f"{resource.name}: the exports query returned {len(rows)} rows; it must "
                    "return one"
                )
            if not rows and self.dry_run and required:
                # It reads what an earlier resource would create: show placeholders.
                rows = [{e.column: PLACEHOLDER for e in resource.exports}]
            if not rows:
                if required:
                    raise DeployError(f"{resource.name}: the exports query returned no rows")
                return False
            values = rows[0]
        self._set_exports(resource, self._context, values, strict=True)
        return True

    def _set_exports(
        self,
        resource: Resource,
        target: dict[str, Any],
        values: Mapping[str, Any],
        *,
        strict: bool = False,
    ) -> None:
        scoped: dict[str, Any] = {}
        for export in resource.exports:
            if export.column not in values:
                if strict:
                    found = ", ".join(values) or "none"
                    raise DeployError(
                        f"{resource.name}: the exports query has no column '{export.column}' "
                        f"(columns: {found})"
                    )
                continue
            value = values[export.column]
            target[export.alias] = value
            scoped[export.alias] = value
            if export.alias in resource.masked and value != PLACEHOLDER:
                self.renderer.remember_secrets([value])
        if scoped and resource.name not in target:
            target[resource.name] = scoped
        elif scoped and isinstance(target.get(resource.name), dict):
            target[resource.name] = {**target[resource.name], **scoped}

    def _stack_exports(self) -> dict[str, Any]:
        """The manifest's stack outputs, protected values masked."""
        exports: dict[str, Any] = {}
        for name in self.manifest.exports:
            if name in self._context:
                value = self._context[name]
                masked = isinstance(value, str) and self.renderer.mask(value) != value
                exports[name] = MASK if masked else value
        return exports

    # -- running queries ----------------------------------------------------------------------

    def _render(self, resource: Resource, query: Query, context: Mapping[str, Any]) -> str:
        try:
            return self.renderer.query(query, self._queries[resource.name].path, context)
        except ManifestError as exc:
            # Preflight rendered every query, so an undefined name now is a missing export.
            if isinstance(exc.__cause__, UndefinedError):
                raise _Missing(f"needs {exc.__cause__}; is an earlier resource missing?") from exc
            raise

    def _read(
        self, resource: Resource, query: Query, context: Mapping[str, Any], *, quiet: bool = False
    ) -> list[dict[str, Any]]:
        """Run a read query (exists, statecheck, exports); NOT_FOUND reads as no rows."""
        sql = self._render(resource, query, context)
        if not quiet and (self.show_queries or self.dry_run):
            self.reporter.query(resource, query.anchor, self.renderer.mask(sql))
        if PLACEHOLDER in sql:
            # A dry run: it reads something an earlier resource would create; it is not there.
            return []
        rows: list[dict[str, Any]] = []
        for statement in split_statements(sql):
            try:
                rows = rows_of(self.engine.execute(statement))
            except ApiError as exc:
                # A get of something that is not there: Google answers 404 NOT_FOUND.
                if exc.code == 404:
                    rows = []
                    continue
                raise self._failed(resource, query, statement, exc) from exc
            except Error as exc:
                raise self._failed(resource, query, statement, exc) from exc
        return rows

    def _mutate(
        self, resource: Resource, query: Query, context: Mapping[str, Any], doing: str
    ) -> None:
        sql = self._render(resource, query, context)
        if self.show_queries or self.dry_run:
            self.reporter.query(resource, query.anchor, self.renderer.mask(sql))
        if self.dry_run:
            return
        self.reporter.resource(resource, doing)
        for statement in split_statements(sql):
            try:
                self.engine.execute(statement)
            except Error as exc:
                raise self._failed(resource, query, statement, exc) from exc

    def _failed(self, resource: Resource, query: Query, sql: str, exc: Error) -> DeployError:
        return DeployError(
            f"{resource.name}: the {query.anchor} query failed: {exc}\n{self.renderer.mask(sql)}"
        )

    # -- bookkeeping --------------------------------------------------------------------------

    def _report(self, command: str) -> Report:
        return Report(command, self.manifest.name, self.stack_env, dry_run=self.dry_run)

    def _resources(
        self, report: Report | None, *, tolerate_missing: bool = False
    ) -> Iterator[tuple[Resource, dict[str, Any]]]:
        """Each resource whose ``if`` holds, with its context."""
        for resource in self.manifest.resources:
            try:
                context = self.renderer.resource_context(resource, self._context)
                if resource.condition is not None and not self.renderer.condition(
                    resource, context
                ):
                    if report is not None:
                        self._finish(report, Outcome(resource.name, SKIPPED, "its 'if' is false"))
                    continue
            except ManifestError as exc:
                if tolerate_missing and isinstance(exc.__cause__, UndefinedError):
                    if report is not None:
                        detail = self._missing_detail(resource, str(exc.__cause__))
                        self._finish(report, Outcome(resource.name, UNKNOWN, detail))
                    continue
                raise
            yield resource, context

    def _finish(self, report: Report, outcome: Outcome) -> None:
        report.outcomes.append(outcome)
        if outcome.action in (ABSENT, UNKNOWN):
            self._not_there.add(outcome.resource)
        self.reporter.outcome(outcome)

    def _missing_detail(self, resource: Resource, reason: object) -> str:
        """Why a resource could not be checked: the earlier resources it needs are not there."""
        missing = sorted(self.depends_on.get(resource.name, set()) & self._not_there)
        if missing:
            return f"it depends on {', '.join(missing)}, which is not there"
        return str(reason)

    def _would_create(self, outcome: Outcome) -> bool:
        return outcome.dry_run and outcome.action in (CREATED, APPLIED, RAN)


class _Missing(DeployError):
    """A query needs an export that is not available (its resource does not exist)."""


class _Anything(dict[str, Any]):
    """``this`` during preflight: every column is a placeholder."""

    def __getattr__(self, name: str) -> str:
        return PLACEHOLDER

    def __getitem__(self, name: str) -> str:
        return PLACEHOLDER

    def __contains__(self, name: object) -> bool:
        return True


def _text(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "null" if value is None else str(value)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
