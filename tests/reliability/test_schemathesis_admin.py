"""Schemathesis against the admin API (datasets, dicomStores, operations), generated from StackQL's
OpenAPI 3 document of the real Cloud Healthcare API: every generated request, valid or not, is
answered without a 5xx, and errors come in Google's envelope."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.reliability import create_dataset_and_store

schemathesis = pytest.importorskip("schemathesis")
yaml = pytest.importorskip("yaml")  # a schemathesis dependency

SPEC = Path("/work/shared/reference/stackql-healthcare.yaml")
REPO_SPEC = Path(__file__).parents[2] / "shared" / "reference" / "stackql-healthcare.yaml"
EXAMPLES = int(os.environ.get("DICOMQL_SCHEMATHESIS_EXAMPLES", "25"))
FIGURES = Path(os.environ.get("DICOMQL_RELIABILITY_FIGURES", "/tmp/dicomql-reliability"))
BASE = "/v1/projects/{projectsId}/locations/{locationsId}/datasets"
ADMIN_PATHS = {
    BASE: ("get", "post"),
    BASE + "/{datasetsId}": ("get", "patch", "delete"),
    BASE + "/{datasetsId}/dicomStores": ("get", "post"),
    BASE + "/{datasetsId}/dicomStores/{dicomStoresId}": ("get", "patch", "delete"),
    BASE + "/{datasetsId}/dicomStores/{dicomStoresId}:getDICOMStoreMetrics": ("get",),
    BASE + "/{datasetsId}/operations": ("get",),
    BASE + "/{datasetsId}/operations/{operationsId}": ("get",),
    BASE + "/{datasetsId}/operations/{operationsId}:cancel": ("post",),
}
KNOWN = {"projectsId": "p", "locationsId": "l", "datasetsId": "d", "dicomStoresId": "s"}


def _admin_schema() -> dict[str, Any]:
    spec = SPEC if SPEC.exists() else REPO_SPEC
    if not spec.exists():
        pytest.skip("stackql-healthcare.yaml is not available")
    raw = yaml.safe_load(spec.read_text())
    paths = {}
    for path, methods in ADMIN_PATHS.items():
        item = raw["paths"][path]
        paths[path] = {key: value for key, value in item.items() if key in (*methods, "parameters")}
    raw["paths"] = paths
    return raw


@pytest.fixture(scope="module")
def admin_schema() -> Any:
    return schemathesis.openapi.from_dict(_admin_schema())


def test_generated_admin_requests_never_get_a_5xx(
    admin_schema: Any, live_server: Any, database_url: str | None
) -> None:
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        create_dataset_and_store(client)
        tried = 0
        failures: list[str] = []
        operations = [result.ok() for result in admin_schema.get_all_operations()]
        assert len(operations) == sum(len(methods) for methods in ADMIN_PATHS.values())
        for operation in operations:

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(), known=st.booleans())
            def run(case: Any, known: bool) -> None:
                nonlocal tried
                tried += 1
                path_parameters = dict(case.path_parameters or {})
                if known:  # half the cases name the existing dataset and store
                    path_parameters.update({k: v for k, v in KNOWN.items() if k in path_parameters})
                    if "datasetsId" in path_parameters and case.method == "DELETE":
                        return  # keep the fixture's dataset and store for the other cases
                url = case.operation.path.format(
                    **{k: quote(str(v), safe="") or "x" for k, v in path_parameters.items()}
                )
                kwargs: dict[str, Any] = {"params": case.query or None}
                if case.body is not None and case.method in ("POST", "PATCH"):
                    kwargs["content"] = json.dumps(case.body, default=str).encode()
                try:
                    response = client.request(case.method, url, **kwargs)
                except httpx.InvalidURL:
                    return
                if response.status_code >= 500:
                    failures.append(f"{case.method} {url} -> {response.status_code}")
                elif response.status_code >= 400:
                    error = response.json().get("error", {})
                    if error.get("code") != response.status_code or not error.get("status"):
                        failures.append(f"{case.method} {url}: not Google's shape")

            run()
    FIGURES.mkdir(parents=True, exist_ok=True)
    backend = "postgresql" if database_url else "sqlite"
    (FIGURES / f"schemathesis-{backend}.json").write_text(
        json.dumps({"cases": tried, "failures": len(failures), "examples": failures[:20]})
    )
    assert tried >= len(operations) * min(EXAMPLES, 5)
    assert failures == []
