"""Export and streaming to real BigQuery through google-cloud-bigquery, against a double of
BigQuery's REST API on a loopback port (found through DICOMQL_BIGQUERY_ENDPOINT).

BigQuery itself is Google's cloud and cannot run here: the double stands in for it, answering
the five table methods the client library calls (tables.get/insert/patch/delete,
tabledata.insertAll) as BigQuery does. Everything on dicomql's side, and the client library's
requests, are real."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
import uvicorn
from pydicom.data import get_testdata_file
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dicomql.config import Endpoints
from dicomql.provider.transports import InProcessTransport
from dicomql.service.app import create_app
from dicomql.service.config import ServiceConfig
from tests.support.lro import make_stores, run, store_path, stow
from tests.support.ports import free_port

pytest.importorskip("google.cloud.bigquery", reason="the cloud extra (google-cloud-bigquery)")

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
MR_SMALL = Path(get_testdata_file("MR_small.dcm"))
TABLE_ID = ("my-project", "dicom_export", "instances")
TABLE = "bq://my-project.dicom_export.instances"
TABLES = "/bigquery/v2/projects/{project}/datasets/{dataset}/tables"


class BigQueryDouble:
    """Tables with their schema and rows, kept in memory and served over HTTP."""

    def __init__(self) -> None:
        self.tables: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()
        one = TABLES + "/{table}"
        app = Starlette(
            routes=[
                Route(TABLES, self.insert_table, methods=["POST"]),
                Route(one, self.table, methods=["GET", "PATCH", "DELETE"]),
                Route(one + "/insertAll", self.insert_all, methods=["POST"]),
            ]
        )
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def rows(self, key: tuple[str, str, str] = TABLE_ID) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.tables.get(key, {}).get("rows", []))

    def fields(self, key: tuple[str, str, str] = TABLE_ID) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {field["name"]: field for field in self.tables[key]["schema"]["fields"]}

    def _resource(self, key: tuple[str, str, str]) -> dict[str, Any]:
        table = self.tables[key]
        project, dataset, name = key
        return {
            "kind": "bigquery#table",
            "id": f"{project}:{dataset}.{name}",
            "tableReference": {"projectId": project, "datasetId": dataset, "tableId": name},
            "schema": table["schema"],
            "numRows": str(len(table["rows"])),
            "etag": str(len(table["schema"]["fields"])),
        }

    @staticmethod
    def _key(request: Request) -> tuple[str, str, str]:
        params = request.path_params
        return params["project"], params["dataset"], params["table"]

    async def insert_table(self, request: Request) -> JSONResponse:
        body = await request.json()
        reference = body["tableReference"]
        key = (reference["projectId"], reference["datasetId"], reference["tableId"])
        with self._lock:
            if key in self.tables:
                return _error(409, "ALREADY_EXISTS", "Already Exists")
            self.tables[key] = {"schema": body.get("schema", {"fields": []}), "rows": []}
            return JSONResponse(self._resource(key))

    async def table(self, request: Request) -> Response:
        key = self._key(request)
        with self._lock:
            if key not in self.tables:
                return _error(404, "NOT_FOUND", f"Not found: Table {':'.join(key)}")
            if request.method == "DELETE":
                del self.tables[key]
                return Response(status_code=204)
            if request.method == "PATCH":
                self.tables[key]["schema"] = (await request.json())["schema"]
            return JSONResponse(self._resource(key))

    async def insert_all(self, request: Request) -> JSONResponse:
        key = self._key(request)
        body = await request.json()
        with self._lock:
            if key not in self.tables:
                return _error(404, "NOT_FOUND", f"Not found: Table {':'.join(key)}")
            known = {field["name"] for field in self.tables[key]["schema"]["fields"]}
            errors = [
                {"index": n, "errors": [{"reason": "invalid", "message": f"no such field {name}"}]}
                for n, row in enumerate(body["rows"])
                for name in row["json"]
                if name not in known
            ]
            if errors:
                return JSONResponse(
                    {"kind": "bigquery#tableDataInsertAllResponse", **{"insertErrors": errors}}
                )
            self.tables[key]["rows"].extend(row["json"] for row in body["rows"])
        return JSONResponse({"kind": "bigquery#tableDataInsertAllResponse"})


def _error(code: int, status: str, message: str) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "status": status, "errors": []}}
    return JSONResponse(body, status_code=code)


@pytest.fixture
def bigquery() -> Iterator[BigQueryDouble]:
    double = BigQueryDouble()
    double.thread.start()
    deadline = time.monotonic() + 30
    while not double.server.started:
        assert time.monotonic() < deadline, "the BigQuery double did not start"
        time.sleep(0.02)
    try:
        yield double
    finally:
        double.server.should_exit = True
        double.thread.join(30)


@pytest.fixture
def service(bigquery: BigQueryDouble, service_config: ServiceConfig) -> Iterator[httpx.Client]:
    endpoints = Endpoints(
        bigquery_endpoint=f"http://127.0.0.1:{bigquery.port}", bigquery_project="my-project"
    )
    transport = InProcessTransport(create_app(replace(service_config, endpoints=endpoints)))
    with httpx.Client(transport=transport, base_url="http://embedded") as client:
        yield client


def export(client: httpx.Client, disposition: str) -> dict[str, Any]:
    destination = {"tableUri": TABLE, "writeDisposition": disposition}
    return run(client, f"{store_path('s')}:export", {"bigqueryDestination": destination})


def sop_uids(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(row["SOPInstanceUID"] for row in rows)


def test_export_creates_the_table_with_typed_fields_and_one_row_per_instance(
    bigquery: BigQueryDouble, service: httpx.Client
) -> None:
    make_stores(service, "s")
    stow(service, "s", CT_SMALL.read_bytes())
    stow(service, "s", MR_SMALL.read_bytes())
    operation = export(service, "WRITE_EMPTY")
    assert "error" not in operation, operation
    ct = pydicom.dcmread(CT_SMALL, stop_before_pixels=True)
    mr = pydicom.dcmread(MR_SMALL, stop_before_pixels=True)
    rows = bigquery.rows()
    assert sop_uids(rows) == sorted([ct.SOPInstanceUID, mr.SOPInstanceUID])
    row = next(row for row in rows if row["SOPInstanceUID"] == ct.SOPInstanceUID)
    assert row["Modality"] == "CT"
    assert row["Rows"] == ct.Rows
    assert row["PatientName"]["Alphabetic"] == str(ct.PatientName)
    fields = bigquery.fields()
    assert fields["Rows"]["type"] == "INTEGER"
    assert fields["StudyDate"]["type"] == "DATE"
    assert fields["PatientName"]["type"] == "RECORD"
    assert fields["ImageType"]["mode"] == "REPEATED"
    assert "_dicomql_pk" not in fields  # the stand-in's bookkeeping stays out of BigQuery


def test_write_dispositions_refuse_truncate_and_append_as_bigquery_does(
    bigquery: BigQueryDouble, service: httpx.Client
) -> None:
    make_stores(service, "s")
    stow(service, "s", CT_SMALL.read_bytes())
    assert "error" not in export(service, "WRITE_EMPTY")
    refused = export(service, "WRITE_EMPTY")
    assert refused["error"]["code"] == 9, refused  # FAILED_PRECONDITION
    assert "already has 1 rows" in refused["error"]["message"]
    assert len(bigquery.rows()) == 1
    assert "error" not in export(service, "WRITE_APPEND")
    assert len(bigquery.rows()) == 2
    assert "error" not in export(service, "WRITE_TRUNCATE")
    assert len(bigquery.rows()) == 1


def test_stow_streams_rows_to_bigquery_when_a_client_is_available(
    bigquery: BigQueryDouble, service: httpx.Client
) -> None:
    make_stores(service, "s", streamConfigs=[{"bigqueryDestination": {"tableUri": TABLE}}])
    stow(service, "s", CT_SMALL.read_bytes())
    stow(service, "s", MR_SMALL.read_bytes())
    deadline = time.monotonic() + 30
    while len(bigquery.rows()) < 2:
        assert time.monotonic() < deadline, bigquery.tables
        time.sleep(0.05)
    rows = bigquery.rows()
    assert {row["Type"] for row in rows} == {"CREATE"}
    assert {row["Modality"] for row in rows} == {"CT", "MR"}
