"""Path safety and limits: no ID, UID or DICOMweb path reaches outside the data directory or into
another store; bodies, searches and labels are capped as Google caps them, with 4xx answers."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from dicomql.provider.transports import InProcessTransport
from dicomql.service.app import create_app
from dicomql.service.config import ServiceConfig
from tests.support.reliability import (
    ANY_SYNTAX,
    DATASET,
    DICOMWEB,
    LOCATION,
    crafted_instance,
    create_dataset_and_store,
    make_instance,
    referenced,
    stow,
)

OTHER = f"{DATASET}/dicomStores/t/dicomWeb"
HOSTILE_UIDS = [
    "../../x",
    "../../../../etc/passwd",
    "..%2F..%2Fx",
    "/abs/olute",
    "a\x00b",
    "..\\..\\x",
    "t/dicomWeb/studies",
    "1.2.3:getStudyMetrics",
    "é.ü.ß",
    "9" * 300,
]


def _files(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


@pytest.fixture
def workspace(tmp_path: Path, database_url: str | None) -> Iterator[tuple[httpx.Client, Path]]:
    """Stores ``s`` and ``t`` in dataset ``d``; ``t`` holds one instance."""
    config = ServiceConfig(data_dir=tmp_path / "data", database_url=database_url)
    transport = InProcessTransport(create_app(config))
    with httpx.Client(transport=transport, base_url="http://embedded", timeout=60) as client:
        create_dataset_and_store(client, "s")
        create_dataset_and_store(client, "t")
        response = stow(client, [make_instance("1.2.3", "1.2.3.4", "1.2.3.4.5")], path=OTHER)
        assert referenced(response) == ["1.2.3.4.5"]
        yield client, tmp_path


@pytest.mark.parametrize("uid", HOSTILE_UIDS)
def test_crafted_uids_stay_inside_the_store_and_never_500(
    workspace: tuple[httpx.Client, Path], uid: str
) -> None:
    client, root = workspace
    before = _files(root)
    response = stow(client, [crafted_instance(uid, seed=len(uid))])
    assert response.status_code < 500, response.text
    encoded = quote(uid, safe="")
    for path in (
        f"{DICOMWEB}/studies/{encoded}",
        f"{DICOMWEB}/studies/{encoded}/series/{encoded}/instances/{encoded}",
        f"{DICOMWEB}/studies/{encoded}/metadata",
        f"{DICOMWEB}/studies/{encoded}/series/{encoded}/instances/{encoded}/frames/1",
        f"{DICOMWEB}/studies/{encoded}/series/{encoded}/instances/{encoded}/rendered",
    ):
        retrieved = client.get(path, headers=ANY_SYNTAX)
        assert retrieved.status_code < 500, (path, retrieved.text)
    created = _files(root) - before
    # New files only in the blob store or the SQLite index (and its journal), nowhere else.
    allowed = (root / "data" / "blobs", root / "data")
    for path in created:
        assert path.is_relative_to(allowed[0]) or path.parent == allowed[1], path
    # Store t is untouched and still answers for its own instance only.
    other = client.get(f"{OTHER}/instances").json()
    assert [item["00080018"]["Value"][0] for item in other] == ["1.2.3.4.5"]


@pytest.mark.parametrize(
    "segment",
    ["%2E%2E", "..%2Ft", "%2e%2e%2f%2e%2e", "t%00", "t%2FdicomWeb", "." * 300, "x" * 5000],
)
def test_traversal_in_a_store_id_never_reaches_another_store(
    workspace: tuple[httpx.Client, Path], segment: str
) -> None:
    client, _ = workspace
    base = f"{DATASET}/dicomStores/{segment}/dicomWeb"
    for path in (
        f"{base}/instances",
        f"{base}/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5",
        f"{DATASET}/dicomStores/{segment}",
        f"{LOCATION}/datasets/{segment}/dicomStores/t/dicomWeb/instances",
    ):
        response = client.get(path, headers=ANY_SYNTAX)
        assert response.status_code in (400, 404, 406), (path, response.status_code, response.text)
        assert "error" in response.json()
        assert b"1.2.3.4.5" not in response.content or "error" in response.json()


@pytest.mark.parametrize(
    "uid", ["..", "%2E%2E", "1.2.3%2F..%2F..", "1.2.3%00", "%2F1.2.3", "1" * 5000]
)
def test_traversal_in_a_uid_path_never_reaches_stored_data(
    workspace: tuple[httpx.Client, Path], uid: str
) -> None:
    client, _ = workspace
    store_s = f"{DATASET}/dicomStores/s/dicomWeb"
    for path in (
        f"{store_s}/studies/{uid}",
        f"{store_s}/studies/{uid}/series/1.2.3.4/instances/1.2.3.4.5",
        f"{store_s}/studies/1.2.3/series/{uid}/instances/1.2.3.4.5",
        f"{store_s}/studies/1.2.3/series/1.2.3.4/instances/{uid}",
        f"{store_s}/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5/bulkdata/{uid}",
    ):
        response = client.get(path, headers=ANY_SYNTAX)
        assert response.status_code in (400, 404, 406), (path, response.status_code)
        assert response.json()["error"]["code"] == response.status_code


def _raw_get(port: int, raw_path: str) -> tuple[int, bytes]:
    """GET a path byte for byte (httpx would resolve ``..`` segments before sending)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        head = f"GET {raw_path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        sock.sendall(head.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


def test_literal_dot_segments_sent_raw_never_reach_another_store(
    service_config: ServiceConfig, live_server: Any
) -> None:
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        create_dataset_and_store(client, "s")
        create_dataset_and_store(client, "t")
        stow(client, [make_instance("1.2.3", "1.2.3.4", "1.2.3.4.5")], path=OTHER)
    store_s = f"{DATASET}/dicomStores/s/dicomWeb"
    for raw in (
        f"{store_s}/../../t/dicomWeb/instances",
        f"{DATASET}/dicomStores/../dicomStores/t/dicomWeb/instances",
        f"{store_s}/studies/../../../t/dicomWeb/studies/1.2.3",
        f"{store_s}/studies/1.2.3/series/../../../../t/dicomWeb/instances",
        f"{DATASET}/dicomStores/s/dicomWeb/studies/..",
    ):
        status, body = _raw_get(live_server.port, raw)
        assert status in (400, 404), (raw, status, body[:300])
        assert b"1.2.3.4.5" not in body


# --- limits ---------------------------------------------------------------------------------


def test_a_non_store_body_over_10_mb_is_refused_with_413_in_googles_shape(
    workspace: tuple[httpx.Client, Path],
) -> None:
    client, _ = workspace
    body = json.dumps({"labels": {"k": "v" * (10 * 1024 * 1024 + 1)}}).encode()
    for method, path in (
        ("POST", f"{LOCATION}/datasets?datasetId=big"),
        ("POST", f"{DATASET}/dicomStores?dicomStoreId=big"),
        ("PATCH", f"{DATASET}/dicomStores/s?updateMask=labels"),
    ):
        response = client.request(method, path, content=body)
        assert response.status_code == 413, response.text
        error = response.json()["error"]
        assert error["code"] == 413 and error["status"] and error["message"]
    # Streamed without a Content-Length, the cap still holds.
    chunks = (body[n : n + 65536] for n in range(0, len(body), 65536))
    response = client.post(f"{DATASET}/dicomStores?dicomStoreId=big", content=chunks)
    assert response.status_code == 413
    assert client.get(f"{DATASET}/dicomStores/big").status_code == 404


def test_a_store_request_is_not_capped_at_10_mb(workspace: tuple[httpx.Client, Path]) -> None:
    client, _ = workspace
    parts = [make_instance("1.9", "1.9.1", f"1.9.1.{n}", seed=n) for n in range(2)]
    padding = b"\x00" * (11 * 1024 * 1024)  # a multipart preamble is ignored (RFC 2046 5.1.1)
    from tests.support.dicomweb import multipart

    body, content_type = multipart(parts)
    response = client.post(
        f"{DICOMWEB}/studies",
        content=padding + b"\r\n" + body,
        headers={"content-type": content_type, "accept": "application/dicom+json"},
    )
    assert response.status_code == 200, response.text[:500]
    assert sorted(referenced(response)) == ["1.9.1.0", "1.9.1.1"]


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ({"limit": "100000"}, 200),  # clamped to Google's maximum with a Warning
        ({"offset": "1000001"}, 400),
        ({"limit": "-1"}, 400),
        ({"limit": "9" * 40}, 200),
    ],
)
def test_search_limits_are_capped_as_googles(
    workspace: tuple[httpx.Client, Path], query: dict[str, str], status: int
) -> None:
    client, _ = workspace
    response = client.get(f"{OTHER}/studies", params=query)
    assert response.status_code == status, response.text
    if status == 200:
        assert "warning" in response.headers


def test_more_than_64_labels_or_an_overlong_label_is_a_400(
    workspace: tuple[httpx.Client, Path],
) -> None:
    client, _ = workspace
    for labels in (
        {f"k{n}": "v" for n in range(65)},
        {"k" * 64: "v"},
        {"k": "v" * 64},
        {"Upper": "v"},
    ):
        response = client.post(
            f"{DATASET}/dicomStores", params={"dicomStoreId": "labelled"}, json={"labels": labels}
        )
        assert response.status_code == 400, (labels, response.text)
        assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    exactly = {f"k{n}": "v" * 63 for n in range(64)}
    response = client.post(
        f"{DATASET}/dicomStores", params={"dicomStoreId": "labelled"}, json={"labels": exactly}
    )
    assert response.status_code == 200, response.text
