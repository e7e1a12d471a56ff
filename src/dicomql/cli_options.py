"""The command-line options that choose a backend, shared by ``exec``, ``shell`` and ``deploy``.

Kept apart from ``cli.py`` so ``deploy``'s commands can use them without importing the main group.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from dicomql.config import DEFAULT_DATA_DIR

CONNECTION_OPTIONS = [
    click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Run the embedded service over this directory (the default backend; "
        "default $DICOMQL_DATA_DIR, else ~/.local/share/dicomql).",
    ),
    click.option(
        "--database-url",
        help="The embedded service's index, e.g. postgresql+psycopg://user@host/db "
        "(default $DICOMQL_DATABASE_URL, else SQLite in the data directory).",
    ),
    click.option(
        "--endpoint",
        metavar="URL",
        help="Send requests to this Cloud Healthcare API, e.g. http://127.0.0.1:8080 "
        "(dicomql serve); default $DICOMQL_ENDPOINT.",
    ),
    click.option("--token", help="Bearer token for --endpoint (default $DICOMQL_TOKEN)."),
    click.option(
        "--backend",
        type=click.Choice(["google"]),
        help="Use Google's Cloud Healthcare API (Application Default Credentials unless "
        "--credentials).",
    ),
    click.option(
        "--credentials",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="A Google service-account or authorized-user key file (with --backend google).",
    ),
]


def connection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the backend-choosing options to a click command."""
    for option in reversed(CONNECTION_OPTIONS):
        command = option(command)
    return command


def _expand_home(_ctx: click.Context, _param: click.Parameter, value: Path) -> Path:
    # ``~`` in $DICOMQL_DATA_DIR (a shell expands only the command line's).
    return value.expanduser()


def data_dir_option(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--data-dir`` of ``serve`` and ``viewer install``: ``$DICOMQL_DATA_DIR``, else
    ``~/.local/share/dicomql`` — read by click when the command runs, not at import."""
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="DICOMQL_DATA_DIR",
        default=DEFAULT_DATA_DIR,
        callback=_expand_home,
        show_default=True,
        help=help,
    )
