"""Small instances kept in the index (store/inline_blobs.py): stored with their index row and no
file, read back byte for byte (whole, by frame, by range), gone with their instance, and never
kept for a duplicate or a conflict; larger instances, and every one with the limit at 0, are
files as before."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select

from dicomql.service.config import ServiceConfig
from dicomql.store.index import Index
from dicomql.store.inline_blobs import InlineBlobStore
from dicomql.store.object_blobs import blob_store_for
from dicomql.store.schema import instance_blobs, instances
from tests.support.dicomweb import DICOMWEB, DicomWebClient, make_instance, read_multipart
from tests.support.reliability import inline_blob_keys, stored_blobs_of

STUDY = "1.2.826.0.5.1"
SERIES = f"{STUDY}.1"
ANY_SYNTAX = {"accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
# 8 frames of 64 x 64 16-bit pixels: 64 KiB of pixel data alone, over the default limit.
LARGE = {"rows": 64, "columns": 64, "frames": 8}


def _files(config: ServiceConfig) -> list[str]:
    return sorted(set(stored_blobs_of(config)) - _inline(config))


def _inline(config: ServiceConfig) -> set[str]:
    return inline_blob_keys(config.data_dir, config.database_url)


def _instance_bytes(client: DicomWebClient, sop: str) -> bytes:
    response = client.http.get(
        f"{DICOMWEB}/studies/{STUDY}/series/{SERIES}/instances/{sop}", headers=ANY_SYNTAX
    )
    assert response.status_code == 200, response.text
    [(_, body)] = read_multipart(response.headers["content-type"], response.content)
    return body


def test_a_small_instance_is_kept_in_the_index_and_read_back_whole(
    client: DicomWebClient, service_config: ServiceConfig
) -> None:
    data = make_instance(STUDY, SERIES, f"{SERIES}.1", rows=16, columns=16, frames=3)
    assert client.stow([data]).status_code == 200
    assert len(_inline(service_config)) == 1
    assert _files(service_config) == []
    assert _instance_bytes(client, f"{SERIES}.1") == data
    # A frame is a byte range of the stored instance.
    response = client.http.get(
        f"{DICOMWEB}/studies/{STUDY}/series/{SERIES}/instances/{SERIES}.1/frames/2",
        headers={"accept": 'multipart/related; type="application/octet-stream"'},
    )
    assert response.status_code == 200, response.text
    [(_, frame)] = read_multipart(response.headers["content-type"], response.content)
    pixels = np.random.default_rng(0).integers(0, 4096, (3, 16, 16), np.uint16)
    assert frame == pixels[1].tobytes()


def test_the_blob_store_reads_an_inline_instance_like_a_file(
    client: DicomWebClient, service_config: ServiceConfig
) -> None:
    data = make_instance(STUDY, SERIES, f"{SERIES}.1")
    assert client.stow([data]).status_code == 200
    index = Index.open(service_config.index_url)
    try:
        blobs = blob_store_for(service_config, index)
        assert isinstance(blobs, InlineBlobStore)
        [key] = _inline(service_config)
        assert blobs.exists(key) and blobs.size(key) == len(data)
        with blobs.open(key) as file:
            assert file.read() == data
        assert b"".join(blobs.read_chunks(key, 100, 300)) == data[100:300]
        missing = blobs.new_key("instances")
        assert not blobs.exists(missing)
        with pytest.raises(FileNotFoundError):
            blobs.open(missing)
    finally:
        index.close()


def test_an_instance_over_the_limit_is_a_file(
    client: DicomWebClient, service_config: ServiceConfig
) -> None:
    small = make_instance(STUDY, SERIES, f"{SERIES}.1")
    large = make_instance(STUDY, SERIES, f"{SERIES}.2", **LARGE)
    assert len(large) > service_config.inline_blob_bytes
    assert client.stow([small, large]).status_code == 200
    assert len(_inline(service_config)) == 1 and len(_files(service_config)) == 1
    assert _instance_bytes(client, f"{SERIES}.1") == small
    assert _instance_bytes(client, f"{SERIES}.2") == large


@pytest.mark.blob_files
def test_with_the_limit_at_zero_every_instance_is_a_file(
    client: DicomWebClient, service_config: ServiceConfig
) -> None:
    data = make_instance(STUDY, SERIES, f"{SERIES}.1")
    assert client.stow([data]).status_code == 200
    assert _inline(service_config) == set()
    assert len(_files(service_config)) == 1
    assert _instance_bytes(client, f"{SERIES}.1") == data


def test_a_duplicate_or_a_conflict_keeps_no_second_copy(
    client: DicomWebClient, service_config: ServiceConfig
) -> None:
    data = make_instance(STUDY, SERIES, f"{SERIES}.1")
    changed = make_instance(STUDY, SERIES, f"{SERIES}.1", seed=1)
    assert client.stow([data]).status_code == 200
    assert client.stow([data, changed]).status_code == 202  # a duplicate, then a conflict
    assert len(stored_blobs_of(service_config)) == 1
    assert _instance_bytes(client, f"{SERIES}.1") == data


def test_deleting_instances_series_and_stores_deletes_their_inline_bytes(
    client: DicomWebClient, service_config: ServiceConfig
) -> None:
    other = f"{STUDY}.2"
    parts = [make_instance(STUDY, SERIES, f"{SERIES}.{n}", seed=n) for n in range(3)]
    parts += [make_instance(STUDY, other, f"{other}.1")]
    assert client.stow(parts).status_code == 200
    assert len(_inline(service_config)) == 4
    path = f"{DICOMWEB}/studies/{STUDY}/series/{SERIES}"
    assert client.http.delete(f"{path}/instances/{SERIES}.0").status_code == 200
    assert len(_inline(service_config)) == 3
    assert client.http.delete(path).status_code == 200
    assert len(_inline(service_config)) == 1
    assert client.http.delete("/v1/projects/p/locations/l/datasets/d/dicomStores/s").status_code
    index = Index.open(service_config.index_url)
    try:
        with index.connect() as conn:  # no row left behind, referenced or not
            assert conn.execute(select(func.count()).select_from(instance_blobs)).scalar() == 0
            assert conn.execute(select(func.count()).select_from(instances)).scalar() == 0
    finally:
        index.close()
