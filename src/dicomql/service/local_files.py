"""Local files a request may name (import sources, filter files, export destinations): only
regular files under the directories the operator allowed (``--import-root``), never a device,
a FIFO or a socket, never through a symlink that leaves every root, and never more bytes than a
bound.

A request is not the operator: ``gcsSource.uri = "/etc/shadow"``, ``"/dev/zero"`` or a named
pipe would otherwise make the server read what its own account can read (and report it in an
error), grow memory without end, or block a worker for ever (docs/reliability.md, "Storage
boundaries").
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from dicomql.google_api import Code


class LocalFileRefused(Exception):
    """A local path a request named is outside the import roots or not a regular file. The
    message names the path as the request gave it and the rule, never the file's contents."""

    code = Code.PERMISSION_DENIED  # the request names something the service may not touch


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def resolve_roots(roots: Iterable[Path]) -> tuple[Path, ...]:
    """The roots as absolute real paths (a root may itself be reached through a symlink)."""
    return tuple(_real(Path(root).expanduser()) for root in roots)


def _within(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def check_allowed(path: Path, roots: tuple[Path, ...], *, purpose: str = "read") -> Path:
    """The real path of ``path`` (symlinks resolved) if it lies under one of ``roots``.

    Raises:
        LocalFileRefused: no roots, a relative path, or a real path outside every root.
    """
    if not roots:
        raise LocalFileRefused(
            f"Local paths are disabled on this server: it may {purpose} no local file on a"
            f" request's behalf (start it with --import-root DIR to allow a directory): {path}"
        )
    if not path.is_absolute():
        raise LocalFileRefused(f"A local path must be absolute: {path}")
    real = _real(path)
    if not _within(real, roots):
        raise LocalFileRefused(
            f"{path} is outside the directories this server may {purpose} (--import-root)."
        )
    return real


def read_regular_file(path: Path, roots: tuple[Path, ...], max_bytes: int) -> bytes:
    """The bytes of a regular file under a root, read with a bound.

    The file is opened without following a final symlink and without blocking (a FIFO would
    block ``open``), then checked with ``fstat`` and, through ``/proc/self/fd``, for where the
    descriptor really points, so a path swapped between the check and the open cannot escape.
    Exactly ``st_size`` bytes are read: a file growing meanwhile cannot grow memory.

    Raises:
        LocalFileRefused: outside the roots, not a regular file, or larger than ``max_bytes``.
        OSError: the file cannot be opened or read (FileNotFoundError for a missing one).
    """
    real = check_allowed(path, roots)
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise LocalFileRefused(
                f"{path} is not a regular file (a device, FIFO, socket or directory); only"
                " regular files are read."
            )
        opened = _opened_path(fd)
        if opened is not None and not _within(opened, roots):
            raise LocalFileRefused(f"{path} moved outside the directories this server may read.")
        if info.st_size > max_bytes:
            raise LocalFileRefused(
                f"{path} is {info.st_size} bytes, larger than the {max_bytes} bytes a local file"
                " may have here."
            )
        chunks = []
        remaining = info.st_size
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 8 * 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _opened_path(fd: int) -> Path | None:
    """Where an open descriptor points (Linux), or None where /proc cannot say."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return None


def check_destination(path: Path, roots: tuple[Path, ...], *, under: Path) -> Path:
    """``path`` (an export file) if it lies, symlinks resolved, under the export's own prefix
    ``under`` and under a root.

    Raises:
        LocalFileRefused: otherwise.
    """
    real_under = check_allowed(under, roots, purpose="write")
    real = _real(path)
    if not (real == real_under or real.is_relative_to(real_under)):
        raise LocalFileRefused(f"{path} would be written outside {under}.")
    return real
