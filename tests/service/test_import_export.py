"""dicomStores.import and dicomStores.export against local folders, on SQLite and PostgreSQL."""

from __future__ import annotations

import importlib.util
import shutil
import warnings
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydicom.data import get_testdata_file
from sqlalchemy import update

from dicomql.provider.transports import InProcessTransport
from dicomql.service.app import create_app
from dicomql.service.config import ServiceConfig
from dicomql.store.index import Index
from dicomql.store.schema import operations
from tests.support.lro import counter, make_stores, run, start, store_path, stow, wait

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
MR_SMALL = Path(get_testdata_file("MR_small.dcm"))
# Only the files bundled in the pydicom wheel: get_testdata_files() would try to download more.
BUNDLED = sorted((Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm"))


def instance_count(client: httpx.Client, store: str) -> int:
    response = client.get(f"{store_path(store)}:getDICOMStoreMetrics")
    return int(response.json().get("instanceCount", 0))


def exported_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.dcm"))


def test_import_then_export_round_trips_every_test_file_byte_for_byte(
    embedded: httpx.Client, tmp_path: Path
) -> None:
    make_stores(embedded, "s")
    source = tmp_path / "in"
    source.mkdir()
    files = BUNDLED
    for number, path in enumerate(files):
        shutil.copy(path, source / f"{number:03d}_{path.name}")
    imported = run(embedded, f"{store_path('s')}:import", {"gcsSource": {"uri": f"{source}/**"}})
    assert imported["done"] and "error" not in imported
    counts = counter(imported)
    assert counts.get("success", 0) + counts.get("failure", 0) == len(files)
    stored = instance_count(embedded, "s")
    assert stored >= 30  # the bundled files hold 35 distinct storable instances

    out = tmp_path / "out"
    exported = run(
        embedded, f"{store_path('s')}:export", {"gcsDestination": {"uriPrefix": str(out)}}
    )
    assert "error" not in exported
    assert counter(exported).get("success") == stored
    written = exported_files(out)
    assert len(written) == stored
    originals = {path.read_bytes() for path in files}
    for path in written:
        # {prefix}/{study}/{series}/{instance}.dcm, the bytes exactly as imported.
        assert path.read_bytes() in originals
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # some bundled files are deliberately odd
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert path.stem == ds.SOPInstanceUID
        assert path.parent.name == ds.SeriesInstanceUID
        assert path.parent.parent.name == ds.StudyInstanceUID


def test_import_ignores_duplicates_and_counts_unreadable_files(
    embedded: httpx.Client, tmp_path: Path
) -> None:
    make_stores(embedded, "s")
    stow(embedded, "s", CT_SMALL.read_bytes())
    source = tmp_path / "in"
    source.mkdir()
    shutil.copy(CT_SMALL, source / "a.dcm")
    shutil.copy(MR_SMALL, source / "b.dcm")
    (source / "c.dcm").write_bytes(b"not dicom at all")
    operation = run(
        embedded, f"{store_path('s')}:import", {"gcsSource": {"uri": f"file://{source}/*.dcm"}}
    )
    assert counter(operation) == {"success": 2, "failure": 1}
    assert instance_count(embedded, "s") == 2


def test_import_wildcards_match_like_cloud_storage(embedded: httpx.Client, tmp_path: Path) -> None:
    make_stores(embedded, "s")
    (tmp_path / "in" / "deep").mkdir(parents=True)
    shutil.copy(CT_SMALL, tmp_path / "in" / "a1.dcm")
    shutil.copy(MR_SMALL, tmp_path / "in" / "deep" / "a2.dcm")
    # "?" is one character and "*" stays within a directory: only a1.dcm.
    operation = run(
        embedded, f"{store_path('s')}:import", {"gcsSource": {"uri": f"{tmp_path}/in/a?.dcm"}}
    )
    assert counter(operation) == {"success": 1}
    # "**" crosses directories.
    operation = run(
        embedded, f"{store_path('s')}:import", {"gcsSource": {"uri": f"{tmp_path}/in/**.dcm"}}
    )
    assert counter(operation) == {"success": 2}
    assert instance_count(embedded, "s") == 2


def test_import_applies_blob_storage_settings(embedded: httpx.Client, tmp_path: Path) -> None:
    make_stores(embedded, "s")
    run(
        embedded,
        f"{store_path('s')}:import",
        {
            "gcsSource": {"uri": str(CT_SMALL)},
            "blobStorageSettings": {"blobStorageClass": "COLDLINE"},
        },
    )
    ds = pydicom.dcmread(CT_SMALL, stop_before_pixels=True)
    info = embedded.get(
        f"{store_path('s')}/dicomWeb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}:getStorageInfo"
    ).json()
    assert info["blobStorageInfo"]["storageClass"] == "COLDLINE"


def test_import_of_nothing_matching_fails_the_operation(
    embedded: httpx.Client, tmp_path: Path
) -> None:
    make_stores(embedded, "s")
    operation = run(
        embedded, f"{store_path('s')}:import", {"gcsSource": {"uri": f"{tmp_path}/*.dcm"}}
    )
    assert operation["error"]["code"] == 5


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "gcsSource.uri"),
        ({"gcsSource": {"uri": "relative/path"}}, "absolute"),
        ({"gcsSource": {"uri": "/in\x00/*.dcm"}}, "NUL"),
        ({"gcsSource": {"uri": "/x", "x": 1}}, "Unknown name"),
        ({"gcsSource": {"uri": "/x"}, "blobStorageSettings": {"blobStorageClass": "HOT"}}, "HOT"),
    ],
)
def test_bad_import_requests_are_400(
    embedded: httpx.Client, body: dict[str, object], fragment: str
) -> None:
    make_stores(embedded, "s")
    response = embedded.post(f"{store_path('s')}:import", json=body)
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]


def test_import_into_a_missing_store_is_404(embedded: httpx.Client) -> None:
    make_stores(embedded)
    response = embedded.post(f"{store_path('nope')}:import", json={"gcsSource": {"uri": "/x"}})
    assert response.status_code == 404


def test_import_from_cloud_storage_without_fsspec_fails_clearly(embedded: httpx.Client) -> None:
    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed")
    make_stores(embedded, "s")
    operation = run(embedded, f"{store_path('s')}:import", {"gcsSource": {"uri": "gs://b/**"}})
    assert operation["error"]["code"] == 9
    assert "gcsfs" in operation["error"]["message"]
    assert "pip install 'dicomql[cloud]'" in operation["error"]["message"]
    # Export names the same remedy.
    stow(embedded, "s", CT_SMALL.read_bytes())
    body = {"gcsDestination": {"uriPrefix": "gs://b/out"}}
    operation = run(embedded, f"{store_path('s')}:export", body)
    assert operation["error"]["code"] == 9
    assert "pip install 'dicomql[cloud]'" in operation["error"]["message"]


def test_export_transcodes_to_the_requested_transfer_syntax(
    embedded: httpx.Client, tmp_path: Path
) -> None:
    make_stores(embedded, "s")
    stow(embedded, "s", CT_SMALL.read_bytes())
    out = tmp_path / "out"
    implicit = "1.2.840.10008.1.2"
    operation = run(
        embedded,
        f"{store_path('s')}:export",
        {
            "gcsDestination": {
                "uriPrefix": f"file://{out}",
                "mimeType": f"application/dicom; transfer-syntax={implicit}",
            }
        },
    )
    assert counter(operation) == {"success": 1}
    (written,) = exported_files(out)
    ds = pydicom.dcmread(written)
    assert ds.file_meta.TransferSyntaxUID == implicit
    assert ds.pixel_array.tobytes() == pydicom.dcmread(CT_SMALL).pixel_array.tobytes()


def test_export_honours_the_resource_paths_filter(embedded: httpx.Client, tmp_path: Path) -> None:
    make_stores(embedded, "s")
    stow(embedded, "s", CT_SMALL.read_bytes())
    stow(embedded, "s", MR_SMALL.read_bytes())
    mr = pydicom.dcmread(MR_SMALL, stop_before_pixels=True)
    paths = tmp_path / "paths.txt"
    paths.write_text(f"/studies/{mr.StudyInstanceUID}\r\n")
    out = tmp_path / "out"
    operation = run(
        embedded,
        f"{store_path('s')}:export",
        {
            "gcsDestination": {"uriPrefix": str(out)},
            "filterConfig": {"resourcePathsGcsUri": str(paths)},
        },
    )
    assert counter(operation) == {"success": 1}
    assert [path.stem for path in exported_files(out)] == [mr.SOPInstanceUID]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"bigqueryDestination": {"tableUri": "p.d.t"}}, 400),
        ({"gcsDestination": {"uriPrefix": "/x", "mimeType": "image/jpeg"}}, 400),
        ({"gcsDestination": {}}, 400),
    ],
)
def test_unsupported_exports_are_refused_clearly(
    embedded: httpx.Client, body: dict[str, object], status: int
) -> None:
    make_stores(embedded, "s")
    response = embedded.post(f"{store_path('s')}:export", json=body)
    assert response.status_code == status
    assert response.json()["error"]["message"]


def test_cancel_stops_an_import_between_instances(embedded: httpx.Client, tmp_path: Path) -> None:
    make_stores(embedded, "s")
    source = tmp_path / "in"
    source.mkdir()
    files = BUNDLED
    for number, path in enumerate(files):
        shutil.copy(path, source / f"{number:03d}.dcm")
    operation = start(embedded, f"{store_path('s')}:import", {"gcsSource": {"uri": f"{source}/*"}})
    response = embedded.post(f"/v1/{operation['name']}:cancel")
    assert response.status_code == 200
    done = wait(embedded, operation)
    assert done["error"]["code"] == 1
    counts = counter(done)
    # Stopped before the end: not every file was attempted.
    assert counts.get("success", 0) + counts.get("failure", 0) < len(files)


def test_an_import_resumes_after_a_restart_from_its_checkpoint(
    service_config: ServiceConfig, tmp_path: Path
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    shutil.copy(CT_SMALL, source / "1.dcm")
    shutil.copy(MR_SMALL, source / "2.dcm")
    # A server without handlers records the operation but never runs it (a crash before).
    with client_of(create_app(service_config, operation_handlers={})) as first:
        make_stores(first, "s")
        operation = start(first, f"{store_path('s')}:import", {"gcsSource": {"uri": f"{source}/*"}})
    # As if a previous attempt had stored the first file (in sorted order) and recorded so.
    index = Index.open(service_config.index_url)
    with index.begin() as conn:
        conn.execute(update(operations).values(checkpoint=1))
    index.close()
    with client_of(create_app(service_config)) as second:
        done = wait(second, operation)
        assert counter(done) == {"success": 1}
        (only,) = second.get(f"{store_path('s')}/dicomWeb/instances").json()
    assert only["00080018"]["Value"] == [pydicom.dcmread(MR_SMALL).SOPInstanceUID]


def client_of(app: Any) -> httpx.Client:
    return httpx.Client(transport=InProcessTransport(app), base_url="http://embedded")


def test_import_and_export_go_through_fsspec_uris(embedded: httpx.Client, tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    bucket = f"memory://{tmp_path.name}"
    memory.pipe(f"{bucket}/in/a.dcm", CT_SMALL.read_bytes())
    memory.pipe(f"{bucket}/in/sub/b.dcm", MR_SMALL.read_bytes())
    make_stores(embedded, "s")
    imported = run(embedded, f"{store_path('s')}:import", {"gcsSource": {"uri": f"{bucket}/in/*"}})
    assert counter(imported) == {"success": 1}  # "*" does not cross into sub/
    imported = run(embedded, f"{store_path('s')}:import", {"gcsSource": {"uri": f"{bucket}/**"}})
    assert counter(imported) == {"success": 2}
    exported = run(
        embedded, f"{store_path('s')}:export", {"gcsDestination": {"uriPrefix": f"{bucket}/out"}}
    )
    assert counter(exported) == {"success": 2}
    ct = pydicom.dcmread(CT_SMALL, stop_before_pixels=True)
    path = f"{bucket}/out/{ct.StudyInstanceUID}/{ct.SeriesInstanceUID}/{ct.SOPInstanceUID}.dcm"
    assert memory.cat(path) == CT_SMALL.read_bytes()


def blob_errors(client: httpx.Client) -> float:
    """``dicomql_errors_total{component="blob"}`` as a scrape of ``/metrics`` reads it."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "dicomql_errors_total" and sample.labels == {"component": "blob"}:
                return sample.value
    return 0.0


@pytest.mark.blob_files
def test_a_blob_that_vanished_before_an_export_read_it_is_a_failure_and_a_blob_error(
    embedded: httpx.Client, service_config: ServiceConfig, tmp_path: Path
) -> None:
    make_stores(embedded, "s")
    stow(embedded, "s", CT_SMALL.read_bytes())
    stow(embedded, "s", MR_SMALL.read_bytes())
    blobs = [path for path in service_config.blob_root.rglob("*") if path.is_file()]
    assert len(blobs) == 2
    blobs[0].unlink()  # lost behind the index's back (a disk fault, an operator's rm)
    before = blob_errors(embedded)
    out = tmp_path / "out"
    exported = run(
        embedded, f"{store_path('s')}:export", {"gcsDestination": {"uriPrefix": str(out)}}
    )
    assert counter(exported) == {"success": 1, "failure": 1}
    assert len(exported_files(out)) == 1
    # Counted where it happened, in the background, though no request was answered 500.
    assert blob_errors(embedded) == before + 1
