"""setBlobStorageSettings on a store, study, series and instance (and with a filter file), as
``:getStorageInfo`` then reports it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file

from tests.support.lro import counter, make_stores, run, store_path, stow

CT = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
MR = pydicom.dcmread(get_testdata_file("MR_small.dcm"), stop_before_pixels=True)


def instance_path(ds: Any) -> str:
    return (
        f"{store_path('s')}/dicomWeb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def storage_info(client: httpx.Client, ds: Any) -> dict[str, Any]:
    response = client.get(instance_path(ds) + ":getStorageInfo")
    assert response.status_code == 200, response.text
    info: dict[str, Any] = response.json()["blobStorageInfo"]
    return info


def settings(storage_class: str) -> dict[str, Any]:
    return {"blobStorageSettings": {"blobStorageClass": storage_class}}


@pytest.fixture
def client(embedded: httpx.Client) -> httpx.Client:
    make_stores(embedded, "s")
    for name in ("CT_small.dcm", "MR_small.dcm"):
        stow(embedded, "s", Path(get_testdata_file(name)).read_bytes())
    return embedded


def test_new_instances_are_standard_storage(client: httpx.Client) -> None:
    assert storage_info(client, CT)["storageClass"] == "STANDARD"


def test_store_level_setting_changes_every_instance(client: httpx.Client) -> None:
    operation = run(client, f"{store_path('s')}:setBlobStorageSettings", settings("NEARLINE"))
    assert "error" not in operation
    assert counter(operation) == {"success": 2}
    for ds in (CT, MR):
        info = storage_info(client, ds)
        assert info["storageClass"] == "NEARLINE"
        assert info["storageClassUpdateTime"].endswith("Z")


@pytest.mark.parametrize("level", ["study", "series", "instance"])
def test_dicomweb_level_setting_changes_only_what_the_path_names(
    client: httpx.Client, level: str
) -> None:
    path = {
        "study": f"{store_path('s')}/dicomWeb/studies/{CT.StudyInstanceUID}",
        "series": f"{store_path('s')}/dicomWeb/studies/{CT.StudyInstanceUID}"
        f"/series/{CT.SeriesInstanceUID}",
        "instance": instance_path(CT),
    }[level]
    run(client, f"{path}:setBlobStorageSettings", settings("COLDLINE"))
    assert storage_info(client, CT)["storageClass"] == "COLDLINE"
    assert storage_info(client, MR)["storageClass"] == "STANDARD"


def test_filter_file_narrows_a_store_level_setting(client: httpx.Client, tmp_path: Path) -> None:
    paths = tmp_path / "paths.txt"
    paths.write_text(f"/studies/{MR.StudyInstanceUID}/series/{MR.SeriesInstanceUID}\n")
    body = {**settings("ARCHIVE"), "filterConfig": {"resourcePathsGcsUri": str(paths)}}
    run(client, f"{store_path('s')}:setBlobStorageSettings", body)
    assert storage_info(client, MR)["storageClass"] == "ARCHIVE"
    assert storage_info(client, CT)["storageClass"] == "STANDARD"


def test_a_malformed_filter_file_fails_the_operation(client: httpx.Client, tmp_path: Path) -> None:
    paths = tmp_path / "paths.txt"
    paths.write_text("studies-without-slash\n")
    body = {**settings("ARCHIVE"), "filterConfig": {"resourcePathsGcsUri": str(paths)}}
    operation = run(client, f"{store_path('s')}:setBlobStorageSettings", body)
    assert operation["error"]["code"] == 3
    assert storage_info(client, CT)["storageClass"] == "STANDARD"


def test_setting_the_same_class_again_keeps_its_update_time(client: httpx.Client) -> None:
    run(client, f"{store_path('s')}:setBlobStorageSettings", settings("NEARLINE"))
    first = storage_info(client, CT)["storageClassUpdateTime"]
    run(client, f"{store_path('s')}:setBlobStorageSettings", settings("NEARLINE"))
    assert storage_info(client, CT)["storageClassUpdateTime"] == first


@pytest.mark.parametrize(
    "body", [{}, settings("BLOB_STORAGE_CLASS_UNSPECIFIED"), settings("HOT"), {"x": 1}]
)
def test_a_missing_or_unknown_storage_class_is_400(
    client: httpx.Client, body: dict[str, Any]
) -> None:
    response = client.post(f"{store_path('s')}:setBlobStorageSettings", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_an_unknown_study_is_404(client: httpx.Client) -> None:
    response = client.post(
        f"{store_path('s')}/dicomWeb/studies/1.2.3:setBlobStorageSettings", json=settings("ARCHIVE")
    )
    assert response.status_code == 404
