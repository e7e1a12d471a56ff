"""projects.locations.datasets through google-api-python-client against a live server."""

from __future__ import annotations

from typing import Any

import pytest
from googleapiclient.errors import HttpError

PARENT = "projects/p/locations/us-central1"


def datasets(healthcare: Any) -> Any:
    return healthcare.projects().locations().datasets()


def error_of(caught: pytest.ExceptionInfo[HttpError]) -> tuple[int, str, str]:
    import json

    body = json.loads(caught.value.content)["error"]
    return caught.value.resp.status, body["status"], body["message"]


def test_create_returns_a_done_operation_whose_response_is_the_dataset(healthcare: Any) -> None:
    operation = (
        datasets(healthcare)
        .create(parent=PARENT, datasetId="ds1", body={"timeZone": "Europe/Paris"})
        .execute()
    )
    assert operation["name"].startswith(f"{PARENT}/datasets/ds1/operations/")
    assert operation["done"] is True
    assert operation["response"] == {
        "@type": "type.googleapis.com/google.cloud.healthcare.v1.Dataset",
        "name": f"{PARENT}/datasets/ds1",
        "timeZone": "Europe/Paris",
    }
    metadata = operation["metadata"]
    assert metadata["@type"] == "type.googleapis.com/google.cloud.healthcare.v1.OperationMetadata"
    assert metadata["apiMethodName"].endswith("CreateDataset")
    assert metadata["createTime"].endswith("Z") and metadata["endTime"].endswith("Z")
    # The operation is stored: operations.get finds it, unchanged.
    fetched = datasets(healthcare).operations().get(name=operation["name"]).execute()
    assert fetched == operation


def test_get_returns_the_dataset_with_utc_as_the_default_time_zone(healthcare: Any) -> None:
    datasets(healthcare).create(parent=PARENT, datasetId="ds1", body={}).execute()
    dataset = datasets(healthcare).get(name=f"{PARENT}/datasets/ds1").execute()
    assert dataset == {"name": f"{PARENT}/datasets/ds1", "timeZone": "UTC"}


def test_get_of_a_missing_dataset_is_404(healthcare: Any) -> None:
    with pytest.raises(HttpError) as caught:
        datasets(healthcare).get(name=f"{PARENT}/datasets/nope").execute()
    code, status, message = error_of(caught)
    assert (code, status) == (404, "NOT_FOUND")
    assert f"{PARENT}/datasets/nope" in message


def test_creating_an_existing_dataset_is_409_already_exists(healthcare: Any) -> None:
    datasets(healthcare).create(parent=PARENT, datasetId="ds1", body={}).execute()
    with pytest.raises(HttpError) as caught:
        datasets(healthcare).create(parent=PARENT, datasetId="ds1", body={}).execute()
    assert error_of(caught)[:2] == (409, "ALREADY_EXISTS")


def test_the_same_dataset_id_in_another_location_is_a_different_dataset(healthcare: Any) -> None:
    datasets(healthcare).create(parent=PARENT, datasetId="ds1", body={}).execute()
    other = "projects/p/locations/europe-west4"
    datasets(healthcare).create(parent=other, datasetId="ds1", body={}).execute()
    assert datasets(healthcare).list(parent=other).execute()["datasets"] == [
        {"name": f"{other}/datasets/ds1", "timeZone": "UTC"}
    ]


BAD_CREATES = [
    ("bad id", {}, "Invalid datasetId"),
    ("x" * 257, {}, "Invalid datasetId"),
    ("", {}, "datasetId is required"),
    ("ds", {"timeZone": "Mars/Olympus"}, 'Invalid time zone "Mars/Olympus"'),
    ("ds", {"timeZone": "America"}, 'Invalid time zone "America"'),  # a directory of zones
    ("ds", {"timeZone": "../etc/passwd"}, "Invalid time zone"),
    ("ds", {"timeZone": "a" * 300}, "Invalid time zone"),
    ("ds", {"timeZone": 3}, "Invalid value at 'dataset.time_zone' (TYPE_STRING), 3"),
    ("ds", {"kmsKey": "k"}, "Unknown name \"kmsKey\" at 'dataset': Cannot find field."),
]


def test_create_with_bad_input_is_400_naming_the_problem(healthcare: Any) -> None:
    for dataset_id, body, problem in BAD_CREATES:
        with pytest.raises(HttpError) as caught:
            datasets(healthcare).create(parent=PARENT, datasetId=dataset_id, body=body).execute()
        code, status, message = error_of(caught)
        assert (code, status) == (400, "INVALID_ARGUMENT")
        assert problem in message, dataset_id
        assert datasets(healthcare).list(parent=PARENT).execute() == {}


def test_list_pages_through_every_dataset_in_id_order(healthcare: Any) -> None:
    ids = [f"ds{n:02}" for n in range(7)]
    for dataset_id in reversed(ids):
        datasets(healthcare).create(parent=PARENT, datasetId=dataset_id, body={}).execute()
    seen: list[str] = []
    pages = 0
    request = datasets(healthcare).list(parent=PARENT, pageSize=3)
    while request is not None:
        response = request.execute()
        pages += 1
        assert len(response["datasets"]) <= 3
        seen += [dataset["name"].rsplit("/", 1)[1] for dataset in response["datasets"]]
        request = datasets(healthcare).list_next(request, response)
    assert seen == ids
    assert pages == 3


def test_list_of_an_empty_location_is_an_empty_response(healthcare: Any) -> None:
    assert datasets(healthcare).list(parent=PARENT).execute() == {}


def test_patch_changes_the_time_zone_named_in_the_update_mask(healthcare: Any) -> None:
    datasets(healthcare).create(parent=PARENT, datasetId="ds1", body={}).execute()
    name = f"{PARENT}/datasets/ds1"
    patched = (
        datasets(healthcare)
        .patch(name=name, updateMask="timeZone", body={"timeZone": "America/New_York"})
        .execute()
    )
    assert patched == {"name": name, "timeZone": "America/New_York"}
    assert datasets(healthcare).get(name=name).execute() == patched
    # The proto spelling of the path works too; an empty time zone means UTC.
    cleared = datasets(healthcare).patch(name=name, updateMask="time_zone", body={}).execute()
    assert cleared["timeZone"] == "UTC"


BAD_PATCHES = [
    (None, {"timeZone": "UTC"}, "updateMask is required"),
    ("encryptionSpec", {}, 'Invalid update_mask path "encryptionSpec"'),
    ("timeZone", {"timeZone": "Nowhere/City"}, "Invalid time zone"),
]


def test_patch_with_a_bad_mask_or_value_is_400_and_changes_nothing(healthcare: Any) -> None:
    datasets(healthcare).create(parent=PARENT, datasetId="ds1", body={}).execute()
    name = f"{PARENT}/datasets/ds1"
    for mask, body, problem in BAD_PATCHES:
        with pytest.raises(HttpError) as caught:
            datasets(healthcare).patch(name=name, updateMask=mask, body=body).execute()
        code, _status, message = error_of(caught)
        assert code == 400
        assert problem in message, mask
        assert datasets(healthcare).get(name=name).execute()["timeZone"] == "UTC"


def test_patch_of_a_missing_dataset_is_404(healthcare: Any) -> None:
    with pytest.raises(HttpError) as caught:
        datasets(healthcare).patch(
            name=f"{PARENT}/datasets/nope", updateMask="timeZone", body={"timeZone": "UTC"}
        ).execute()
    assert error_of(caught)[0] == 404


def test_delete_removes_the_dataset_and_its_stores(healthcare: Any) -> None:
    datasets(healthcare).create(parent=PARENT, datasetId="ds1", body={}).execute()
    name = f"{PARENT}/datasets/ds1"
    datasets(healthcare).dicomStores().create(parent=name, dicomStoreId="s1", body={}).execute()
    assert datasets(healthcare).delete(name=name).execute() == {}
    with pytest.raises(HttpError) as caught:
        datasets(healthcare).get(name=name).execute()
    assert error_of(caught)[0] == 404
    with pytest.raises(HttpError) as caught:
        datasets(healthcare).dicomStores().get(name=f"{name}/dicomStores/s1").execute()
    assert error_of(caught)[0] == 404
    # The ID is free again, and the new dataset starts empty.
    datasets(healthcare).create(parent=PARENT, datasetId="ds1", body={}).execute()
    assert datasets(healthcare).dicomStores().list(parent=name).execute() == {}


def test_delete_of_a_missing_dataset_is_404(healthcare: Any) -> None:
    with pytest.raises(HttpError) as caught:
        datasets(healthcare).delete(name=f"{PARENT}/datasets/nope").execute()
    assert error_of(caught)[:2] == (404, "NOT_FOUND")
