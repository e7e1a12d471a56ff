"""UIDs steer resource names and export file names, so only PS3.5 9.1 UIDs get in: an invalid
study UID in the STOW path is a 400, an instance carrying one fails with 0xC000, and nothing of
it is stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dicomql.provider.transports import InProcessTransport
from dicomql.service.app import create_app
from dicomql.service.config import ServiceConfig
from tests.support.dicomweb import multipart
from tests.support.reliability import (
    DICOMWEB,
    crafted_instance,
    create_dataset_and_store,
    make_instance,
    stow,
)

CANNOT_UNDERSTAND = 0xC000


@pytest.fixture
def client(tmp_path: Path, database_url: str | None) -> Iterator[httpx.Client]:
    config = ServiceConfig(data_dir=tmp_path / "data", database_url=database_url, workers=0)
    transport = InProcessTransport(create_app(config))
    with httpx.Client(transport=transport, base_url="http://embedded", timeout=60) as client:
        create_dataset_and_store(client)
        yield client


@pytest.mark.parametrize(
    "study", ["1..3", "abc", "1..2", "...", "1.2.3%20", "1.2.%C3%A9", "9" * 65]
)
def test_an_invalid_study_uid_in_the_stow_path_is_a_400(client: httpx.Client, study: str) -> None:
    body, content_type = multipart([make_instance("1.2.3", "1.2.3.4", "1.2.3.4.5")])
    response = client.post(
        f"{DICOMWEB}/studies/{study}", content=body, headers={"content-type": content_type}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and "PS3.5 9.1" in error["message"]
    assert client.get(f"{DICOMWEB}/instances").json() == []


@pytest.mark.parametrize("uid", ["../../../escaped", "1..3", "1.2.3.", "1.2.x"])
def test_an_instance_with_an_invalid_uid_fails_with_c000_and_is_not_stored(
    client: httpx.Client, uid: str
) -> None:
    response = stow(
        client, [crafted_instance(uid, seed=1), make_instance("1.2.3", "1.2.3.4", "1.2.3.4.5")]
    )
    assert response.status_code == 202, response.text
    body = response.json()
    (failed,) = body["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [CANNOT_UNDERSTAND]
    assert "PS3.5 9.1" in response.headers["warning"]
    stored = [item["00080018"]["Value"][0] for item in client.get(f"{DICOMWEB}/instances").json()]
    assert stored == ["1.2.3.4.5"]


@pytest.mark.parametrize("key", ["../escaped", "/abs/olute", "instances/../../x", "a\x00b"])
def test_a_blob_key_that_would_leave_the_blob_root_is_refused_for_writes_and_reads(
    tmp_path: Path, key: str
) -> None:
    from dicomql.store.blobs import LocalBlobStore

    blobs = LocalBlobStore(tmp_path / "blobs")
    for use in (blobs.writer, blobs.open, blobs.delete, blobs.size):
        with pytest.raises(ValueError, match="not a blob key"):
            use(key)
    assert not (tmp_path / "escaped").exists()
