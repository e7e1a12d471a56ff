"""The client-side connection configuration: which backend answers, how to authenticate, and
the engine's defaults — a frozen value built once at the edge (CLI flags, ``connect()`` kwargs,
the environment) and passed down explicitly."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypedDict, Unpack

from dicomql.errors import InterfaceError

EMBEDDED = "embedded"
ENDPOINT = "endpoint"
GOOGLE = "google"
BACKENDS = (EMBEDDED, ENDPOINT, GOOGLE)

GOOGLE_ENDPOINT = "https://healthcare.googleapis.com/"
DEFAULT_DATA_DIR = "~/.local/share/dicomql"
DEFAULT_PAGE_LIMIT = 20
DEFAULT_TIMEOUT = 60.0
# The embedded service's profiles, as dicomql.service.conformance.PROFILES names them (the front
# end does not import the service; a test pins the two equal).
CONFORMANCE_PROFILES = ("google", "standard")


#: An S3-compatible service other than AWS (MinIO, Ceph, moto) for ``s3://`` blob URLs.
S3_ENDPOINT_ENV = "DICOMQL_S3_ENDPOINT_URL"
#: A BigQuery-compatible endpoint (an emulator), reached without credentials.
BIGQUERY_ENDPOINT_ENV = "DICOMQL_BIGQUERY_ENDPOINT"
#: The project the BigQuery endpoint's client bills (``dicomql`` when unset).
PROJECT_ENV = "GOOGLE_CLOUD_PROJECT"
#: The Pub/Sub emulator (``host:port``), published to over plain HTTP without credentials.
PUBSUB_EMULATOR_ENV = "PUBSUB_EMULATOR_HOST"


@dataclass(frozen=True)
class Endpoints:
    """Where the outside services a deployment points the embedded service at live: an
    S3-compatible object store, a BigQuery-compatible endpoint, the Pub/Sub emulator; ``None``
    means the real service (AWS S3, Google).

    Like credentials these are deployment configuration, not part of a resource's URL, so they
    come from the environment — read once, at the edge (``dicomql serve``, ``connect()``), and
    carried in ``ServiceConfig.endpoints``; nothing below reads the environment.
    """

    s3_endpoint_url: str | None = None
    bigquery_endpoint: str | None = None
    bigquery_project: str = "dicomql"
    pubsub_emulator_host: str | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Endpoints:
        """The addresses ``environ`` names (empty values count as unset)."""
        return cls(
            s3_endpoint_url=environ.get(S3_ENDPOINT_ENV) or None,
            bigquery_endpoint=environ.get(BIGQUERY_ENDPOINT_ENV) or None,
            bigquery_project=environ.get(PROJECT_ENV) or "dicomql",
            pubsub_emulator_host=environ.get(PUBSUB_EMULATOR_ENV) or None,
        )


class ConnectOptions(TypedDict, total=False):
    """The settings :func:`dicomql.connect` and :meth:`ConnectionConfig.build` take by keyword
    besides ``data_dir`` (documented at ``connect``). One left out is read from the environment
    where it has a variable, else defaulted: ``page_limit`` to ``DEFAULT_PAGE_LIMIT``
    (``None``: every page), ``timeout`` to ``DEFAULT_TIMEOUT``, ``workers`` to 2."""

    endpoint: str | None
    token: str | None
    backend: str | None
    credentials: str | os.PathLike[str] | None
    database_url: str | None
    page_limit: int | None
    variables: Mapping[str, Any] | None
    timeout: float
    conformance: str | None
    import_roots: Iterable[str | os.PathLike[str]] | None
    blob_url: str | None
    workers: int | None


@dataclass(frozen=True)
class ConnectionConfig:
    """Where SQL statements are sent and with which defaults.

    Attributes:
        backend: ``embedded`` (the service in this process, over ``data_dir``), ``endpoint``
            (any Cloud Healthcare API at ``endpoint``, e.g. ``dicomql serve``) or ``google``.
        data_dir: the embedded service's data directory.
        database_url: the embedded service's index URL; ``None`` means SQLite in ``data_dir``.
        endpoint: base URL of the API (``endpoint`` and ``google`` backends).
        token: a static bearer token (``endpoint`` backend, or instead of Google credentials).
        credentials: a Google credentials file (service-account or authorized-user JSON);
            ``None`` means Application Default Credentials.
        page_limit: how many pages a list follows (``None``: all of them).
        variables: ``{{ name }}`` template values for every statement.
        timeout: seconds to wait for one HTTP exchange.
        conformance: the embedded service's profile, ``google`` (default) or ``standard``
            (see ``dicomql serve --conformance``).
        import_roots: the folders the embedded service may read import and filter files from
            and write file-system exports to (``dicomql serve --import-root``); the current
            directory unless given.
        blob_url: the embedded service's object storage for instance blobs (``s3://…``,
            ``gs://…``, ``memory://…``, a ``file://`` directory); ``None``: files in ``data_dir``.
        workers: the embedded service's long-running-operation workers (0: none run here).
        endpoints: the embedded service's S3-compatible, BigQuery and Pub/Sub emulator
            addresses, from the environment.
    """

    backend: str = EMBEDDED
    data_dir: Path | None = None
    database_url: str | None = None
    endpoint: str | None = None
    token: str | None = field(default=None, repr=False)
    credentials: Path | None = None
    page_limit: int | None = DEFAULT_PAGE_LIMIT
    variables: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    timeout: float = DEFAULT_TIMEOUT
    conformance: str = "google"
    import_roots: tuple[Path, ...] = ()
    blob_url: str | None = None
    workers: int = 2
    endpoints: Endpoints = field(default_factory=Endpoints)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise InterfaceError(
                f"unknown backend '{self.backend}'; expected one of {', '.join(BACKENDS)}"
            )
        if self.backend == ENDPOINT and not self.endpoint:
            raise InterfaceError("the endpoint backend needs an endpoint URL")
        if self.backend == EMBEDDED and self.data_dir is None:
            raise InterfaceError("the embedded backend needs a data directory")
        if self.conformance not in CONFORMANCE_PROFILES:
            raise InterfaceError(
                f"unknown conformance '{self.conformance}'; expected one of"
                f" {', '.join(CONFORMANCE_PROFILES)}"
            )
        if self.workers < 0:
            raise InterfaceError(f"workers must be 0 or more, not {self.workers}")
        if self.page_limit is not None and self.page_limit < 1:
            raise InterfaceError(f"page_limit must be at least 1, not {self.page_limit}")

    @classmethod
    def build(
        cls,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
        **options: Unpack[ConnectOptions],
    ) -> ConnectionConfig:
        """Resolve explicit settings, then the environment, then defaults.

        The backend follows from what is given: ``backend="google"`` → Google (at
        ``endpoint`` if given, for a test double); an ``endpoint`` → that API; otherwise the
        embedded service over ``data_dir`` (``$DICOMQL_DATA_DIR``, else
        ``~/.local/share/dicomql``). ``$DICOMQL_ENDPOINT`` and ``$DICOMQL_TOKEN`` fill in
        what was not given, ``$DICOMQL_CONFORMANCE`` the embedded service's profile,
        ``$DICOMQL_BLOB_URL`` its blob storage and the variables of
        :class:`Endpoints` its outside services: this is the one place a
        connection reads the environment.

        Raises:
            InterfaceError: the settings contradict each other.
        """
        env = os.environ if environ is None else environ
        endpoint, token, backend = (
            options.get("endpoint"),
            options.get("token"),
            options.get("backend"),
        )
        credentials, database_url = options.get("credentials"), options.get("database_url")
        conformance, blob_url = options.get("conformance"), options.get("blob_url")
        import_roots, workers = options.get("import_roots"), options.get("workers")
        if data_dir is not None and (endpoint or backend == GOOGLE):
            raise InterfaceError("give either a data directory or an endpoint/backend, not both")
        if backend is None:
            if data_dir is None and not endpoint:
                endpoint = env.get("DICOMQL_ENDPOINT") or None
            backend = ENDPOINT if endpoint else EMBEDDED
        if backend == GOOGLE:
            endpoint = endpoint or GOOGLE_ENDPOINT
        elif credentials is not None:
            raise InterfaceError("credentials apply to the google backend only")
        if backend != EMBEDDED:
            if database_url is not None:
                raise InterfaceError("database_url applies to the embedded backend only")
            token = token or env.get("DICOMQL_TOKEN") or None
        if backend == EMBEDDED:
            if token is not None:
                raise InterfaceError("a token applies to an endpoint, not the embedded backend")
            data_dir = data_dir or env.get("DICOMQL_DATA_DIR") or DEFAULT_DATA_DIR
            database_url = database_url or env.get("DICOMQL_DATABASE_URL") or None
            conformance = conformance or env.get("DICOMQL_CONFORMANCE") or None
            blob_url = blob_url or env.get("DICOMQL_BLOB_URL") or None
        elif blob_url is not None or workers is not None:
            raise InterfaceError(
                "blob_url and workers apply to the embedded backend; give them to `dicomql serve`"
            )
        elif import_roots is not None:
            raise InterfaceError(
                "import_roots applies to the embedded backend; give --import-root to"
                " `dicomql serve`"
            )
        if conformance is not None and backend != EMBEDDED:
            raise InterfaceError(
                "conformance applies to the embedded backend; give it to `dicomql serve`"
            )
        return cls(
            backend=backend,
            data_dir=Path(data_dir).expanduser() if data_dir is not None else None,
            database_url=database_url,
            endpoint=endpoint,
            token=token,
            credentials=Path(credentials).expanduser() if credentials is not None else None,
            page_limit=options.get("page_limit", DEFAULT_PAGE_LIMIT),
            variables=MappingProxyType(dict(options.get("variables") or {})),
            timeout=options.get("timeout", DEFAULT_TIMEOUT),
            conformance=conformance or "google",
            # Resolved now: the current directory is the caller's, not a later one's.
            import_roots=tuple(
                Path(root).expanduser().resolve() for root in (import_roots or [Path.cwd()])
            )
            if backend == EMBEDDED
            else (),
            blob_url=blob_url,
            workers=2 if workers is None else workers,
            endpoints=Endpoints.from_environment(env) if backend == EMBEDDED else Endpoints(),
        )
