"""The embedded Cloud Healthcare API as one ASGI application.

``create_app(config)`` is what ``dicomql serve`` hands to uvicorn and what the in-process transport
drives directly, so the SQL front end sees the same HTTP contract wherever the service runs.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from dicomql.service import errors
from dicomql.service.audit import AuditLogMiddleware
from dicomql.service.config import ServiceConfig
from dicomql.service.context import Service
from dicomql.service.events import DeliverySettings, EventDeliverer
from dicomql.service.handlers import default_handlers
from dicomql.service.janitor import ServerPresence, recover_at_start, run_janitor
from dicomql.service.prometheus import MetricsPortMiddleware, RequestMetricsMiddleware
from dicomql.service.prometheus import routes as metrics_routes
from dicomql.service.routes import routes
from dicomql.service.security import web_middleware
from dicomql.service.viewer import ViewerSessionMiddleware, is_viewer_path
from dicomql.service.viewer import routes as viewer_routes
from dicomql.service.workers import Handler, WorkerPool
from dicomql.store.index import Index
from dicomql.store.object_blobs import blob_store_for

if TYPE_CHECKING:
    from dicomql.dimse.server import DimseServer


def create_app(
    config: ServiceConfig, *, operation_handlers: Mapping[str, Handler] | None = None
) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        index = Index.open(config.index_url)
        blobs = blob_store_for(config, index)
        service = Service(config=config, index=index, blobs=blobs)
        presence = recover(service)
        # Handlers per api_method_name, built by the app (no module-global registry).
        handlers = default_handlers() if operation_handlers is None else dict(operation_handlers)
        # Notifications and streaming of stored instances (issue 5; docs/notifications.md).
        deliverer = EventDeliverer(
            index, config.data_dir, DeliverySettings(endpoints=config.endpoints)
        )
        service.deliverer = deliverer
        service.workers = WorkerPool(
            service,
            handlers,
            workers=config.workers,
            lease=timedelta(seconds=config.lease_seconds),
            item_timeout=config.item_timeout_seconds,
            after_run=service.instances_stored,
        )
        try:
            async with background_work(service, deliverer, presence):
                dimse = start_dimse(service)  # a port another program holds fails the start
                try:
                    app.state.service = service
                    yield
                finally:
                    if dimse is not None:
                        dimse.stop()
        finally:
            presence.leave()
            index.close()

    all_routes = [*routes, *metrics_routes, *viewer_routes(config)]
    middleware = [
        # --metrics-port: scrapes there skip everything below, the token included.
        *(
            [Middleware(MetricsPortMiddleware, port=config.metrics_port)]
            if config.metrics_port
            else []
        ),
        # Outermost, so refusals (401, a wrong Host) are counted too (docs/deployment.md).
        Middleware(RequestMetricsMiddleware, routes=all_routes),
        *viewer_session_middleware(config),
        *audit_middleware(config, all_routes),
        # Host allow-list and CORS outermost, so browser preflights are answered (or refused)
        # before authentication; service.security and docs/security.md.
        *web_middleware(config),
        Middleware(
            BearerTokenMiddleware,
            token=config.auth_token,
            # The viewer's build and sign-in page are public; it guards its own data.
            exempt=is_viewer_path if config.viewer is not None else None,
        ),
    ]
    app = Starlette(
        routes=all_routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            errors.ServiceError: errors.handle_service_error,
            HTTPException: errors.handle_http_exception,
            Exception: errors.handle_unexpected,
        },
    )
    # No 307 to "path + /": Google answers 404, and the redirect can cross into another
    # resource (an encoded "t%2FdicomWeb" store ID would be sent to store t).
    app.router.redirect_slashes = False
    return app


@asynccontextmanager
async def background_work(
    service: Service, deliverer: EventDeliverer, presence: ServerPresence
) -> AsyncIterator[None]:
    """The operation workers, the janitor and the event deliverer, in one task group for as
    long as the app runs; on the way out the deliverer and the workers stop cleanly (the
    workers give their operations back) and the janitor is cancelled."""
    assert service.workers is not None
    failed: Exception | None = None
    async with anyio.create_task_group() as background:
        await background.start(service.workers.run)
        background.start_soon(run_janitor, service, presence, name="dicomql-janitor")
        await background.start(deliverer.run)
        try:
            yield
        except Exception as exc:  # raised below as itself, not in the task group's ExceptionGroup
            failed = exc
        finally:
            # Shielded from a cancelled lifespan: the workers' stop is bounded by their
            # shutdown_timeout.
            with anyio.CancelScope(shield=True):
                await deliverer.stop()
                await service.workers.stop()
            background.cancel_scope.cancel()
    if failed is not None:
        raise failed


def viewer_session_middleware(config: ServiceConfig) -> list[Middleware]:
    """The viewer's sign-in cookie as the token, before the audit log and authentication
    see the request (service.viewer, docs/viewer.md)."""
    if config.viewer is None or not config.auth_token:
        return []
    return [Middleware(ViewerSessionMiddleware, token=config.auth_token)]


def audit_middleware(config: ServiceConfig, all_routes: list[BaseRoute]) -> list[Middleware]:
    """The audit log, outside authentication so refused requests are recorded too."""
    if config.audit_log is None:
        return []
    return [
        Middleware(
            AuditLogMiddleware, routes=all_routes, path=config.audit_log, token=config.auth_token
        )
    ]


def start_dimse(service: Service) -> DimseServer | None:
    """This process's DIMSE listener, when ``--dimse-port`` asks for one (docs/dimse.md)."""
    settings = service.config.dimse
    if settings is None:
        return None
    from dicomql.dimse.handlers import Handlers
    from dicomql.dimse.server import DimseServer

    handlers = Handlers(service.index, service.blobs, settings, service.config.space_shortage)
    server = DimseServer(settings, handlers)
    server.start()
    return server


def recover(service: Service) -> ServerPresence:
    """Repair what a crash can leave behind before serving: partial blob writes and blobs that
    were written but never indexed (see ``blob_journal``). All of them when no other server
    shares the index, else only those older than the grace period (see ``service.janitor``).

    Returns:
        this server's presence among the servers sharing the index, held until shutdown.
    """
    presence = ServerPresence.join(service.config, service.index)
    try:
        recover_at_start(service, presence)
    except BaseException:
        presence.leave()
        raise
    return presence


class BearerTokenMiddleware:
    """Require ``Authorization: Bearer <token>`` on every request when a token is configured,
    and refuse a request with several ``Authorization`` headers in any case: which one counts
    would depend on who reads it (this check, a proxy, a client library)."""

    def __init__(
        self, app: ASGIApp, token: str | None, exempt: Callable[[str], bool] | None = None
    ) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if sum(name == b"authorization" for name, _ in scope["headers"]) > 1:
            refusal = errors.error_response(
                errors.InvalidArgument(
                    "The request has more than one Authorization header; send exactly one."
                )
            )
            await refusal(scope, receive, send)
            return
        if self.expected is None or (self.exempt is not None and self.exempt(scope["path"])):
            await self.app(scope, receive, send)
            return
        supplied = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(supplied, self.expected):
            await self.app(scope, receive, send)
            return
        response = errors.error_response(
            errors.Unauthenticated(
                "Request is missing required authentication credential. Expected OAuth 2 access"
                " token or other valid authentication credential."
            )
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="dicomql"'
        await response(scope, receive, send)
