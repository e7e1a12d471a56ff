"""Every admin-API error is Google's google.rpc.Status envelope and never a 500."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
import pytest

from dicomql.provider.transports import InProcessTransport
from dicomql.service.app import create_app
from dicomql.service.config import ServiceConfig
from dicomql.service.paging import encode_token

LOCATION = "/v1/projects/p/locations/us-central1"
DATASET = f"{LOCATION}/datasets/ds"
STORE = f"{DATASET}/dicomStores/s1"

# Page tokens that carry the right digest but a sort key no real key can be.
TOKEN_WITH_NUL = encode_token("a\x00", f"{DATASET[4:]}\n")
TOKEN_BEYOND_INT64 = encode_token(2**70, f"{DATASET[4:]}/operations\n")

# (method, path, request kwargs, HTTP code, google.rpc status, a fragment of the message)
CASES: list[tuple[str, str, dict[str, Any], int, str, str]] = [
    ("GET", f"{LOCATION}/datasets/nope", {}, 404, "NOT_FOUND", "datasets/nope not found"),
    ("DELETE", f"{LOCATION}/datasets/nope", {}, 404, "NOT_FOUND", "not found"),
    ("GET", f"{DATASET}/dicomStores/nope", {}, 404, "NOT_FOUND", "dicomStores/nope not found"),
    ("GET", f"{DATASET}/operations/1", {}, 404, "NOT_FOUND", "operations/1 not found"),
    ("POST", f"{LOCATION}/datasets?datasetId=ds", {"json": {}}, 409, "ALREADY_EXISTS", "exists"),
    ("POST", f"{DATASET}/dicomStores?dicomStoreId=s1", {}, 409, "ALREADY_EXISTS", "exists"),
    ("POST", f"{LOCATION}/datasets", {}, 400, "INVALID_ARGUMENT", "datasetId is required"),
    ("POST", f"{LOCATION}/datasets?datasetId=a%20b", {}, 400, "INVALID_ARGUMENT", "Invalid"),
    (
        "POST",
        f"{DATASET}/dicomStores?dicomStoreId=x",
        {"content": b"{"},
        400,
        "INVALID_ARGUMENT",
        "Invalid JSON payload received.",
    ),
    (
        "POST",
        f"{DATASET}/dicomStores?dicomStoreId=x",
        {"content": b"\xff\xfe"},
        400,
        "INVALID_ARGUMENT",
        "Invalid JSON payload received.",
    ),
    (
        "POST",
        f"{DATASET}/dicomStores?dicomStoreId=x",
        {"content": b"[1]"},
        400,
        "INVALID_ARGUMENT",
        "Root element must be a message",
    ),
    (
        "POST",
        f"{DATASET}/dicomStores?dicomStoreId=x",
        {"content": b"[" * 100000},
        400,
        "INVALID_ARGUMENT",
        "Invalid JSON payload received.",
    ),
    (
        "POST",
        f"{DATASET}/dicomStores?dicomStoreId=x",
        {"json": {"labels": {"A": "b"}}},
        400,
        "INVALID_ARGUMENT",
        'Invalid label key "A"',
    ),
    (
        "POST",
        f"{DATASET}/dicomStores?dicomStoreId=x",
        {"json": {"bogus": 1}},
        400,
        "INVALID_ARGUMENT",
        "Unknown name \"bogus\" at 'dicom_store': Cannot find field.",
    ),
    (
        "POST",
        f"{DATASET}/dicomStores?dicomStoreId=x",
        {"json": {"labels": 7}},
        400,
        "INVALID_ARGUMENT",
        "Invalid value at 'dicom_store.labels'",
    ),
    (
        "GET",
        f"{DATASET}/dicomStores?pageSize=abc",
        {},
        400,
        "INVALID_ARGUMENT",
        "Invalid value at 'page_size' (TYPE_INT32)",
    ),
    (
        "GET",
        f"{DATASET}/dicomStores?pageSize=99999999999",
        {},
        400,
        "INVALID_ARGUMENT",
        "page_size",
    ),
    (
        "GET",
        f"{DATASET}/dicomStores?pageToken=%00",
        {},
        400,
        "INVALID_ARGUMENT",
        "Invalid page token",
    ),
    (
        "GET",
        f"{DATASET}/dicomStores?filter=labels.a%3D(",
        {},
        400,
        "INVALID_ARGUMENT",
        "Invalid filter",
    ),
    (
        "GET",
        f"{DATASET}/dicomStores?colour=red",
        {},
        400,
        "INVALID_ARGUMENT",
        'Unknown name "colour": Cannot bind query parameter.',
    ),
    ("PATCH", STORE, {"json": {}}, 400, "INVALID_ARGUMENT", "updateMask is required"),
    ("PATCH", f"{STORE}?updateMask=name", {"json": {}}, 400, "INVALID_ARGUMENT", "update_mask"),
    (
        "GET",
        f"{DATASET}/operations?returnPartialSuccess=maybe",
        {},
        400,
        "INVALID_ARGUMENT",
        "TYPE_BOOL",
    ),
    ("PUT", STORE, {}, 405, "UNIMPLEMENTED", "not supported"),
    ("GET", f"{LOCATION}/datasets/a%00b", {}, 400, "INVALID_ARGUMENT", 'Invalid dataset ID "a'),
    (
        "GET",
        f"/v1/projects/{'p' * 257}/locations/l/datasets",
        {},
        400,
        "INVALID_ARGUMENT",
        "Invalid project ID",
    ),
    (
        "POST",
        f"/v1/projects/p/locations/{'l' * 257}/datasets?datasetId=d",
        {},
        400,
        "INVALID_ARGUMENT",
        "Invalid location ID",
    ),
    ("GET", f"{DATASET}/operations/%00", {}, 400, "INVALID_ARGUMENT", "Invalid operation ID"),
    (
        "GET",
        f"{DATASET}/dicomStores?pageToken={TOKEN_WITH_NUL}",
        {},
        400,
        "INVALID_ARGUMENT",
        "Invalid page token",
    ),
    (
        "GET",
        f"{DATASET}/operations?pageToken={TOKEN_BEYOND_INT64}",
        {},
        400,
        "INVALID_ARGUMENT",
        "Invalid page token",
    ),
    (
        "POST",
        f"{LOCATION}/datasets?datasetId=k",
        {"json": {"encryptionSpec": {"kmsKeyName": "k"}}},
        400,
        "INVALID_ARGUMENT",
        "kms_key_name",
    ),
    ("GET", f"{STORE}:nonsense", {}, 404, "NOT_FOUND", "was not found on this server"),
]


@pytest.fixture
def client(http: httpx.Client) -> httpx.Client:
    assert http.post(f"{LOCATION}/datasets?datasetId=ds").status_code == 200
    assert http.post(f"{DATASET}/dicomStores?dicomStoreId=s1").status_code == 200
    return http


def assert_google_error(response: httpx.Response, code: int, status: str) -> str:
    assert response.status_code == code, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    assert set(body["error"]) == {"code", "message", "status"}
    assert body["error"]["code"] == code
    assert body["error"]["status"] == status
    message: str = body["error"]["message"]
    assert message
    return message


def test_every_admin_error_is_a_google_status_envelope(client: httpx.Client) -> None:
    for method, path, kwargs, code, status, fragment in CASES:
        response = client.request(method, path, **kwargs)
        message = assert_google_error(response, code, status)
        assert fragment in message, (method, path, message)


def test_a_body_over_the_request_cap_is_413_before_it_is_read(client: httpx.Client) -> None:
    oversized = b'{"labels": {"a": "' + b"x" * (10 * 1024 * 1024) + b'"}}'
    response = client.post(f"{DATASET}/dicomStores?dicomStoreId=big", content=oversized)
    message = assert_google_error(response, 413, "INVALID_ARGUMENT")
    assert message == "Request payload size exceeds the limit: 10485760 bytes."
    assert client.get(f"{DATASET}/dicomStores/big").status_code == 404


def test_a_streamed_body_without_length_is_capped_too(service_config: ServiceConfig) -> None:
    config = replace(service_config, max_request_bytes=1000)
    transport = InProcessTransport(create_app(config))
    with httpx.Client(transport=transport, base_url="http://embedded") as client:
        client.post(f"{LOCATION}/datasets?datasetId=ds")

        def chunks() -> Any:
            for _ in range(20):
                yield b" " * 100

        response = client.post(f"{DATASET}/dicomStores?dicomStoreId=x", content=chunks())
        assert_google_error(response, 413, "INVALID_ARGUMENT")
        small = client.post(f"{DATASET}/dicomStores?dicomStoreId=x", json={"labels": {}})
        assert small.status_code == 200
