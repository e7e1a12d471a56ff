"""``:getStudyMetrics``, ``:getSeriesMetrics`` and ``:getStorageInfo`` against what was stored."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dicomql.service.config import ServiceConfig
from tests.support.dicomweb import DICOMWEB, DicomWebClient, make_instance

STUDY = "1.2.826.0.6.1"
S1, S2 = f"{STUDY}.1", f"{STUDY}.2"
PARTS = {
    f"{S1}.1": make_instance(STUDY, S1, f"{S1}.1", seed=1),
    f"{S1}.2": make_instance(STUDY, S1, f"{S1}.2", rows=16, columns=16, seed=2),
    f"{S2}.1": make_instance(STUDY, S2, f"{S2}.1", modality="MR", seed=3),
}


@pytest.fixture
def client(service_config: ServiceConfig) -> Iterator[DicomWebClient]:
    client = DicomWebClient(service_config)
    assert client.stow(list(PARTS.values())).status_code == 200
    try:
        yield client
    finally:
        client.close()


def test_study_metrics_count_series_instances_and_bytes(client: DicomWebClient) -> None:
    response = client.http.get(f"{DICOMWEB}/studies/{STUDY}:getStudyMetrics")
    assert response.status_code == 200
    metrics = response.json()
    assert (
        metrics["study"]
        == f"projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb/studies/{STUDY}"
    )
    assert metrics["seriesCount"] == "2"
    assert metrics["instanceCount"] == "3"
    assert metrics["blobStorageSizeBytes"] == str(sum(len(p) for p in PARTS.values()))
    assert int(metrics["structuredStorageSizeBytes"]) > 0


def test_series_metrics_are_per_series(client: DicomWebClient) -> None:
    metrics = client.http.get(f"{DICOMWEB}/studies/{STUDY}/series/{S1}:getSeriesMetrics").json()
    assert metrics["series"].endswith(f"/studies/{STUDY}/series/{S1}")
    assert metrics["instanceCount"] == "2"
    assert metrics["blobStorageSizeBytes"] == str(len(PARTS[f"{S1}.1"]) + len(PARTS[f"{S1}.2"]))


def test_storage_info_reports_blob_size_and_standard_class(client: DicomWebClient) -> None:
    path = f"studies/{STUDY}/series/{S1}/instances/{S1}.2"
    info = client.http.get(f"{DICOMWEB}/{path}:getStorageInfo").json()
    assert info["referencedResource"].endswith(path)
    assert info["blobStorageInfo"] == {
        "sizeBytes": str(len(PARTS[f"{S1}.2"])),
        "storageClass": "STANDARD",
    }
    assert int(info["structuredStorageInfo"]["sizeBytes"]) > 0


@pytest.mark.parametrize(
    "path",
    [
        "studies/9.9:getStudyMetrics",
        f"studies/{STUDY}/series/9.9:getSeriesMetrics",
        f"studies/{STUDY}/series/{S1}/instances/9.9:getStorageInfo",
    ],
)
def test_metrics_of_missing_resources_are_404(client: DicomWebClient, path: str) -> None:
    response = client.http.get(f"{DICOMWEB}/{path}")
    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"
