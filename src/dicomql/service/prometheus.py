"""``/metrics``: the server's health in Prometheus' text format, through ``prometheus-client``.

Requests are counted by route template (``…/studies/{study}``), never by raw path: a path holds
UIDs, and labels must not carry identifiers or PHI. Operations by method and state and the queue
depths are read from the index at scrape time, so they are right across processes and servers.

With ``dicomql serve --processes N`` the parent points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
directory before it forks (``service.supervisor``); every process then writes its counters there
and any process answering a scrape sums all of them (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

from anyio import to_thread
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dicomql.store.index import Index
from dicomql.store.stats import operation_states, queue_depths

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

# This module's own registry: not the global one, which would add this process's CPU and
# memory (meaningless summed over N processes).
_registry = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "dicomql_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
    registry=_registry,
)
LATENCY = Histogram(
    "dicomql_http_request_duration_seconds",
    "Time from request to the end of the response body, by route template and method.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=_registry,
)
# Labelled, like every metric here, so that no value exists before the first count: values
# are created file-backed in multiprocess mode (see supervisor._multiprocess_values).
INSTANCES = Counter(
    "dicomql_instances",
    "DICOM instances newly stored by STOW-RS, or sent whole by WADO-RS (not frames or "
    "renderings), by direction (stored, retrieved).",
    ["direction"],
    registry=_registry,
)
BYTES = Counter(
    "dicomql_bytes",
    "Body bytes received by STOW-RS (stored) or sent by DICOMweb retrieve routes: WADO-RS, "
    "frames, rendered, bulk data (retrieved).",
    ["direction"],
    registry=_registry,
)
ERRORS = Counter(
    "dicomql_errors",
    "Unexpected errors, answered with 500 or 507 or met by background work (operations,"
    " event delivery, the janitor), by the part that failed (index, blob, other).",
    ["component"],
    registry=_registry,
)


class IndexCollector(Collector):
    """Gauges read from the index at scrape time."""

    def __init__(self, index: Index) -> None:
        self.index = index

    def collect(self) -> Any:
        operations = GaugeMetricFamily(
            "dicomql_operations",
            "Long-running operations in the index, by API method and state.",
            labels=["method", "state"],
        )
        for (method, state), count in sorted(operation_states(self.index).items()):
            operations.add_metric([method, state], count)
        yield operations
        depths = queue_depths(self.index)
        yield GaugeMetricFamily(
            "dicomql_work_items_pending",
            "Operation work items not yet done.",
            value=depths["work_items"],
        )
        yield GaugeMetricFamily(
            "dicomql_outbox_pending",
            "Instance events (Pub/Sub, BigQuery) not yet delivered.",
            value=depths["outbox"],
        )


def exposition(index: Index) -> bytes:
    """The text a scrape answers: this server's counters (every process's, in multiprocess
    mode) followed by the index's gauges."""
    directory = os.environ.get(MULTIPROCESS_DIR)
    if directory:
        counters = CollectorRegistry()
        MultiProcessCollector(counters, path=directory)
    else:
        counters = _registry
    gauges = CollectorRegistry()
    gauges.register(IndexCollector(index))
    return generate_latest(counters) + generate_latest(gauges)


async def metrics_endpoint(request: Request) -> Response:
    service = request.app.state.service
    body = await to_thread.run_sync(exposition, service.index)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


routes: list[BaseRoute] = [Route("/metrics", metrics_endpoint, methods=["GET"])]


class MetricsPortMiddleware:
    """``serve --metrics-port``: a request that arrived on that port gets ``GET /metrics``
    without the token, and 404 for anything else; the API port is left as it is (``/metrics``
    there still needs the token). Outermost, so neither authentication nor the Host
    allow-list sees a scrape: the port is for a scraper the operator points at it."""

    def __init__(self, app: ASGIApp, port: int) -> None:
        self.app = app
        self.port = port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if scope["type"] != "http" or not server or server[1] != self.port:
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD"):
            response = await metrics_endpoint(Request(scope, receive))
        else:
            response = Response("Only /metrics is served on this port.\n", 404)
        await response(scope, receive, send)


_CONVERTOR = re.compile(r":\w+}")


def route_template(routes: list[BaseRoute], scope: Scope) -> tuple[str, Route | None]:
    """The template of the route ``scope`` reaches (``/v1/projects/{project}/…``) and that
    route, or ``("unmatched", None)``."""
    partial: tuple[BaseRoute, Scope] | None = None
    for route in routes:
        match, child = route.matches(scope)
        if match == Match.FULL:
            return _template_of(route, {**scope, **child})
        if match == Match.PARTIAL and partial is None:
            partial = (route, {**scope, **child})
    if partial is not None:
        return _template_of(*partial)
    return "unmatched", None


def _template_of(route: BaseRoute, scope: Scope) -> tuple[str, Route | None]:
    if isinstance(route, Mount):
        inner, leaf = route_template(route.routes, scope)
        if leaf is None:
            return "unmatched", None
        return _CONVERTOR.sub("}", route.path) + inner, leaf
    if isinstance(route, Route):
        return _CONVERTOR.sub("}", route.path), route
    return "unmatched", None


class RequestMetricsMiddleware:
    """Counts each request by route template, method and status, with its latency, and the
    body bytes of stores and retrievals.

    The route is the one the router chose: read from the endpoint and path parameters it left
    in the scope, not matched a second time (route matching was 5-9 % of a one-frame
    retrieval's CPU, docs/performance.md). A request the router never reached (a refusal by an
    inner middleware) or an endpoint shared by routes of the same parameters is matched here
    as before."""

    def __init__(self, app: ASGIApp, routes: list[BaseRoute]) -> None:
        self.app = app
        self.routes = routes
        self.templates = _templates_by_endpoint(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        original = dict(scope)  # the router and mounts update the scope as they go
        method = scope["method"]
        kind: str | None = None
        status = 500
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, kind
            if message["type"] == "http.response.start":
                status = message["status"]
                kind = _kind_of(scope.get("endpoint"), method)
            elif message["type"] == "http.response.body" and kind == "retrieve":
                BYTES.labels("retrieved").inc(len(message.get("body", b"")))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            template = self._template(scope, original)
            if _kind_of(scope.get("endpoint"), method) == "store":
                BYTES.labels("stored").inc(received)
            REQUESTS.labels(template, method, str(status)).inc()
            LATENCY.labels(template, method).observe(time.perf_counter() - started)

    def _template(self, scope: Scope, original: Scope) -> str:
        try:
            by_parameters = self.templates.get(scope.get("endpoint"))
        except TypeError:  # an unhashable endpoint
            by_parameters = None
        if by_parameters is not None:
            template = by_parameters.get(frozenset(scope.get("path_params", ())))
            if template is not None:
                return template
        return route_template(self.routes, original)[0]


def _templates_by_endpoint(
    routes: list[BaseRoute], prefix: str = "", parameters: frozenset[str] = frozenset()
) -> dict[Any, dict[frozenset[str], str | None]]:
    """Each endpoint's route templates by the names of their path parameters (None where two
    routes of one endpoint have the same names: those are matched)."""
    found: dict[Any, dict[frozenset[str], str | None]] = {}
    for route in routes:
        if isinstance(route, Mount):
            inner = _templates_by_endpoint(
                route.routes,
                prefix + _CONVERTOR.sub("}", route.path),
                # A mount matches its rest as ``path`` and hands that on, not as a parameter.
                parameters | (frozenset(route.param_convertors) - {"path"}),
            )
            for endpoint, by_parameters in inner.items():
                for names, template in by_parameters.items():
                    _add_template(found, endpoint, names, template)
        elif isinstance(route, Route):
            names = parameters | frozenset(route.param_convertors)
            _add_template(found, route.endpoint, names, prefix + _CONVERTOR.sub("}", route.path))
    return found


def _add_template(
    found: dict[Any, dict[frozenset[str], str | None]],
    endpoint: Any,
    names: frozenset[str],
    template: str | None,
) -> None:
    by_parameters = found.setdefault(endpoint, {})
    if names in by_parameters and by_parameters[names] != template:
        template = None
    by_parameters[names] = template


def _kind_of(endpoint: Any, method: str) -> str | None:
    """``store`` for STOW-RS, ``retrieve`` for DICOMweb retrieve routes, else None."""
    module = getattr(endpoint, "__module__", "") if endpoint is not None else ""
    if module == "dicomql.service.dicomweb.store" and method == "POST":
        return "store"
    if module == "dicomql.service.dicomweb.retrieve" and method == "GET":
        return "retrieve"
    return None


def count_instances(direction: str, count: int) -> None:
    """Count instances ``stored`` or ``retrieved``."""
    INSTANCES.labels(direction).inc(count)


def count_error(exc: BaseException) -> None:
    """Count an unexpected error by the part that failed: the index (SQLAlchemy's errors),
    blobs (the operating system's), or other."""
    module = type(exc).__module__
    if module.startswith("sqlalchemy"):
        ERRORS.labels("index").inc()
    elif isinstance(exc, OSError):
        ERRORS.labels("blob").inc()
    else:
        ERRORS.labels("other").inc()
