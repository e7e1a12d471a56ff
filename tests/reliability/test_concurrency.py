"""Eight clients storing, searching, deleting and patching overlapping data against a live server:
afterwards the index's counters, the store metrics and QIDO agree with each other and with what
was acknowledged, and no request was a 500."""

from __future__ import annotations

import json
import os
import random
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, func, select

from dicomql.service.config import ServiceConfig
from dicomql.store.schema import blob_journal, instances, series, studies
from tests.support.reliability import (
    ANY_SYNTAX,
    DICOMWEB,
    STORE,
    create_dataset_and_store,
    indexed_blob_keys,
    make_instance,
    qido_instances,
    referenced,
    stored_blobs,
    stow,
)

CLIENTS = 8
OPERATIONS = 30
FIGURES = Path(os.environ.get("DICOMQL_RELIABILITY_FIGURES", "/tmp/dicomql-reliability"))

# 3 studies x 2 series x 6 instances, shared by every client (the overlap is the point).
POOL = {
    f"1.2.826.0.9.{s}.{r}.{n}": (f"1.2.826.0.9.{s}", f"1.2.826.0.9.{s}.{r}")
    for s in range(3)
    for r in range(2)
    for n in range(6)
}
DATA = {
    sop: make_instance(
        study, series_uid, sop, seed=index, modality="CT" if sop[-3] == "0" else "MR"
    )
    for index, (sop, (study, series_uid)) in enumerate(sorted(POOL.items()))
}


class Ledger:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stored: set[str] = set()
        self.targeted_by_delete: set[str] = set()
        self.requests: Counter[str] = Counter()
        self.server_errors: list[str] = []

    def note(self, kind: str, response: httpx.Response) -> None:
        with self.lock:
            self.requests[kind] += 1
            if response.status_code >= 500:
                self.server_errors.append(f"{kind} {response.status_code} {response.text[:300]}")


def _client(url: str, number: int, ledger: Ledger) -> None:
    rng = random.Random(number)
    sops = sorted(POOL)
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(OPERATIONS):
            action = rng.choices(["store", "search", "delete", "patch"], [5, 3, 2, 1])[0]
            if action == "store":
                batch = rng.sample(sops, rng.randint(1, 4))
                response = stow(client, [DATA[sop] for sop in batch])
                ledger.note("store", response)
                if response.status_code in (200, 202):
                    with ledger.lock:
                        ledger.stored.update(referenced(response))
            elif action == "search":
                level = rng.choice(["studies", "series", "instances"])
                response = client.get(f"{DICOMWEB}/{level}", params={"PatientID": "P1"})
                ledger.note("search", response)
                assert response.status_code in (200, 204), response.text
            elif action == "delete":
                sop = rng.choice(sops)
                study, series_uid = POOL[sop]
                if rng.random() < 0.25:
                    path = f"{DICOMWEB}/studies/{study}/series/{series_uid}"
                    doomed = {s for s, (_, r) in POOL.items() if r == series_uid}
                else:
                    path = f"{DICOMWEB}/studies/{study}/series/{series_uid}/instances/{sop}"
                    doomed = {sop}
                with ledger.lock:
                    ledger.targeted_by_delete |= doomed
                response = client.delete(path)
                ledger.note("delete", response)
                assert response.status_code in (200, 404), response.text
            else:
                labels = {"client": str(number), "n": str(rng.randint(0, 99))}
                response = client.patch(
                    STORE, params={"updateMask": "labels"}, json={"labels": labels}
                )
                ledger.note("patch", response)
                assert response.status_code == 200, response.text


def _journaled(database_url: str) -> list[str]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return [row.blob_key for row in conn.execute(select(blob_journal))]
    finally:
        engine.dispose()


def _index_inconsistencies(database_url: str) -> list[str]:
    """Counters stored on studies and series that differ from the rows beneath them."""
    engine = create_engine(database_url)
    problems = []
    try:
        with engine.connect() as conn:
            for row in conn.execute(select(studies)):
                count = conn.execute(
                    select(func.count()).where(instances.c.study_pk == row.pk)
                ).scalar_one()
                series_count = conn.execute(
                    select(func.count()).where(series.c.study_pk == row.pk)
                ).scalar_one()
                if (row.number_of_instances, row.number_of_series) != (count, series_count):
                    problems.append(
                        f"study {row.study_instance_uid}: {row.number_of_instances}"
                        f"/{row.number_of_series} vs {count}/{series_count}"
                    )
                if count == 0:
                    problems.append(f"study {row.study_instance_uid} has no instances")
            for row in conn.execute(select(series)):
                count = conn.execute(
                    select(func.count()).where(instances.c.series_pk == row.pk)
                ).scalar_one()
                if row.number_of_instances != count or count == 0:
                    problems.append(
                        f"series {row.series_instance_uid}: {row.number_of_instances} vs {count}"
                    )
    finally:
        engine.dispose()
    return problems


def test_eight_clients_leave_counters_metrics_and_qido_consistent(
    service_config: ServiceConfig, live_server: Any
) -> None:
    with httpx.Client(base_url=live_server.url, timeout=60) as admin:
        create_dataset_and_store(admin)
    ledger = Ledger()
    failures: list[BaseException] = []

    def run(number: int) -> None:
        try:
            _client(live_server.url, number, ledger)
        except BaseException as exc:  # reported below, with the thread's assertion
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not ledger.server_errors, ledger.server_errors[:5]
    assert not failures, failures[:3]

    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        listed = qido_instances(client)
        metrics = client.get(f"{STORE}:getDICOMStoreMetrics").json()
        qido_studies = client.get(f"{DICOMWEB}/studies").json() if listed else []
        qido_series = client.get(f"{DICOMWEB}/series").json() if listed else []
        unreadable = [
            sop
            for study, series_uid, sop in listed
            if client.get(
                f"{DICOMWEB}/studies/{study}/series/{series_uid}/instances/{sop}",
                headers=ANY_SYNTAX,
            ).content
            != DATA[sop]
        ]
    problems = _index_inconsistencies(service_config.index_url)
    listed_sops = {sop for _, _, sop in listed}
    # Stored, acknowledged and never the target of a delete: must be there.
    missing = (ledger.stored - ledger.targeted_by_delete) - listed_sops
    per_study = Counter(study for study, _, _ in listed)
    per_series = Counter(series_uid for _, series_uid, _ in listed)
    study_counts = {
        item["0020000D"]["Value"][0]: (
            item["00201208"]["Value"][0],
            item["00201206"]["Value"][0],
        )
        for item in qido_studies
    }
    series_counts = {
        item["0020000E"]["Value"][0]: item["00201209"]["Value"][0] for item in qido_series
    }
    counter_mismatches = [
        study
        for study, (count, series_count) in study_counts.items()
        if count != per_study[study] or series_count != len({r for s, r, _ in listed if s == study})
    ] + [r for r, count in series_counts.items() if count != per_series[r]]
    blob_keys = set(stored_blobs(service_config.data_dir, service_config.database_url))
    FIGURES.mkdir(parents=True, exist_ok=True)
    backend = "postgresql" if service_config.database_url else "sqlite"
    (FIGURES / f"concurrency-{backend}.json").write_text(
        json.dumps(
            {
                "requests": dict(ledger.requests),
                "instances_at_end": len(listed),
                "inconsistencies": len(problems) + len(counter_mismatches) + len(missing),
            },
            indent=2,
        )
    )
    assert sum(ledger.requests.values()) == CLIENTS * OPERATIONS
    assert problems == []
    assert counter_mismatches == []
    assert missing == set()
    assert unreadable == []
    assert set(study_counts) == set(per_study)
    assert set(series_counts) == set(per_series)
    assert int(metrics.get("instanceCount", "0")) == len(listed)
    assert int(metrics.get("seriesCount", "0")) == len(per_series)
    assert int(metrics.get("studyCount", "0")) == len(per_study)
    indexed = indexed_blob_keys(service_config.data_dir, service_config.database_url)
    assert blob_keys - indexed == set(), ("orphaned blobs", _journaled(service_config.index_url))
    assert indexed - blob_keys == set(), "instances without blobs"
    assert len(indexed) == len(listed)
