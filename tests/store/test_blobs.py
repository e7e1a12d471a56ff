"""Local blobs survive a crash once committed: the file, its name, and a key directory made for
it. A crash of the machine cannot happen in a test; what the store asks of the file system can
be seen: which directories it fsyncs (os.fsync watched, the files really written)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dicomql.store.blobs import LocalBlobStore


@pytest.fixture
def fsynced_directories(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    directories: list[Path] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            directories.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return directories


def store_blob(store: LocalBlobStore, key: str) -> None:
    with store.writer(key) as writer:
        writer.write(b"DICM")
        writer.commit()


def test_a_new_key_directory_is_fsynced_into_its_parent_before_the_blob_is_acknowledged(
    tmp_path: Path, fsynced_directories: list[Path]
) -> None:
    store = LocalBlobStore(tmp_path)
    key = store.new_key("instances")
    store_blob(store, key)
    final = tmp_path / key
    assert final.read_bytes() == b"DICM"
    # The prefix in the root, the two-hex directory in the prefix, the blob's name in its own.
    assert fsynced_directories == [tmp_path, final.parent.parent, final.parent]


def test_a_known_directory_costs_one_fsync_a_blob(
    tmp_path: Path, fsynced_directories: list[Path]
) -> None:
    store = LocalBlobStore(tmp_path)
    store_blob(store, "instances/ab/first")
    fsynced_directories.clear()
    store_blob(store, "instances/ab/second")
    assert fsynced_directories == [tmp_path / "instances" / "ab"]


def test_a_directory_another_process_made_is_still_fsynced_once_here(
    tmp_path: Path, fsynced_directories: list[Path]
) -> None:
    (tmp_path / "instances" / "ab").mkdir(parents=True)  # made elsewhere, maybe not durable yet
    store = LocalBlobStore(tmp_path)
    store_blob(store, "instances/ab/first")
    assert fsynced_directories == [tmp_path, tmp_path / "instances", tmp_path / "instances" / "ab"]
