"""dicomStores.deidentify as a long-running operation: the destination gets de-identified copies
with consistent new UIDs, through one thread or a process pool, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dicomql.service import deidentify
from tests.support.lro import counter, make_stores, run, store_name, store_path, stow

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
MR_SMALL = Path(get_testdata_file("MR_small.dcm"))
BASIC = {"dicom": {"filterProfile": "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE"}}


def deidentify_body(config: dict[str, Any] = BASIC, **extra: Any) -> dict[str, Any]:
    return {"destinationStore": store_name("out"), "config": config, **extra}


def search(client: httpx.Client, store: str, level: str = "instances") -> list[dict[str, Any]]:
    response = client.get(f"{store_path(store)}/dicomWeb/{level}", params={"includefield": "all"})
    assert response.status_code in (200, 204), response.text
    return response.json() if response.status_code == 200 else []


def value(item: dict[str, Any], tag: str) -> Any:
    return item.get(tag, {}).get("Value", [None])[0]


def copies_of_ct(count: int) -> list[bytes]:
    """``count`` instances of one series: CT_small with new SOP Instance UIDs."""
    ds = pydicom.dcmread(CT_SMALL)
    out = []
    for _ in range(count):
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def test_deidentify_copies_every_instance_with_new_uids_and_no_patient_name(
    embedded: httpx.Client,
) -> None:
    make_stores(embedded, "src", "out")
    stow(embedded, "src", CT_SMALL.read_bytes())
    stow(embedded, "src", MR_SMALL.read_bytes())
    operation = run(embedded, f"{store_path('src')}:deidentify", deidentify_body())
    assert "error" not in operation, operation
    assert counter(operation) == {"success": 2}
    assert operation["response"]["@type"].endswith("DeidentifyDicomStoreSummary")
    assert operation["metadata"]["apiMethodName"].endswith("DeidentifyDicomStore")
    source = {value(item, "00080018") for item in search(embedded, "src")}
    copied = search(embedded, "out")
    assert len(copied) == 2
    assert not source & {value(item, "00080018") for item in copied}
    for item in copied:
        assert value(item, "00100010") in (None, "", {})  # PatientName emptied or removed
    # The source is left as it was.
    assert len(search(embedded, "src")) == 2


def test_deidentify_with_a_process_pool_keeps_one_series_one_series(
    embedded: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pool is used from 4 cores on (on 2 it is slower than one thread); force it here.
    monkeypatch.setattr(deidentify, "_POOL_MIN_CORES", 1)
    make_stores(embedded, "src", "out")
    for data in copies_of_ct(40):  # above the pool threshold: runs on a process pool
        stow(embedded, "src", data)
    operation = run(embedded, f"{store_path('src')}:deidentify", deidentify_body())
    assert counter(operation) == {"success": 40}
    series = search(embedded, "out", "series")
    # UIDs map the same in every worker process: 40 instances of one series stay together.
    assert len(series) == 1
    assert len(search(embedded, "out")) == 40


def test_deidentify_honours_the_resource_paths_filter(
    embedded: httpx.Client, tmp_path: Path
) -> None:
    make_stores(embedded, "src", "out")
    stow(embedded, "src", CT_SMALL.read_bytes())
    stow(embedded, "src", MR_SMALL.read_bytes())
    mr = pydicom.dcmread(MR_SMALL, stop_before_pixels=True)
    paths = tmp_path / "paths.txt"
    paths.write_text(f"/studies/{mr.StudyInstanceUID}\n")
    body = deidentify_body(filterConfig={"resourcePathsGcsUri": str(paths)})
    operation = run(embedded, f"{store_path('src')}:deidentify", body)
    assert counter(operation) == {"success": 1}
    (copied,) = search(embedded, "out")
    assert value(copied, "00080060") == "MR"


def test_running_deidentify_twice_into_the_same_store_adds_nothing_new(
    embedded: httpx.Client,
) -> None:
    make_stores(embedded, "src", "out")
    stow(embedded, "src", CT_SMALL.read_bytes())
    body = deidentify_body()
    run(embedded, f"{store_path('src')}:deidentify", body)
    run(embedded, f"{store_path('src')}:deidentify", body)
    # Each operation has its own key, so the second copy has other UIDs: two instances.
    assert len(search(embedded, "out")) == 2


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"config": BASIC}, 400),  # no destinationStore
        (deidentify_body({"dicom": {"filterProfile": "NO_SUCH_PROFILE"}}), 400),
        ({"destinationStore": store_name("src"), "config": BASIC}, 400),  # itself
        ({"destinationStore": store_name("missing"), "config": BASIC}, 404),
        (deidentify_body(gcsConfigUri="gs://b/c.json") | {"config": None}, 400),
        (
            {
                "destinationStore": "projects/p/locations/other/datasets/d/dicomStores/out",
                "config": BASIC,
            },
            400,
        ),
    ],
)
def test_bad_deidentify_requests_are_refused(
    embedded: httpx.Client, body: dict[str, Any], status: int
) -> None:
    make_stores(embedded, "src", "out")
    body = {key: item for key, item in body.items() if item is not None}
    response = embedded.post(f"{store_path('src')}:deidentify", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]
