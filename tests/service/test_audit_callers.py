"""The audit log's caller with a token: ``token`` for a request that gave it, ``unauthenticated``
(status 401) for one that did not; ``/metrics`` scrapes are not audited."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx

from dicomql.service.config import ServiceConfig

DATASETS = "/v1/projects/p/locations/l/datasets"


def test_callers_with_a_token(
    tmp_path: Path, start_live_server: Callable[[ServiceConfig], object]
) -> None:
    audit = tmp_path / "audit.jsonl"
    config = ServiceConfig(data_dir=tmp_path / "data", auth_token="s3cret", audit_log=audit)
    server = start_live_server(config)
    with httpx.Client(base_url=server.url) as http:  # type: ignore[attr-defined]
        assert http.get(DATASETS, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert http.get(DATASETS, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert http.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(e["caller"], e["resource"], e["status"]) for e in entries] == [
        ("token", DATASETS, 200),
        ("unauthenticated", DATASETS, 401),
    ]
    assert "s3cret" not in audit.read_text() and "wrong" not in audit.read_text()
