"""``dicomql serve --audit-log FILE``: one JSON line per request that reads or changes data.

Each line: ``time``, ``caller``, ``method``, ``route`` (the route template), ``resource`` (the
path: the resource's name, UIDs included), ``query_keys`` (names only: a QIDO value such as a
PatientName is PHI and never written) and ``status``. Never a body, a header value or a query
value. ``caller`` is ``token`` (the configured bearer token was given), ``anonymous`` (no token
is configured) or ``unauthenticated`` (a token is configured and was not given).

A request's line is written before the last byte of its response is sent, so a client that has
its answer finds it audited. Each line is one ``write`` to a descriptor opened with
``O_APPEND``, so the processes of ``--processes N`` (and servers sharing the file) never
interleave within a line.
"""

from __future__ import annotations

import hmac
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dicomql.service.prometheus import route_template

# Not data: the scrape endpoint (docs/deployment.md).
_NOT_AUDITED = frozenset({"/metrics"})


class AuditLogMiddleware:
    def __init__(
        self, app: ASGIApp, routes: list[BaseRoute], path: Path, token: str | None
    ) -> None:
        self.app = app
        self.routes = routes
        self.expected = f"Bearer {token}".encode() if token else None
        # Opened once per process (each server process builds its own app).
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        template, route = route_template(self.routes, scope)
        if template in _NOT_AUDITED:
            await self.app(scope, receive, send)
            return
        status = 500
        written = False

        def write() -> None:
            nonlocal written
            if not written:
                written = True
                self._write(scope, template, route is not None, status)

        async def noting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # Before the response's last byte: a client that has its answer finds the
                # request audited, even if the process dies the next moment.
                write()
            await send(message)

        try:
            await self.app(scope, receive, noting_send)
        finally:
            write()  # no complete response (an error, a client gone): audited all the same

    def _caller(self, scope: Scope) -> str:
        if self.expected is None:
            return "anonymous"
        supplied = dict(scope["headers"]).get(b"authorization", b"")
        return "token" if hmac.compare_digest(supplied, self.expected) else "unauthenticated"

    def _write(self, scope: Scope, template: str, matched: bool, status: int) -> None:
        query = scope.get("query_string", b"").decode("latin-1")
        line = {
            "time": datetime.fromtimestamp(time.time(), UTC).isoformat(timespec="milliseconds"),
            "caller": self._caller(scope),
            "method": scope["method"],
            "route": template,
            # An unknown path may hold anything a client typed: not written.
            "resource": scope["path"] if matched else None,
            "query_keys": sorted({key for key, _ in parse_qsl(query, keep_blank_values=True)}),
            "status": status,
        }
        os.write(self.fd, (json.dumps(line, ensure_ascii=False) + "\n").encode())
