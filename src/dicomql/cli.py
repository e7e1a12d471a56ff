"""The ``dicomql`` command: ``serve`` the embedded service; ``exec`` and ``shell`` run SQL."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from dicomql.cli_options import connection_options
from dicomql.config import CONFORMANCE_PROFILES, DEFAULT_DATA_DIR, DEFAULT_PAGE_LIMIT
from dicomql.viewer.dist import OHIF_VERSION

if TYPE_CHECKING:
    from dicomql.config import ConnectionConfig
    from dicomql.viewer.dist import ViewerSettings

# httpx imports its own command line (rich, pygments, click) at import time when those are
# installed; dicomql never runs it. Marking the module absent makes httpx skip it, which saves
# tens of milliseconds of every `dicomql` start (httpx/__init__.py catches the ImportError).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


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
    envvar="DICOMQL_DATA_DIR",  # read by click when the command runs
    default=DEFAULT_DATA_DIR,
    show_default=True,
    callback=lambda _ctx, _param, value: value.expanduser(),  # ~ in $DICOMQL_DATA_DIR too
    help="Holds the SQLite index (unless --database-url) and the instance blobs.",
)
@click.option(
    "--database-url",
    envvar="DICOMQL_DATABASE_URL",
    help="SQLAlchemy URL of the index, e.g. postgresql+psycopg://user@host/db.",
)
@click.option(
    "--blob-url",
    envvar="DICOMQL_BLOB_URL",
    help="Keep instance blobs in object storage: s3://bucket/prefix or gs://bucket/prefix "
    "(an S3-compatible endpoint comes from DICOMQL_S3_ENDPOINT_URL), or as files in a "
    "directory several servers share: file:///mnt/shared/dicomql.",
)
@click.option("--auth-token", envvar="DICOMQL_AUTH_TOKEN", help="Require this bearer token.")
@click.option(
    "--auth-token-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Read the bearer token from a file.",
)
@click.option("--insecure", is_flag=True, help="Allow a non-loopback address without a token.")
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Long-running-operation workers in each server process (0: this server only answers "
    "requests).",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    help="Server processes sharing the port  [default: the CPUs this process may use].",
)
@click.option(
    "--lease-seconds",
    type=click.FloatRange(min=0.5),
    default=60.0,
    show_default=True,
    help="How long a worker's claim on an operation or work item lasts without a heartbeat; "
    "then a worker of any server takes it over.",
)
@click.option(
    "--orphan-grace-seconds",
    type=click.FloatRange(min=0),
    default=3600.0,
    show_default=True,
    help="Age after which a blob written but never indexed, or an unfinished upload, counts as "
    "a crash's leftover while other servers run; must exceed the longest STOW.",
)
@click.option(
    "--janitor-interval-seconds",
    type=click.FloatRange(min=0.1),
    default=600.0,
    show_default=True,
    help="How often this server removes such leftovers.",
)
@click.option(
    "--conformance",
    envvar="DICOMQL_CONFORMANCE",
    type=click.Choice(CONFORMANCE_PROFILES),
    default="google",
    show_default=True,
    help="google: serve what Cloud Healthcare's DICOM conformance statement documents and refuse "
    "the rest as Google does; standard: also what DICOM PS3.18 requires beyond it.",
)
@click.option(
    "--min-free-space",
    default="1GiB,5%",
    show_default=True,
    metavar="SIZE|PCT",
    help="Refuse new instances (STOW, import) when the data directory's disk has less free "
    "space than this: a size (500MB, 2GiB) or a percentage (5%); the default is whichever of "
    "1 GiB and 5% is smaller. 0 turns the floor off (a full disk is still refused).",
)
@click.option(
    "--inline-blob-size",
    default="64KiB",
    show_default=True,
    metavar="SIZE",
    help="Keep instances of at most this size (up to 1MiB) in the index rather than as files, "
    "when blobs are files: one durable write each instead of three. 0 makes every instance a "
    "file.",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="A name clients may reach this server by besides localhost and its address "
    "(repeatable; '*.example.org' matches subdomains). Requests naming any other Host get 403; "
    "checked on a loopback address, and on any address once given (docs/security.md).",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="A browser origin (scheme://host[:port]) allowed to call the API from its pages "
    "(repeatable; '*' only together with a token). None by default.",
)
@click.option(
    "--public-url",
    help="The URL clients reach this server at (e.g. https://dicom.example.org behind a "
    "proxy); absolute URLs in responses start with it instead of the request's Host.",
)
@click.option(
    "--forwarded-allow-ips",
    default="127.0.0.1,::1",
    show_default=True,
    envvar="FORWARDED_ALLOW_IPS",
    help="Comma-separated IPs or networks of proxies whose Forwarded / X-Forwarded-Proto / "
    "X-Forwarded-Host headers are believed ('*': any peer).",
)
@click.option(
    "--import-root",
    "import_roots",
    multiple=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="A folder whose regular files import and filter URIs may name and file-system exports "
    "may write; repeatable. Without one, no local file is read or written on a request's behalf.",
)
@click.option(
    "--max-import-file-size",
    default="1GiB",
    show_default=True,
    metavar="SIZE",
    help="The largest file an import reads (it is held in memory while stored).",
)
@click.option(
    "--item-timeout-seconds",
    type=click.FloatRange(min=1),
    default=900.0,
    show_default=True,
    help="A work item of an import, export or de-identify running longer fails its operation "
    "(DEADLINE_EXCEEDED) and frees its worker.",
)
@click.option(
    "--statement-timeout-seconds",
    type=click.FloatRange(min=0.001),
    default=30.0,
    show_default=True,
    help="A QIDO search whose index query runs longer is cancelled and answered 504 "
    "DEADLINE_EXCEEDED.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="Also answer GET /metrics, and only that, on this port of the same host, without the "
    "token (for a Prometheus scraper); /metrics on the API port still needs the token; see "
    "docs/deployment.md  [default: off].",
)
@click.option(
    "--dimse-port",
    type=click.IntRange(1, 65535),
    help="Also answer DIMSE (C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE, Storage Commitment) on "
    "this TCP port; see docs/dimse.md  [default: off].",
)
@click.option(
    "--dimse-ae-title",
    help="The called AE title the DIMSE server answers to for --dimse-store  [default: DICOMQL].",
)
@click.option(
    "--dimse-store",
    metavar="projects/P/locations/L/datasets/D/dicomStores/S",
    help="The DICOM store DIMSE serves (it may be created after the server starts).",
)
@click.option(
    "--dimse-config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="YAML: more AE titles with their stores, calling AE titles allowed and C-MOVE "
    "destinations; see docs/dimse.md.",
)
@click.option(
    "--dimse-tls-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="PEM certificate (chain): DIMSE over TLS only (PS3.15 B.9); needs --dimse-tls-key.",
)
@click.option(
    "--dimse-tls-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="PEM private key of --dimse-tls-cert.",
)
@click.option(
    "--dimse-tls-ca",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="PEM CA certificates: DIMSE clients must present a certificate they sign.",
)
@click.option("--log-level", default="warning", show_default=True)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object a line (time, level, logger, message, process).",
)
@click.option(
    "--audit-log",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append a JSON line per request (caller, method, resource, status; no PHI) to FILE.",
)
@click.option(
    "--viewer",
    is_flag=True,
    help="Also serve the OHIF viewer at /viewer/, configured for the DICOM stores "
    "(install it with `dicomql viewer install`; docs/viewer.md).",
)
@click.option(
    "--viewer-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help=f"The OHIF viewer's folder  [default: DATA_DIR/ohif/{OHIF_VERSION}].",
)
@click.option(
    "--viewer-store",
    metavar="projects/P/locations/L/datasets/D/dicomStores/S",
    help="Show only this DICOM store in the viewer  [default: every store].",
)
def serve(
    host: str,
    port: int,
    data_dir: Path,
    database_url: str | None,
    blob_url: str | None,
    auth_token: str | None,
    auth_token_file: Path | None,
    insecure: bool,
    workers: int,
    processes: int | None,
    lease_seconds: float,
    orphan_grace_seconds: float,
    janitor_interval_seconds: float,
    conformance: str,
    min_free_space: str,
    inline_blob_size: str,
    allowed_hosts: tuple[str, ...],
    cors_origins: tuple[str, ...],
    public_url: str | None,
    forwarded_allow_ips: str,
    import_roots: tuple[Path, ...],
    max_import_file_size: str,
    item_timeout_seconds: float,
    statement_timeout_seconds: float,
    metrics_port: int | None,
    dimse_port: int | None,
    dimse_ae_title: str | None,
    dimse_store: str | None,
    dimse_config: Path | None,
    dimse_tls_cert: Path | None,
    dimse_tls_key: Path | None,
    dimse_tls_ca: Path | None,
    log_level: str,
    log_format: str,
    audit_log: Path | None,
    viewer: bool,
    viewer_dir: Path | None,
    viewer_store: str | None,
) -> None:
    """Serve the Cloud Healthcare API (admin, DICOMweb, operations) over HTTP."""
    from dicomql.config import Endpoints
    from dicomql.service import supervisor
    from dicomql.service.config import ServiceConfig
    from dicomql.service.security import check_settings, is_loopback

    auth_token = _auth_token(auth_token, auth_token_file)
    if not auth_token and not insecure and not is_loopback(host):
        raise click.UsageError(
            f"refusing to serve on {host} without authentication: give --auth-token "
            "(or --auth-token-file, or DICOMQL_AUTH_TOKEN), or --insecure"
        )
    if blob_url:
        from dicomql.store.object_blobs import check_blob_url

        try:
            check_blob_url(blob_url)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--blob-url") from exc
    from dicomql.store.space import SpaceFloor, parse_size

    try:
        floor = SpaceFloor.parse(min_free_space)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--min-free-space") from exc
    from dicomql.store.inline_blobs import MAX_INLINE_LIMIT

    try:
        inline_blob_bytes = parse_size(inline_blob_size)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--inline-blob-size") from exc
    if inline_blob_bytes > MAX_INLINE_LIMIT:
        raise click.BadParameter("at most 1MiB", param_hint="--inline-blob-size")
    try:
        max_import_file_bytes = parse_size(max_import_file_size)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-import-file-size") from exc
    from dicomql.dimse.settings import DimseSettings, OptionError

    try:
        dimse = DimseSettings.from_options(
            host,
            dimse_port,
            dimse_ae_title,
            dimse_store,
            dimse_config,
            tls_certificate=dimse_tls_cert,
            tls_key=dimse_tls_key,
            tls_ca=dimse_tls_ca,
        )
    except OptionError as exc:
        raise click.BadParameter(str(exc), param_hint=exc.option) from exc
    config = ServiceConfig(
        viewer=_viewer_settings(viewer, viewer_dir, viewer_store, data_dir),
        dimse=dimse,
        audit_log=audit_log,
        data_dir=data_dir,
        min_free_space=floor,
        inline_blob_bytes=inline_blob_bytes,
        import_roots=import_roots,
        max_import_file_bytes=max_import_file_bytes,
        item_timeout_seconds=item_timeout_seconds,
        statement_timeout_seconds=statement_timeout_seconds,
        database_url=database_url,
        auth_token=auth_token,
        blob_url=blob_url,
        workers=workers,
        lease_seconds=lease_seconds,
        orphan_grace_seconds=orphan_grace_seconds,
        janitor_interval_seconds=janitor_interval_seconds,
        conformance=conformance,
        bind_host=host,
        allowed_hosts=allowed_hosts,
        cors_origins=cors_origins,
        public_url=public_url,
        forwarded_allow_ips=tuple(
            ip.strip() for ip in forwarded_allow_ips.split(",") if ip.strip()
        ),
        endpoints=Endpoints.from_environment(os.environ),
        metrics_port=metrics_port,
    )
    try:
        check_settings(config)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    settings = supervisor.ServeSettings(
        host=host,
        port=port,
        processes=processes or supervisor.default_processes(),
        log_level=log_level,
        # service.security reads forwarded headers against the peer uvicorn saw; uvicorn's own
        # rewriting of the client address from X-Forwarded-For would hide that peer.
        uvicorn={"proxy_headers": False, **_log_config(log_format, log_level)},
    )
    try:
        sock = supervisor.bind(settings)
    except OSError as exc:
        message = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        raise click.ClickException(message) from exc
    if metrics_port:
        try:
            supervisor.bind_metrics(sock, metrics_port, listen=False).close()
        except OSError as exc:
            sock.close()
            message = f"cannot listen on {host}:{metrics_port}: {exc.strerror or exc}"
            raise click.ClickException(message) from exc
    sys.exit(supervisor.serve(config, settings, sock, banner=sys.stderr))


def _viewer_settings(
    viewer: bool, folder: Path | None, store: str | None, data_dir: Path
) -> ViewerSettings | None:
    """``--viewer``'s settings, or a start error saying how to get the viewer."""
    from dicomql.dimse.settings import StoreName
    from dicomql.viewer.dist import ViewerSettings, default_viewer_dir, viewer_problem

    if not viewer:
        if folder is not None or store is not None:
            raise click.UsageError("--viewer-dir and --viewer-store need --viewer")
        return None
    if store is not None:
        try:
            store = str(StoreName.parse(store))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--viewer-store") from exc
    folder = (folder or default_viewer_dir(data_dir)).expanduser()
    problem = viewer_problem(folder)
    if problem is not None:
        raise click.ClickException(
            f"--viewer: {problem}. Install the viewer with `dicomql viewer install` (add "
            "--data-dir if serve has one), or give an installed viewer's folder with --viewer-dir."
        )
    return ViewerSettings(folder=folder.resolve(), store=store)


def _log_config(log_format: str, log_level: str) -> dict[str, Any]:
    """uvicorn's ``log_config`` for ``--log-format json``, applied here too (the parent's own
    lines); nothing for text (uvicorn's default)."""
    if log_format != "json":
        return {}
    import logging.config

    from dicomql.service.logs import json_logging_config

    config = json_logging_config(log_level)
    logging.config.dictConfig(config)
    return {"log_config": config}


def backend_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that choose a backend and the engine's defaults (``exec`` and ``shell``)."""
    options = [
        click.option(
            "--var",
            "var",
            multiple=True,
            metavar="NAME=VALUE",
            help="Fill {{ NAME }} in statements; repeatable; overrides --vars.",
        ),
        click.option(
            "--vars",
            "vars_file",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            help="A JSON object of template variables (StackQL's --iqldata).",
        ),
        click.option(
            "--import-root",
            "import_roots",
            multiple=True,
            type=click.Path(file_okay=False, exists=True, path_type=Path),
            help="Embedded backend: a folder import/filter files may be read from and exports "
            "written to; repeatable (default: the current directory).",
        ),
        click.option(
            "--page-limit",
            type=click.IntRange(min=0),
            default=DEFAULT_PAGE_LIMIT,
            show_default=True,
            help="Pages a list follows (nextPageToken); 0 follows all of them.",
        ),
        click.option(
            "-o",
            "--output",
            type=click.Choice(["table", "json", "csv", "jsonl", "text"]),
            default="table",
            show_default=True,
            help="How rows are printed.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return connection_options(command)


def _connection_config(
    data_dir: Path | None,
    database_url: str | None,
    endpoint: str | None,
    token: str | None,
    backend: str | None,
    credentials: Path | None,
    var: tuple[str, ...],
    vars_file: Path | None,
    page_limit: int,
    import_roots: tuple[Path, ...] = (),
) -> ConnectionConfig:
    from dicomql.config import ConnectionConfig
    from dicomql.errors import Error

    variables = _variables(var, vars_file)
    try:
        return ConnectionConfig.build(
            data_dir=data_dir,
            database_url=database_url,
            endpoint=endpoint,
            token=token,
            backend=backend,
            credentials=credentials,
            page_limit=page_limit or None,
            variables=variables,
            import_roots=import_roots or None,
        )
    except Error as exc:
        raise click.UsageError(str(exc)) from exc


def _variables(var: tuple[str, ...], vars_file: Path | None) -> dict[str, Any]:
    variables: dict[str, Any] = {}
    if vars_file is not None:
        try:
            loaded = json.loads(vars_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise click.BadParameter(f"{vars_file}: {exc}", param_hint="--vars") from exc
        if not isinstance(loaded, dict):
            raise click.BadParameter(
                f"{vars_file}: expected a JSON object of variables", param_hint="--vars"
            )
        variables.update(loaded)
    for item in var:
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise click.BadParameter(f"expected NAME=VALUE, got '{item}'", param_hint="--var")
        variables[name.strip()] = value
    return variables


expanded_option = click.option(
    "-x",
    "--expanded",
    is_flag=True,
    help="Expanded display (psql's -x): one block per row, a line per column. Without it a "
    "table wider than the terminal expands by itself.",
)


@main.command("exec")
@click.argument("sql", required=False)
@click.option(
    "-f",
    "-i",
    "--file",
    "script",
    type=click.File("r", encoding="utf-8"),
    help="Run the statements of this file ('-' for stdin); StackQL's exec -i.",
)
@expanded_option
@backend_options
def exec_(
    sql: str | None, script: IO[str] | None, expanded: bool, output: str, **options: Any
) -> None:
    """Run SQL statements (separated by ';') and print their rows.

    \b
    dicomql exec "SHOW RESOURCES IN google.healthcare"
    dicomql exec -f examples/quickstart.iql --data-dir .quickstart -o json
    """
    if (sql is None) == (script is None):
        raise click.UsageError("give either a SQL string or -f FILE")
    text = sql if sql is not None else script.read()  # type: ignore[union-attr]
    config = _connection_config(**options)
    from dicomql.session import Session

    with Session.open(config, output) as session:
        if expanded:
            session.expanded = "on"
        session.run_script(text)


@main.command()
@click.option(
    "--history",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("~/.local/state/dicomql/history"),
    show_default=True,
    help="Where the shell keeps its input history.",
)
@expanded_option
@backend_options
def shell(history: Path, expanded: bool, output: str, **options: Any) -> None:
    """An interactive SQL shell: statements end with ';', .exit or quit leaves."""
    config = _connection_config(**options)
    from dicomql.session import Session
    from dicomql.shell import run_shell

    with Session.open(config, output, fail_fast=False) as session:
        if expanded:
            session.expanded = "on"
        run_shell(session, history=history.expanduser())
    if session.failures and not sys.stdin.isatty():
        # Piped into (`dicomql shell < script.sql`): a failed statement fails the run, as in
        # sqlite3, while the statements after it still ran.
        sys.exit(1)


def _auth_token(auth_token: str | None, auth_token_file: Path | None) -> str | None:
    """The bearer token ``serve`` requires, or None when none was given at all.

    A token that is given but blank would mean no authentication without a word: an empty or
    whitespace-only ``--auth-token``, ``DICOMQL_AUTH_TOKEN=""`` (click reads an empty variable as
    unset, so the environment is checked here), or an empty token file (a secret not mounted
    yet). Each is refused, whatever the bind address, as is a token no client could send (a
    second line in the file, say).

    Raises:
        click.BadParameter: the token is blank or unusable, or the file cannot be read.
        click.UsageError: both a token and a token file were given.
    """
    if auth_token is None and os.environ.get("DICOMQL_AUTH_TOKEN") is not None:
        auth_token = os.environ["DICOMQL_AUTH_TOKEN"]
    if auth_token is not None and auth_token_file is not None:
        raise click.UsageError(
            "give either --auth-token (or DICOMQL_AUTH_TOKEN) or --auth-token-file, not both"
        )
    source = "--auth-token (or DICOMQL_AUTH_TOKEN)"
    if auth_token_file is not None:
        source = f"--auth-token-file {auth_token_file}"
        try:
            auth_token = auth_token_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(
                f"cannot read the token: {exc}", param_hint="--auth-token-file"
            ) from exc
    if auth_token is None:
        return None
    token = auth_token.strip()
    if not token:
        raise click.BadParameter(
            "the token is empty or blank, which would serve without authentication; "
            "give a token, or leave the option (and DICOMQL_AUTH_TOKEN) unset",
            param_hint=source,
        )
    if any(not " " <= character <= "~" for character in token):
        # RFC 9110 5.5: a header value a client can send is visible ASCII and spaces.
        raise click.BadParameter(
            "the token holds a character other than printable ASCII (a line break, say), "
            "which no client can send in an Authorization header",
            param_hint=source,
        )
    return token


# `dicomql deploy …`: its module imports only click until a deploy command runs.
from dicomql.deploy.cli import deploy  # noqa: E402

main.add_command(deploy)

# `dicomql viewer install`: the OHIF viewer `serve --viewer` serves (docs/viewer.md).
from dicomql.viewer.cli import viewer  # noqa: E402

main.add_command(viewer)

if __name__ == "__main__":
    main()
