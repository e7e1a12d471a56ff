"""Stack manifests (``stackql_manifest.yml``, stackql-deploy's format): load, validate, model.

Every problem is reported before anything runs, as a :class:`~dicomql.errors.ManifestError`
naming the file, the line and column (PyYAML's marks), where in the document, and what is wrong.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from dicomql.errors import ManifestError

MANIFEST_FILE = "stackql_manifest.yml"
RESOURCES_DIR = "resources"

# stackql-deploy's resource types. ``resource`` has a create/update/delete lifecycle; ``query``
# only exports values; ``command`` runs a statement on every build; ``script`` runs a shell
# command whose JSON output is exported.
RESOURCE_TYPES = ("resource", "query", "command", "script")

_STR = "tag:yaml.org,2002:str"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Resource names become file names (resources/<name>.iql); stackql-deploy allows a path.
_RESOURCE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(/[A-Za-z_][A-Za-z0-9_\-]*)*$")


@dataclass(frozen=True)
class Location:
    """Where something was written: a file, 1-based line and column."""

    path: Path
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Variable:
    """A global or a resource property: one value, or one per environment (``values``)."""

    name: str
    location: Location
    where: str = ""
    value: Any = None
    values: Mapping[str, Any] | None = None
    description: str = ""
    # Masked wherever it is printed (stackql-deploy's ``global.protected``/``prop.protected``).
    protected: bool = False

    def value_for(self, stack_env: str) -> Any:
        """The (unrendered) value in ``stack_env``.

        Raises:
            ManifestError: the property has per-environment values but none for ``stack_env``.
        """
        if self.values is None:
            return self.value
        if stack_env not in self.values:
            known = ", ".join(sorted(self.values)) or "none"
            raise ManifestError(
                f"no value for environment '{stack_env}' (values are given for: {known})",
                path=str(self.location.path),
                line=self.location.line,
                column=self.location.column,
                where=self.where or self.name,
            )
        return self.values[stack_env]


@dataclass(frozen=True)
class Export:
    """One exported column: ``column`` of the exports query, stored as variable ``alias``."""

    column: str
    alias: str


@dataclass(frozen=True)
class Resource:
    """One resource of the stack, processed in manifest order (torn down in reverse)."""

    name: str
    location: Location
    type: str = "resource"
    description: str = ""
    file: Path | None = None
    props: tuple[Variable, ...] = ()
    exports: tuple[Export, ...] = ()
    # Export names whose values are masked in output (stackql-deploy's ``protected`` list).
    masked: frozenset[str] = frozenset()
    # ``protected: true`` or stackql-deploy's ``skip_on_delete: true``: teardown keeps it.
    keep_on_teardown: bool = False
    condition: str | None = None
    sql: str | None = None
    run: str | None = None

    @property
    def query_file(self) -> Path:
        """The ``.iql`` file holding this resource's anchored queries."""
        if self.file is not None:
            return self.location.path.parent / RESOURCES_DIR / self.file
        return self.location.path.parent / RESOURCES_DIR / f"{self.name}.iql"


@dataclass(frozen=True)
class Manifest:
    """A whole stack: its name, globals and resources, in order."""

    path: Path
    name: str
    version: int = 1
    description: str = ""
    providers: tuple[str, ...] = ()
    globals: tuple[Variable, ...] = ()
    resources: tuple[Resource, ...] = ()
    # Stack outputs printed after a build or test (stackql-deploy's top-level ``exports``).
    exports: tuple[str, ...] = ()
    masked_globals: frozenset[str] = field(default_factory=frozenset)

    @property
    def stack_dir(self) -> Path:
        return self.path.parent


def load_manifest(stack_dir: Path | str) -> Manifest:
    """Load and validate ``STACK_DIR/stackql_manifest.yml``.

    Raises:
        ManifestError: the file is missing, is not YAML, or breaks a rule of the format.
    """
    stack_dir = Path(stack_dir)
    path = stack_dir / MANIFEST_FILE
    if not stack_dir.is_dir():
        raise ManifestError(f"stack directory {stack_dir} does not exist")
    if not path.is_file():
        raise ManifestError(f"{MANIFEST_FILE} not found in {stack_dir}", path=str(path))
    return parse_manifest(path.read_text(encoding="utf-8"), path)


def parse_manifest(text: str, path: Path) -> Manifest:
    """Validate manifest ``text`` (read from ``path``) into a :class:`Manifest`."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ManifestError(
            f"not valid YAML: {exc.problem or exc}",
            path=str(path),
            line=mark.line + 1 if mark else 0,
            column=mark.column + 1 if mark else 0,
        ) from exc
    if root is None:
        raise ManifestError("the manifest is empty", path=str(path))
    return _Reader(path).manifest(root)


class _Reader:
    """Walks the composed YAML node tree so every error can point at its line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._constructor = yaml.SafeLoader("")

    # -- primitives ---------------------------------------------------------------------------

    def location(self, node: Node) -> Location:
        return Location(self.path, node.start_mark.line + 1, node.start_mark.column + 1)

    def fail(self, node: Node, where: str, message: str) -> NoReturn:
        raise ManifestError(
            message,
            path=str(self.path),
            line=node.start_mark.line + 1,
            column=node.start_mark.column + 1,
            where=where,
        )

    def mapping(
        self,
        node: Node,
        where: str,
        *,
        allowed: tuple[str, ...],
        required: tuple[str, ...] = (),
    ) -> dict[str, tuple[Node, Node]]:
        """The keys of a mapping node, each with its key and value nodes."""
        if not isinstance(node, MappingNode):
            self.fail(node, where, f"expected a mapping, found {_kind(node)}")
        written: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == _STR:
                if key_node.value in written:
                    self.fail(key_node, where, f"'{key_node.value}' is given twice")
                written.add(key_node.value)
        # YAML merge keys (``<<: *base``) put the merged pairs first; written keys win.
        self._constructor.flatten_mapping(node)
        entries: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag != _STR:
                self.fail(key_node, where, "keys must be strings")
            key = key_node.value
            if key not in allowed:
                self.fail(key_node, where, _unknown_key(key, allowed))
            entries[key] = (key_node, value_node)
        for key in required:
            if key not in entries:
                self.fail(node, where, f"'{key}' is required")
        return entries

    def string(self, node: Node, where: str) -> str:
        if not isinstance(node, ScalarNode) or node.tag == "tag:yaml.org,2002:null":
            self.fail(node, where, f"expected a string, found {_kind(node)}")
        return str(node.value)

    def boolean(self, node: Node, where: str) -> bool:
        value = self.plain(node)
        if not isinstance(value, bool):
            self.fail(node, where, f"expected true or false, found {_kind(node)}")
        return value

    def name(self, node: Node, where: str, pattern: re.Pattern[str] = _NAME) -> str:
        name = self.string(node, where)
        if not pattern.match(name):
            self.fail(
                node,
                where,
                f"'{name}' is not a valid name (letters, digits and _, not starting with a digit)",
            )
        return name

    def sequence(self, node: Node, where: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            self.fail(node, where, f"expected a list, found {_kind(node)}")
        return list(node.value)

    def plain(self, node: Node) -> Any:
        """The Python value of any node (templates stay strings until rendered)."""
        return self._constructor.construct_document(node)

    # -- the document -------------------------------------------------------------------------

    def manifest(self, root: Node) -> Manifest:
        top = self.mapping(
            root,
            "manifest",
            allowed=(
                "version",
                "name",
                "description",
                "providers",
                "globals",
                "resources",
                "exports",
            ),
            required=("name", "resources"),
        )
        version = 1
        if "version" in top:
            version_node = top["version"][1]
            version = self.plain(version_node)
            if version != 1:
                self.fail(version_node, "version", f"unsupported version {version!r} (only 1)")
        name = self.string(top["name"][1], "name")
        if not name.strip():
            self.fail(top["name"][1], "name", "the stack name is empty")
        providers: list[str] = []
        if "providers" in top:
            for index, item in enumerate(self.sequence(top["providers"][1], "providers")):
                provider = self.string(item, f"providers[{index}]")
                # stackql-deploy pins versions as ``google::v24.11.00267``.
                if provider.split("::")[0] != "google":
                    self.fail(
                        item,
                        f"providers[{index}]",
                        f"dicomql deploys with the google provider only, not '{provider}'",
                    )
                providers.append(provider)
        globals_: list[Variable] = []
        if "globals" in top:
            for index, item in enumerate(self.sequence(top["globals"][1], "globals")):
                globals_.append(self.variable(item, f"globals[{index}]", allow_values=False))
            self._no_duplicates(globals_, "globals")
        resources: list[Resource] = []
        for index, item in enumerate(self.sequence(top["resources"][1], "resources")):
            resources.append(self.resource(item, f"resources[{index}]"))
        self._no_duplicates(resources, "resources", noun="resource ")
        exports: tuple[str, ...] = ()
        if "exports" in top:
            exports = tuple(
                self.name(item, f"exports[{index}]")
                for index, item in enumerate(self.sequence(top["exports"][1], "exports"))
            )
        return Manifest(
            path=self.path,
            name=name,
            version=version,
            description=self._optional_string(top, "description", "description"),
            providers=tuple(providers),
            globals=tuple(globals_),
            resources=tuple(resources),
            exports=exports,
            masked_globals=frozenset(item.name for item in globals_ if item.protected),
        )

    def variable(self, node: Node, where: str, *, allow_values: bool) -> Variable:
        allowed: tuple[str, ...] = ("name", "value", "description", "protected")
        if allow_values:
            allowed += ("values",)
        where = _named(node, where)
        entries = self.mapping(node, where, allowed=allowed, required=("name",))
        name = self.name(entries["name"][1], f"{where}.name")
        has_value = "value" in entries
        has_values = "values" in entries
        if has_value and has_values:
            self.fail(node, where, "give either 'value' or 'values', not both")
        if not has_value and not has_values:
            need = "'value' or 'values'" if allow_values else "'value'"
            self.fail(node, where, f"{need} is required")
        values: dict[str, Any] | None = None
        if has_values:
            values = {}
            env_entries = self.mapping(entries["values"][1], f"{where}.values", allowed=_ANY_KEY)
            for env, (env_key, env_node) in env_entries.items():
                per_env = self.mapping(
                    env_node, f"{where}.values.{env}", allowed=("value",), required=("value",)
                )
                values[env] = self.plain(per_env["value"][1])
                del env_key
        protected = False
        if "protected" in entries:
            protected = self.boolean(entries["protected"][1], f"{where}.protected")
        return Variable(
            name=name,
            where=where,
            location=self.location(node),
            value=self.plain(entries["value"][1]) if has_value else None,
            values=values,
            description=self._optional_string(entries, "description", f"{where}.description"),
            protected=protected,
        )

    def resource(self, node: Node, where: str) -> Resource:
        where = _named(node, where)
        entries = self.mapping(
            node,
            where,
            allowed=(
                "name",
                "type",
                "file",
                "description",
                "props",
                "exports",
                "protected",
                "skip_on_delete",
                "if",
                "sql",
                "run",
            ),
            required=("name",),
        )
        name = self.name(entries["name"][1], f"{where}.name", _RESOURCE_NAME)
        kind = "resource"
        if "type" in entries:
            kind = self.string(entries["type"][1], f"{where}.type")
            if kind not in RESOURCE_TYPES:
                self.fail(
                    entries["type"][1],
                    f"{where}.type",
                    f"unknown type '{kind}' (expected one of: {', '.join(RESOURCE_TYPES)})",
                )
        props: list[Variable] = []
        if "props" in entries:
            for index, item in enumerate(self.sequence(entries["props"][1], f"{where}.props")):
                props.append(self.variable(item, f"{where}.props[{index}]", allow_values=True))
            self._no_duplicates(props, f"{where}.props")
        exports = self.exports(entries, where)
        masked: frozenset[str] = frozenset()
        keep = False
        if "protected" in entries:
            protected_node = entries["protected"][1]
            if isinstance(protected_node, SequenceNode):
                masked = frozenset(
                    self.name(item, f"{where}.protected[{index}]")
                    for index, item in enumerate(protected_node.value)
                )
                aliases = {export.alias for export in exports}
                for item in protected_node.value:
                    if item.value not in aliases:
                        self.fail(
                            item,
                            f"{where}.protected",
                            f"'{item.value}' is not one of this resource's exports",
                        )
            else:
                keep = self.boolean(protected_node, f"{where}.protected")
        if "skip_on_delete" in entries:
            keep = keep or self.boolean(entries["skip_on_delete"][1], f"{where}.skip_on_delete")
        sql = self._optional_string(entries, "sql", f"{where}.sql") or None
        run = self._optional_string(entries, "run", f"{where}.run") or None
        if sql is not None and kind not in ("query", "command"):
            self.fail(entries["sql"][1], f"{where}.sql", "'sql' is only for query and command")
        if kind == "script" and run is None:
            self.fail(node, where, "a script resource needs 'run' (the command to run)")
        if run is not None and kind != "script":
            self.fail(entries["run"][1], f"{where}.run", "'run' is only for script resources")
        file = None
        if "file" in entries:
            file = Path(self.string(entries["file"][1], f"{where}.file"))
            if file.is_absolute() or ".." in file.parts:
                self.fail(entries["file"][1], f"{where}.file", "must be a path inside resources/")
        condition = None
        if "if" in entries:
            condition = self.string(entries["if"][1], f"{where}.if")
        return Resource(
            name=name,
            location=self.location(node),
            type=kind,
            description=self._optional_string(entries, "description", f"{where}.description"),
            file=file,
            props=tuple(props),
            exports=exports,
            masked=masked,
            keep_on_teardown=keep,
            condition=condition,
            sql=sql,
            run=run,
        )

    def exports(self, entries: dict[str, tuple[Node, Node]], where: str) -> tuple[Export, ...]:
        if "exports" not in entries:
            return ()
        exports: list[Export] = []
        for index, item in enumerate(self.sequence(entries["exports"][1], f"{where}.exports")):
            item_where = f"{where}.exports[{index}]"
            if isinstance(item, MappingNode):
                # stackql-deploy's aliased form: ``- column: alias``.
                pairs = self.mapping(item, item_where, allowed=_ANY_KEY)
                if len(pairs) != 1:
                    self.fail(item, item_where, "an aliased export is one 'column: alias' pair")
                ((column, (key_node, alias_node)),) = pairs.items()
                self.name(key_node, item_where)
                exports.append(Export(column, self.name(alias_node, item_where)))
            else:
                column = self.name(item, item_where)
                exports.append(Export(column, column))
        return tuple(exports)

    def _optional_string(self, entries: dict[str, tuple[Node, Node]], key: str, where: str) -> str:
        if key not in entries:
            return ""
        return self.string(entries[key][1], where)

    def _no_duplicates(
        self, items: Sequence[Variable | Resource], where: str, *, noun: str = ""
    ) -> None:
        seen: dict[str, Variable | Resource] = {}
        for item in items:
            if item.name in seen:
                raise ManifestError(
                    f"{noun}'{item.name}' is declared twice "
                    f"(first at line {seen[item.name].location.line})",
                    path=str(self.path),
                    line=item.location.line,
                    column=item.location.column,
                    where=where,
                )
            seen[item.name] = item


class _AnyKey(tuple[str, ...]):
    """An ``allowed`` that admits every key (environment names, export columns)."""

    def __contains__(self, key: object) -> bool:
        return True


_ANY_KEY = _AnyKey()


def _named(node: Node, where: str) -> str:
    """``where`` with the item's ``name`` appended, so errors say which item they are about."""
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == "name" and isinstance(value_node, ScalarNode):
                return f"{where} ({value_node.value})"
    return where


def _unknown_key(key: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown key '{key}' (expected one of: {', '.join(allowed)}){hint}"


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == "tag:yaml.org,2002:null":
        return "nothing"
    return f"'{node.value}'"
