"""Every SQL example of both StackQL doc pages for google.healthcare.dicom_stores runs verbatim
(templates filled) against the embedded service, quirks included."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from dicomql.errors import ApiError
from dicomql.provider.registry import Registry
from dicomql.sql.engine import Engine
from tests.support.sqltest import NEW_PAGE, OLD_PAGE, SEED, sql_blocks

EMPTY_STORE_FIELDS = {"name": "", "notificationConfig": "", "streamConfigs": "",
                      "notificationConfigs": ""}  # fmt: skip


def test_the_seed_pages_hold_the_expected_examples() -> None:
    assert sorted(SEED) == [
        "delete",
        "exec:deidentify",
        "exec:export",
        "exec:import",
        "exec:search_for_instances",
        "exec:search_for_series",
        "exec:search_for_studies",
        "exec:set_blob_storage_settings",
        "exec:store_instances",
        "insert",
        "select:get",
        "select:list",
        "update",
    ]
    assert len(sql_blocks(NEW_PAGE)) == 13
    # The older page has no SQL blocks, only its methods table (tested below).
    assert sql_blocks(OLD_PAGE) == []


def create_store(engine: Engine, dataset: dict[str, str], store_id: str, labels: object) -> list:
    result = engine.execute(
        SEED["insert"],
        {**dataset, **EMPTY_STORE_FIELDS, "labels": labels, "dicomStoreId": store_id},
    )
    return result.records()


def test_insert_seed_creates_a_store_and_returns_it(
    engine: Engine, dataset: dict[str, str]
) -> None:
    records = create_store(engine, dataset, "store1", {"env": "prod"})
    name = "projects/proj/locations/us-central1/datasets/ds1/dicomStores/store1"
    assert records[0]["name"] == name
    assert records[0]["labels"] == '{"env": "prod"}'


def test_select_get_seed_returns_the_one_store(engine: Engine, dataset: dict[str, str]) -> None:
    create_store(engine, dataset, "store1", {"env": "prod"})
    result = engine.execute(SEED["select:get"], {**dataset, "dicomStoresId": "store1"})
    assert result.columns == [
        "name",
        "labels",
        "notificationConfig",
        "notificationConfigs",
        "streamConfigs",
    ]
    assert [row[0].rsplit("/", 1)[1] for row in result.rows] == ["store1"]
    assert result.rows[0][1] == '{"env": "prod"}'


def test_select_list_seed_returns_one_row_per_page_with_unset_paging(
    engine: Engine, dataset: dict[str, str]
) -> None:
    for store_id in ("a", "b", "c"):
        create_store(engine, dataset, store_id, "")
    variables = {**dataset, "pageSize": "", "pageToken": "", "filter": ""}
    result = engine.execute(SEED["select:list"], variables)
    assert result.columns == ["dicomStores", "nextPageToken"]
    assert len(result.rows) == 1
    assert result.rows[0][0].count('"name"') == 3
    assert result.rows[0][1] is None


def test_select_list_seed_follows_page_tokens_one_row_per_page(
    engine: Engine, dataset: dict[str, str]
) -> None:
    for store_id in ("a", "b", "c"):
        create_store(engine, dataset, store_id, "")
    variables = {**dataset, "pageSize": 2, "pageToken": "", "filter": ""}
    result = engine.execute(SEED["select:list"], variables)
    assert [row[0].count('"name"') for row in result.rows] == [2, 1]
    assert result.rows[0][1] and result.rows[1][1] is None


def test_select_list_seed_passes_the_label_filter(engine: Engine, dataset: dict[str, str]) -> None:
    create_store(engine, dataset, "prod1", {"env": "prod"})
    create_store(engine, dataset, "dev1", {"env": "dev"})
    variables = {**dataset, "pageSize": "", "pageToken": "", "filter": "labels.env=prod"}
    result = engine.execute(SEED["select:list"], variables)
    assert "prod1" in result.rows[0][0] and "dev1" not in result.rows[0][0]


@pytest.mark.parametrize("update_mask", ["", "labels"])
def test_update_seed_patches_labels_with_a_given_or_derived_mask(
    engine: Engine, dataset: dict[str, str], update_mask: str
) -> None:
    create_store(engine, dataset, "store1", {"env": "prod"})
    variables = {
        **dataset,
        **EMPTY_STORE_FIELDS,
        "labels": {"env": "dev"},
        "dicomStoresId": "store1",
        "updateMask": update_mask,
    }
    result = engine.execute(SEED["update"], variables)
    assert result.records()[0]["labels"] == '{"env": "dev"}'
    stored = engine.execute(SEED["select:get"], {**dataset, "dicomStoresId": "store1"})
    assert stored.rows[0][1] == '{"env": "dev"}'


def test_delete_seed_removes_the_store(engine: Engine, dataset: dict[str, str]) -> None:
    create_store(engine, dataset, "store1", "")
    result = engine.execute(SEED["delete"], {**dataset, "dicomStoresId": "store1"})
    assert result.rowcount == 1
    with pytest.raises(ApiError) as caught:
        engine.execute(SEED["select:get"], {**dataset, "dicomStoresId": "store1"})
    assert caught.value.code == 404


CT_SMALL = Path(get_testdata_file("CT_small.dcm"))


def store_ct_small(engine: Engine, variables: dict[str, str]) -> None:
    body = {
        "contentType": "application/dicom",
        "data": base64.b64encode(CT_SMALL.read_bytes()).decode(),
        "extensions": "",
    }
    result = engine.execute(SEED["exec:store_instances"], {**variables, **body})
    assert [row[0] for row in result.rows] == ["stored"]


@pytest.fixture
def store(engine: Engine, dataset: dict[str, str]) -> dict[str, str]:
    create_store(engine, dataset, "store1", "")
    return {**dataset, "dicomStoresId": "store1"}


def test_store_instances_seed_stores_base64_http_body(
    engine: Engine, store: dict[str, str]
) -> None:
    store_ct_small(engine, store)


@pytest.mark.parametrize(
    ("seed", "uid_column"),
    [
        ("exec:search_for_studies", "StudyInstanceUID"),
        ("exec:search_for_series", "SeriesInstanceUID"),
        ("exec:search_for_instances", "SOPInstanceUID"),
    ],
)
def test_search_seeds_return_one_row_per_match_with_keyword_columns(
    engine: Engine, store: dict[str, str], seed: str, uid_column: str
) -> None:
    store_ct_small(engine, store)
    result = engine.execute(SEED[seed], store)
    expected = dcmread(CT_SMALL, stop_before_pixels=True)
    assert [record[uid_column] for record in result.records()] == [expected[uid_column].value]


def test_search_seed_on_an_empty_store_returns_no_rows(
    engine: Engine, store: dict[str, str]
) -> None:
    assert engine.execute(SEED["exec:search_for_studies"], store).rows == []


LRO_SEEDS = {
    "exec:deidentify": {
        "destinationStore": "projects/proj/locations/us-central1/datasets/ds1/dicomStores/out",
        "config": {"dicom": {"filterProfile": "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE"}},
        "gcsConfigUri": "",
        "filterConfig": "",
    },
    "exec:set_blob_storage_settings": {
        "filterConfig": "",
        "blobStorageSettings": {"blobStorageClass": "NEARLINE"},
    },
    "exec:import": {"gcsSource": {"uri": "gs://bucket/**"}, "blobStorageSettings": ""},
    "exec:export": {"gcsDestination": {"uriPrefix": "gs://bucket/out"}, "bigqueryDestination": ""},
}


LRO_METHODS = {
    "exec:deidentify": "DeidentifyDicomStore",
    "exec:set_blob_storage_settings": "SetBlobStorageSettings",
    "exec:import": "ImportDicomData",
    "exec:export": "ExportDicomData",
}


@pytest.mark.parametrize("seed", sorted(LRO_SEEDS))
def test_long_running_seeds_start_an_operation(
    engine: Engine, store: dict[str, str], seed: str
) -> None:
    # DeidentifyDicomStoreRequest.destinationStore: "The destination ... DICOM store must exist."
    create_store(engine, store, "out", "")
    result = engine.execute(SEED[seed], {**store, **LRO_SEEDS[seed]})
    record = result.records()[0]
    assert record["name"].startswith("projects/proj/locations/us-central1/datasets/ds1/operations/")
    assert LRO_METHODS[seed] in str(record["metadata"])


OLD_METHODS = re.findall(
    r"^\| `(projects_locations_datasets_dicomStores_\w+)` \| `(\w+)` \|",
    OLD_PAGE.read_text(),
    flags=re.MULTILINE,
)


def test_old_page_lists_twelve_methods() -> None:
    assert len(OLD_METHODS) == 12


@pytest.mark.parametrize(("name", "verb"), OLD_METHODS)
def test_every_old_generation_method_resolves_to_the_same_call(name: str, verb: str) -> None:
    resource = Registry.load().resource("google.healthcare.dicom_stores")
    method = resource.method(name)
    new_name = re.sub(r"(?<!^)([A-Z])", r"_\1", name.rsplit("_", 1)[1]).lower()
    assert resource.method(new_name) is method


def test_old_generation_method_names_run_under_exec(engine: Engine, store: dict[str, str]) -> None:
    result = engine.execute(
        "EXEC google.healthcare.dicom_stores.projects_locations_datasets_dicomStores_get "
        "@projectsId='{{ projectsId }}', @locationsId='{{ locationsId }}', "
        "@datasetsId='{{ datasetsId }}', @dicomStoresId='{{ dicomStoresId }}'",
        store,
    )
    assert result.records()[0]["name"].endswith("/dicomStores/store1")


def test_insert_seed_parses_object_and_array_fields_as_json(
    engine: Engine, dataset: dict[str, str]
) -> None:
    variables = {
        **dataset,
        "name": "",
        "notificationConfig": {"pubsubTopic": "projects/proj/topics/t"},
        "labels": '{"a": "b"}',
        "streamConfigs": [],
        "notificationConfigs": [{"pubsubTopic": "projects/proj/topics/u"}],
        "dicomStoreId": "store1",
    }
    [record] = engine.execute(SEED["insert"], variables).records()
    assert record["notificationConfig"] == '{"pubsubTopic": "projects/proj/topics/t"}'
    assert record["notificationConfigs"] == '[{"pubsubTopic": "projects/proj/topics/u"}]'
    assert record["labels"] == '{"a": "b"}'
