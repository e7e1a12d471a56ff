"""The long-running DICOM store methods from SQL: ``EXEC /*+ AWAIT */`` waits for the operation
and the result is checked in the destination (folder or store), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicomql.errors import ApiError
from dicomql.sql.engine import Engine

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
MR_SMALL = Path(get_testdata_file("MR_small.dcm"))
PARAMS = (
    "@projectsId='proj', @locationsId='us-central1', @datasetsId='ds1', @dicomStoresId='{store}'"
)


def exec_await(engine: Engine, method: str, store: str, body: dict[str, object]) -> str | None:
    """Run the method and wait; the Operation's response is empty, so the message says done."""
    result = engine.execute(
        f"EXEC /*+ AWAIT */ google.healthcare.dicom_stores.{method} "
        f"{PARAMS.format(store=store)} @@json='{json.dumps(body)}'"
    )
    return result.message


@pytest.fixture
def stores(engine: Engine, dataset: dict[str, str]) -> Engine:
    for store in ("src", "dst"):
        engine.execute(
            "INSERT INTO google.healthcare.dicom_stores (projectsId, locationsId, datasetsId,"
            " dicomStoreId) SELECT 'proj', 'us-central1', 'ds1', :s",
            parameters={"s": store},
        )
    return engine


def instance_uids(engine: Engine, store: str) -> list[str]:
    result = engine.execute(
        f"EXEC google.healthcare.dicom_stores.search_for_instances {PARAMS.format(store=store)}"
    )
    return sorted(record["SOPInstanceUID"] for record in result.records())


def test_import_from_sql_waits_and_stores_the_files(stores: Engine, tmp_path: Path) -> None:
    shutil.copy(CT_SMALL, tmp_path / "a.dcm")
    shutil.copy(MR_SMALL, tmp_path / "b.dcm")
    message = exec_await(stores, "import", "src", {"gcsSource": {"uri": f"{tmp_path}/*.dcm"}})
    assert message is not None and message.endswith("done: 2 succeeded, 0 failed")
    expected = sorted(
        pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        for path in (CT_SMALL, MR_SMALL)
    )
    assert instance_uids(stores, "src") == expected


def test_export_from_sql_writes_the_instances(stores: Engine, tmp_path: Path) -> None:
    exec_await(stores, "import", "src", {"gcsSource": {"uri": str(CT_SMALL)}})
    out = tmp_path / "out"
    exec_await(stores, "export", "src", {"gcsDestination": {"uriPrefix": f"file://{out}"}})
    (written,) = sorted(out.rglob("*.dcm"))
    assert written.read_bytes() == CT_SMALL.read_bytes()


def test_set_blob_storage_settings_from_sql_changes_the_storage_class(
    stores: Engine, embedded: object
) -> None:
    exec_await(stores, "import", "src", {"gcsSource": {"uri": str(CT_SMALL)}})
    exec_await(
        stores,
        "set_blob_storage_settings",
        "src",
        {"blobStorageSettings": {"blobStorageClass": "ARCHIVE"}},
    )
    ds = pydicom.dcmread(CT_SMALL, stop_before_pixels=True)
    info = embedded.get(  # type: ignore[attr-defined]
        "/v1/projects/proj/locations/us-central1/datasets/ds1/dicomStores/src/dicomWeb/studies/"
        f"{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        ":getStorageInfo"
    ).json()
    assert info["blobStorageInfo"]["storageClass"] == "ARCHIVE"


def test_deidentify_from_sql_fills_the_destination_with_new_uids(stores: Engine) -> None:
    exec_await(stores, "import", "src", {"gcsSource": {"uri": str(CT_SMALL)}})
    exec_await(
        stores,
        "deidentify",
        "src",
        {
            "destinationStore": "projects/proj/locations/us-central1/datasets/ds1/dicomStores/dst",
            "config": {"dicom": {"filterProfile": "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE"}},
        },
    )
    (source_uid,) = instance_uids(stores, "src")
    (new_uid,) = instance_uids(stores, "dst")
    assert new_uid != source_uid


def test_a_failed_operation_raises_its_error_from_sql(stores: Engine, tmp_path: Path) -> None:
    with pytest.raises(ApiError) as caught:
        exec_await(stores, "import", "src", {"gcsSource": {"uri": f"{tmp_path}/none/*.dcm"}})
    assert caught.value.code == 404
