"""The registry: StackQL resources of google.healthcare, generated from the discovery document
and StackQL's verb mapping; both seed generations' method names resolve."""

from __future__ import annotations

import pytest

from dicomql.errors import ProgrammingError
from dicomql.provider.registry import Registry


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load()


def test_services_and_dicom_resources(registry: Registry) -> None:
    assert registry.services() == ["google.healthcare"]
    names = {r.name for r in registry.resources("google.healthcare")}
    assert {"datasets", "dicom_stores", "operations", "studies", "series", "instances"} <= names
    assert not any("fhir" in name or "hl7" in name for name in names)


def test_dicom_stores_sql_verbs_follow_stackql(registry: Registry) -> None:
    resource = registry.resource("google.healthcare.dicom_stores")
    assert [m.name for m in resource.verb_methods("select")] == ["get", "list"]
    assert [m.name for m in resource.verb_methods("insert")] == ["create"]
    assert [m.name for m in resource.verb_methods("update")] == ["patch"]
    assert [m.name for m in resource.verb_methods("delete")] == ["delete"]
    assert resource.method("deidentify").sql_verb == "exec"
    assert resource.method("list").object_key == "dicomStores"


def test_dicom_stores_has_every_method_of_both_generations(registry: Registry) -> None:
    resource = registry.resource("google.healthcare.dicom_stores")
    for name in [
        "get", "list", "create", "patch", "delete", "deidentify", "set_blob_storage_settings",
        "import", "export", "search_for_studies", "store_instances", "search_for_series",
        "search_for_instances",
    ]:  # fmt: skip
        method = resource.method(name)
        camel = method.id.rsplit(".", 1)[1]
        assert resource.method(f"projects_locations_datasets_dicomStores_{camel}") is method
        assert resource.method(camel) is method


def test_store_metrics_are_reachable_from_the_store(registry: Registry) -> None:
    resource = registry.resource("google.healthcare.dicom_stores")
    method = resource.method("getDICOMStoreMetrics")
    assert method is resource.method("get_dicomstore_metrics")
    assert method.path == "v1/{+name}:getDICOMStoreMetrics"
    assert method.response_schema == "DicomStoreMetrics"


def test_method_carries_the_discovery_facts(registry: Registry) -> None:
    method = registry.resource("google.healthcare.dicom_stores").method("list")
    assert (method.http_method, method.path) == ("GET", "v1/{+parent}/dicomStores")
    assert method.required_parameters == ["projectsId", "locationsId", "datasetsId"]
    assert method.optional_parameters == ["filter", "pageSize", "pageToken"]
    assert method.parameters["pageSize"].type == "integer"
    assert method.response_schema == "ListDicomStoresResponse"
    assert method.request_schema is None


def test_operation_returning_methods_are_marked(registry: Registry) -> None:
    stores = registry.resource("google.healthcare.dicom_stores")
    assert stores.method("deidentify").returns_operation
    assert not stores.method("create").returns_operation
    assert registry.resource("google.healthcare.datasets").method("create").returns_operation
    assert registry.resource("google.healthcare.studies").method("delete").returns_operation


def test_select_fields_of_a_list_are_the_item_schema(registry: Registry) -> None:
    resource = registry.resource("google.healthcare.dicom_stores")
    fields = {f.name: f for f in resource.fields(resource.method("list"))}
    assert set(fields) == {
        "name", "labels", "notificationConfig", "notificationConfigs", "streamConfigs",
    }  # fmt: skip
    assert fields["labels"].is_json and not fields["name"].is_json


@pytest.mark.parametrize(
    ("lookup", "message"),
    [
        (lambda r: r.resource("google.healthcare.dicomstores"), "did you mean"),
        (lambda r: r.resource("google.health.dicom_stores"), "unknown service"),
        (
            lambda r: r.resource("google.healthcare.dicom_stores").method("serch"),
            "unknown method 'serch'",
        ),
    ],
)
def test_unknown_names_raise_programming_error(registry: Registry, lookup, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProgrammingError, match=message):
        lookup(registry)


def test_registry_instances_are_independent() -> None:
    assert Registry.load() is not Registry.load()
