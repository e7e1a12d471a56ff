"""``/metrics`` of one server: behind the bearer token like every other route, and refusals and
unknown paths counted under a template, never under the path a client sent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from dicomql.service.config import ServiceConfig


def requests_by_route(text: str) -> dict[tuple[str, str, str], float]:
    return {
        (sample.labels["route"], sample.labels["method"], sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "dicomql_http_requests"
        for sample in family.samples
        if sample.name == "dicomql_http_requests_total"
    }


def test_metrics_need_the_token_and_count_unknown_paths_as_unmatched(
    tmp_path: Path, start_live_server: Callable[[ServiceConfig], object]
) -> None:
    server = start_live_server(ServiceConfig(data_dir=tmp_path / "data", auth_token="s3cret"))
    good = {"Authorization": "Bearer s3cret"}
    with httpx.Client(base_url=server.url) as http:  # type: ignore[attr-defined]
        before = requests_by_route(http.get("/metrics", headers=good).text)
        refused = http.get("/metrics")
        assert refused.status_code == 401
        assert refused.json()["error"]["status"] == "UNAUTHENTICATED"
        secret_path = "/v1/nowhere/Doe%5EJane"
        assert http.get(secret_path, headers=good).status_code == 404
        scraped = http.get("/metrics", headers=good)
    assert scraped.status_code == 200
    after = requests_by_route(scraped.text)
    assert after[("/metrics", "GET", "401")] - before.get(("/metrics", "GET", "401"), 0) == 1
    assert after[("unmatched", "GET", "404")] - before.get(("unmatched", "GET", "404"), 0) == 1
    assert "Doe" not in scraped.text and "nowhere" not in scraped.text
