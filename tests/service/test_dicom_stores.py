"""projects.locations.datasets.dicomStores through google-api-python-client against a live
server: create, get, list (paging), patch, delete with its instances, getDICOMStoreMetrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from googleapiclient.errors import HttpError
from sqlalchemy import insert

from dicomql.service.config import ServiceConfig
from dicomql.store import resources
from dicomql.store.blobs import LocalBlobStore
from dicomql.store.index import Index
from dicomql.store.schema import dicom_stores, instances, series, studies
from tests.support.reliability import stored_blobs_of

LOCATION = "projects/p/locations/us-central1"
DATASET = f"{LOCATION}/datasets/ds"


@pytest.fixture
def stores(healthcare: Any) -> Any:
    """The dicomStores collection, with dataset ``ds`` created."""
    datasets = healthcare.projects().locations().datasets()
    datasets.create(parent=LOCATION, datasetId="ds", body={}).execute()
    return datasets.dicomStores()


def error_of(caught: pytest.ExceptionInfo[HttpError]) -> tuple[int, str, str]:
    body = json.loads(caught.value.content)["error"]
    return caught.value.resp.status, body["status"], body["message"]


class IndexedInstances:
    """Writes study/series/instance rows and blobs into the live server's index and blob store,
    as an ingest would leave them (the STOW path is exercised by the DICOMweb tests)."""

    def __init__(self, config: ServiceConfig) -> None:
        self.index = Index.open(config.index_url)
        self.blobs = LocalBlobStore(config.blob_root)

    def add(self, store_id: str, study: str, series_count: int, per_series: int) -> list[str]:
        moment = datetime.now(UTC)
        keys: list[str] = []
        with self.index.begin() as conn:
            store = resources.find_dicom_store(conn, "p", "us-central1", "ds", store_id)
            assert store is not None
            study_pk = conn.execute(
                insert(studies).values(
                    store_pk=store.pk,
                    study_instance_uid=study,
                    attributes={"0020000D": {"vr": "UI", "Value": [study]}},
                    update_time=moment,
                )
            ).inserted_primary_key[0]
            for s in range(series_count):
                series_pk = conn.execute(
                    insert(series).values(
                        store_pk=store.pk,
                        study_pk=study_pk,
                        series_instance_uid=f"{study}.{s}",
                        update_time=moment,
                    )
                ).inserted_primary_key[0]
                for i in range(per_series):
                    key = self.blobs.new_key("instances")
                    with self.blobs.writer(key) as writer:
                        writer.write(b"\0" * 1000)
                        writer.commit()
                    conn.execute(
                        insert(instances).values(
                            store_pk=store.pk,
                            study_pk=study_pk,
                            series_pk=series_pk,
                            sop_instance_uid=f"{study}.{s}.{i}",
                            transfer_syntax_uid="1.2.840.10008.1.2.1",
                            blob_key=key,
                            size_bytes=1000,
                            sha256="0" * 64,
                            create_time=moment,
                        )
                    )
                    keys.append(key)
        return keys

    def close(self) -> None:
        self.index.close()


@pytest.fixture
def indexed(stores: Any, service_config: ServiceConfig) -> Iterator[IndexedInstances]:
    helper = IndexedInstances(service_config)
    try:
        yield helper
    finally:
        helper.close()


def test_create_returns_the_store_and_get_finds_it(stores: Any) -> None:
    body = {
        "labels": {"env": "prod", "team": ""},
        "notificationConfig": {"pubsubTopic": "projects/p/topics/t", "sendForBulkImport": True},
        "notificationConfigs": [{"pubsubTopic": "projects/p/topics/u"}],
        "streamConfigs": [{"bigqueryDestination": {"tableUri": "bq://p.d.t", "force": True}}],
    }
    created = stores.create(parent=DATASET, dicomStoreId="s1", body=body).execute()
    assert created == {"name": f"{DATASET}/dicomStores/s1", **body}
    assert stores.get(name=f"{DATASET}/dicomStores/s1").execute() == created


def test_create_ignores_a_name_in_the_body(stores: Any) -> None:
    created = stores.create(
        parent=DATASET, dicomStoreId="s1", body={"name": "projects/x/locations/y/datasets/z"}
    ).execute()
    assert created == {"name": f"{DATASET}/dicomStores/s1"}


def test_create_in_a_missing_dataset_is_404(healthcare: Any) -> None:
    stores = healthcare.projects().locations().datasets().dicomStores()
    with pytest.raises(HttpError) as caught:
        stores.create(parent=f"{LOCATION}/datasets/nope", dicomStoreId="s1", body={}).execute()
    code, status, message = error_of(caught)
    assert (code, status) == (404, "NOT_FOUND")
    assert f"{LOCATION}/datasets/nope" in message


def test_create_of_an_existing_store_is_409(stores: Any) -> None:
    stores.create(parent=DATASET, dicomStoreId="s1", body={"labels": {"a": "1"}}).execute()
    with pytest.raises(HttpError) as caught:
        stores.create(parent=DATASET, dicomStoreId="s1", body={}).execute()
    assert error_of(caught)[:2] == (409, "ALREADY_EXISTS")
    # The first store is untouched.
    assert stores.get(name=f"{DATASET}/dicomStores/s1").execute()["labels"] == {"a": "1"}


BAD_CREATES = [
    ("bad/id", {}, "Invalid dicomStoreId"),
    ("a b", {}, "Invalid dicomStoreId"),
    ("s", {"labels": {"Env": "prod"}}, 'Invalid label key "Env"'),
    ("s", {"labels": {"env": "Prod"}}, 'Invalid value "Prod" for label "env"'),
    ("s", {"labels": {"k" * 64: "v"}}, "1 to 63 characters"),
    ("s", {"labels": {f"k{i}": "" for i in range(65)}}, "at most 64"),
    ("s", {"labels": {"env": 1}}, "Invalid value at 'dicom_store.labels[env]'"),
    ("s", {"labels": ["env"]}, "Invalid value at 'dicom_store.labels'"),
    ("s", {"foo": 1}, "Unknown name \"foo\" at 'dicom_store': Cannot find field."),
    ("s", {"notificationConfig": {"pubsubTopic": "t"}}, "Pub/Sub topic name"),
    ("s", {"notificationConfigs": [{}]}, "notification_configs[0].pubsub_topic"),
    ("s", {"streamConfigs": [{"bigqueryDestination": {}}]}, "bq://PROJECT_ID"),
]


def test_create_with_bad_input_is_400_naming_the_problem(stores: Any) -> None:
    for store_id, body, problem in BAD_CREATES:
        with pytest.raises(HttpError) as caught:
            stores.create(parent=DATASET, dicomStoreId=store_id, body=body).execute()
        code, status, message = error_of(caught)
        assert (code, status) == (400, "INVALID_ARGUMENT")
        assert problem in message, body
        assert stores.list(parent=DATASET).execute() == {}


def test_list_pages_through_more_stores_than_a_page_with_opaque_tokens(stores: Any) -> None:
    ids = [f"store-{n:03}" for n in range(25)]
    for store_id in ids:
        stores.create(parent=DATASET, dicomStoreId=store_id, body={}).execute()
    first = stores.list(parent=DATASET, pageSize=10).execute()
    assert [s["name"].rsplit("/", 1)[1] for s in first["dicomStores"]] == ids[:10]
    assert "store" not in first["nextPageToken"]  # opaque, not the raw key
    seen: list[str] = []
    request = stores.list(parent=DATASET, pageSize=10)
    while request is not None:
        response = request.execute()
        seen += [s["name"].rsplit("/", 1)[1] for s in response["dicomStores"]]
        request = stores.list_next(request, response)
    assert seen == ids
    # A page size above 1000 is coerced to the maximum; the default page holds them all.
    assert len(stores.list(parent=DATASET, pageSize=5000).execute()["dicomStores"]) == 25
    assert "nextPageToken" not in stores.list(parent=DATASET).execute()


def test_list_page_token_survives_stores_created_between_pages(stores: Any) -> None:
    for store_id in ("b", "d", "f"):
        stores.create(parent=DATASET, dicomStoreId=store_id, body={}).execute()
    first = stores.list(parent=DATASET, pageSize=2).execute()
    stores.create(parent=DATASET, dicomStoreId="a", body={}).execute()  # before the cursor
    stores.create(parent=DATASET, dicomStoreId="e", body={}).execute()  # after it
    rest = stores.list(parent=DATASET, pageSize=2, pageToken=first["nextPageToken"]).execute()
    assert [s["name"][-1] for s in rest["dicomStores"]] == ["e", "f"]


BAD_LISTS = [
    ({"pageToken": "not-a-token"}, "Invalid page token"),
    ({"pageSize": -1}, "pageSize must not be negative"),
    ({"filter": "env=prod"}, "cannot filter on 'env'"),
]


def test_list_with_bad_paging_or_filter_is_400(stores: Any) -> None:
    for params, problem in BAD_LISTS:
        with pytest.raises(HttpError) as caught:
            stores.list(parent=DATASET, **params).execute()
        code, _status, message = error_of(caught)
        assert code == 400
        assert problem in message, params


def test_list_token_from_another_filter_is_refused(stores: Any) -> None:
    for store_id in ("a", "b", "c"):
        stores.create(parent=DATASET, dicomStoreId=store_id, body={}).execute()
    token = stores.list(parent=DATASET, pageSize=1).execute()["nextPageToken"]
    with pytest.raises(HttpError) as caught:
        stores.list(parent=DATASET, pageToken=token, filter="labels.env:*").execute()
    assert "does not belong" in error_of(caught)[2]


def test_list_of_a_missing_dataset_is_404(healthcare: Any) -> None:
    stores = healthcare.projects().locations().datasets().dicomStores()
    with pytest.raises(HttpError) as caught:
        stores.list(parent=f"{LOCATION}/datasets/nope").execute()
    assert error_of(caught)[0] == 404


def test_patch_replaces_exactly_the_fields_in_the_update_mask(stores: Any) -> None:
    name = f"{DATASET}/dicomStores/s1"
    stores.create(
        parent=DATASET,
        dicomStoreId="s1",
        body={
            "labels": {"env": "test"},
            "notificationConfig": {"pubsubTopic": "projects/p/topics/t"},
        },
    ).execute()
    patched = stores.patch(
        name=name,
        updateMask="labels",
        body={"labels": {"env": "prod", "tier": "gold"}, "notificationConfig": {}},
    ).execute()
    # notificationConfig was in the body but not in the mask: unchanged.
    assert patched == {
        "name": name,
        "labels": {"env": "prod", "tier": "gold"},
        "notificationConfig": {"pubsubTopic": "projects/p/topics/t"},
    }
    assert stores.get(name=name).execute() == patched
    # A masked field missing from the body is cleared (FieldMask semantics), and proto spelling
    # of paths works.
    cleared = stores.patch(
        name=name,
        updateMask="notification_config,notificationConfigs",
        body={"notificationConfigs": [{"pubsubTopic": "projects/p/topics/n"}]},
    ).execute()
    assert cleared == {
        "name": name,
        "labels": {"env": "prod", "tier": "gold"},
        "notificationConfigs": [{"pubsubTopic": "projects/p/topics/n"}],
    }


BAD_PATCHES = [
    (None, {"labels": {"a": "b"}}, "updateMask is required"),
    ("name", {"name": "x"}, 'Invalid update_mask path "name"'),
    ("labels,bogus", {}, 'Invalid update_mask path "bogus"'),
    ("labels", {"labels": {"A": "b"}}, 'Invalid label key "A"'),
    ("labels", {"labelz": {}}, 'Unknown name "labelz"'),
]


def test_patch_with_a_bad_mask_or_body_is_400_and_changes_nothing(stores: Any) -> None:
    name = f"{DATASET}/dicomStores/s1"
    stores.create(parent=DATASET, dicomStoreId="s1", body={"labels": {"keep": "me"}}).execute()
    for mask, body, problem in BAD_PATCHES:
        with pytest.raises(HttpError) as caught:
            stores.patch(name=name, updateMask=mask, body=body).execute()
        code, _status, message = error_of(caught)
        assert code == 400
        assert problem in message, mask
        assert stores.get(name=name).execute()["labels"] == {"keep": "me"}


def test_patch_of_a_missing_store_is_404(stores: Any) -> None:
    with pytest.raises(HttpError) as caught:
        stores.patch(name=f"{DATASET}/dicomStores/nope", updateMask="labels", body={}).execute()
    code, _status, message = error_of(caught)
    assert code == 404
    assert f"{DATASET}/dicomStores/nope" in message


def test_metrics_count_studies_series_instances_and_bytes(
    stores: Any, indexed: IndexedInstances
) -> None:
    name = f"{DATASET}/dicomStores/s1"
    stores.create(parent=DATASET, dicomStoreId="s1", body={}).execute()
    stores.create(parent=DATASET, dicomStoreId="other", body={}).execute()
    # An empty store: proto3 JSON leaves the zero counts out.
    assert stores.getDICOMStoreMetrics(name=name).execute() == {"name": name}
    indexed.add("s1", "1.2.3", series_count=2, per_series=3)
    indexed.add("s1", "1.2.4", series_count=1, per_series=1)
    indexed.add("other", "1.2.3", series_count=1, per_series=5)
    metrics = stores.getDICOMStoreMetrics(name=name).execute()
    assert metrics["name"] == name
    assert metrics["studyCount"] == "2"
    assert metrics["seriesCount"] == "3"
    assert metrics["instanceCount"] == "7"
    assert metrics["blobStorageSizeBytes"] == "7000"
    assert int(metrics["structuredStorageSizeBytes"]) > 0


def test_metrics_of_a_missing_store_is_404(stores: Any) -> None:
    with pytest.raises(HttpError) as caught:
        stores.getDICOMStoreMetrics(name=f"{DATASET}/dicomStores/nope").execute()
    assert error_of(caught)[0] == 404


def test_delete_removes_the_store_its_instances_and_their_blobs(
    stores: Any, indexed: IndexedInstances
) -> None:
    stores.create(parent=DATASET, dicomStoreId="s1", body={}).execute()
    stores.create(parent=DATASET, dicomStoreId="keep", body={}).execute()
    deleted_keys = indexed.add("s1", "1.2.3", series_count=2, per_series=2)
    kept_keys = indexed.add("keep", "1.2.3", series_count=1, per_series=2)
    assert stores.delete(name=f"{DATASET}/dicomStores/s1").execute() == {}
    assert not any(indexed.blobs.exists(key) for key in deleted_keys)
    assert all(indexed.blobs.exists(key) for key in kept_keys)
    with pytest.raises(HttpError) as caught:
        stores.get(name=f"{DATASET}/dicomStores/s1").execute()
    assert error_of(caught)[0] == 404
    # Re-created under the same ID, the store is empty; the other store is untouched.
    stores.create(parent=DATASET, dicomStoreId="s1", body={}).execute()
    name = f"{DATASET}/dicomStores/s1"
    assert stores.getDICOMStoreMetrics(name=name).execute() == {"name": name}
    kept = stores.getDICOMStoreMetrics(name=f"{DATASET}/dicomStores/keep").execute()
    assert kept["instanceCount"] == "2"


def test_delete_of_a_missing_store_is_404(stores: Any) -> None:
    with pytest.raises(HttpError) as caught:
        stores.delete(name=f"{DATASET}/dicomStores/nope").execute()
    assert error_of(caught)[:2] == (404, "NOT_FOUND")


def test_deleting_the_dataset_removes_its_stores_instances_and_blobs(
    healthcare: Any, stores: Any, indexed: IndexedInstances
) -> None:
    stores.create(parent=DATASET, dicomStoreId="s1", body={}).execute()
    stores.create(parent=DATASET, dicomStoreId="s2", body={}).execute()
    keys = indexed.add("s1", "1.2.3", series_count=1, per_series=3)
    keys += indexed.add("s2", "1.2.9", series_count=2, per_series=1)
    healthcare.projects().locations().datasets().delete(name=DATASET).execute()
    assert not any(indexed.blobs.exists(key) for key in keys)
    healthcare.projects().locations().datasets().create(
        parent=LOCATION, datasetId="ds", body={}
    ).execute()
    stores.create(parent=DATASET, dicomStoreId="s1", body={}).execute()
    name = f"{DATASET}/dicomStores/s1"
    assert stores.getDICOMStoreMetrics(name=name).execute() == {"name": name}


def test_concurrent_creates_of_one_store_give_one_success_and_409s_never_500(
    stores: Any, live_server: Any
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    url = f"{live_server.url}/v1/{DATASET}/dicomStores?dicomStoreId=race"

    def create(n: int) -> int:
        with httpx.Client(timeout=60) as client:
            return client.post(url, json={"labels": {"n": str(n)}}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = sorted(pool.map(create, range(8)))
    assert codes == [200] + [409] * 7
    assert len(stores.list(parent=DATASET).execute()["dicomStores"]) == 1


def test_list_pages_hold_100_stores_by_default_and_at_most_1000(
    stores: Any, indexed: IndexedInstances
) -> None:
    with indexed.index.begin() as conn:
        dataset = resources.find_dataset(conn, "p", "us-central1", "ds")
        assert dataset is not None
        moment = datetime.now(UTC)
        conn.execute(
            insert(dicom_stores),
            [
                {
                    "dataset_pk": dataset.pk,
                    "store_id": f"s{n:04}",
                    "resource": {},
                    "create_time": moment,
                    "update_time": moment,
                }
                for n in range(1001)
            ],
        )
    default = stores.list(parent=DATASET).execute()
    assert len(default["dicomStores"]) == 100
    assert default["dicomStores"][-1]["name"].endswith("/s0099")
    largest = stores.list(parent=DATASET, pageSize=5000).execute()
    assert len(largest["dicomStores"]) == 1000
    rest = stores.list(parent=DATASET, pageSize=5000, pageToken=largest["nextPageToken"]).execute()
    assert [s["name"].rsplit("/", 1)[1] for s in rest["dicomStores"]] == ["s1000"]
    assert "nextPageToken" not in rest


def test_instances_stored_over_dicomweb_are_counted_and_deleted_with_their_store(
    stores: Any, live_server: Any, service_config: ServiceConfig
) -> None:
    import pydicom
    from dicomweb_client.api import DICOMwebClient
    from pydicom.data import get_testdata_file

    name = f"{DATASET}/dicomStores/s1"
    stores.create(parent=DATASET, dicomStoreId="s1", body={}).execute()
    files = [get_testdata_file(f) for f in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")]
    instances = [pydicom.dcmread(path) for path in files if path is not None]
    client = DICOMwebClient(url=f"{live_server.url}/v1/{name}/dicomWeb")
    client.store_instances(datasets=instances)
    metrics = stores.getDICOMStoreMetrics(name=name).execute()
    assert metrics["instanceCount"] == "3"
    assert metrics["seriesCount"] == str(len({ds.SeriesInstanceUID for ds in instances}))
    assert metrics["studyCount"] == str(len({ds.StudyInstanceUID for ds in instances}))
    assert int(metrics["blobStorageSizeBytes"]) >= sum(Path(p).stat().st_size for p in files) * 0.9
    assert int(metrics["structuredStorageSizeBytes"]) > 0

    assert len(stored_blobs_of(service_config)) == 3
    stores.delete(name=name).execute()
    assert stored_blobs_of(service_config) == []
