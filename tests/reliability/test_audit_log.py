"""``dicomql serve --processes 2 --audit-log FILE --log-format json``: every request that reads
or changes data is one whole JSON line of the audit log, whichever process answered it, with
the caller, route, resource and status and no PHI (no query value, no DICOM content); the
server's own log lines are JSON objects."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.support.reliability import (
    DATASET,
    DICOMWEB,
    ServerProcess,
    create_dataset_and_store,
    make_instance,
    stow,
    wait_for,
)

pytestmark = pytest.mark.slow

STUDY = "1.2.826.0.1.3680043.8.498.7101"
SERIES = f"{STUDY}.1"
PATIENT_NAME = "Smith^Alice"
PATIENT_ID = "PID-778899"
ROUTE_PREFIX = (
    "/v1/projects/{project}/locations/{location}/datasets/{dataset}/dicomStores/{dicom_store}"
    "/dicomWeb"
)


def test_each_request_is_one_line_without_phi(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    server = ServerProcess(
        tmp_path / "data", None, "--audit-log", str(audit), "--log-format", "json", processes=2
    ).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            create_dataset_and_store(client)
            for n in range(4):
                instance = make_instance(STUDY, SERIES, f"{SERIES}.{n}", seed=n)
                assert stow(client, [instance]).status_code == 200
            query = {"PatientName": PATIENT_NAME, "PatientID": PATIENT_ID, "limit": "5"}
            assert client.get(f"{DICOMWEB}/studies", params=query).status_code == 200
            metadata = client.get(f"{DICOMWEB}/studies/{STUDY}/metadata")
            assert metadata.status_code == 200
            assert client.get(f"{DICOMWEB}/studies/1.2.3.404/metadata").status_code == 404
            assert client.delete(f"{DICOMWEB}/studies/{STUDY}").status_code == 200
            # A server process killed: the parent's warning is a JSON line too.
            victim = server.server_processes()[0]
            os.kill(victim, signal.SIGKILL)
            wait_for(
                lambda: f"server process {victim} was killed by SIGKILL" in server.log.read_text(),
                "the parent's log line about the killed process",
            )
    finally:
        server.stop()

    lines = audit.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line whole
    stows = [
        e for e in entries if e["method"] == "POST" and e["route"] == f"{ROUTE_PREFIX}/studies"
    ]
    assert len(stows) == 4
    assert {e["resource"] for e in stows} == {f"{DICOMWEB}/studies"}
    assert {e["status"] for e in stows} == {200}
    assert {e["caller"] for e in entries} == {"anonymous"}
    searches = [
        e for e in entries if e["route"] == f"{ROUTE_PREFIX}/studies" and e["method"] == "GET"
    ]
    assert len(searches) == 1
    assert searches[0]["query_keys"] == ["PatientID", "PatientName", "limit"]
    assert searches[0]["status"] == 200
    reads = [e for e in entries if e["route"] == f"{ROUTE_PREFIX}/studies/{{study}}/metadata"]
    assert [(e["resource"], e["status"]) for e in reads] == [
        (f"{DICOMWEB}/studies/{STUDY}/metadata", 200),
        (f"{DICOMWEB}/studies/1.2.3.404/metadata", 404),
    ]
    deletes = [e for e in entries if e["method"] == "DELETE"]
    assert [(e["resource"], e["status"]) for e in deletes] == [(f"{DICOMWEB}/studies/{STUDY}", 200)]
    creates = [e for e in entries if e["resource"] == f"{DATASET}/dicomStores"]
    assert [e["status"] for e in creates] == [200]
    for entry in entries:
        assert set(entry) == {
            "time",
            "caller",
            "method",
            "route",
            "resource",
            "query_keys",
            "status",
        }
    text = audit.read_text()
    for phi in (PATIENT_NAME, "Smith", PATIENT_ID, "Doe^", "Patient0"):
        assert phi not in text

    records = [
        json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")
    ]
    killed = [r for r in records if f"{victim} was killed by SIGKILL" in r["message"]]
    assert len(killed) == 1
    assert set(killed[0]) >= {"time", "level", "logger", "message", "process"}
    assert killed[0]["level"] == "WARNING"
    assert killed[0]["logger"] == "dicomql.service.supervisor"
