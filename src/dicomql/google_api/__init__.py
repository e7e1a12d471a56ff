"""Google's HTTP contract for Cloud Healthcare v1, the one thing the client and the service share.

- :class:`Code`: google.rpc.Code, each code's name and HTTP status (google/rpc/code.proto), and
  :func:`status_of_http` for errors whose body is not a google.rpc.Status.
- The error envelope ``{"error": {"code", "message", "status"}}``: :func:`error_body` writes it,
  :func:`read_error` reads it; :func:`rpc_status` is the bare google.rpc.Status of an
  operation's ``error``.
- ``type.googleapis.com/google.cloud.healthcare.v1.…`` type URLs of ``@type`` fields.
- ``OperationMetadata.apiMethodName`` of the long-running methods dicomql runs.
- The discovery document (``healthcare.v1.json`` beside this file), loaded once per process.

Where it sits: a package at the bottom of ``dicomql``, next to ``errors.py``, importing nothing of
dicomql, so every layer (cli → sql → provider → service → store → dicom) may import it without an
import running upward. It knows no HTTP library: a body here is plain JSON data.
"""

from __future__ import annotations

import enum
import json
from functools import cache
from importlib import resources
from typing import Any


class Code(enum.IntEnum):
    """google.rpc.Code. An ``int``, so it goes into JSON as its number."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @property
    def http_status(self) -> int:
        """The HTTP status Google answers a request that failed with this code."""
        return _HTTP_STATUS_OF_CODE[self]

    @classmethod
    def of(cls, number: int) -> Code:
        """The code numbered ``number``; UNKNOWN for a number google.rpc does not define."""
        try:
            return cls(number)
        except ValueError:
            return cls.UNKNOWN


# google/rpc/code.proto's "HTTP Mapping" of each code.
_HTTP_STATUS_OF_CODE: dict[Code, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}

# The code an HTTP error carries when no google.rpc.Status says otherwise: a proxy's HTML page,
# Starlette's own 404 and 405. Where code.proto maps several codes to one status, this is the
# one Google's front end reports (400 INVALID_ARGUMENT, 409 ABORTED, 500 INTERNAL); 405, 413 and
# 415 are what Cloud Healthcare answers for a wrong method, an oversized body and an
# unsupported Content-Type.
_CODE_OF_HTTP_STATUS: dict[int, Code] = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    405: Code.UNIMPLEMENTED,
    409: Code.ABORTED,
    412: Code.FAILED_PRECONDITION,
    413: Code.INVALID_ARGUMENT,
    415: Code.INVALID_ARGUMENT,
    429: Code.RESOURCE_EXHAUSTED,
    499: Code.CANCELLED,
    500: Code.INTERNAL,
    501: Code.UNIMPLEMENTED,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}


def status_of_http(http_status: int) -> str:
    """The google.rpc.Code name of an HTTP error without a google.rpc.Status body, or UNKNOWN."""
    return _CODE_OF_HTTP_STATUS.get(http_status, Code.UNKNOWN).name


# --- error bodies ------------------------------------------------------------------------------


def error_body(
    http_status: int, status: str, message: str, details: list[Any] | None = None
) -> dict[str, Any]:
    """Google's error envelope: ``{"error": {"code": 404, "message": …, "status": "NOT_FOUND"}}``,
    with ``details`` only when there are some."""
    error: dict[str, Any] = {"code": http_status, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


def read_error(payload: Any) -> tuple[str, str, list[Any]] | None:
    """``(status, message, details)`` of an error envelope, or None if ``payload`` is not one.
    An empty status or message reads as ''."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return None
    return (
        str(error.get("status") or ""),
        str(error.get("message") or ""),
        list(error.get("details") or []),
    )


def rpc_status(code: Code, message: str) -> dict[str, Any]:
    """A google.rpc.Status as an operation's ``error`` carries it: ``{"code": 5, "message": …}``."""
    return {"code": int(code), "message": message}


# --- type URLs ---------------------------------------------------------------------------------

TYPE_PREFIX = "type.googleapis.com/google.cloud.healthcare.v1."


def type_url(message: str) -> str:
    """The ``@type`` of a google.protobuf.Any holding ``message`` (``dicom.ImportDicomDataResponse``,
    ``Dataset``), or of a discovery schema in a field error."""
    return TYPE_PREFIX + message


OPERATION_METADATA = type_url("OperationMetadata")
DATASET = type_url("Dataset")
IMPORT_DICOM_DATA_RESPONSE = type_url("dicom.ImportDicomDataResponse")
EXPORT_DICOM_DATA_RESPONSE = type_url("dicom.ExportDicomDataResponse")
SET_BLOB_STORAGE_SETTINGS_RESPONSE = type_url("dicom.SetBlobStorageSettingsResponse")
DEIDENTIFY_DICOM_STORE_SUMMARY = type_url("deidentify.DeidentifyDicomStoreSummary")


# --- OperationMetadata.apiMethodName ------------------------------------------------------------

# The RPC name Cloud Healthcare reports for the method that started an operation. The discovery
# document names its methods otherwise (``…dicomStores.import``) and does not list these, so they
# are spelled here; ``DISCOVERY_METHOD_OF`` pairs each with its discovery method (tested).
RPC_PREFIX = "google.cloud.healthcare.v1."

CREATE_DATASET = RPC_PREFIX + "dataset.DatasetService.CreateDataset"
IMPORT_DICOM_DATA = RPC_PREFIX + "dicom.DicomService.ImportDicomData"
EXPORT_DICOM_DATA = RPC_PREFIX + "dicom.DicomService.ExportDicomData"
SET_BLOB_STORAGE_SETTINGS = RPC_PREFIX + "dicom.DicomService.SetBlobStorageSettings"
DEIDENTIFY_DICOM_STORE = RPC_PREFIX + "deidentify.DeidentifyService.DeidentifyDicomStore"
DELETE_STUDY = RPC_PREFIX + "dicomweb.DicomWebService.DeleteStudy"
DELETE_SERIES = RPC_PREFIX + "dicomweb.DicomWebService.DeleteSeries"

DISCOVERY_METHOD_OF = {
    CREATE_DATASET: "healthcare.projects.locations.datasets.create",
    IMPORT_DICOM_DATA: "healthcare.projects.locations.datasets.dicomStores.import",
    EXPORT_DICOM_DATA: "healthcare.projects.locations.datasets.dicomStores.export",
    SET_BLOB_STORAGE_SETTINGS: (
        "healthcare.projects.locations.datasets.dicomStores.setBlobStorageSettings"
    ),
    DEIDENTIFY_DICOM_STORE: "healthcare.projects.locations.datasets.dicomStores.deidentify",
    DELETE_STUDY: "healthcare.projects.locations.datasets.dicomStores.studies.delete",
    DELETE_SERIES: "healthcare.projects.locations.datasets.dicomStores.studies.series.delete",
}


# --- the discovery document --------------------------------------------------------------------


@cache
def discovery() -> dict[str, Any]:
    """The Cloud Healthcare v1 discovery document shipped with dicomql (paths, parameters,
    schemas), parsed once per process. Shared by every reader: never modify it."""
    text = resources.files(__name__).joinpath("healthcare.v1.json").read_text()
    document: dict[str, Any] = json.loads(text)
    return document
