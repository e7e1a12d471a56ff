"""Helpers of the long-running method tests: create a dataset and stores, start an operation,
wait for it (polling ``operations.get``, as a client would)."""

from __future__ import annotations

import time
from typing import Any

import httpx

LOCATION = "/v1/projects/p/locations/l"
DATASET = f"{LOCATION}/datasets/d"


def store_path(store: str) -> str:
    return f"{DATASET}/dicomStores/{store}"


def store_name(store: str) -> str:
    return store_path(store)[len("/v1/") :]


def make_stores(client: httpx.Client, *stores: str, **resource: Any) -> None:
    """Dataset ``d`` and the named stores in it, each created from ``resource``."""
    response = client.post(f"{LOCATION}/datasets", params={"datasetId": "d"})
    assert response.status_code == 200, response.text
    wait(client, response.json())
    for store in stores:
        response = client.post(
            f"{DATASET}/dicomStores", params={"dicomStoreId": store}, json=resource
        )
        assert response.status_code == 200, response.text


def wait(client: httpx.Client, operation: dict[str, Any], limit: float = 120) -> dict[str, Any]:
    """The operation once done (a generous limit only guards against a hang)."""
    deadline = time.monotonic() + limit
    while not operation.get("done"):
        assert time.monotonic() < deadline, f"operation not done: {operation}"
        time.sleep(0.02)
        response = client.get(f"/v1/{operation['name']}")
        assert response.status_code == 200, response.text
        operation = response.json()
    return operation


def start(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def run(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    return wait(client, start(client, path, body))


def counter(operation: dict[str, Any]) -> dict[str, int]:
    values = operation["metadata"].get("counter", {})
    return {key: int(value) for key, value in values.items()}


def stow(client: httpx.Client, store: str, data: bytes) -> None:
    response = client.post(
        f"{store_path(store)}/dicomWeb/studies",
        content=data,
        headers={"Content-Type": "application/dicom"},
    )
    assert response.status_code == 200, response.text
