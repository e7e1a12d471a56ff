"""Concurrent dataset and DICOM store create / patch / delete against a live uvicorn server, on
SQLite and PostgreSQL: every answer is a success or a 4xx in Google's shape (409 ALREADY_EXISTS
for a name taken meanwhile, 404 NOT_FOUND for a parent or resource deleted meanwhile), never a
5xx, and the index ends consistent (no store without its dataset)."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from dicomql.service.config import ServiceConfig
from tests.support.reliability import LOCATION, create_dataset_and_store

if TYPE_CHECKING:  # conftest names differ by folder: never imported at run time (tests/ports.py)
    from tests.conftest import LiveServer

DATASETS = ("d1", "d2")
STORES = ("s1", "s2", "s3")
CLIENTS = 12
REQUESTS_EACH = 40


def _operation(client: httpx.Client, rng: random.Random) -> tuple[str, httpx.Response]:
    dataset = rng.choice(DATASETS)
    store = rng.choice(STORES)
    base = f"{LOCATION}/datasets/{dataset}"
    kind = rng.choices(
        [
            "create_dataset",
            "delete_dataset",
            "create_store",
            "patch_store",
            "delete_store",
            "get_store",
            "list_stores",
        ],
        weights=[3, 1, 6, 4, 3, 2, 2],
    )[0]
    if kind == "create_dataset":
        return kind, client.post(f"{LOCATION}/datasets", params={"datasetId": dataset}, json={})
    if kind == "delete_dataset":
        return kind, client.delete(base)
    if kind == "create_store":
        return kind, client.post(
            f"{base}/dicomStores", params={"dicomStoreId": store}, json={"labels": {"k": "v"}}
        )
    if kind == "patch_store":
        return kind, client.patch(
            f"{base}/dicomStores/{store}",
            params={"updateMask": "labels"},
            json={"labels": {"k": str(rng.randrange(100))}},
        )
    if kind == "delete_store":
        return kind, client.delete(f"{base}/dicomStores/{store}")
    if kind == "get_store":
        return kind, client.get(f"{base}/dicomStores/{store}")
    return kind, client.get(f"{base}/dicomStores")


@pytest.mark.slow
def test_concurrent_create_patch_delete_never_answers_5xx(
    tmp_path: Path,
    database_url: str | None,
    start_live_server: Callable[[ServiceConfig], LiveServer],
) -> None:
    config = ServiceConfig(data_dir=tmp_path / "data", database_url=database_url, workers=1)
    server = start_live_server(config)
    answers: Counter[tuple[str, int]] = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def client_thread(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=server.url, timeout=120) as client:
            for _ in range(REQUESTS_EACH):
                kind, response = _operation(client, rng)
                with lock:
                    answers[(kind, response.status_code)] += 1
                    if response.status_code >= 500 or not _well_formed(kind, response):
                        failures.append(f"{kind} {response.status_code} {response.text[:300]}")

    try:
        threads = [threading.Thread(target=client_thread, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with httpx.Client(base_url=server.url, timeout=120) as client:
            listed = client.get(f"{LOCATION}/datasets").json().get("datasets", [])
            for dataset in listed:
                stores = client.get(f"/v1/{dataset['name']}/dicomStores")
                assert stores.status_code == 200, stores.text
                for found in stores.json().get("dicomStores", []):
                    assert client.get(f"/v1/{found['name']}").status_code == 200
    finally:
        server.stop()
    assert not failures, "\n".join(failures)
    assert sum(answers.values()) == CLIENTS * REQUESTS_EACH
    # The races happened: names were taken and parents deleted under other requests' feet.
    codes = {code for (_, code) in answers}
    assert 200 in codes and 404 in codes and 409 in codes, answers


def _well_formed(kind: str, response: httpx.Response) -> bool:
    """A 4xx is in Google's error shape with the status the race calls for."""
    if response.status_code < 400:
        return True
    error: dict[str, Any] = response.json().get("error", {})
    expected = {404: "NOT_FOUND", 409: "ALREADY_EXISTS"}.get(response.status_code)
    return error.get("code") == response.status_code and (
        expected is None or error.get("status") == expected
    )


# --- the same races made deterministic on PostgreSQL ----------------------------------------


def _wait_for_a_lock_wait(plain_url: str) -> None:
    """Until some backend waits on a row lock (the request under test reached it)."""
    import psycopg

    deadline = time.monotonic() + 60
    with psycopg.connect(plain_url, autocommit=True) as watcher:
        while True:
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ).fetchone()
            if waiting and waiting[0]:
                return
            assert time.monotonic() < deadline, "the request never waited for the lock"
            time.sleep(0.02)


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("held", "method", "path", "status"),
    [
        # A store deleted by a transaction still open: a patch or a second delete waits for it,
        # then answers 404 (before: 200 for an update or delete of nothing).
        ("DELETE FROM dicom_stores WHERE store_id = 's'", "PATCH", "dicomStores/s", 404),
        ("DELETE FROM dicom_stores WHERE store_id = 's'", "DELETE", "dicomStores/s", 404),
        # A dataset deleted meanwhile: creating a store in it is a 404 naming the dataset
        # (before: 409 "already exists", from the foreign key failure).
        ("DELETE FROM datasets WHERE dataset_id = 'd'", "POST", "dicomStores?dicomStoreId=t", 404),
        # A store created meanwhile (not yet committed): deleting the dataset waits for it and
        # removes it too (before: the cascade removed it without journaling its blobs).
        (
            "INSERT INTO dicom_stores (dataset_pk, store_id, resource, create_time, update_time)"
            " SELECT pk, 'late', '{}', now(), now() FROM datasets WHERE dataset_id = 'd'",
            "DELETE",
            "",
            200,
        ),
    ],
)
def test_a_request_racing_an_open_transaction_waits_and_answers_as_of_its_commit(
    tmp_path: Path,
    postgres_url: str,
    held: str,
    method: str,
    path: str,
    status: int,
    start_live_server: Callable[[ServiceConfig], LiveServer],
) -> None:
    import psycopg

    plain = postgres_url.replace("+psycopg", "")
    config = ServiceConfig(data_dir=tmp_path / "data", database_url=postgres_url, workers=0)
    server = start_live_server(config)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            create_dataset_and_store(client, "s")
            dataset = f"{LOCATION}/datasets/d"
            url = f"{dataset}/{path}".rstrip("/")
            answer: list[httpx.Response] = []
            with psycopg.connect(plain) as holder:
                holder.execute(held)  # a transaction left open, holding its row locks
                request = threading.Thread(
                    target=lambda: answer.append(
                        client.request(
                            method,
                            url,
                            json={"labels": {"k": "v"}} if method != "DELETE" else None,
                            params={"updateMask": "labels"} if method == "PATCH" else None,
                        )
                    )
                )
                request.start()
                _wait_for_a_lock_wait(plain)
                holder.commit()
                request.join(120)
            (response,) = answer
            assert response.status_code == status, response.text
            if status == 404:
                assert response.json()["error"]["status"] == "NOT_FOUND"
            if path == "":
                assert client.get(f"{dataset}/dicomStores/late").status_code == 404
    finally:
        server.stop()
