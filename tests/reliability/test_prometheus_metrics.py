"""``/metrics`` of ``dicomql serve --processes 2``, scraped with prometheus-client's own text
parser: after STOW, QIDO, WADO and a long-running operation the counters moved by exactly what
was done, whichever of the two processes answered each request and the scrape."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.ports import free_port
from tests.support.reliability import (
    DICOMWEB,
    ServerProcess,
    create_dataset_and_store,
    make_instance,
    postgres_schema,
    stow,
)

pytestmark = pytest.mark.slow

STUDY = "1.2.826.0.1.3680043.8.498.7001"
SERIES = f"{STUDY}.1"
STOW_ROUTE = (
    "/v1/projects/{project}/locations/{location}/datasets/{dataset}/dicomStores/{dicom_store}"
    "/dicomWeb/studies"
)
MULTIPART_ANY = {"accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
WADO_ROUTE = STOW_ROUTE + "/{study}/series/{series}"


def scrape(client: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.mark.parametrize("index", ["sqlite", "postgresql"])
def test_counters_move_by_what_was_done_across_two_processes(tmp_path: Path, index: str) -> None:
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(postgres_schema()) if index == "postgresql" else None
        before, after, parts, retrieved = _run_and_scrape(tmp_path, database_url)
    _check(before, after, parts, retrieved)


def _run_and_scrape(
    tmp_path: Path, database_url: str | None
) -> tuple[dict, dict, list[bytes], httpx.Response]:
    server = ServerProcess(tmp_path / "data", database_url, processes=2).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            create_dataset_and_store(client)
            before = scrape(client)
            parts = [make_instance(STUDY, SERIES, f"{SERIES}.{n}", seed=n) for n in range(3)]
            # Three STOWs of one instance each, so both processes are likely to answer some.
            for part in parts:
                assert stow(client, [part]).status_code == 200
            for _ in range(2):
                found = client.get(f"{DICOMWEB}/instances", params={"PatientName": "Doe*"})
                assert found.status_code == 200 and len(found.json()) == 3
            retrieved = client.get(
                f"{DICOMWEB}/studies/{STUDY}/series/{SERIES}", headers=MULTIPART_ANY
            )
            assert retrieved.status_code == 200
            deleted = client.delete(f"{DICOMWEB}/studies/{STUDY}/series/{SERIES}")
            assert deleted.status_code == 200 and deleted.json()["done"], deleted.text
            after = scrape(client)
    finally:
        server.stop()
    return before, after, parts, retrieved


def _check(before: dict, after: dict, parts: list[bytes], retrieved: httpx.Response) -> None:
    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "dicomql_http_requests_total"
    assert moved(requests, route=STOW_ROUTE, method="POST", status="200") == 3
    search = STOW_ROUTE.removesuffix("/studies") + "/instances"
    assert moved(requests, route=search, method="GET", status="200") == 2
    assert moved(requests, route=WADO_ROUTE, method="GET", status="200") == 1
    assert moved(requests, route=WADO_ROUTE, method="DELETE", status="200") == 1
    # Labels hold templates only: no UID of the requests appears anywhere in a label.
    assert not any(STUDY in str(key) for key in after)
    # Latency: one observation per request, in the histogram's +Inf bucket and count.
    duration = "dicomql_http_request_duration_seconds"
    assert moved(f"{duration}_count", route=STOW_ROUTE, method="POST") == 3
    assert moved(f"{duration}_bucket", route=STOW_ROUTE, method="POST", le="+Inf") == 3
    assert moved("dicomql_instances_total", direction="stored") == 3
    # The bodies as sent: the instances and their multipart framing.
    assert moved("dicomql_bytes_total", direction="stored") >= sum(len(part) for part in parts)
    assert moved("dicomql_instances_total", direction="retrieved") == 3
    assert moved("dicomql_bytes_total", direction="retrieved") == len(retrieved.content)
    # Read from the index at scrape time: the finished series deletion.
    delete_series = "google.cloud.healthcare.v1.dicomweb.DicomWebService.DeleteSeries"
    assert value(after, "dicomql_operations", method=delete_series, state="succeeded") == 1
    assert value(after, "dicomql_work_items_pending") == 0
    assert value(after, "dicomql_outbox_pending") == 0


def test_the_metrics_port_answers_scrapes_without_the_token_and_nothing_else(
    tmp_path: Path,
) -> None:
    token = "metrics-port-test-token"
    metrics_port = free_port()
    server = ServerProcess(
        tmp_path / "data",
        None,
        *("--auth-token", token, "--metrics-port", str(metrics_port)),
        processes=2,
    ).start()
    try:
        api = httpx.Client(
            base_url=server.url, timeout=30, headers={"authorization": f"Bearer {token}"}
        )
        scraper = httpx.Client(base_url=f"http://127.0.0.1:{metrics_port}", timeout=30)
        with api, scraper:
            create_dataset_and_store(api)
            before = scrape(scraper)
            assert stow(api, [make_instance(STUDY, SERIES, f"{SERIES}.1")]).status_code == 200
            # Several scrapes, so both processes likely answer one: each sums both's counters.
            for _ in range(4):
                after = scrape(scraper)
                stored = value(after, "dicomql_instances_total", direction="stored")
                assert stored - value(before, "dicomql_instances_total", direction="stored") == 1
            # The API port's /metrics still needs the token; the metrics port serves no API.
            assert httpx.get(f"{server.url}/metrics").status_code == 401
            assert api.get("/metrics").status_code == 200
            assert scraper.get("/v1/projects/p/locations/l/datasets").status_code == 404
    finally:
        server.stop()
