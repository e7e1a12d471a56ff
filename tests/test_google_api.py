"""Google's HTTP contract as client and service both read it (dicomql.google_api)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dicomql import google_api
from dicomql.google_api import Code
from dicomql.service import errors


def test_every_code_has_the_http_status_of_code_proto() -> None:
    # google/rpc/code.proto, "HTTP Mapping" of each code.
    expected = {
        "OK": 200,
        "CANCELLED": 499,
        "UNKNOWN": 500,
        "INVALID_ARGUMENT": 400,
        "DEADLINE_EXCEEDED": 504,
        "NOT_FOUND": 404,
        "ALREADY_EXISTS": 409,
        "PERMISSION_DENIED": 403,
        "RESOURCE_EXHAUSTED": 429,
        "FAILED_PRECONDITION": 400,
        "ABORTED": 409,
        "OUT_OF_RANGE": 400,
        "UNIMPLEMENTED": 501,
        "INTERNAL": 500,
        "UNAVAILABLE": 503,
        "DATA_LOSS": 500,
        "UNAUTHENTICATED": 401,
    }
    assert {code.name: code.http_status for code in Code} == expected
    assert [int(code) for code in Code] == list(range(17))


def test_a_number_google_rpc_does_not_define_reads_as_unknown() -> None:
    assert Code.of(5) is Code.NOT_FOUND
    assert Code.of(99) is Code.UNKNOWN


@pytest.mark.parametrize(
    ("http_status", "status"),
    [(404, "NOT_FOUND"), (405, "UNIMPLEMENTED"), (413, "INVALID_ARGUMENT"), (502, "UNKNOWN")],
)
def test_an_http_error_without_a_status_body_gets_the_code_google_reports(
    http_status: int, status: str
) -> None:
    assert google_api.status_of_http(http_status) == status


def test_the_error_envelope_reads_back_what_was_written() -> None:
    body = google_api.error_body(404, "NOT_FOUND", "gone", [{"reason": "x"}])
    assert body == {
        "error": {
            "code": 404,
            "message": "gone",
            "status": "NOT_FOUND",
            "details": [{"reason": "x"}],
        }
    }
    assert google_api.read_error(body) == ("NOT_FOUND", "gone", [{"reason": "x"}])
    assert "details" not in google_api.error_body(400, "INVALID_ARGUMENT", "bad")["error"]
    assert google_api.read_error({"message": "not an envelope"}) is None
    assert google_api.read_error(["error"]) is None


def test_every_service_error_declares_a_google_rpc_status() -> None:
    def subclasses(cls: type) -> list[type]:
        return [c for sub in cls.__subclasses__() for c in (sub, *subclasses(sub))]

    names = {code.name for code in Code}
    for error in [errors.ServiceError, *subclasses(errors.ServiceError)]:
        assert error.status in names, error
        assert 400 <= error.code < 600, error


def test_the_discovery_document_is_parsed_once_per_process() -> None:
    assert google_api.discovery() is google_api.discovery()
    assert google_api.discovery()["name"] == "healthcare"
    assert google_api.type_url("Dataset") == google_api.DATASET


def _discovery_methods(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from resource.get("methods", {}).values()
    for child in resource.get("resources", {}).values():
        yield from _discovery_methods(child)


def test_every_api_method_name_is_a_long_running_method_of_the_discovery_document() -> None:
    methods = {m["id"]: m for m in _discovery_methods(google_api.discovery())}
    for api_method_name, method_id in google_api.DISCOVERY_METHOD_OF.items():
        assert api_method_name.startswith("google.cloud.healthcare.v1.")
        rpc = api_method_name.rsplit(".", 1)[1]
        method = methods[method_id]
        assert method["response"]["$ref"] == "Operation", method_id
        # The discovery verb begins the RPC name (import → ImportDicomData), and a request
        # message, where the method has its own, is named after the RPC.
        assert rpc.lower().startswith(method_id.rsplit(".", 1)[1].lower()), api_method_name
        request = method.get("request", {}).get("$ref", "")
        if request.endswith("Request"):
            assert request == f"{rpc}Request", api_method_name
