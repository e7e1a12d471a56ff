"""Crash safety of STOW: a ``dicomql serve`` process SIGKILLed at random moments while four
clients store instances loses nothing it acknowledged and leaves no orphaned or partial blobs.

With ``--processes 2`` either everything is killed (the parent and both server processes), or
one server process, which the parent replaces while the other keeps storing."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.reliability import (
    ANY_SYNTAX,
    DICOMWEB,
    ServerProcess,
    create_dataset_and_store,
    indexed_blob_keys,
    make_instance,
    qido_instances,
    referenced,
    stored_blobs,
    stow,
    temporary_files,
)

# One test of the heavy group at a time (docs/development.md): SIGKILLs, 200 MB bodies, peak RSS.
pytestmark = pytest.mark.xdist_group("heavy")

KILLS = 10
# Killing one server process: its replacement is killed young, which the parent answers with
# a growing pause (docs/deployment.md); fewer kills keep the run short.
KILLS_OF_ONE = 6
CLIENTS = 4
FIGURES = Path(os.environ.get("DICOMQL_RELIABILITY_FIGURES", "/tmp/dicomql-reliability"))


@dataclass
class Ledger:
    """What the clients sent and what the server acknowledged (shared by the client threads)."""

    sent: dict[str, tuple[str, str, bytes]] = field(default_factory=dict)
    acknowledged: set[str] = field(default_factory=set)
    requests: int = 0
    transport_errors: int = 0
    server_errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _client(
    url: str, number: int, ledger: Ledger, storing: threading.Event, stop: threading.Event
) -> None:
    rng = random.Random(number)
    counter = 0
    with httpx.Client(base_url=url, timeout=20) as client:
        while not stop.is_set():
            if not storing.wait(timeout=0.1):
                continue
            parts: list[tuple[str, str, str, bytes]] = []
            for _ in range(rng.randint(1, 4)):
                with ledger.lock:
                    earlier = list(ledger.sent.items())
                if earlier and rng.random() < 0.2:
                    # A duplicate: the identical instance again, which must succeed (Google).
                    sop, (study, series, data) = rng.choice(earlier)
                else:
                    counter += 1
                    study = f"1.2.826.0.1.3680043.10.{number + 1}.{counter % 5}"
                    series = f"{study}.{counter % 2}"
                    sop = f"{series}.{counter}"
                    data = make_instance(study, series, sop, seed=counter)
                parts.append((study, series, sop, data))
            with ledger.lock:
                for study, series, sop, data in parts:
                    ledger.sent[sop] = (study, series, data)
                ledger.requests += 1
            try:
                response = stow(client, [data for *_, data in parts])
            except httpx.TransportError:
                with ledger.lock:
                    ledger.transport_errors += 1
                time.sleep(0.05)  # the server is down; it comes back
                continue
            if response.status_code >= 500:
                with ledger.lock:
                    ledger.server_errors.append(f"{response.status_code} {response.text[:300]}")
                continue
            if response.status_code in (200, 202):
                with ledger.lock:
                    ledger.acknowledged.update(referenced(response))


def _record(name: str, figures: dict[str, object]) -> None:
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / f"{name}.json").write_text(json.dumps(figures, indent=2))


def _kill_one_server_process(server: ServerProcess, rng: random.Random) -> None:
    """SIGKILL one of the server processes and wait until the parent has replaced it."""
    before = server.server_processes()
    os.kill(rng.choice(before), signal.SIGKILL)
    deadline = time.monotonic() + 120
    while True:
        now = server.server_processes()
        if len(now) == len(before) and set(now) != set(before):
            return
        assert time.monotonic() < deadline, "the killed server process was not replaced"
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("processes", "kill"), [(1, "all"), (2, "all"), (2, "one")], ids=["1", "2-all", "2-one"]
)
def test_acknowledged_instances_survive_repeated_sigkill_without_orphans(
    tmp_path: Path, database_url: str | None, processes: int, kill: str
) -> None:
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir, database_url, processes=processes).start()
    with httpx.Client(base_url=server.url, timeout=30) as admin:
        create_dataset_and_store(admin)
    ledger = Ledger()
    stop = threading.Event()
    # Clients store only in the window before each kill, not while the next server process
    # imports (seconds on a busy machine): the kills land mid-ingest and the run stays short.
    storing = threading.Event()
    threads = [
        threading.Thread(target=_client, args=(server.url, n, ledger, storing, stop), daemon=True)
        for n in range(CLIENTS)
    ]
    rng = random.Random(7)
    kills = 0
    started = time.monotonic()
    try:
        for thread in threads:
            thread.start()
        for _ in range(KILLS if kill == "all" else KILLS_OF_ONE):
            if kill == "all":
                server.prepare()
                server.wait_prepared()
            storing.set()
            time.sleep(rng.uniform(0.5, 2.0))  # a random moment mid-ingest
            if kill == "all":
                server.kill()
                storing.clear()
                server.start()
            else:
                _kill_one_server_process(server, rng)
                storing.clear()
            kills += 1
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        server.kill()
        server.stop()  # the prepared process too, if the loop failed
    # A last restart runs recovery; then the data directory must be clean.
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            lost = []
            for sop in sorted(ledger.acknowledged):
                study, series, data = ledger.sent[sop]
                response = client.get(
                    f"{DICOMWEB}/studies/{study}/series/{series}/instances/{sop}",
                    headers=ANY_SYNTAX,
                )
                if response.status_code != 200 or response.content != data:
                    lost.append((sop, response.status_code))
            listed = qido_instances(client)
            unreadable = []
            # Listed but never acknowledged (the kill came before the response): still whole.
            for study, series, sop in listed:
                if sop in ledger.acknowledged:
                    continue
                response = client.get(
                    f"{DICOMWEB}/studies/{study}/series/{series}/instances/{sop}",
                    headers=ANY_SYNTAX,
                )
                if response.status_code != 200 or response.content != ledger.sent[sop][2]:
                    unreadable.append((sop, response.status_code))
    finally:
        server.stop()
    stored = stored_blobs(data_dir, database_url)
    on_disk = set(stored)
    indexed = indexed_blob_keys(data_dir, database_url)
    backend = "postgresql" if database_url else "sqlite"
    _record(
        f"crash-{backend}" + (f"-processes-{processes}-kill-{kill}" if processes > 1 else ""),
        {
            "kills_survived": kills,
            "requests": ledger.requests,
            "instances_acknowledged": len(ledger.acknowledged),
            "instances_listed": len(listed),
            "lost": len(lost),
            "orphaned_blobs": len(on_disk - indexed),
            "seconds": round(time.monotonic() - started, 1),
        },
    )
    assert kills == (KILLS if kill == "all" else KILLS_OF_ONE)
    assert len(ledger.acknowledged) > 20, "too little was stored to prove anything"
    assert not ledger.server_errors, ledger.server_errors[:5]
    assert lost == []
    assert unreadable == []
    assert len(listed) == len(set(listed))
    assert len(stored) == len(on_disk), "a file beside an instance kept in the index"
    assert on_disk - indexed == set(), "orphaned blobs"
    assert indexed - on_disk == set(), "indexed instances without blobs"
    assert temporary_files(data_dir) == []
