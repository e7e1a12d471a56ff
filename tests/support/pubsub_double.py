"""A loopback double of Pub/Sub's ``topics.publish`` REST method, for the notification tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.ports import free_port


class PubsubDouble:
    """Pub/Sub's ``topics.publish`` REST method on a loopback port. Only Google's Pub/Sub itself
    cannot run here; this stands in for it (and for the emulator), answering as it does:
    ``{"messageIds": [...]}``, or an error envelope when told to fail."""

    def __init__(self) -> None:
        self.received: dict[str, list[dict[str, Any]]] = {}
        self.requests = 0
        self.fail_next: list[int] = []  # statuses to answer before accepting again
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/v1/{path:path}", self.publish, methods=["POST"])])
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def publish(self, request: Request) -> JSONResponse:
        path = request.path_params["path"]
        topic, _, verb = path.rpartition(":")
        body = await request.json()
        with self._lock:
            self.requests += 1
            if verb != "publish":
                return _error(404, "NOT_FOUND", f"no method {verb}")
            if self.fail_next:
                code = self.fail_next.pop(0)
                return _error(code, "UNAVAILABLE", "The service is currently unavailable.")
            stored = self.received.setdefault(topic, [])
            first = len(stored)
            stored.extend(body["messages"])
        return JSONResponse({"messageIds": [str(first + n) for n in range(len(body["messages"]))]})

    def messages(self, topic: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.received.get(topic, []))

    def wait_for(self, topic: str, count: int, limit: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + limit
        while len(self.messages(topic)) < count:
            assert time.monotonic() < deadline, f"{count} messages expected: {self.received}"
            time.sleep(0.05)
        return self.messages(topic)


def _error(code: int, status: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "status": status}}, code)


@contextmanager
def running_pubsub_double() -> Iterator[PubsubDouble]:
    """A started double (``PUBSUB_EMULATOR_HOST=127.0.0.1:{port}`` reaches it), stopped after."""
    double = PubsubDouble()
    double.thread.start()
    deadline = time.monotonic() + 30
    while not double.server.started:
        assert time.monotonic() < deadline, "the Pub/Sub double did not start"
        time.sleep(0.01)
    try:
        yield double
    finally:
        double.server.should_exit = True
        double.thread.join(timeout=30)
