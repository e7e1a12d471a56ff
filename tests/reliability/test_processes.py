"""``dicomql serve --processes N``: the start banner, a SIGTERM that drains a STOW in flight in
every process before all of them exit 0, and a SIGKILLed server process that is logged and
replaced while the others keep serving."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from reliability_support import (
    DICOMWEB,
    LOCATION,
    ServerProcess,
    create_dataset_and_store,
    make_instance,
    multipart,
    referenced,
    wait_for,
)

from dicomql.service.config import ServiceConfig
from dicomql.service.supervisor import ServeSettings, start_banner

pytestmark = pytest.mark.slow

DEADLINE = 60.0


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def test_the_banner_names_the_url_data_backends_processes_and_token(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", None, processes=2).start()
    try:
        banner = server.log.read_text()
    finally:
        server.stop()
    assert f"dicomql serve: http://127.0.0.1:{server.port}\n" in banner
    assert f"data:      {tmp_path / 'data'}\n" in banner
    assert f"index:     SQLite {tmp_path / 'data' / 'index.sqlite3'}\n" in banner
    assert f"blobs:     files in {tmp_path / 'data' / 'blobs'}\n" in banner
    assert "processes: 2 (" in banner
    assert "token:     not required\n" in banner


def test_the_banner_shows_a_postgresql_url_without_its_password(tmp_path: Path) -> None:
    config = ServiceConfig(
        data_dir=tmp_path,
        database_url="postgresql+psycopg://dicomql:s3cret-pw@db.example:5432/pacs",
        blob_url="s3://bucket/blobs",
        auth_token="t0ken-value",
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        banner = start_banner(config, ServeSettings("127.0.0.1", 0, processes=3), sock)
    assert "index:     PostgreSQL postgresql+psycopg://dicomql:***@db.example:5432/pacs\n" in banner
    assert "blobs:     s3://bucket/blobs\n" in banner
    assert "processes: 3 (" in banner
    assert "token:     required" in banner
    assert "s3cret-pw" not in banner and "t0ken-value" not in banner


def _slow_stow_body(
    parts: list[bytes], halfway: threading.Event, go_on: threading.Event
) -> Iterator[bytes]:
    body, _ = multipart(parts)
    middle = len(body) // 2
    yield body[:middle]
    halfway.set()
    assert go_on.wait(DEADLINE)
    yield body[middle:]


@pytest.mark.parametrize("processes", [2, 1])
def test_sigterm_finishes_the_stow_in_flight_then_every_process_exits_0(
    tmp_path: Path, processes: int
) -> None:
    server = ServerProcess(tmp_path / "data", None, processes=processes).start()
    try:
        with httpx.Client(base_url=server.url, timeout=DEADLINE) as admin:
            create_dataset_and_store(admin)
        children = server.server_processes()
        assert len(children) == (processes if processes > 1 else 0)
        parts = [make_instance("1.2.3.9", "1.2.3.9.1", f"1.2.3.9.1.{n}", seed=n) for n in range(3)]
        _, content_type = multipart(parts)
        halfway, go_on = threading.Event(), threading.Event()
        result: dict[str, httpx.Response] = {}

        def send() -> None:
            with httpx.Client(base_url=server.url, timeout=DEADLINE) as client:
                result["stow"] = client.post(
                    f"{DICOMWEB}/studies",
                    content=_slow_stow_body(parts, halfway, go_on),
                    headers={"content-type": content_type},
                )

        sender = threading.Thread(target=send)
        sender.start()
        assert halfway.wait(DEADLINE)
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        # Every process has stopped accepting (the listening socket is closed everywhere)
        # while the STOW is still half sent.
        wait_for(lambda: refuses_connections(server.port), "the port to close")
        assert server.process.poll() is None, "the server exited with a request in flight"
        go_on.set()
        sender.join(DEADLINE)
        assert result["stow"].status_code == 200, result["stow"].text
        assert sorted(referenced(result["stow"])) == sorted(f"1.2.3.9.1.{n}" for n in range(3))
        assert server.process.wait(DEADLINE) == 0
        for child in children:
            wait_for(lambda child=child: not Path(f"/proc/{child}").exists(), "a child to exit")
    finally:
        server.stop()
    log = server.log.read_text()
    assert "Traceback" not in log and "while stopping" not in log, log
    # What was acknowledged is there after a restart.
    server = ServerProcess(tmp_path / "data", None).start()
    try:
        with httpx.Client(base_url=server.url, timeout=DEADLINE) as client:
            found = client.get(f"{DICOMWEB}/instances", params={"StudyInstanceUID": "1.2.3.9"})
            assert len(found.json()) == 3
    finally:
        server.stop()


def test_a_killed_server_process_is_logged_and_replaced_while_the_other_serves(
    tmp_path: Path,
) -> None:
    server = ServerProcess(tmp_path / "data", None, processes=2).start()
    try:
        first, second = server.server_processes()
        os.kill(first, signal.SIGKILL)
        replaced = wait_for(
            lambda: [pid for pid in server.server_processes() if pid not in (first, second)],
            "a replacement process",
        )
        wait_for(
            lambda: f"server process {first} was killed by SIGKILL" in server.log.read_text(),
            "the death to be logged",
        )
        assert second in server.server_processes()
        assert server.process is not None and server.process.poll() is None
        # Both keep answering; the replacement took its place on the port.
        with httpx.Client(base_url=server.url, timeout=DEADLINE) as client:
            create_dataset_and_store(client)
            for _ in range(20):
                assert client.get(LOCATION).status_code == 200
        assert len(replaced) == 1
    finally:
        server.stop()
    assert server.process.returncode == 0
    assert "Traceback" not in server.log.read_text()
