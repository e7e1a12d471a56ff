"""DICOMweb from SQL against the embedded service: STOW of a folder of files through
``@path``, QIDO keys as ``@`` parameters, and DICOM JSON as keyword columns."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from dicomql.errors import ApiError, ProgrammingError
from dicomql.provider.client import Client
from dicomql.sql import uploads
from dicomql.sql.engine import Engine

FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm"]
STORE = "@projectsId='proj', @locationsId='us-central1', @datasetsId='ds1', @dicomStoresId='s'"


@pytest.fixture
def database_url() -> None:
    """The DICOMweb index is other tests' concern; here SQLite is enough."""
    return None


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for index, name in enumerate(FILES):
        target = folder / ("sub" if index else "") / name
        shutil.copy(get_testdata_file(name), target)
    (folder / ".hidden.dcm").write_bytes(b"ignored")
    return folder


@pytest.fixture
def store(engine: Engine, dataset: dict[str, str]) -> str:
    engine.execute(
        "INSERT INTO google.healthcare.dicom_stores (projectsId, locationsId, datasetsId, "
        "dicomStoreId) SELECT 'proj', 'us-central1', 'ds1', 's'"
    )
    return STORE


def test_store_instances_stores_every_file_of_a_folder(
    engine: Engine, store: str, folder: Path
) -> None:
    result = engine.execute(
        f"EXEC google.healthcare.dicom_stores.store_instances {store}, @path='{folder}'"
    )
    expected = {str(dcmread(get_testdata_file(n)).SOPInstanceUID) for n in FILES}
    assert {r["ReferencedSOPInstanceUID"] for r in result.records()} == expected
    assert {r["status"] for r in result.records()} == {"stored"}
    assert result.message == "3 of 3 files stored"


def test_a_file_that_is_not_dicom_is_reported_failed_and_the_rest_stored(
    engine: Engine, store: str, folder: Path
) -> None:
    (folder / "notes.txt").write_text("not DICOM")
    result = engine.execute(
        f"EXEC google.healthcare.dicom_stores.store_instances {store}, @path='{folder}'"
    )
    assert sorted(r["status"] for r in result.records()) == ["failed", "stored", "stored", "stored"]
    assert result.message == "3 of 4 files stored"


def test_store_instances_without_data_names_both_ways(engine: Engine, store: str) -> None:
    with pytest.raises(ProgrammingError, match="@path"):
        engine.execute(f"EXEC google.healthcare.dicom_stores.store_instances {store}")


def test_store_instances_of_a_missing_folder_is_an_error(engine: Engine, store: str) -> None:
    with pytest.raises(ProgrammingError, match="no such file or folder"):
        engine.execute(
            f"EXEC google.healthcare.dicom_stores.store_instances {store}, @path='/nonexistent'"
        )


@pytest.fixture
def stored(engine: Engine, store: str, folder: Path) -> str:
    engine.execute(f"EXEC google.healthcare.dicom_stores.store_instances {store}, @path='{folder}'")
    return store


def test_qido_keys_pass_as_parameters(engine: Engine, stored: str) -> None:
    result = engine.execute(
        f"EXEC google.healthcare.dicom_stores.search_for_studies {stored}, @PatientID='1CT1'"
    )
    [record] = result.records()
    assert record["PatientName"] == "CompressedSamples^CT1"
    assert record["StudyInstanceUID"] == dcmread(get_testdata_file("CT_small.dcm")).StudyInstanceUID


def test_limit_and_modality_narrow_the_search(engine: Engine, stored: str) -> None:
    limited = engine.execute(
        f"EXEC google.healthcare.dicom_stores.search_for_instances {stored}, @limit=2"
    )
    assert len(limited.rows) == 2
    mr = engine.execute(
        f"EXEC google.healthcare.dicom_stores.search_for_series {stored}, @Modality='MR'"
    )
    assert [r["Modality"] for r in mr.records()] == ["MR"]


def test_fuzzy_matching_is_token_prefix_on_names(engine: Engine, stored: str) -> None:
    search = f"EXEC google.healthcare.dicom_stores.search_for_studies {stored}, @fuzzymatching=true"
    assert len(engine.execute(f"{search}, @PatientName='compressed'").rows) == 2
    assert engine.execute(f"{search}, @PatientName='ompressed'").rows == []


def test_bad_qido_value_is_an_api_error(engine: Engine, stored: str) -> None:
    with pytest.raises(ApiError) as caught:
        engine.execute(
            f"EXEC google.healthcare.dicom_stores.search_for_studies {stored}, @StudyDate='bogus'"
        )
    assert caught.value.code == 400


def test_store_metrics_select_counts_what_was_stored(engine: Engine, stored: str) -> None:
    result = engine.execute(
        "SELECT studyCount, instanceCount FROM google.healthcare.dicom_store_metrics "
        "WHERE projectsId = 'proj' AND locationsId = 'us-central1' AND datasetsId = 'ds1' "
        "AND dicomStoresId = 's'"
    )
    assert result.rows == [(3, 3)]


def test_batches_split_by_count_and_size(tmp_path: Path) -> None:
    files = []
    for index, size in enumerate([10, 10, 10, 50, 10]):
        path = tmp_path / f"{index}.dcm"
        path.write_bytes(b"x" * size)
        files.append(path)
    batches = list(uploads.batches(files, max_files=2, max_bytes=40))
    assert [[p.name for p in b] for b in batches] == [
        ["0.dcm", "1.dcm"],
        ["2.dcm"],
        ["3.dcm"],
        ["4.dcm"],
    ]


def test_multipart_body_frames_each_file(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_bytes(b"AAA")
    second.write_bytes(b"BB")
    body = b"".join(uploads.multipart_body([first, second], "xyz"))
    assert body == (
        b"--xyz\r\nContent-Type: application/dicom\r\n\r\nAAA\r\n"
        b"--xyz\r\nContent-Type: application/dicom\r\n\r\nBB\r\n--xyz--\r\n"
    )


CT_STUDY = str(dcmread(get_testdata_file("CT_small.dcm")).StudyInstanceUID)
IN_STORE = (
    "projectsId = 'proj' AND locationsId = 'us-central1' AND datasetsId = 'ds1' "
    "AND dicomStoresId = 's'"
)


def test_select_over_study_metadata_gives_keyword_columns(engine: Engine, stored: str) -> None:
    result = engine.execute(
        "SELECT PatientName, Modality, Rows FROM google.healthcare.studies_metadata "
        f"WHERE {IN_STORE} AND studiesId = '{CT_STUDY}'"
    )
    assert result.rows == [("CompressedSamples^CT1", "CT", 128)]


def test_delete_of_a_study_awaits_its_operation(engine: Engine, stored: str) -> None:
    progress: list[dict[str, object]] = []
    engine.on_progress = progress.append
    result = engine.execute(
        f"DELETE /*+ AWAIT */ FROM google.healthcare.studies WHERE {IN_STORE} "
        f"AND studiesId = '{CT_STUDY}'"
    )
    assert result.message is not None and result.message.endswith(" done")
    assert progress[-1]["done"] is True
    remaining = engine.execute(f"EXEC google.healthcare.dicom_stores.search_for_studies {stored}")
    assert CT_STUDY not in {r["StudyInstanceUID"] for r in remaining.records()}
    operations = engine.execute(
        "SELECT json_extract(metadata, '$.apiMethodName') AS api, done FROM "
        "google.healthcare.operations WHERE projectsId = 'proj' "
        "AND locationsId = 'us-central1' AND datasetsId = 'ds1' AND done"
    )
    assert any(api.endswith("DeleteStudy") for api, _ in operations.rows)
    # JSON booleans come back as booleans, not SQLite's 0/1.
    assert {done for _, done in operations.rows} == {True}


def test_folder_upload_and_search_over_a_real_http_server(http: httpx.Client, folder: Path) -> None:
    engine = Engine(Client(http))
    engine.execute(
        "INSERT /*+ AWAIT */ INTO google.healthcare.datasets (projectsId, locationsId, datasetId) "
        "SELECT 'proj', 'us-central1', 'ds1'"
    )
    engine.execute(
        "INSERT INTO google.healthcare.dicom_stores (projectsId, locationsId, datasetsId, "
        "dicomStoreId) SELECT 'proj', 'us-central1', 'ds1', 's'"
    )
    stored = engine.execute(
        f"EXEC google.healthcare.dicom_stores.store_instances {STORE}, @path='{folder}'"
    )
    assert stored.message == "3 of 3 files stored"
    found = engine.execute(f"EXEC google.healthcare.dicom_stores.search_for_studies {STORE}")
    assert len(found.rows) == 3


def test_retrieve_urls_of_the_embedded_backend_are_paths_not_a_made_up_host(
    engine: Engine, store: str, folder: Path
) -> None:
    # No server, so no origin to name: a path that resolves against whichever `dicomql serve`
    # serves this data directory (docs/security.md, "Absolute URLs").
    result = engine.execute(
        f"EXEC google.healthcare.dicom_stores.store_instances {store}, @path='{folder}'"
    )
    prefix = "/v1/projects/proj/locations/us-central1/datasets/ds1/dicomStores/s/dicomWeb/studies/"
    assert all(r["RetrieveURL"].startswith(prefix) for r in result.records())
