"""``dicomql deploy build|test|teardown|init``: the click commands; dicomql errors become click
exceptions here, at the edge. Heavy imports wait until a command runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import click

from dicomql.cli_options import connection_options

if TYPE_CHECKING:
    from rich.console import Console
    from rich.status import Status

    from dicomql.deploy.manifest import Resource
    from dicomql.deploy.report import Outcome, Report


@click.group()
def deploy() -> None:
    """Build, test and tear down stacks of datasets and DICOM stores.

    A stack is a directory holding stackql_manifest.yml and resources/<name>.iql files, in
    stackql-deploy's format. Start one with: dicomql deploy init my-stack
    """


def _stack_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.argument("stack_dir", type=click.Path(file_okay=False, path_type=Path)),
        click.argument("stack_env"),
        click.option(
            "-e",
            "--env",
            "env",
            multiple=True,
            metavar="KEY=VALUE",
            help="A variable for the manifest's templates ({{ KEY }} or {{ vars.KEY }}); "
            "repeatable.",
        ),
        click.option(
            "--env-file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="KEY=VALUE lines read before -e (stackql-deploy's .env file).",
        ),
        click.option(
            "--dry-run",
            is_flag=True,
            help="Change nothing: run only the reads and print what would be created, "
            "updated or deleted, with the rendered queries.",
        ),
        click.option("--show-queries", is_flag=True, help="Print every rendered query."),
    ]
    for option in reversed(options):
        command = option(command)
    return connection_options(command)


@deploy.command()
@_stack_options
def build(**options: Any) -> None:
    """Create or update the stack's resources so they match the manifest.

    \b
    dicomql deploy build examples/stacks/imaging dev -e GOOGLE_PROJECT=my-project
    """
    report = _run("build", **options)
    if report.exports and not report.dry_run:
        _print_exports(report)


@deploy.command()
@_stack_options
def test(**options: Any) -> None:
    """Check every resource against the manifest; exit 1 if any drifts or is missing."""
    report = _run("test", **options)
    if report.exports:
        _print_exports(report)
    if report.drifted:
        names = ", ".join(f"{o.resource} ({o.action})" for o in report.drifted)
        raise click.ClickException(f"drift in {len(report.drifted)} resource(s): {names}")


@deploy.command()
@_stack_options
def teardown(**options: Any) -> None:
    """Delete the stack's resources in reverse order (protected ones are kept)."""
    _run("teardown", **options)


@deploy.command()
@click.argument("stack_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", help="The stack name (default: the directory's name).")
@click.option("--project", default="my-project", show_default=True, help="The Google project ID.")
@click.option("--location", default="us-central1", show_default=True, help="The region.")
def init(stack_dir: Path, name: str | None, project: str, location: str) -> None:
    """Write a starter stack: a dataset and a DICOM store with labels and notifications."""
    from dicomql.deploy.init import write_starter_stack
    from dicomql.errors import Error

    try:
        written = write_starter_stack(stack_dir, name=name, project=project, location=location)
    except (Error, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"next: dicomql deploy build {stack_dir} dev --dry-run")


def _run(
    command: str,
    *,
    stack_dir: Path,
    stack_env: str,
    env: tuple[str, ...],
    env_file: Path | None,
    dry_run: bool,
    show_queries: bool,
    **backend: Any,
) -> Report:
    from dicomql.deploy.manifest import load_manifest
    from dicomql.deploy.runner import StackRunner
    from dicomql.errors import Error

    variables = _variables(env, env_file)
    console = _console()
    try:
        manifest = load_manifest(stack_dir)
    except Error as exc:
        raise click.ClickException(str(exc)) from exc
    reporter = ConsoleReporter(console)
    with _engine(backend) as engine:
        runner = StackRunner(
            manifest,
            stack_env,
            engine,
            variables=variables,
            dry_run=dry_run,
            show_queries=show_queries,
            reporter=reporter,
        )
        mode = " (dry run)" if dry_run else ""
        console.print(f"{command} [bold]{manifest.name}[/] in [bold]{stack_env}[/]{mode}")
        try:
            report: Report = getattr(runner, command)()
        except Error as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            reporter.close()
    console.print(report.summary())
    return report


@contextmanager
def _engine(backend: dict[str, Any]) -> Iterator[Any]:
    from dicomql.config import ConnectionConfig
    from dicomql.dbapi import Connection
    from dicomql.errors import Error

    try:
        config = ConnectionConfig.build(**backend)
        connection = Connection(config)
    except Error as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        yield connection.engine
    finally:
        connection.close()


def _variables(env: tuple[str, ...], env_file: Path | None) -> dict[str, str]:
    variables: dict[str, str] = {}
    if env_file is not None:
        try:
            lines = env_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise click.BadParameter(str(exc), param_hint="--env-file") from exc
        for number, line in enumerate(lines, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, equals, value = line.removeprefix("export ").partition("=")
            if not equals or not name.strip():
                raise click.BadParameter(
                    f"{env_file}:{number}: expected KEY=VALUE", param_hint="--env-file"
                )
            variables[name.strip()] = value.strip().strip("'\"")
    for item in env:
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got '{item}'", param_hint="-e")
        variables[name.strip()] = value
    return variables


def _console() -> Console:
    from rich.console import Console

    # Rich styles only a terminal; redirected output stays plain text, one line per event.
    return Console(highlight=False, soft_wrap=True)


class ConsoleReporter:
    """Progress for a person: a line per resource, the queries when asked for."""

    _STYLES: ClassVar[dict[str, str]] = {
        "created": "green",
        "updated": "yellow",
        "applied": "yellow",
        "deleted": "red",
        "drifted": "bold red",
        "absent": "red",
        "unknown": "red",
        "unchanged": "dim",
        "in desired state": "green",
        "kept": "cyan",
    }

    def __init__(self, console: Console) -> None:
        self.console = console
        self._status: Status | None = None

    def resource(self, resource: Resource, message: str) -> None:
        """On a terminal, a spinner says what is happening; redirected output skips it."""
        if not self.console.is_terminal:
            return
        text = f"{resource.name}: {message}…"
        if self._status is None:
            self._status = self.console.status(text)
            self._status.start()
        else:
            self._status.update(text)

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def query(self, resource: Resource, anchor: str, sql: str) -> None:
        from rich.markup import escape

        self.close()
        self.console.print(f"[dim]/* {escape(resource.name)}: {anchor} */[/]")
        self.console.print(escape(sql), markup=True)
        self.console.print()

    def outcome(self, outcome: Outcome) -> None:
        from rich.markup import escape

        self.close()
        style = self._STYLES.get(outcome.action, "")
        text = escape(str(outcome))
        self.console.print(f"[{style}]{text}[/]" if style else text)


def _print_exports(report: Report) -> None:
    console = _console()
    for name, value in report.exports.items():
        console.print(f"{name}={value}", markup=False)
