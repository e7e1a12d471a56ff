"""projects.locations.datasets.operations through google-api-python-client: get, list, cancel."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from googleapiclient.errors import HttpError

from dicomql.service.config import ServiceConfig
from dicomql.store import operations as operation_store
from dicomql.store import resources
from dicomql.store.index import Index

LOCATION = "projects/p/locations/us-central1"
DATASET = f"{LOCATION}/datasets/ds"
# A method no handler is registered for, so no worker claims these operations: they stay
# running for as long as a test looks at them. (A real method such as ExportDicomData would be
# claimed by the live server's workers within a poll and fail for want of a request.)
RUNNING_METHOD = "google.cloud.healthcare.v1.dicom.DicomService.NoSuchMethodForTests"


def error_of(caught: pytest.ExceptionInfo[HttpError]) -> tuple[int, str, str]:
    body = json.loads(caught.value.content)["error"]
    return caught.value.resp.status, body["status"], body["message"]


@pytest.fixture
def operations(healthcare: Any) -> Any:
    """The operations collection, with dataset ``ds`` created (and its create operation)."""
    datasets = healthcare.projects().locations().datasets()
    datasets.create(parent=LOCATION, datasetId="ds", body={}).execute()
    return datasets.operations()


@pytest.fixture
def index(service_config: ServiceConfig) -> Iterator[Index]:
    index = Index.open(service_config.index_url)
    try:
        yield index
    finally:
        index.close()


def start_operations(index: Index, count: int, *, finish: bool = False) -> list[str]:
    """Record ``count`` operations the way an endpoint starting long-running work does."""
    names: list[str] = []
    with index.begin() as conn:
        dataset = resources.find_dataset(conn, "p", "us-central1", "ds")
        assert dataset is not None
        for _ in range(count):
            row = operation_store.create_operation(
                conn, dataset.pk, RUNNING_METHOD, target=f"{DATASET}/dicomStores/s", pending=4
            )
            if finish:
                operation_store.finish_operation(conn, row.pk, response={"@type": "x"})
            names.append(f"{DATASET}/operations/{row.operation_id}")
    return names


def test_get_shows_a_running_operations_metadata_and_counters(
    operations: Any, index: Index
) -> None:
    (name,) = start_operations(index, 1)
    operation = operations.get(name=name).execute()
    assert operation["name"] == name
    assert "done" not in operation  # proto3 JSON: false is left out
    assert operation["metadata"]["apiMethodName"] == RUNNING_METHOD
    assert operation["metadata"]["counter"] == {"pending": "4"}


def test_get_of_a_missing_operation_or_dataset_is_404(operations: Any) -> None:
    for name in (f"{DATASET}/operations/123", f"{LOCATION}/datasets/nope/operations/123"):
        with pytest.raises(HttpError) as caught:
            operations.get(name=name).execute()
        code, status, message = error_of(caught)
        assert (code, status) == (404, "NOT_FOUND")
        assert name.rsplit("/", 2)[0] in message


def test_list_pages_through_every_operation_oldest_first(operations: Any, index: Index) -> None:
    started = start_operations(index, 11)
    seen: list[str] = []
    pages = 0
    request = operations.list(name=DATASET, pageSize=4)
    while request is not None:
        response = request.execute()
        pages += 1
        seen += [operation["name"] for operation in response["operations"]]
        request = operations.list_next(request, response)
    assert len(seen) == 12 and pages == 3  # the dataset's create operation comes first
    assert seen[1:] == started


def test_list_filters_on_done(operations: Any, index: Index) -> None:
    running = start_operations(index, 3)
    finished = start_operations(index, 2, finish=True)

    def listed(text: str) -> list[str]:
        response = operations.list(name=DATASET, filter=text, pageSize=2).execute()
        names = [operation["name"] for operation in response.get("operations", [])]
        while "nextPageToken" in response:
            response = operations.list(
                name=DATASET, filter=text, pageSize=2, pageToken=response["nextPageToken"]
            ).execute()
            names += [operation["name"] for operation in response.get("operations", [])]
        return names

    assert listed("done=false") == running
    assert listed("NOT done=true") == running
    assert listed("done=true")[1:] == finished  # after the dataset's create operation
    assert listed(f'metadata.apiMethodName="{RUNNING_METHOD}" AND done=true') == finished


def test_list_with_an_unsupported_filter_is_400(operations: Any) -> None:
    with pytest.raises(HttpError) as caught:
        operations.list(name=DATASET, filter="labels.a=b").execute()
    code, _status, message = error_of(caught)
    assert code == 400
    assert "cannot filter on 'labels'" in message


def test_cancel_of_a_running_operation_sets_cancel_requested(operations: Any, index: Index) -> None:
    (name,) = start_operations(index, 1)
    assert operations.cancel(name=name, body={}).execute() == {}
    operation = operations.get(name=name).execute()
    assert operation["metadata"]["cancelRequested"] is True
    # Cancelling twice is fine.
    assert operations.cancel(name=name, body={}).execute() == {}


def test_cancel_of_a_done_operation_succeeds_and_changes_nothing(
    operations: Any, index: Index
) -> None:
    (name,) = start_operations(index, 1, finish=True)
    before = operations.get(name=name).execute()
    assert operations.cancel(name=name, body={}).execute() == {}
    assert operations.get(name=name).execute() == before


def test_cancel_of_a_missing_operation_is_404(operations: Any) -> None:
    with pytest.raises(HttpError) as caught:
        operations.cancel(name=f"{DATASET}/operations/42", body={}).execute()
    assert error_of(caught)[:2] == (404, "NOT_FOUND")


def test_cancel_with_an_unknown_body_field_is_400(operations: Any, index: Index) -> None:
    (name,) = start_operations(index, 1)
    with pytest.raises(HttpError) as caught:
        operations.cancel(name=name, body={"force": True}).execute()
    code, _status, message = error_of(caught)
    assert code == 400
    assert message == 'Invalid JSON payload received. Unknown name "force": Cannot find field.'
    assert "cancelRequested" not in operations.get(name=name).execute()["metadata"]
