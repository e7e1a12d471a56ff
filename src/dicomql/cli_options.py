"""The command-line options that choose a backend, shared by ``exec``, ``shell`` and ``deploy``.

Kept apart from ``cli.py`` so ``deploy``'s commands can use them without importing the main group.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

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
