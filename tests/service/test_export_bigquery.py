"""dicomStores.export to ``bigqueryDestination``: rows in the local DuckDB stand-in, read back
with DuckDB, for each write disposition, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import date, time
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicomql.provider.client import Client
from dicomql.service.config import ServiceConfig
from dicomql.sql.engine import Engine
from tests.support.lro import counter, make_stores, run, store_path, stow

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
MR_SMALL = Path(get_testdata_file("MR_small.dcm"))
TABLE = "bq://my-project.dicom_export.instances"


def export(client: httpx.Client, destination: dict[str, Any], **body: Any) -> dict[str, Any]:
    return run(
        client,
        f"{store_path('s')}:export",
        {"bigqueryDestination": {"tableUri": TABLE, **destination}, **body},
    )


def table_rows(config: ServiceConfig) -> list[dict[str, Any]]:
    path = config.data_dir / "bigquery" / "my-project.duckdb"
    with duckdb.connect(str(path), read_only=True) as db:
        cursor = db.execute('SELECT * FROM dicom_export.instances ORDER BY "SOPInstanceUID"')
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def header(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


@pytest.fixture
def stored(embedded: httpx.Client) -> httpx.Client:
    make_stores(embedded, "s")
    stow(embedded, "s", CT_SMALL.read_bytes())
    stow(embedded, "s", MR_SMALL.read_bytes())
    return embedded


def test_export_writes_one_row_per_instance_with_keyword_columns(
    stored: httpx.Client, service_config: ServiceConfig
) -> None:
    operation = export(stored, {"writeDisposition": "WRITE_EMPTY"})
    assert "error" not in operation, operation
    assert counter(operation) == {"success": 2}
    rows = table_rows(service_config)
    ct, mr = header(CT_SMALL), header(MR_SMALL)
    by_uid = {row["SOPInstanceUID"]: row for row in rows}
    assert sorted(by_uid) == sorted([ct.SOPInstanceUID, mr.SOPInstanceUID])
    row = by_uid[ct.SOPInstanceUID]
    assert row["StudyInstanceUID"] == ct.StudyInstanceUID
    assert row["SeriesInstanceUID"] == ct.SeriesInstanceUID
    assert row["Modality"] == "CT"
    # Columns typed as Google's BigQuery DICOM schema types the VR: PN a record, US an
    # integer, DA a date, TM a time, DS a float; multi-valued attributes (by the dictionary's
    # VM) are lists.
    assert row["PatientName"]["Alphabetic"] == str(ct.PatientName)
    assert row["Rows"] == ct.Rows
    assert row["StudyDate"] == date(
        int(ct.StudyDate[:4]), int(ct.StudyDate[4:6]), int(ct.StudyDate[6:8])
    )
    assert isinstance(row["StudyTime"], time)
    assert row["ImageType"] == list(ct.ImageType)
    assert row["PixelSpacing"] == [float(v) for v in ct.PixelSpacing]
    assert row["SliceThickness"] == float(ct.SliceThickness)
    assert row["Type"] == "CREATE"
    assert row["StorageClass"] == "STANDARD"
    assert row["BlobStorageSize"] == CT_SMALL.stat().st_size
    assert row["LastUpdated"] is not None
    assert by_uid[mr.SOPInstanceUID]["Modality"] == "MR"
    # No staging table is left behind.
    path = service_config.data_dir / "bigquery" / "my-project.duckdb"
    with duckdb.connect(str(path), read_only=True) as db:
        tables = db.execute("SELECT table_schema, table_name FROM information_schema.tables")
        assert tables.fetchall() == [("dicom_export", "instances")]


def test_export_from_sql_with_await_fills_the_table(
    stored: httpx.Client, service_config: ServiceConfig
) -> None:
    engine = Engine(Client(stored))
    body = json.dumps(
        {"bigqueryDestination": {"tableUri": TABLE, "writeDisposition": "WRITE_TRUNCATE"}}
    )
    result = engine.execute(
        "EXEC /*+ AWAIT */ google.healthcare.dicom_stores.export @projectsId='p',"
        f" @locationsId='l', @datasetsId='d', @dicomStoresId='s' @@json='{body}'"
    )
    assert result.message is not None and result.message.endswith("done: 2 succeeded, 0 failed")
    assert sorted(row["Modality"] for row in table_rows(service_config)) == ["CT", "MR"]


def test_sequences_are_exported_as_json_text(
    embedded: httpx.Client, service_config: ServiceConfig
) -> None:
    make_stores(embedded, "s")
    rtplan = Path(get_testdata_file("rtplan.dcm"))
    stow(embedded, "s", rtplan.read_bytes())
    assert "error" not in export(embedded, {})
    (row,) = table_rows(service_config)
    beams = json.loads(row["BeamSequence"])
    assert len(beams) == len(header(rtplan).BeamSequence)
    assert beams[0]["BeamName"] == header(rtplan).BeamSequence[0].BeamName


def test_write_empty_fails_with_failed_precondition_when_the_table_has_rows(
    stored: httpx.Client, service_config: ServiceConfig
) -> None:
    assert "error" not in export(stored, {"writeDisposition": "WRITE_EMPTY"})
    operation = export(stored, {})  # unspecified is WRITE_EMPTY
    assert operation["error"]["code"] == 9
    assert "WRITE_EMPTY" in operation["error"]["message"]
    assert len(table_rows(service_config)) == 2


def test_write_truncate_replaces_the_rows(
    stored: httpx.Client, service_config: ServiceConfig, tmp_path: Path
) -> None:
    assert "error" not in export(stored, {"writeDisposition": "WRITE_APPEND"})
    assert "error" not in export(stored, {"writeDisposition": "WRITE_APPEND"})
    assert len(table_rows(service_config)) == 4
    mr = header(MR_SMALL)
    paths = tmp_path / "paths.txt"
    paths.write_text(f"/studies/{mr.StudyInstanceUID}\n")
    operation = export(
        stored,
        {"writeDisposition": "WRITE_TRUNCATE"},
        filterConfig={"resourcePathsGcsUri": str(paths)},
    )
    assert counter(operation) == {"success": 1}
    assert [row["SOPInstanceUID"] for row in table_rows(service_config)] == [mr.SOPInstanceUID]


def test_force_true_truncates_like_write_truncate(
    stored: httpx.Client, service_config: ServiceConfig
) -> None:
    assert "error" not in export(stored, {})
    operation = export(stored, {"force": True})
    assert "error" not in operation, operation
    assert len(table_rows(service_config)) == 2


def test_write_append_adds_rows_and_new_columns(
    embedded: httpx.Client, service_config: ServiceConfig
) -> None:
    make_stores(embedded, "s")
    stow(embedded, "s", MR_SMALL.read_bytes())
    assert "error" not in export(embedded, {"writeDisposition": "WRITE_APPEND"})
    assert "KVP" not in table_rows(service_config)[0]  # MR_small has none
    stow(embedded, "s", CT_SMALL.read_bytes())
    ct = header(CT_SMALL)
    assert "error" not in export(
        embedded, {"writeDisposition": "WRITE_APPEND", "includeSourceStore": True}
    )
    rows = table_rows(service_config)
    assert len(rows) == 3
    ct_row = next(row for row in rows if row["SOPInstanceUID"] == ct.SOPInstanceUID)
    assert ct_row["KVP"] == float(ct.KVP)
    assert ct_row["SourceStore"].endswith("/dicomStores/s")
    # The row written before the column existed has no value in it.
    assert [row["SourceStore"] is None for row in rows].count(True) == 1


def test_an_empty_selection_creates_an_empty_table(
    embedded: httpx.Client, service_config: ServiceConfig
) -> None:
    make_stores(embedded, "s")
    operation = export(embedded, {"writeDisposition": "WRITE_TRUNCATE"})
    assert "error" not in operation, operation
    assert table_rows(service_config) == []


@pytest.mark.parametrize(
    "destination",
    [
        {"tableUri": "my-project.dicom_export.instances"},
        {"tableUri": "bq://my-project.dicom_export"},
        {"tableUri": "bq://../x.d.t"},
        {"tableUri": "bq://p.d.t; DROP TABLE x"},
        {"tableUri": TABLE, "writeDisposition": "WRITE_SOMETIMES"},
        {"tableUri": TABLE, "schemaJson": {"type": "JSON"}},
    ],
)
def test_bad_bigquery_destinations_are_refused_with_400(
    embedded: httpx.Client, destination: dict[str, Any]
) -> None:
    make_stores(embedded, "s")
    response = embedded.post(f"{store_path('s')}:export", json={"bigqueryDestination": destination})
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_append_into_an_incompatible_table_fails_and_leaves_it_unchanged(
    stored: httpx.Client, service_config: ServiceConfig
) -> None:
    path = service_config.data_dir / "bigquery" / "my-project.duckdb"
    path.parent.mkdir(parents=True)
    with duckdb.connect(str(path)) as db:
        db.execute("CREATE SCHEMA dicom_export")
        db.execute('CREATE TABLE dicom_export.instances ("SOPInstanceUID" VARCHAR, "Modality" INT)')
        db.execute("INSERT INTO dicom_export.instances VALUES ('1.2.3', 7)")
    operation = export(stored, {"writeDisposition": "WRITE_APPEND"})
    assert operation["error"]["code"] == 9
    assert "Modality" in operation["error"]["message"] or "CT" in operation["error"]["message"]
    assert table_rows(service_config) == [{"SOPInstanceUID": "1.2.3", "Modality": 7}]
