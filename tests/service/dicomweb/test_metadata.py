"""WADO-RS metadata: every instance's DICOM JSON for a study, series or instance, BulkDataURIs
absolute to the request's base, streamed; tested in-process and over a real loopback server with
dicomweb-client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread

from dicomql.dicom.jsonmodel import dataset_to_dicom_json, relative_bulkdata_uri
from dicomql.service.config import ServiceConfig
from dicomql.store.index import Index
from dicomql.store.search import find_study_pk, instance_metadata
from tests.support.dicomweb import DICOMWEB, TEST_FILES, create_store, multipart
from tests.support.qido_corpus import (
    A1,
    A1_1,
    A1_2,
    A2,
    A2_1,
    BACKENDS,
    A,
    embedded_with_corpus,
    index_url,
    store_corpus,
)


@pytest.fixture(scope="module", params=BACKENDS)
def wado(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    with index_url(request.param) as url:
        data_dir: Path = tmp_path_factory.mktemp("metadata") / "data"
        yield from embedded_with_corpus(data_dir, url)


def metadata(client: httpx.Client, path: str) -> list[dict]:
    response = client.get(f"{DICOMWEB}/{path}/metadata")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    result: list[dict] = response.json()
    return result


def sop_uids(results: list[dict]) -> list[str]:
    return [result["00080018"]["Value"][0] for result in results]


def test_study_metadata_lists_every_instance_of_the_study(wado: httpx.Client) -> None:
    results = metadata(wado, f"studies/{A}")
    assert sop_uids(results) == [A1_1, A1_2, A2_1]
    first = results[0]
    # The whole header, every level: patient, study, series and instance attributes.
    assert first["00100010"]["Value"] == [{"Alphabetic": "Doe^John"}]
    assert first["00081030"]["Value"] == ["Head CT"]
    assert first["00080060"]["Value"] == ["CT"]
    assert first["00080070"]["Value"] == ["dicomql"]
    assert first["00200013"]["Value"] == [1]
    assert first["00080008"]["Value"] == ["ORIGINAL", "PRIMARY"]


def test_series_and_instance_metadata_are_limited_to_their_scope(wado: httpx.Client) -> None:
    assert sop_uids(metadata(wado, f"studies/{A}/series/{A1}")) == [A1_1, A1_2]
    assert sop_uids(metadata(wado, f"studies/{A}/series/{A2}")) == [A2_1]
    (only,) = metadata(wado, f"studies/{A}/series/{A1}/instances/{A1_2}")
    assert only["00080018"]["Value"] == [A1_2]
    assert only["00200013"]["Value"] == [2]


def test_bulk_data_uris_in_process_are_paths_of_the_instance(wado: httpx.Client) -> None:
    # In-process there is no origin to name (docs/security.md, "Absolute URLs"); over HTTP the
    # URIs are absolute (tests/service/test_security.py).
    (only,) = metadata(wado, f"studies/{A}/series/{A1}/instances/{A1_1}")
    assert only["7FE00010"] == {
        "vr": "OW",
        "BulkDataURI": f"{DICOMWEB}/studies/{A}/series/{A1}/instances/{A1_1}/bulkdata/7FE00010",
    }


@pytest.mark.parametrize(
    ("path", "what"),
    [
        ("studies/9.9.9", "Study"),
        (f"studies/{A}/series/9.9.9", "Series"),
        (f"studies/{A}/series/{A2}/instances/{A1_1}", "Instance"),  # exists, in another series
        (f"studies/9.9/series/{A1}/instances/{A1_1}", "Study"),
    ],
)
def test_metadata_of_something_missing_is_404_naming_it(
    wado: httpx.Client, path: str, what: str
) -> None:
    response = wado.get(f"{DICOMWEB}/{path}/metadata")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["status"] == "NOT_FOUND"
    assert error["message"].startswith(f"{what} projects/p/locations/l/datasets/d/dicomStores/s/")


def test_metadata_of_a_missing_store_is_404(wado: httpx.Client) -> None:
    response = wado.get(
        f"/v1/projects/p/locations/l/datasets/d/dicomStores/none/dicomWeb/studies/{A}/metadata"
    )
    assert response.status_code == 404


def test_metadata_refuses_media_types_other_than_dicom_json(wado: httpx.Client) -> None:
    response = wado.get(f"{DICOMWEB}/studies/{A}/metadata", headers={"Accept": "image/jpeg"})
    assert response.status_code == 406
    assert response.json()["error"]["code"] == 406


def test_metadata_streams_rows_in_batches_and_keeps_their_order(tmp_path: Path) -> None:
    """The database cursor is read a batch at a time; batches of 2 over 3 instances still give
    every instance once, in storage order."""
    data_dir = tmp_path / "data"
    service = embedded_with_corpus(data_dir, None)
    next(service)  # the corpus is stored
    index = Index.open(ServiceConfig(data_dir=data_dir).index_url)
    try:
        with index.connect() as conn:
            study_pk = find_study_pk(conn, 1, A)
            assert study_pk is not None
            texts = list(
                instance_metadata(conn, "http://x/dicomWeb", study_pk=study_pk, batch_size=2)
            )
    finally:
        index.close()
        service.close()
    assert [A1_1 in texts[0], A1_2 in texts[1], A2_1 in texts[2]] == [True, True, True]
    assert len(texts) == 3
    # The stored text as it is (compact, or spaced as older versions wrote it), URIs absolute.
    bulk_data_uris = [re.findall(r'"BulkDataURI":\s*"([^"]*)"', text) for text in texts]
    assert all(uris for uris in bulk_data_uris)
    assert all(uri.startswith("http://x/dicomWeb/studies/") for u in bulk_data_uris for uri in u)


@pytest.fixture
def live_with_ct_small(service_config: ServiceConfig, live_server: Any) -> str:
    """The live server holding pydicom's CT_small.dcm and the corpus; its DICOMweb base URL."""
    create_store(service_config)
    base = f"{live_server.url}{DICOMWEB}"
    body, content_type = multipart([(TEST_FILES / "CT_small.dcm").read_bytes()])
    with httpx.Client(base_url=live_server.url) as client:
        response = client.post(
            f"{DICOMWEB}/studies", content=body, headers={"Content-Type": content_type}
        )
        assert response.status_code == 200, response.text
        store_corpus(client)
    return base


@pytest.fixture
def dicomweb(live_with_ct_small: str) -> Iterator[DICOMwebClient]:
    with requests.Session() as session:
        yield DICOMwebClient(url=live_with_ct_small, session=session)


def path_of(url: str) -> str:
    # dicomweb-client sends "Host: 127.0.0.1" without the port (dicomweb_client/web.py), so the
    # absolute URLs the service builds from the Host header name the host but not the port.
    return urlsplit(url).path


def test_dicomweb_client_reads_metadata_equal_to_the_stored_header(
    dicomweb: DICOMwebClient,
) -> None:
    ds = dcmread(TEST_FILES / "CT_small.dcm")
    (model,) = dicomweb.retrieve_study_metadata(ds.StudyInstanceUID)
    expected = dataset_to_dicom_json(
        dcmread(TEST_FILES / "CT_small.dcm"), bulkdata_uri=relative_bulkdata_uri
    )
    assert set(model) == set(expected)
    instance_path = (
        f"{DICOMWEB}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    for key, attribute in expected.items():
        if "BulkDataURI" in attribute:
            uri = path_of(model[key]["BulkDataURI"])
            assert uri == f"{instance_path}/{attribute['BulkDataURI']}", key
        else:
            assert model[key] == attribute, key
    assert path_of(model["7FE00010"]["BulkDataURI"]) == f"{instance_path}/bulkdata/7FE00010"


def test_dicomweb_client_searches_the_live_server(dicomweb: DICOMwebClient) -> None:
    studies = dicomweb.search_for_studies(search_filters={"PatientID": "PID-A"})
    assert [s["0020000D"]["Value"][0] for s in studies] == [A]
    fuzzy = dicomweb.search_for_studies(search_filters={"PatientName": "jo"}, fuzzymatching=True)
    assert [s["0020000D"]["Value"][0] for s in fuzzy] == [A]
    series = dicomweb.search_for_series(A, search_filters={"Modality": "MR"})
    assert [s["0020000E"]["Value"][0] for s in series] == [A2]
    instances = dicomweb.search_for_instances(A, A1, fields=["ImageType"])
    assert [i["00080008"]["Value"] for i in instances] == [["ORIGINAL", "PRIMARY"]] * 2
    ct_small = dicomweb.search_for_studies(search_filters={"PatientName": "CompressedSamples^CT1"})
    assert len(ct_small) == 1
    retrieve_url = ct_small[0]["00081190"]["Value"][0]
    assert path_of(retrieve_url) == f"{DICOMWEB}/studies/{ct_small[0]['0020000D']['Value'][0]}"
