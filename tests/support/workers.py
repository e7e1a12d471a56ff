"""Worker pools run as a server process runs them, for the worker and work-item tests."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

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
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> PoolThread:
        self._thread.start()
        for pool in self.pools:
            asyncio.run_coroutine_threadsafe(pool.start(), self._loop).result(DEADLINE)
        return self

    def wake(self, pool: WorkerPool) -> None:
        """What an endpoint does after creating an operation, from the pools' event loop."""
        self._loop.call_soon_threadsafe(pool.wake)

    def __exit__(self, *exc: object) -> None:
        for pool in self.pools:
            asyncio.run_coroutine_threadsafe(pool.stop(), self._loop).result(DEADLINE)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(DEADLINE)
        self._loop.close()
