"""``dicomql viewer …``: obtain the OHIF viewer that ``dicomql serve --viewer`` serves."""

from __future__ import annotations

import shutil
from pathlib import Path

import click
from click.core import ParameterSource

from dicomql.viewer.dist import OHIF_VERSION, default_viewer_dir


@click.group()
def viewer() -> None:
    """The OHIF web viewer served by `dicomql serve --viewer` (docs/viewer.md)."""


@viewer.command("install")
@click.option(
    "--version",
    "version",
    default=OHIF_VERSION,
    show_default=True,
    help="The @ohif/app version (an exact one; the default is the one dicomql is tested with).",
)
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Install into this folder (then `dicomql serve --viewer --viewer-dir` it)  "
    "[default: DATA_DIR/ohif/VERSION].",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="DICOMQL_DATA_DIR",
    # As `dicomql serve`'s (cli_options, a module this leaf may not import).
    default="~/.local/share/dicomql",
    show_default=True,
    callback=lambda _ctx, _param, value: value.expanduser(),
    help="The data directory `dicomql serve` uses, where `serve --viewer` looks by default.",
)
@click.option("--force", is_flag=True, help="Install again over an installed viewer.")
@click.option(
    "--no-npm",
    is_flag=True,
    help="Download from the registry over HTTPS even when npm is installed.",
)
def install_command(
    version: str, folder: Path | None, data_dir: Path, force: bool, no_npm: bool
) -> None:
    """Download OHIF's prebuilt viewer (npm package @ohif/app) and prepare it for /viewer/.

    Uses npm when it is installed (its registry, proxy and cache settings apply), else the
    registry over HTTPS ($npm_config_registry, default https://registry.npmjs.org/). The
    tarball must match the registry's sha512 integrity.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    from dicomql.viewer.install import InstallError, install

    console = Console(stderr=True)
    target = (folder or default_viewer_dir(data_dir.expanduser(), version)).expanduser()
    npm = None if no_npm else shutil.which("npm")
    columns = (
        TextColumn("downloading @ohif/app"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("download", total=None)

        def advance(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        try:
            installed = install(
                version,
                target,
                npm=npm,
                force=force,
                progress=advance,
                status=lambda message: console.print(f"[dim]{message}[/dim]"),
            )
        except InstallError as exc:
            raise click.ClickException(str(exc)) from exc
    console.print(f"OHIF {version} is in {installed}")
    if folder is None and version == OHIF_VERSION:
        # `serve` finds the same folder without the option when it came from the same place.
        source = click.get_current_context().get_parameter_source("data_dir")
        given = source not in (ParameterSource.DEFAULT, ParameterSource.ENVIRONMENT)
        where = f" --data-dir {data_dir}" if given else ""
        console.print(f"serve it with: dicomql serve --viewer{where}  (then open /viewer/)")
    else:
        console.print(f"serve it with: dicomql serve --viewer --viewer-dir {installed}")
