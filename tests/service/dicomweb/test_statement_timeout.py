"""A QIDO search whose index query runs past the statement timeout is cancelled and answered
504 DEADLINE_EXCEEDED in Google's error format, and the server keeps answering (see
docs/reliability.md, "Limits", and docs/service.md)."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import psycopg
import pytest
from pydicom import dcmread

from dicomql.service.config import ServiceConfig
from tests.support.dicomweb import DICOMWEB, DicomWebClient, make_instance

INSTANCES = 300


def assert_deadline_exceeded(response: httpx.Response) -> None:
    assert response.status_code == 504, response.text
    error = response.json()["error"]
    assert error["code"] == 504 and error["status"] == "DEADLINE_EXCEEDED"
    assert "statement timeout" in error["message"]


def store_study(client: DicomWebClient) -> str:
    first = make_instance()
    study = str(dcmread(io.BytesIO(first)).StudyInstanceUID)
    parts = [first] + [make_instance(study, seed=n) for n in range(1, INSTANCES)]
    assert client.stow(parts).status_code == 200
    return study


def test_a_search_past_the_timeout_is_deadline_exceeded_on_sqlite(tmp_path: Path) -> None:
    # A microsecond: SQLite's progress handler finds the deadline passed at its first check.
    config = ServiceConfig(data_dir=tmp_path / "data", statement_timeout_seconds=1e-6)
    client = DicomWebClient(config)
    try:
        study = store_study(client)
        response = client.http.get(f"{DICOMWEB}/instances", params={"includefield": "all"})
        assert_deadline_exceeded(response)
        # The connection is usable again and nothing was lost.
        metadata = client.http.get(f"{DICOMWEB}/studies/{study}/metadata")
        assert metadata.status_code == 200 and len(metadata.json()) == INSTANCES
        assert client.stow([make_instance(study, seed=INSTANCES)]).status_code == 200
    finally:
        client.close()


@pytest.mark.postgres
def test_a_search_past_the_timeout_is_deadline_exceeded_on_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    # The search waits on a lock another session holds on the instances table; without the
    # statement timeout it would wait as long as that session does.
    config = ServiceConfig(
        data_dir=tmp_path / "data", database_url=postgres_url, statement_timeout_seconds=0.2
    )
    client = DicomWebClient(config)
    try:
        study = store_study(client)
        with psycopg.connect(postgres_url.replace("+psycopg", "")) as locker:
            locker.execute("LOCK TABLE instances IN ACCESS EXCLUSIVE MODE")
            response = client.http.get(f"{DICOMWEB}/instances", params={"includefield": "all"})
            assert_deadline_exceeded(response)
        # The lock released, the same search on the same server answers in full.
        response = client.http.get(
            f"{DICOMWEB}/studies/{study}/instances", params={"limit": str(INSTANCES)}
        )
        assert response.status_code == 200 and len(response.json()) == INSTANCES
        assert client.stow([make_instance(study, seed=INSTANCES)]).status_code == 200
    finally:
        client.close()
