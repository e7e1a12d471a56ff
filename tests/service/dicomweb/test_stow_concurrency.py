"""Concurrent STOW clients storing overlapping instances: no duplicates, no 500s, and the
counters agree with what was acknowledged."""

from __future__ import annotations

import random
import threading

import httpx

from dicomql.service.config import ServiceConfig
from tests.support.dicomweb import (
    DICOMWEB,
    create_store,
    make_instance,
    multipart,
    read_multipart,
    referenced,
)
from tests.support.reliability import stored_blobs_of

STUDIES = ["1.2.826.0.5.1", "1.2.826.0.5.2"]


def _instances() -> dict[str, tuple[str, str, bytes]]:
    """24 instances over 2 studies x 2 series: SOP UID -> (study, series, bytes)."""
    out = {}
    for s, study in enumerate(STUDIES):
        for r in range(2):
            series = f"{study}.{r + 1}"
            for n in range(6):
                sop = f"{series}.{n + 1}"
                modality = "CT" if r == 0 else "MR"
                out[sop] = (
                    study,
                    series,
                    make_instance(study, series, sop, modality=modality, seed=s * 100 + r * 10 + n),
                )
    return out


def test_four_concurrent_clients_with_overlapping_instances_agree_with_the_index(
    service_config: ServiceConfig,
    live_server,  # type: ignore[no-untyped-def]
) -> None:
    create_store(service_config)
    instances = _instances()
    uids = sorted(instances)
    acknowledged: set[str] = set()
    statuses: list[int] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=live_server.url, timeout=60) as http:
            for _ in range(4):
                batch = rng.sample(uids, 8)  # overlaps with the other clients' batches
                body, content_type = multipart([instances[uid][2] for uid in batch])
                response = http.post(
                    f"{DICOMWEB}/studies",
                    content=body,
                    headers={"content-type": content_type, "accept": "application/dicom+json"},
                )
                with lock:
                    statuses.append(response.status_code)
                    if response.status_code == 200:
                        acknowledged.update(referenced(response))

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [200] * 16  # identical re-stores are successes, never conflicts or 500s
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        total = 0
        for study in STUDIES:
            expected = {uid for uid in acknowledged if instances[uid][0] == study}
            if not expected:
                continue
            metrics = http.get(f"{DICOMWEB}/studies/{study}:getStudyMetrics").json()
            assert metrics["instanceCount"] == str(len(expected))
            series_uids = {instances[uid][1] for uid in expected}
            assert metrics["seriesCount"] == str(len(series_uids))
            blob_bytes = sum(len(instances[uid][2]) for uid in expected)
            assert metrics["blobStorageSizeBytes"] == str(blob_bytes)
            for series in series_uids:
                in_series = [uid for uid in expected if instances[uid][1] == series]
                series_metrics = http.get(
                    f"{DICOMWEB}/studies/{study}/series/{series}:getSeriesMetrics"
                ).json()
                assert series_metrics["instanceCount"] == str(len(in_series))
            response = http.get(
                f"{DICOMWEB}/studies/{study}",
                headers={
                    "accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'
                },
            )
            assert response.status_code == 200
            total += len(expected)
            parts = read_multipart(response.headers["content-type"], response.content)
            stored = sorted(instances[uid][2] for uid in expected)
            assert sorted(body for _, body in parts) == stored
    assert total == len(acknowledged)
    # No leftover copies of the raced duplicates (in the index or as files).
    assert len(stored_blobs_of(service_config)) == len(acknowledged)
