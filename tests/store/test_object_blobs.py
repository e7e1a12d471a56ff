"""The BlobStore contract, held by files (LocalBlobStore) and by object storage (FsspecBlobStore on
memory:// and on S3), and the service storing and retrieving an instance through an S3 bucket.

moto's server stands in for S3: no real S3 can exist here, and moto speaks the same REST protocol
over real HTTP on loopback, so s3fs/aiobotocore run exactly as they would against AWS.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from moto.server import ThreadedMotoServer
from pydicom import dcmread
from pydicom.data import get_testdata_file

from dicomql.cli import main
from dicomql.config import Endpoints
from dicomql.provider.transports import InProcessTransport
from dicomql.service.app import create_app
from dicomql.service.config import ServiceConfig
from dicomql.store.blobs import CHUNK_SIZE, BlobStore, LocalBlobStore
from dicomql.store.index import Index
from dicomql.store.inline_blobs import InlineBlobStore
from dicomql.store.object_blobs import (
    FsspecBlobStore,
    blob_store_for,
    check_blob_url,
)

S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
BUCKET = "dicomql-blobs"
# Above FsspecBlobStore's 8 MB part size, so S3 writes go through a multipart upload.
LARGE = bytes(range(256)) * (11 * CHUNK_SIZE // 256) + b"tail"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**S3_CREDENTIALS, "AWS_DEFAULT_REGION": "us-east-1"}.items():
            patch.setenv(name, value)
        httpx.put(f"{endpoint}/{BUCKET}").raise_for_status()  # CreateBucket
        try:
            yield endpoint
        finally:
            server.stop()


@pytest.fixture(params=["local", "memory", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    prefix = secrets.token_hex(4)  # memory:// and the bucket outlive one test
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    if request.param == "memory":
        return FsspecBlobStore(f"memory://{prefix}")
    endpoint = request.getfixturevalue("s3_endpoint")
    return FsspecBlobStore(f"s3://{BUCKET}/{prefix}", endpoint_url=endpoint)


def store(blobs: BlobStore, data: bytes, *, write_size: int = CHUNK_SIZE) -> str:
    key = blobs.new_key("instances")
    writer = blobs.writer(key)
    for offset in range(0, len(data), write_size):
        writer.write(data[offset : offset + write_size])
    writer.commit()
    return key


@pytest.mark.parametrize("data", [b"", b"DICM" * 100, LARGE], ids=["empty", "small", "multipart"])
def test_a_committed_blob_reads_back_byte_identical(blobs: BlobStore, data: bytes) -> None:
    key = store(blobs, data)
    assert blobs.exists(key)
    assert blobs.size(key) == len(data)
    with blobs.open(key) as file:
        assert file.read() == data
    assert b"".join(blobs.read_chunks(key)) == data
    assert all(len(chunk) <= CHUNK_SIZE for chunk in blobs.read_chunks(key))


def test_the_writer_reports_the_size_written(blobs: BlobStore) -> None:
    writer = blobs.writer(blobs.new_key("instances"))
    writer.write(b"abc")
    writer.write(b"defg")
    assert writer.size == 7
    writer.commit()


@pytest.mark.parametrize(
    ("start", "end"),
    [(0, 10), (132, 132 + 3 * CHUNK_SIZE + 5), (len(LARGE) - 4, None), (5, len(LARGE) + 100)],
)
def test_ranged_reads_return_exactly_the_range(
    blobs: BlobStore, start: int, end: int | None
) -> None:
    key = store(blobs, LARGE)
    assert b"".join(blobs.read_chunks(key, start, end)) == LARGE[start:end]


def test_an_opened_blob_can_seek_like_a_file(blobs: BlobStore) -> None:
    key = store(blobs, LARGE)
    with blobs.open(key) as file:
        file.seek(7 * CHUNK_SIZE + 3)
        assert file.read(10) == LARGE[7 * CHUNK_SIZE + 3 : 7 * CHUNK_SIZE + 13]
        file.seek(-4, 2)
        assert file.read() == b"tail"


def test_a_blob_is_invisible_until_committed(blobs: BlobStore) -> None:
    key = blobs.new_key("instances")
    writer = blobs.writer(key)
    writer.write(LARGE)  # S3: parts already uploaded, the object not yet published
    assert not blobs.exists(key)
    writer.commit()
    assert blobs.exists(key)


def test_an_aborted_blob_leaves_nothing_behind(blobs: BlobStore) -> None:
    key = blobs.new_key("instances")
    writer = blobs.writer(key)
    writer.write(LARGE)
    writer.abort()
    assert not blobs.exists(key)
    assert blobs.remove_temporaries() == 0  # S3: the multipart upload was aborted too


def test_remove_temporaries_clears_writes_a_crash_abandoned(blobs: BlobStore) -> None:
    key = blobs.new_key("instances")
    abandoned = blobs.writer(key)
    abandoned.write(LARGE)  # never committed nor aborted, as if the process died here
    # memory:// spools in this process, so a crash leaves nothing there to clear.
    leftovers = 0 if getattr(blobs, "url", "").startswith("memory://") else 1
    try:
        assert blobs.remove_temporaries() == leftovers
        assert blobs.remove_temporaries() == 0
        assert not blobs.exists(key)
    finally:
        with contextlib.suppress(Exception):  # the dead process's handle; its upload is gone
            abandoned.abort()
    kept = store(blobs, b"kept")
    blobs.remove_temporaries()
    assert blobs.exists(kept)


def test_deleted_blobs_are_gone_and_deleting_twice_is_harmless(blobs: BlobStore) -> None:
    key, other = store(blobs, b"one"), store(blobs, b"two")
    blobs.delete(key)
    blobs.delete(key)
    assert not blobs.exists(key)
    assert blobs.exists(other)


def test_a_missing_blob_is_not_found(blobs: BlobStore) -> None:
    key = blobs.new_key("instances")
    assert not blobs.exists(key)
    with pytest.raises(FileNotFoundError):
        blobs.open(key)
    with pytest.raises(FileNotFoundError):
        blobs.size(key)


@pytest.mark.parametrize("key", ["../outside", "/etc/passwd", "instances/../../x", "a\x00b"])
def test_keys_not_made_by_the_store_are_refused(blobs: BlobStore, key: str) -> None:
    with pytest.raises(ValueError, match="not a blob key"):
        blobs.exists(key)


def test_new_keys_are_distinct_and_under_the_prefix(blobs: BlobStore) -> None:
    keys = {blobs.new_key("instances") for _ in range(100)}
    assert len(keys) == 100
    assert all(key.startswith("instances/") for key in keys)


@pytest.mark.parametrize(
    "url", ["file://tmp/blobs", "file:///", "/tmp/blobs", "s3://", "gs:///", "http://example.com/x"]
)
def test_blob_urls_no_backend_serves_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="blob URL"):
        check_blob_url(url)


def test_a_file_url_names_a_directory_of_files(tmp_path: Path) -> None:
    check_blob_url(f"file://{tmp_path}/shared")
    config = ServiceConfig(data_dir=tmp_path / "data", blob_url=f"file://{tmp_path}/shared")
    config.data_dir.mkdir()
    index = Index.open(config.index_url)
    try:
        blobs = blob_store_for(config, index)
    finally:
        index.close()
    # Small instances in the index, the rest as files in the shared directory.
    assert isinstance(blobs, InlineBlobStore)
    assert isinstance(blobs.files, LocalBlobStore)
    assert blobs.files.root == tmp_path / "shared"
    assert config.local_write_paths == [tmp_path / "shared", tmp_path / "data"]


def test_serve_refuses_a_blob_url_no_backend_serves() -> None:
    result = CliRunner().invoke(main, ["serve", "--blob-url", "ftp://host/blobs"])
    assert result.exit_code == 2
    assert "--blob-url" in result.output


def test_the_service_stores_and_retrieves_instances_through_s3(
    s3_endpoint: str, tmp_path: Path
) -> None:
    prefix = f"service-{secrets.token_hex(4)}"
    config = ServiceConfig(
        data_dir=tmp_path / "data",
        blob_url=f"s3://{BUCKET}/{prefix}",
        endpoints=Endpoints(s3_endpoint_url=s3_endpoint),
    )
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    data = Path(path).read_bytes()
    dataset = dcmread(path)
    base = "/v1/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb"
    instance = (
        f"{base}/studies/{dataset.StudyInstanceUID}/series/{dataset.SeriesInstanceUID}"
        f"/instances/{dataset.SOPInstanceUID}"
    )
    with httpx.Client(
        transport=InProcessTransport(create_app(config)), base_url="http://embedded"
    ) as client:
        _ok(client.post("/v1/projects/p/locations/l/datasets", params={"datasetId": "d"}))
        _ok(
            client.post(
                "/v1/projects/p/locations/l/datasets/d/dicomStores",
                params={"dicomStoreId": "s"},
                json={},
            )
        )
        _ok(
            client.post(
                f"{base}/studies", content=data, headers={"Content-Type": "application/dicom"}
            )
        )
        retrieved = _ok(
            client.get(instance, headers={"Accept": "application/dicom; transfer-syntax=*"})
        )
    assert retrieved.content == data
    objects = FsspecBlobStore(f"s3://{BUCKET}/{prefix}", endpoint_url=s3_endpoint).fs.find(
        f"{BUCKET}/{prefix}"
    )
    assert len(objects) == 1  # the blob lives in the bucket ...
    local_blobs = tmp_path / "data" / "blobs"
    assert not local_blobs.exists() or not any(p.is_file() for p in local_blobs.rglob("*"))


def _ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response
