"""``dicomql serve --processes N``: the start banner, a SIGTERM that drains a STOW in flight in
every process before all of them exit 0, a SIGKILLed server process that is logged and replaced
while the others keep serving, and an import that finishes, each file stored once, although one
server process (or all of them) is SIGKILLed in the middle of it, and Pub/Sub notifications of
instances stored through both processes, each sent once."""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from dicomql.service.config import ServiceConfig
from dicomql.service.importer import FILES_PER_ITEM
from dicomql.service.supervisor import ServeSettings, start_banner
from tests.support.dicomweb import multipart
from tests.support.pubsub_double import running_pubsub_double
from tests.support.reliability import (
    DATASET,
    DICOMWEB,
    LOCATION,
    STORE,
    ServerProcess,
    create_dataset_and_store,
    indexed_blob_keys,
    make_instance,
    qido_instances,
    referenced,
    stored_blobs,
    stow,
    temporary_files,
    wait_for,
    wait_gone,
)

# One test of the heavy group at a time (docs/development.md): SIGKILLs, 200 MB bodies, peak RSS.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("heavy")]

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
                    headers={"content-type": content_type, "accept": "application/dicom+json"},
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
        wait_gone(children)
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


def _write_source_files(folder: Path, count: int) -> set[str]:
    """``count`` small CT instances of one series, each its own SOP Instance UID."""
    folder.mkdir()
    uids = set()
    for number in range(count):
        sop = f"1.2.3.7.1.{number + 1}"
        (folder / f"{number:04d}.dcm").write_bytes(
            make_instance("1.2.3.7", "1.2.3.7.1", sop, seed=number)
        )
        uids.add(sop)
    return uids


def _unfinished_items_of(index_path: Path, pids: list[int]) -> list[int]:
    """Server processes among ``pids`` holding an unfinished import work item, once one item
    is done (so the import is well under way)."""
    engine = create_engine(f"sqlite:///{index_path}")
    try:
        with engine.connect() as conn:
            rows = list(conn.execute(text("SELECT claimed_by, done FROM work_items")))
    finally:
        engine.dispose()
    if not any(done for _, done in rows):
        return []
    holders = {
        int(match[1])
        for claimed_by, done in rows
        if claimed_by and not done and (match := re.search(r":(\d+)/", claimed_by))
    }
    return [pid for pid in pids if pid in holders]


@pytest.mark.parametrize("kill", ["one", "all"])
def test_an_import_finishes_once_when_server_processes_are_killed_mid_way(
    tmp_path: Path, kill: str
) -> None:
    data_dir = tmp_path / "data"
    count = 8 * FILES_PER_ITEM
    uids = _write_source_files(tmp_path / "source", count)
    server = ServerProcess(
        data_dir,
        None,
        *("--workers", "1", "--lease-seconds", "2", "--import-root", str(tmp_path / "source")),
        processes=2,
    ).start()
    try:
        with httpx.Client(base_url=server.url, timeout=DEADLINE) as client:
            create_dataset_and_store(client)
            started = client.post(
                f"{STORE}:import", json={"gcsSource": {"uri": f"{tmp_path / 'source'}/*.dcm"}}
            )
            assert started.status_code == 200, started.text
            operation = started.json()["name"]
        if kill == "one":
            # A server process holding an item mid-way, frozen (SIGSTOP) before the look so
            # that it cannot finish the item between the look and the kill.
            while True:
                victims = wait_for(
                    lambda: _unfinished_items_of(
                        data_dir / "index.sqlite3", server.server_processes()
                    ),
                    "a server process holding an import item",
                )
                os.kill(victims[0], signal.SIGSTOP)
                if _unfinished_items_of(data_dir / "index.sqlite3", victims[:1]):
                    break
                os.kill(victims[0], signal.SIGCONT)
            os.kill(victims[0], signal.SIGKILL)
            wait_for(
                lambda: f"server process {victims[0]} was killed" in server.log.read_text(),
                "the death to be logged",
            )
        else:
            wait_for(
                lambda: _unfinished_items_of(data_dir / "index.sqlite3", server.server_processes()),
                "a server process holding an import item",
            )
            server.prepare()
            server.wait_prepared()
            server.kill()
            server.start()

        def done() -> dict[str, Any] | None:
            with httpx.Client(base_url=server.url, timeout=DEADLINE) as client:
                body: dict[str, Any] = client.get(f"/v1/{operation}").json()
            return body if body.get("done") else None

        finished = wait_for(done, "the import to finish", timeout=180)
        assert "error" not in finished, finished
        assert finished["metadata"]["counter"] == {"success": str(count)}
        with httpx.Client(base_url=server.url, timeout=DEADLINE) as client:
            listed = qido_instances(client)
    finally:
        server.stop()
    assert sorted(sop for *_, sop in listed) == sorted(uids)  # each once
    # A start alone (after a clean stop) removes a killed process's leftovers at once.
    server = ServerProcess(data_dir, None).start()
    server.stop()
    assert stored_blobs(data_dir) == sorted(indexed_blob_keys(data_dir, None))
    assert temporary_files(data_dir) == []
    assert "Traceback" not in server.log.read_text()


def test_each_instance_stored_through_two_processes_is_notified_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = "projects/p/topics/stored"
    with running_pubsub_double() as pubsub:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{pubsub.port}")
        data_dir = tmp_path / "data"
        server = ServerProcess(data_dir, None, processes=2).start()
        try:
            with httpx.Client(base_url=server.url, timeout=DEADLINE) as client:
                created = client.post(f"{LOCATION}/datasets", params={"datasetId": "d"}, json={})
                assert created.status_code == 200, created.text
                created = client.post(
                    f"{DATASET}/dicomStores",
                    params={"dicomStoreId": "s"},
                    json={"notificationConfigs": [{"pubsubTopic": topic}]},
                )
                assert created.status_code == 200, created.text

            def store(number: int) -> None:
                # Each client its own connection, so both processes store and deliver.
                with httpx.Client(base_url=server.url, timeout=DEADLINE) as client:
                    for request in range(3):
                        parts = [
                            make_instance("1.2.3.8", "1.2.3.8.1", f"1.2.3.8.1.{number}{request}{n}")
                            for n in range(5)
                        ]
                        response = stow(client, parts)
                        assert response.status_code == 200, response.text

            clients = [threading.Thread(target=store, args=(n + 1,)) for n in range(4)]
            for thread in clients:
                thread.start()
            for thread in clients:
                thread.join(DEADLINE)
            pubsub.wait_for(topic, 60, limit=DEADLINE)
            # Once the outbox is empty nothing more can be published (an event leaves it only
            # after its message was accepted).
            wait_for(lambda: _outbox_size(data_dir / "index.sqlite3") == 0, "an empty outbox")
        finally:
            server.stop()
        announced = [
            base64.b64decode(message["data"]).decode().rpartition("/")[2]
            for message in pubsub.messages(topic)
        ]
    expected = {f"1.2.3.8.1.{c}{r}{n}" for c in range(1, 5) for r in range(3) for n in range(5)}
    assert sorted(announced) == sorted(expected)  # each exactly once


def _outbox_size(index_path: Path) -> int:
    engine = create_engine(f"sqlite:///{index_path}")
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT COUNT(*) FROM instance_events")).scalar_one())
    finally:
        engine.dispose()


def test_server_processes_whose_parent_was_sigkilled_drain_and_exit(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", None, processes=2).start()
    try:
        children = server.server_processes()
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)  # the parent alone
        server.process.wait()
        wait_gone(children)
        wait_for(lambda: refuses_connections(server.port), "the port to be freed")
    finally:
        server.stop()
    log = server.log.read_text()
    assert "parent process" in log and "is gone; stopping" in log, log
