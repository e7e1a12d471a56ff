"""STOW-RS uploads from files: DICOM files of a file or folder sent as multipart/related
requests (PS3.18 10.5), one request per batch, each streamed from disk."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

from dicomql.errors import ProgrammingError

BATCH_FILES = 64
BATCH_BYTES = 32 * 1024 * 1024
_CHUNK = 1024 * 1024


def dicom_files(path: str | Path) -> list[Path]:
    """The files to store: ``path`` itself, or every regular non-hidden file under it.

    Raises:
        ProgrammingError: the path does not exist.
    """
    root = Path(path).expanduser()
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise ProgrammingError(f"store_instances: no such file or folder '{path}'")
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def batches(
    files: list[Path], max_files: int = BATCH_FILES, max_bytes: int = BATCH_BYTES
) -> Iterator[list[Path]]:
    """Groups of at most ``max_files`` files and about ``max_bytes`` bytes (a bigger file
    travels alone)."""
    batch: list[Path] = []
    size = 0
    for file in files:
        file_size = file.stat().st_size
        if batch and (len(batch) >= max_files or size + file_size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(file)
        size += file_size
    if batch:
        yield batch


def new_boundary() -> str:
    return f"dicomql-{secrets.token_hex(12)}"


def multipart_content_type(boundary: str) -> str:
    return f'multipart/related; type="application/dicom"; boundary={boundary}'


def multipart_body(files: list[Path], boundary: str) -> Iterator[bytes]:
    """The multipart/related body, read from disk a chunk at a time (RFC 2387)."""
    for file in files:
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        with file.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()
