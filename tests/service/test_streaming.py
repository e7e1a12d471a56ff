"""Streaming of stored instances to their ``streamConfigs`` BigQuery tables (issue 5), through
the local DuckDB stand-in (no BigQuery credentials here), typed as Google's schema types them."""

from __future__ import annotations

import time
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx

from dicomql.service.config import ServiceConfig
from tests.support.dicomweb import make_instance
from tests.support.lro import DATASET, LOCATION, make_stores, run, store_path, stow, wait

TABLE = "bq://my-project.streamed.instances"


def streamed_rows(config: ServiceConfig, count: int, limit: float = 30) -> list[dict[str, Any]]:
    """The table's rows once it has ``count`` (the deliverer appends within a poll interval)."""
    path = config.data_dir / "bigquery" / "my-project.duckdb"
    deadline = time.monotonic() + limit
    while True:
        rows: list[dict[str, Any]] = []
        try:
            # The deliverer writes through this process's DuckDB instance; a read-only
            # connection is another configuration, which DuckDB refuses beside it (and the
            # refusal made the deliverer retry while this loop kept reconnecting).
            with duckdb.connect(str(path)) as db:
                cursor = db.execute('SELECT * FROM streamed.instances ORDER BY "SOPInstanceUID"')
                names = [column[0] for column in cursor.description]
                rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        except duckdb.Error:
            pass  # not created yet, or being written this instant
        if len(rows) >= count:
            return rows
        assert time.monotonic() < deadline, f"{count} rows expected, found {rows}"
        time.sleep(0.05)


def test_stow_appends_one_typed_row_per_instance(
    embedded: httpx.Client, service_config: ServiceConfig
) -> None:
    make_stores(
        embedded,
        "s",
        streamConfigs=[{"bigqueryDestination": {"tableUri": TABLE, "includeSourceStore": True}}],
    )
    instance = make_instance("1.2", "1.2.3", "1.2.3.4", rows=8, columns=6, modality="CT")
    stow(embedded, "s", instance)
    (row,) = streamed_rows(service_config, 1)
    assert row["StudyInstanceUID"] == "1.2"
    assert row["SeriesInstanceUID"] == "1.2.3"
    assert row["SOPInstanceUID"] == "1.2.3.4"
    assert row["Modality"] == "CT"
    assert row["Rows"] == 8 and row["Columns"] == 6  # US → INTEGER
    assert row["StudyDate"] == date(2024, 1, 2)  # DA → DATE
    assert row["PatientName"]["Alphabetic"] == "Doe^John"  # PN → record
    assert row["Type"] == "CREATE"
    assert row["StorageClass"] == "STANDARD"
    assert row["BlobStorageSize"] == len(instance)
    assert isinstance(row["LastUpdated"], datetime)
    assert row["SourceStore"] == "projects/p/locations/l/datasets/d/dicomStores/s"
    with duckdb.connect(str(service_config.data_dir / "bigquery" / "my-project.duckdb")) as db:
        types = dict(
            db.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = 'streamed' AND table_name = 'instances'"
            ).fetchall()
        )
    assert types["Rows"] == "BIGINT"
    assert types["StudyDate"] == "DATE"
    assert types["LastUpdated"] == "TIMESTAMP"


def test_import_streams_too_and_new_attributes_add_columns(
    embedded: httpx.Client, service_config: ServiceConfig, tmp_path: Path
) -> None:
    make_stores(embedded, "s", streamConfigs=[{"bigqueryDestination": {"tableUri": TABLE}}])
    stow(embedded, "s", make_instance("1.2", "1.2.3", "1.2.3.4"))
    streamed_rows(service_config, 1)
    folder = tmp_path / "import"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(make_instance("1.2", "1.2.3", "1.2.3.5", frames=3))
    operation = run(embedded, f"{store_path('s')}:import", {"gcsSource": {"uri": f"{folder}/*"}})
    assert "error" not in operation, operation
    rows = streamed_rows(service_config, 2)
    assert [row["SOPInstanceUID"] for row in rows] == ["1.2.3.4", "1.2.3.5"]
    # NumberOfFrames (IS → INTEGER) arrived with the second instance: a new column, NULL before.
    assert [row["NumberOfFrames"] for row in rows] == [None, 3]


def test_duplicates_are_not_streamed_twice(
    embedded: httpx.Client, service_config: ServiceConfig
) -> None:
    make_stores(embedded, "s", streamConfigs=[{"bigqueryDestination": {"tableUri": TABLE}}])
    instance = make_instance("1.2", "1.2.3", "1.2.3.4")
    stow(embedded, "s", instance)
    stow(embedded, "s", instance)
    stow(embedded, "s", make_instance("1.2", "1.2.3", "1.2.3.5"))
    streamed_rows(service_config, 2)
    # A marker stored last: rows are appended in the order their events were written, so once
    # its row is there, a second row of the duplicate would be there too.
    stow(embedded, "s", make_instance("1.2", "1.2.3", "1.2.3.9"))
    rows = streamed_rows(service_config, 3)
    assert [row["SOPInstanceUID"] for row in rows] == ["1.2.3.4", "1.2.3.5", "1.2.3.9"]


def test_two_stream_configs_with_one_destination_are_refused(embedded: httpx.Client) -> None:
    response = embedded.post(f"{LOCATION}/datasets", params={"datasetId": "d"})
    wait(embedded, response.json())
    config = {"bigqueryDestination": {"tableUri": TABLE}}
    response = embedded.post(
        f"{DATASET}/dicomStores",
        params={"dicomStoreId": "s"},
        json={"streamConfigs": [config, config]},
    )
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "unique destination" in response.json()["error"]["message"]
