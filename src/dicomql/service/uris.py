"""The files a long-running request names by URI: an absolute path or ``file://`` under an
``--import-root``, or ``gs://``, ``s3://`` and ``memory://`` through fsspec. Read with a size
limit, written through a temporary and a rename, and listed with Cloud Healthcare's wildcards."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dicomql.dicom.uids import uid_problem
from dicomql.google_api import Code
from dicomql.service.config import ServiceConfig
from dicomql.service.local_files import (
    LocalFileRefused,
    check_allowed,
    check_destination,
    read_regular_file,
)
from dicomql.service.workers import OperationFailedError


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
            found: Iterator[str] = (
                os.path.join(root, name) for root, _, files in os.walk(path) for name in files
            )
            return sorted(found)
        return [str(path) if path is not None else uri]
    if path is not None:
        text = str(path)
        found = (
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
