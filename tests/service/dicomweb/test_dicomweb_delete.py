"""Deleting studies, series and instances: Operations for studies and series, ``{}`` for an
instance, counters kept right, blobs removed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dicomql.service.config import ServiceConfig
from tests.support.dicomweb import DICOMWEB, DicomWebClient, make_instance
from tests.support.reliability import stored_blobs_of

STUDY = "1.2.826.0.4.1"
S1, S2 = f"{STUDY}.1", f"{STUDY}.2"


@pytest.fixture
def client(service_config: ServiceConfig) -> Iterator[DicomWebClient]:
    client = DicomWebClient(service_config)
    parts = [make_instance(STUDY, S1, f"{S1}.{n}", modality="CT", seed=n) for n in range(3)]
    parts += [make_instance(STUDY, S2, f"{S2}.{n}", modality="MR", seed=10 + n) for n in range(2)]
    assert client.stow(parts).status_code == 200
    try:
        yield client
    finally:
        client.close()


def _blob_files(config: ServiceConfig) -> int:
    return len(stored_blobs_of(config))


def _metrics(client: DicomWebClient) -> dict[str, str]:
    response = client.http.get(f"{DICOMWEB}/studies/{STUDY}:getStudyMetrics")
    return response.json() if response.status_code == 200 else {}


def test_delete_study_returns_a_done_operation_and_removes_everything(
    client: DicomWebClient, service_config: ServiceConfig
) -> None:
    response = client.http.delete(f"{DICOMWEB}/studies/{STUDY}")
    assert response.status_code == 200
    operation = response.json()
    assert operation["name"].startswith("projects/p/locations/l/datasets/d/operations/")
    assert operation["done"] is True and "error" not in operation
    metadata = operation["metadata"]
    assert metadata["apiMethodName"] == (
        "google.cloud.healthcare.v1.dicomweb.DicomWebService.DeleteStudy"
    )
    assert metadata["counter"] == {"success": "5"}
    assert client.http.get(f"{DICOMWEB}/studies/{STUDY}").status_code == 404
    assert _metrics(client) == {}
    assert _blob_files(service_config) == 0


def test_delete_series_keeps_the_rest_of_the_study_consistent(
    client: DicomWebClient, service_config: ServiceConfig
) -> None:
    response = client.http.delete(f"{DICOMWEB}/studies/{STUDY}/series/{S1}")
    assert response.status_code == 200
    assert response.json()["metadata"]["apiMethodName"].endswith("DeleteSeries")
    metrics = _metrics(client)
    assert metrics["seriesCount"] == "1" and metrics["instanceCount"] == "2"
    assert client.http.get(f"{DICOMWEB}/studies/{STUDY}/series/{S1}").status_code == 404
    assert client.http.get(f"{DICOMWEB}/studies/{STUDY}/series/{S2}").status_code == 200
    assert _blob_files(service_config) == 2


def test_delete_instance_returns_empty_object_and_updates_counters(
    client: DicomWebClient,
) -> None:
    before = _metrics(client)
    response = client.http.delete(f"{DICOMWEB}/studies/{STUDY}/series/{S2}/instances/{S2}.0")
    assert response.status_code == 200 and response.json() == {}
    after = _metrics(client)
    assert int(after["instanceCount"]) == int(before["instanceCount"]) - 1
    assert int(after["blobStorageSizeBytes"]) < int(before["blobStorageSizeBytes"])
    assert after["seriesCount"] == "2"


def test_deleting_the_last_instance_removes_its_series(client: DicomWebClient) -> None:
    for n in range(2):
        client.http.delete(f"{DICOMWEB}/studies/{STUDY}/series/{S2}/instances/{S2}.{n}")
    assert _metrics(client)["seriesCount"] == "1"
    series = client.http.get(f"{DICOMWEB}/studies/{STUDY}/series/{S2}:getSeriesMetrics")
    assert series.status_code == 404


def test_a_deleted_instance_can_be_stored_again(client: DicomWebClient) -> None:
    client.http.delete(f"{DICOMWEB}/studies/{STUDY}")
    again = make_instance(STUDY, S1, f"{S1}.0", seed=99)  # other bytes: no conflict any more
    assert client.stow([again]).status_code == 200
    assert _metrics(client)["instanceCount"] == "1"


@pytest.mark.parametrize(
    "path",
    ["studies/9.9", f"studies/{STUDY}/series/9.9", f"studies/{STUDY}/series/{S1}/instances/9.9"],
)
def test_deleting_what_does_not_exist_is_404(client: DicomWebClient, path: str) -> None:
    response = client.http.delete(f"{DICOMWEB}/{path}")
    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"
