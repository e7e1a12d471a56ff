"""Two ``dicomql serve`` on one PostgreSQL schema and one ``--blob-url file://`` directory (a
shared filesystem such as NFS, here a local directory): what one stores, the other serves
byte-identical; a server SIGKILLed in the middle of a STOW leaves a partial write the other's
janitor removes once older than the grace period."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.reliability import (
    DICOMWEB,
    ServerProcess,
    create_dataset_and_store,
    make_instance,
    multipart,
    postgres_schema,
    stow,
    wait_for,
)

pytestmark = pytest.mark.slow

STUDY = "1.2.826.0.1.3680043.8.498.7201"
SERIES = f"{STUDY}.1"
INSTANCE_ANY = {"accept": "application/dicom; transfer-syntax=*"}


def partial_writes(shared: Path) -> list[Path]:
    return [path for path in (shared / "tmp").glob("*.part") if path.stat().st_size > 0]


def test_two_servers_share_a_file_blob_directory(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    flags = (
        "--blob-url",
        f"file://{shared}",
        "--orphan-grace-seconds",
        "1",
        "--janitor-interval-seconds",
        "0.5",
    )
    for server in ("a", "b"):
        (tmp_path / server).mkdir()
    with postgres_schema() as database_url:
        first = ServerProcess(tmp_path / "a" / "data", database_url, *flags).start()
        second = ServerProcess(tmp_path / "b" / "data", database_url, *flags).start()
        try:
            with (
                httpx.Client(base_url=first.url, timeout=60) as one,
                httpx.Client(base_url=second.url, timeout=60) as other,
            ):
                create_dataset_and_store(one)
                instance = make_instance(STUDY, SERIES, f"{SERIES}.1", rows=64)
                assert stow(one, [instance]).status_code == 200
                served = other.get(
                    f"{DICOMWEB}/studies/{STUDY}/series/{SERIES}/instances/{SERIES}.1",
                    headers=INSTANCE_ANY,
                )
                assert served.status_code == 200
                assert served.content == instance
                assert not (tmp_path / "a" / "data" / "blobs").exists()

                # A STOW to the first server stalls half-way; then the server is SIGKILLed.
                big = make_instance(
                    STUDY, SERIES, f"{SERIES}.2", rows=1536
                )  # 4.5 MB: half of it is written out
                body, content_type = multipart([big])
                release = threading.Event()

                def stalled() -> Iterator[bytes]:
                    yield body[: len(body) // 2]
                    release.wait(60)
                    yield body[len(body) // 2 :]

                def send() -> None:
                    with contextlib.suppress(httpx.TransportError):  # the server is killed
                        httpx.post(
                            f"{first.url}{DICOMWEB}/studies",
                            content=stalled(),
                            headers={"content-type": content_type},
                            timeout=60,
                        )

                sender = threading.Thread(target=send)
                sender.start()
                leftovers = wait_for(lambda: partial_writes(shared), "a partial blob write")
                first.kill()
                release.set()
                sender.join(60)
                # The surviving server's janitor removes it once older than the grace period.
                wait_for(
                    lambda: not any(path.exists() for path in leftovers),
                    "the other server removing the dead server's partial write",
                )
                again = other.get(
                    f"{DICOMWEB}/studies/{STUDY}/series/{SERIES}/instances/{SERIES}.1",
                    headers=INSTANCE_ANY,
                )
                assert again.content == instance
        finally:
            first.stop()
            second.stop()


def test_a_relative_file_url_is_refused(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from dicomql.cli import main

    result = CliRunner().invoke(
        main, ["serve", "--data-dir", str(tmp_path), "--blob-url", "file://relative/dir"]
    )
    assert result.exit_code == 2
    assert "must name an absolute directory" in result.output
