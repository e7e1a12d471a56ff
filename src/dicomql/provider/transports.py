"""Transports: the seam between the one request path and where requests are answered.

- :class:`InProcessTransport` runs the embedded service's ASGI app in this process, through an
  anyio blocking portal (httpx's own ASGITransport is async-only; the DB-API is sync).
- Google and ``dicomql serve`` use httpx's ordinary HTTP transport.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import anyio.from_thread
import httpx
from anyio.from_thread import BlockingPortal
from starlette.types import ASGIApp


class InProcessTransport(httpx.BaseTransport):
    """Answer requests by calling an ASGI app in a private event-loop thread.

    The app's lifespan (index open, recovery, workers) runs for as long as the transport is open.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._portal_context = anyio.from_thread.start_blocking_portal()
        self._portal: BlockingPortal = self._portal_context.__enter__()
        self._asgi = httpx.ASGITransport(app=app)
        lifespan = app.router.lifespan_context(app)  # type: ignore[attr-defined]
        self._lifespan: AbstractContextManager[Any] = self._portal.wrap_async_context_manager(
            lifespan
        )
        try:
            self._lifespan.__enter__()
        except BaseException:
            self._portal_context.__exit__(None, None, None)
            raise
        self._closed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        async_request = httpx.Request(
            request.method, request.url, headers=request.headers, content=body
        )
        response = self._portal.call(self._send, async_request)
        return response

    async def _send(self, request: httpx.Request) -> httpx.Response:
        response = await self._asgi.handle_async_request(request)
        content = await response.aread()
        return httpx.Response(
            response.status_code, headers=response.headers, content=content, request=request
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._lifespan.__exit__(None, None, None)
        finally:
            self._portal_context.__exit__(None, None, None)
