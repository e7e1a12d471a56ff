"""The ``dicomql`` command: ``serve`` the embedded service; ``exec`` and ``shell`` run SQL."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import click

DEFAULT_DATA_DIR = Path(os.environ.get("DICOMQL_DATA_DIR", "~/.local/share/dicomql")).expanduser()


@click.group()
@click.version_option(package_name="dicomql")
def main() -> None:
    """Query, deploy and manage DICOM stores with SQL."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
    help="Holds the SQLite index (unless --database-url) and the instance blobs.",
)
@click.option(
    "--database-url",
    envvar="DICOMQL_DATABASE_URL",
    help="SQLAlchemy URL of the index, e.g. postgresql+psycopg://user@host/db.",
)
@click.option("--auth-token", envvar="DICOMQL_AUTH_TOKEN", help="Require this bearer token.")
@click.option(
    "--auth-token-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Read the bearer token from a file.",
)
@click.option("--insecure", is_flag=True, help="Allow a non-loopback address without a token.")
@click.option("--log-level", default="warning", show_default=True)
def serve(
    host: str,
    port: int,
    data_dir: Path,
    database_url: str | None,
    auth_token: str | None,
    auth_token_file: Path | None,
    insecure: bool,
    log_level: str,
) -> None:
    """Serve the Cloud Healthcare API (admin, DICOMweb, operations) over HTTP."""
    import uvicorn

    from dicomql.service.app import create_app
    from dicomql.service.config import ServiceConfig

    if auth_token_file is not None:
        auth_token = auth_token_file.read_text().strip()
    if not auth_token and not insecure and not _is_loopback(host):
        raise click.UsageError(
            f"refusing to serve on {host} without authentication: give --auth-token "
            "(or --auth-token-file, or DICOMQL_AUTH_TOKEN), or --insecure"
        )
    config = ServiceConfig(data_dir=data_dir, database_url=database_url, auth_token=auth_token)
    uvicorn.run(create_app(config), host=host, port=port, log_level=log_level, access_log=False)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    main()
