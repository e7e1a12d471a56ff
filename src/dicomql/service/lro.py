"""The long-running DICOM store methods' shared parts: their api method names, the default
handler table of the worker pool, URIs (local paths, ``file://``, fsspec for others), and the
instances a request selects (a store, study, series or instance, narrowed by
``DicomFilterConfig.resourcePathsGcsUri``)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Row, and_, func, or_, select

from dicomql.dicom.uids import uid_problem
from dicomql.google_api import Code
from dicomql.service.config import ServiceConfig
from dicomql.service.local_files import (
    LocalFileRefused,
    check_allowed,
    check_destination,
    read_regular_file,
)
from dicomql.service.workers import Handler, ItemContext, OperationFailedError, WorkContext
from dicomql.store.schema import dicom_stores, instances, series, studies

# OperationMetadata.apiMethodName as Cloud Healthcare reports these methods.
IMPORT = "google.cloud.healthcare.v1.dicom.DicomService.ImportDicomData"
EXPORT = "google.cloud.healthcare.v1.dicom.DicomService.ExportDicomData"
SET_BLOB_STORAGE_SETTINGS = "google.cloud.healthcare.v1.dicom.DicomService.SetBlobStorageSettings"
DEIDENTIFY = "google.cloud.healthcare.v1.deidentify.DeidentifyService.DeidentifyDicomStore"

STORAGE_CLASSES = ("STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE")
# Instances read per query while walking a selection (keyset pagination on the primary key).
PAGE = 200


def default_handlers() -> dict[str, Handler]:
    """The handler of every long-running method the embedded service runs."""
    # Deferred: the handler modules import this one (names, URIs, selections).
    from dicomql.service import deidentify, exporter, importer, store_methods

    # Import, export and deidentify are split into work items that every server's workers
    # claim; setBlobStorageSettings changes index rows only (thousands a second) and runs whole.
    return {
        IMPORT: importer.IMPORT_METHOD,
        EXPORT: exporter.EXPORT_METHOD,
        SET_BLOB_STORAGE_SETTINGS: store_methods.run_set_blob_storage_settings,
        DEIDENTIFY: deidentify.DEIDENTIFY_METHOD,
    }


# --- URIs -----------------------------------------------------------------------------------


def local_path(uri: str) -> Path | None:
    """The local path a URI names (an absolute path or ``file://``), or None for other schemes."""
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    if "://" not in uri:
        return Path(uri)
    return None


def remote_filesystem(uri: str) -> Any:
    """The fsspec filesystem of a ``gs://``, ``s3://`` … URI.

    Raises:
        OperationFailedError: FAILED_PRECONDITION when fsspec or the scheme's driver (gcsfs,
            s3fs) is not installed: the embedded service has no cloud storage of its own.
    """
    scheme = uri.split("://", 1)[0]
    try:
        import fsspec  # type: ignore[import-not-found,import-untyped,unused-ignore]

        return fsspec.filesystem(scheme)
    except (ImportError, ValueError) as exc:
        driver = {"gs": "gcsfs", "s3": "s3fs"}.get(scheme, f"an fsspec driver for {scheme}://")
        raise OperationFailedError(
            Code.FAILED_PRECONDITION,
            f"Cannot access {uri}: the embedded service reads and writes {scheme}:// only"
            f" through fsspec and {driver}, which are not installed; install them with"
            f" pip install 'dicomql[cloud]'. Local paths and file:// URIs work without them.",
        ) from exc


# Remote schemes a request may name: Google's own (gs://), S3 for the cloud extra, and fsspec's
# in-process memory:// (tests). Others (http://, fsspec's local://, zip::…, chained URLs) would
# let a request make the server fetch URLs or read local files past the import roots.
REMOTE_SCHEMES = ("gs", "gcs", "s3", "s3a", "memory")


def _check_remote(uri: str) -> None:
    scheme = uri.split("://", 1)[0].lower()
    if scheme not in REMOTE_SCHEMES or "::" in uri:
        raise LocalFileRefused(
            f"Unsupported URI {uri}: give gs://bucket/path (or s3://, memory://), or a local path"
            " under an --import-root."
        )


# A filter file lists resource paths, about 150 bytes a line: 64 MiB is some 400,000 lines.
FILTER_FILE_MAX_BYTES = 64 * 1024 * 1024


def read_uri(uri: str, config: ServiceConfig, max_bytes: int | None = None) -> bytes:
    """The bytes of a file a request names, local (a regular file under an import root) or
    remote, at most ``max_bytes`` (by default ``config.max_import_file_bytes``) of them.

    Raises:
        LocalFileRefused: the URI is not one the service may read.
        OSError: it cannot be read (FileNotFoundError when missing).
    """
    limit = config.max_import_file_bytes if max_bytes is None else max_bytes
    path = local_path(uri)
    if path is not None:
        return read_regular_file(path, config.resolved_import_roots, limit)
    _check_remote(uri)
    fs = remote_filesystem(uri)
    if fs.size(uri) > limit:
        raise LocalFileRefused(f"{uri} is larger than the {limit} bytes a file may have here.")
    with fs.open(uri, "rb") as file:
        data: bytes = file.read(limit + 1)
    if len(data) > limit:
        raise LocalFileRefused(f"{uri} is larger than the {limit} bytes a file may have here.")
    return data


def write_uri(uri: str, data: bytes, config: ServiceConfig, *, prefix: str) -> None:
    """Write (overwriting, as Cloud Healthcare export does) through a temporary and a rename
    locally, so a reader never sees a partial file. A local file must lie, symlinks resolved,
    under ``prefix`` and an import root.

    Raises:
        LocalFileRefused: the destination is not one the service may write.
    """
    path = local_path(uri)
    if path is None:
        _check_remote(uri)
        with remote_filesystem(uri).open(uri, "wb") as file:
            file.write(data)
        return
    under = local_path(prefix)
    assert under is not None
    roots = config.resolved_import_roots
    check_destination(path, roots, under=under)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Again now that the folders exist: one of them may be a symlink planted meanwhile.
    path = check_destination(path, roots, under=under)
    temporary = path.with_name(f".{path.name}.part")
    fd = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
    )
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(temporary, path)


def check_export_prefix(prefix: str, config: ServiceConfig) -> None:
    """Refuse an export destination the service may not write: a local folder outside the
    import roots, or an unsupported scheme.

    Raises:
        LocalFileRefused: with the reason.
    """
    path = local_path(prefix)
    if path is None:
        _check_remote(prefix)
    else:
        check_allowed(path, config.resolved_import_roots, purpose="write")


def export_uri(prefix: str, study: str, series: str, instance: str) -> str:
    """``{prefix}/{study}/{series}/{instance}.dcm``, refusing UIDs that would name anything
    else (a stored UID is checked on the way in, but data stored by an older version was not).

    Raises:
        LocalFileRefused: a UID is not a PS3.5 9.1 UID.
    """
    for uid in (study, series, instance):
        problem = uid_problem(uid)
        if problem is not None:
            raise LocalFileRefused(f"Not exported: {problem}")
    return join_uri(prefix, study, series, f"{instance}.dcm")


def join_uri(prefix: str, *parts: str) -> str:
    return "/".join([prefix.rstrip("/"), *parts])


_WILDCARD = re.compile(r"\*\*|\*|\?")


def expand_uri(uri: str, config: ServiceConfig) -> list[str]:
    """The files a ``gcsSource.uri`` names, sorted: ``*`` matches within a path segment,
    ``?`` one character, ``**`` anything including ``/`` (GoogleCloudHealthcareV1DicomGcsSource).
    Without wildcards it names one file (a directory means everything under it). Local listings
    do not follow symlinked folders; each file is checked again when it is read.

    Raises:
        LocalFileRefused: a local path outside the import roots, or an unsupported scheme.
    """
    path = local_path(uri)
    roots = config.resolved_import_roots
    if path is not None:
        check_allowed(Path(_base(str(path))) if _WILDCARD.search(uri) else path, roots)
    else:
        _check_remote(uri)
    if _WILDCARD.search(uri) is None:
        if path is not None and path.is_dir():
            found = (os.path.join(root, name) for root, _, files in os.walk(path) for name in files)
            return sorted(found)
        return [str(path) if path is not None else uri]
    if path is not None:
        text = str(path)
        found: Iterator[str] = (
            os.path.join(root, name) for root, _, files in os.walk(_base(text)) for name in files
        )
        pattern = re.compile(_glob_regex(text))
        return sorted(name for name in found if pattern.fullmatch(name))
    fs = remote_filesystem(uri)
    text = fs._strip_protocol(uri)  # fsspec: the path without its scheme, as find() lists
    pattern = re.compile(_glob_regex(text))
    names = sorted(name for name in fs.find(_base(text)) if pattern.fullmatch(name))
    return [fs.unstrip_protocol(name) for name in names]


def _base(text: str) -> str:
    """The directory before the first wildcard: where to start listing."""
    first = _WILDCARD.search(text)
    assert first is not None
    return text[: first.start()].rsplit("/", 1)[0] or "/"


def _glob_regex(pattern: str) -> str:
    out = []
    for piece in re.split(r"(\*\*|\*|\?)", pattern):
        out.append(
            {"**": ".*", "*": "[^/]*", "?": "[^/]"}.get(piece, re.escape(piece)) if piece else ""
        )
    return "".join(out)


# --- selections -----------------------------------------------------------------------------


def read_resource_paths(
    uri: str, config: ServiceConfig
) -> list[tuple[str, str | None, str | None]]:
    """The ``/studies/{s}[/series/{se}[/instances/{i}]]`` lines of a filter file.

    Raises:
        OperationFailedError: INVALID_ARGUMENT for a line of another form, NOT_FOUND for a
            missing file, PERMISSION_DENIED for a file the service may not read.
    """
    try:
        text = read_uri(uri, config, FILTER_FILE_MAX_BYTES).decode("utf-8")
    except LocalFileRefused as exc:
        raise OperationFailedError(exc.code, f"filterConfig: {exc}") from exc
    except FileNotFoundError as exc:
        raise OperationFailedError(Code.NOT_FOUND, f"filterConfig file {uri} not found.") from exc
    except OSError as exc:
        raise OperationFailedError(
            Code.FAILED_PRECONDITION, f"filterConfig file {uri} cannot be read: {exc.strerror}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise OperationFailedError(Code.INVALID_ARGUMENT, f"{uri} is not UTF-8 text.") from exc
    paths = []
    # Errors name the line by number, never by content: the file may not be the filter file
    # the request claims it is, and its contents are not the requester's to see.
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        match = re.fullmatch(r"/studies/([^/]+)(?:/series/([^/]+)(?:/instances/([^/]+))?)?", line)
        if match is None:
            raise OperationFailedError(
                Code.INVALID_ARGUMENT,
                f"Line {number} of {uri} is not a resource path of the form"
                " /studies/{study}[/series/{series}[/instances/{instance}]].",
            )
        if any(uid is not None and uid_problem(uid) for uid in match.groups()):
            raise OperationFailedError(
                Code.INVALID_ARGUMENT, f"Line {number} of {uri} names an invalid UID (PS3.5 9.1)."
            )
        paths.append((match[1], match[2], match[3]))
    return paths


def _scope_condition(study: str | None, series_uid: str | None, instance: str | None) -> Any:
    terms = []
    if study is not None:
        terms.append(studies.c.study_instance_uid == study)
    if series_uid is not None:
        terms.append(series.c.series_instance_uid == series_uid)
    if instance is not None:
        terms.append(instances.c.sop_instance_uid == instance)
    return and_(*terms) if terms else None


def iter_selected(
    conn_factory: Any,
    store_pk: int,
    scope: dict[str, str | None],
    paths: list[tuple[str, str | None, str | None]] | None,
    after_pk: int = 0,
    through_pk: int | None = None,
) -> Iterator[Row]:
    """Instances of the store within ``scope`` (study/series/instance UIDs of the request path)
    and, if given, within one of ``paths``; in primary key order after ``after_pk`` (the
    checkpoint of a resumed operation) and up to ``through_pk`` (the end of a work item's
    range). Read a page per short read transaction."""
    conditions = [instances.c.store_pk == store_pk]
    if through_pk is not None:
        conditions.append(instances.c.pk <= through_pk)
    scoped = _scope_condition(scope.get("study"), scope.get("series"), scope.get("instance"))
    if scoped is not None:
        conditions.append(scoped)
    if paths is not None:
        if not paths:
            return
        conditions.append(or_(*(_scope_condition(*path) for path in paths)))
    query = (
        select(
            instances.c.pk,
            instances.c.blob_key,
            instances.c.transfer_syntax_uid,
            instances.c.sop_instance_uid,
            series.c.series_instance_uid,
            studies.c.study_instance_uid,
        )
        .join(series, series.c.pk == instances.c.series_pk)
        .join(studies, studies.c.pk == instances.c.study_pk)
        .where(*conditions)
        .order_by(instances.c.pk)
        .limit(PAGE)
    )
    cursor = after_pk
    while True:
        with conn_factory() as conn:
            rows = list(conn.execute(query.where(instances.c.pk > cursor)))
        yield from rows
        if len(rows) < PAGE:
            return
        cursor = rows[-1].pk


def count_selected(
    conn: Connection,
    store_pk: int,
    scope: dict[str, str | None],
    paths: list[tuple[str, str | None, str | None]] | None,
    after_pk: int = 0,
) -> int:
    conditions = [instances.c.store_pk == store_pk, instances.c.pk > after_pk]
    scoped = _scope_condition(scope.get("study"), scope.get("series"), scope.get("instance"))
    if scoped is not None:
        conditions.append(scoped)
    if paths is not None:
        if not paths:
            return 0
        conditions.append(or_(*(_scope_condition(*path) for path in paths)))
    query = (
        select(func.count())
        .select_from(instances)
        .join(series, series.c.pk == instances.c.series_pk)
        .join(studies, studies.c.pk == instances.c.study_pk)
        .where(*conditions)
    )
    return int(conn.execute(query).scalar_one())


def plan_ranges(
    conn_factory: Any,
    store_pk: int,
    scope: dict[str, str | None],
    paths: list[tuple[str, str | None, str | None]] | None,
    size: int,
    after_pk: int = 0,
) -> list[dict[str, Any]]:
    """Work item payloads covering the selection in primary key ranges of ``size`` instances:
    ``{"after": pk, "through": pk, "count": n}``. An instance stored later has a higher key
    than any range, so a range selects the same instances when it runs (less any deleted)."""
    items: list[dict[str, Any]] = []
    previous, last, count = after_pk, after_pk, 0
    for row in iter_selected(conn_factory, store_pk, scope, paths, after_pk):
        last, count = row.pk, count + 1
        if count == size:
            items.append({"after": previous, "through": last, "count": count})
            previous, count = last, 0
    if count:
        items.append({"after": previous, "through": last, "count": count})
    return items


def item_range(ctx: ItemContext) -> tuple[int, int]:
    """Where a range work item (re)starts (its checkpoint, the last instance key it reported
    done, or the start of its range) and where it ends."""
    payload = ctx.payload
    return max(int(payload["after"]), int(ctx.checkpoint or 0)), int(payload["through"])


def require_store_pk(ctx: WorkContext) -> int:
    """The store the operation works on, which may have been deleted since it started."""
    pk: int = ctx.request["store_pk"]
    with ctx.service.index.connect() as conn:
        found = conn.execute(select(dicom_stores.c.pk).where(dicom_stores.c.pk == pk)).first()
    if found is None:
        raise OperationFailedError(Code.NOT_FOUND, f"DICOM store {ctx.request['store']} not found.")
    return pk


def selection_paths(ctx: WorkContext) -> list[tuple[str, str | None, str | None]] | None:
    uri = (ctx.request.get("body", {}).get("filterConfig") or {}).get("resourcePathsGcsUri")
    return read_resource_paths(uri, ctx.service.config) if uri else None
