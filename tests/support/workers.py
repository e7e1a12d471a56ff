"""Worker pools run as a server process runs them, for the worker and work-item tests."""

from __future__ import annotations

import tempfile
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from anyio.from_thread import BlockingPortal, start_blocking_portal

from dicomql.service.config import ServiceConfig
from dicomql.service.workers import WorkerPool
from dicomql.store.blobs import BlobStore
from dicomql.store.index import Index

DEADLINE = 60.0  # seconds; only reached if the pools are stuck


@dataclass
class Blobless:
    """The part of the service a worker pool needs, without the app around it."""

    index: Index
    blobs: BlobStore
    # The handlers read the import roots and the free-space floor from it.
    config: ServiceConfig = field(
        default_factory=lambda: ServiceConfig(data_dir=Path(tempfile.gettempdir()))
    )


class PoolThread:
    """Worker pools on their own event loop in a thread, as a server process runs them."""

    def __init__(self, *pools: WorkerPool) -> None:
        self.pools = pools
        self._portal_context = start_blocking_portal(name="dicomql-test-pools")
        self._portal: BlockingPortal | None = None
        self._runs: list[Future[None]] = []

    def __enter__(self) -> PoolThread:
        self._portal = self._portal_context.__enter__()
        for pool in self.pools:
            running, _ = self._portal.start_task(pool.run)
            self._runs.append(running)
        return self

    def wake(self, pool: WorkerPool) -> None:
        """What an endpoint does after creating an operation, from the pools' event loop."""
        assert self._portal is not None
        self._portal.call(pool.wake)

    def __exit__(self, *exc: object) -> None:
        assert self._portal is not None
        for pool in self.pools:
            self._portal.call(pool.stop)
        for running in self._runs:
            running.result(DEADLINE)
        self._portal_context.__exit__(None, None, None)
