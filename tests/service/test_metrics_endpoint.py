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


def test_the_route_the_router_chose_labels_a_request_as_matching_it_again_would(
    tmp_path: Path,
) -> None:
    """The metrics middleware takes the template from the endpoint and path parameters the
    router left in the scope (service/prometheus.py): for every route of the app, a request to
    it must get the template that matching its path gives."""
    import re

    from starlette.routing import Match, Mount, Route

    from dicomql.service.app import create_app
    from dicomql.service.prometheus import RequestMetricsMiddleware, route_template

    app = create_app(ServiceConfig(data_dir=tmp_path / "data"))
    middleware = RequestMetricsMiddleware(app, app.routes)

    def leaves(routes: list, prefix: str = "") -> list[tuple[str, Route]]:  # type: ignore[type-arg]
        found = []
        for route in routes:
            if isinstance(route, Mount):
                found += leaves(route.routes, prefix + route.path)
            elif isinstance(route, Route):
                found.append((prefix + route.path, route))
        return found

    checked = 0
    for path_template, route in leaves(app.routes):
        path = re.sub(r"\{(\w+)(:path)?[^}]*\}", r"1.2.\1", path_template)
        method = sorted(route.methods or {"GET"})[0]
        scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
        expected, reached = route_template(app.routes, scope)
        if reached is not route:
            continue  # an earlier route takes this path; it is checked as itself
        routed = dict(scope)
        routes = app.router.routes
        while routes:  # what the router and the mounts leave in the scope
            for candidate in routes:
                match, child = candidate.matches(routed)
                if match == Match.FULL:
                    routed.update(child)
                    routes = candidate.routes if isinstance(candidate, Mount) else []
                    break
            else:
                break
        assert middleware._template(routed, scope) == expected, path
        checked += 1
    assert checked > 50
