"""The API client: URLs from discovery templates, query parameters and bodies; error
responses become ApiError and transport failures TransportError."""

from __future__ import annotations

import httpx
import pytest

from dicomql.errors import ApiError, ProgrammingError, TransportError
from dicomql.provider.client import Client
from dicomql.provider.registry import Registry

REGISTRY = Registry.load()
STORES = REGISTRY.resource("google.healthcare.dicom_stores")
OPERATIONS = REGISTRY.resource("google.healthcare.operations")


def client_of(handler) -> tuple[Client, list[httpx.Request]]:  # type: ignore[no-untyped-def]
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    http = httpx.Client(transport=httpx.MockTransport(record), base_url="http://embedded")
    return Client(http), seen


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={})


def test_flat_path_parameters_are_each_url_encoded() -> None:
    client, seen = client_of(ok)
    client.call(
        STORES.method("get"),
        {"projectsId": "example.com:p-1", "locationsId": "l", "datasetsId": "größe",
         "dicomStoresId": "s_1.2"},
    )  # fmt: skip
    assert seen[0].url.raw_path == (
        b"/v1/projects/example.com:p-1/locations/l/datasets/gr%C3%B6%C3%9Fe/dicomStores/s_1.2"
    )


def test_reserved_expansion_keeps_slashes_of_a_resource_name() -> None:
    client, seen = client_of(ok)
    name = "projects/p/locations/l/datasets/d/operations/7"
    client.call(OPERATIONS.method("get"), {"name": name})
    assert seen[0].url.raw_path == b"/v1/" + name.encode()


def test_query_parameters_and_json_body() -> None:
    client, seen = client_of(ok)
    client.call(
        STORES.method("create"),
        {"projectsId": "p", "locationsId": "l", "datasetsId": "d", "dicomStoreId": "s"},
        {"labels": {"a": "b"}},
    )
    request = seen[0]
    assert request.url.params["dicomStoreId"] == "s"
    assert request.headers["content-type"] == "application/json"
    assert request.content == b'{"labels": {"a": "b"}}'


def test_empty_and_none_values_are_not_sent() -> None:
    client, seen = client_of(ok)
    client.call(
        STORES.method("list"),
        {"projectsId": "p", "locationsId": "l", "datasetsId": "d", "pageToken": "", "filter": None},
    )
    assert list(seen[0].url.params.keys()) == []


def test_booleans_and_lists_become_query_values() -> None:
    client, seen = client_of(ok)
    client.call(
        STORES.method("search_for_studies"),
        {"projectsId": "p", "locationsId": "l", "datasetsId": "d", "dicomStoresId": "s",
         "fuzzymatching": True, "includefield": ["PatientAge", "00100040"]},
    )  # fmt: skip
    assert seen[0].url.params.multi_items() == [
        ("fuzzymatching", "true"),
        ("includefield", "PatientAge"),
        ("includefield", "00100040"),
    ]


def test_missing_path_parameter_is_named() -> None:
    client, _ = client_of(ok)
    with pytest.raises(ProgrammingError, match="missing required parameter dicomStoresId"):
        client.call(
            STORES.method("get"), {"projectsId": "p", "locationsId": "l", "datasetsId": "d"}
        )


def test_google_error_body_becomes_api_error() -> None:
    client, _ = client_of(
        lambda r: httpx.Response(
            404, json={"error": {"code": 404, "message": "no store", "status": "NOT_FOUND"}}
        )
    )
    with pytest.raises(ApiError) as caught:
        client.call(
            OPERATIONS.method("get"), {"name": "projects/p/locations/l/datasets/d/operations/1"}
        )
    error = caught.value
    assert (error.code, error.status, error.message) == (404, "NOT_FOUND", "no store")
    assert error.url.endswith("/operations/1")


@pytest.mark.parametrize(
    ("status", "expected"),
    [(429, "RESOURCE_EXHAUSTED"), (503, "UNAVAILABLE"), (502, "UNKNOWN")],
)
def test_non_json_error_body_still_becomes_api_error(status: int, expected: str) -> None:
    client, _ = client_of(lambda r: httpx.Response(status, text="<html>upstream down</html>"))
    with pytest.raises(ApiError) as caught:
        client.call(
            OPERATIONS.method("get"), {"name": "projects/p/locations/l/datasets/d/operations/1"}
        )
    assert (caught.value.code, caught.value.status) == (status, expected)
    assert "upstream down" in caught.value.message


def test_connection_failure_becomes_transport_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client, _ = client_of(refuse)
    with pytest.raises(TransportError, match="ConnectError"):
        client.call(
            OPERATIONS.method("get"), {"name": "projects/p/locations/l/datasets/d/operations/1"}
        )


def test_check_false_returns_the_error_response() -> None:
    client, _ = client_of(lambda r: httpx.Response(409, json={"00081198": {"vr": "SQ"}}))
    response = client.call(
        OPERATIONS.method("get"),
        {"name": "projects/p/locations/l/datasets/d/operations/1"},
        check=False,
    )
    assert response.status_code == 409


def test_base_url_is_the_http_clients() -> None:
    client, _ = client_of(ok)
    assert client.base_url == "http://embedded"


def test_against_the_embedded_service_a_missing_dataset_is_404(embedded: httpx.Client) -> None:
    client = Client(embedded)
    with pytest.raises(ApiError) as caught:
        client.call(
            STORES.method("list"), {"projectsId": "p", "locationsId": "l", "datasetsId": "nope"}
        )
    assert (caught.value.code, caught.value.status) == (404, "NOT_FOUND")
