"""The embedded service's configuration, built once at the edge (CLI flags or connect())."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from dicomql.config import Endpoints
from dicomql.dimse.settings import DimseSettings
from dicomql.service.conformance import GOOGLE, profile
from dicomql.service.local_files import resolve_roots
from dicomql.store.space import DEFAULT_FLOOR, SpaceFloor, shortage
from dicomql.viewer.dist import ViewerSettings

# --blob-url of blobs as files in a directory (docs/deployment.md, "Shared filesystem").
FILE_URL_PREFIX = "file://"


@dataclass(frozen=True)
class ServiceConfig:
    """Where the service keeps its data and how it guards itself.

    Attributes:
        data_dir: holds the SQLite index (unless ``database_url`` names another) and the blobs.
        database_url: SQLAlchemy URL of the index; ``None`` means SQLite in ``data_dir``.
        auth_token: when set, every request must carry ``Authorization: Bearer <token>``.
        max_request_bytes: cap on non-STOW request bodies (Cloud Healthcare: 10 MB).
        workers: how many long-running-operation workers this process runs.
        blob_url: object storage for the instance blobs (``s3://bucket/prefix``,
            ``gs://bucket/prefix``, ``memory://prefix``), or a directory of files
            (``file:///mnt/shared/dicomql``, for servers sharing a filesystem); ``None`` means
            files in ``data_dir``.
        lease_seconds: how long a worker's claim on an operation or work item lasts without a
            progress report or heartbeat; after that another worker (in any process) takes it over.
        orphan_grace_seconds: how old a leftover (a journaled blob no instance references, an
            unfinished multipart upload) must be before the periodic janitor removes it while
            other servers may be writing it; see ``dicomql.service.app.recover``.
        janitor_interval_seconds: how often each server looks for such leftovers.
        conformance: ``google`` (serve what Cloud Healthcare's DICOM conformance statement
            documents, refuse the rest as Google does) or ``standard`` (also what PS3.18
            requires beyond it); see ``dicomql.service.conformance``.
        import_roots: the directories whose regular files import and filter URIs may read
            and file-system exports may write (``file://`` and plain paths); empty: no local
            file is read or written on a request's behalf.
        max_import_file_bytes: the largest file an import (or a filter URI) may read.
        item_timeout_seconds: how long one work item may run before its worker gives up on it
            and fails its operation with DEADLINE_EXCEEDED (a read that blocks, say).
        statement_timeout_seconds: how long a QIDO search's index query may run before it is
            cancelled and the request answered 504 DEADLINE_EXCEEDED (None: no limit).
        inline_blob_bytes: instances of at most this many bytes are kept in the index rather
            than as files, when blobs are files (store/inline_blobs.py); 0 keeps every one a file.
        min_free_space: below this much free space on the local disks the service writes (the
            blob root, a SQLite index's directory), STOW and imports refuse new instances.
        bind_host: the address ``dicomql serve`` listens on; ``None`` for the in-process
            transport, which no other program can reach (no Host check; relative URLs).
        allowed_hosts: names besides ``localhost`` and the bound address that requests may
            carry in ``Host`` (``*.example.org`` matches subdomains); see service.security.
        cors_origins: browser origins allowed to call the API from another origin (``*``: any,
            only together with ``auth_token``).
        public_url: the base of absolute URLs (RetrieveURL, BulkDataURI) when the server is
            reached through another name or a path prefix, e.g. behind a reverse proxy.
        forwarded_allow_ips: peers whose ``Forwarded`` / ``X-Forwarded-*`` headers are believed
            (uvicorn's ``--forwarded-allow-ips``: IPs, CIDRs, or ``*``).
        dimse: the DIMSE listener each server process runs (docs/dimse.md), or None.
        endpoints: where an S3-compatible store, a BigQuery endpoint or the Pub/Sub emulator
            live (the environment, read by the CLI or ``connect()``; service.endpoints).
    """

    data_dir: Path
    database_url: str | None = None
    auth_token: str | None = None
    max_request_bytes: int = 10 * 1024 * 1024
    workers: int = 2
    blob_url: str | None = None
    lease_seconds: float = 60.0
    orphan_grace_seconds: float = 3600.0
    janitor_interval_seconds: float = 600.0
    conformance: str = GOOGLE
    min_free_space: SpaceFloor = DEFAULT_FLOOR
    inline_blob_bytes: int = 64 * 1024
    bind_host: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    public_url: str | None = None
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1", "::1")
    import_roots: tuple[Path, ...] = ()
    max_import_file_bytes: int = 1024**3
    item_timeout_seconds: float = 900.0
    statement_timeout_seconds: float | None = 30.0
    dimse: DimseSettings | None = None
    # --audit-log: JSON lines of every request (service.audit, docs/security.md).
    audit_log: Path | None = None
    # --viewer: the OHIF viewer served at /viewer/ (service.viewer, docs/viewer.md).
    viewer: ViewerSettings | None = None
    # --metrics-port: a second port answering only GET /metrics, without the token
    # (service.prometheus.MetricsPortMiddleware, docs/deployment.md).
    metrics_port: int | None = None
    endpoints: Endpoints = field(default_factory=Endpoints)

    def __post_init__(self) -> None:
        profile(self.conformance)  # ValueError naming the profiles

    @property
    def index_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'index.sqlite3'}"

    @property
    def blob_root(self) -> Path:
        """Where blobs are files: the ``file://`` directory of ``blob_url`` (a shared
        filesystem for several servers), else ``blobs`` in the data directory."""
        if self.blob_url is not None and self.blob_url.startswith(FILE_URL_PREFIX):
            return Path(self.blob_url.removeprefix(FILE_URL_PREFIX))
        return self.data_dir / "blobs"

    @property
    def s3_endpoint_url(self) -> str | None:
        return self.endpoints.s3_endpoint_url

    @property
    def blobs_are_files(self) -> bool:
        return self.blob_url is None or self.blob_url.startswith(FILE_URL_PREFIX)

    @cached_property
    def resolved_import_roots(self) -> tuple[Path, ...]:
        """The import roots as real absolute paths."""
        return resolve_roots(self.import_roots)

    @property
    def local_write_paths(self) -> list[Path]:
        """The local directories new instances grow: object storage and a server database
        have no floor here."""
        paths = []
        if self.blobs_are_files:
            paths.append(self.blob_root)
        if self.database_url is None:
            paths.append(self.data_dir)
        return paths

    def space_shortage(self) -> str | None:
        """Why new instances must be refused now (free space below the floor), or None."""
        return shortage(self.local_write_paths, self.min_free_space)
