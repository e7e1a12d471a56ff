"""What every endpoint works with: the :class:`Service` (configuration, index, blobs, workers) and
how a request finds it.

Kept apart from ``service.app`` because the app imports the routes, and the routes need this.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request

from dicomql.service.config import ServiceConfig
from dicomql.service.workers import WorkerPool
from dicomql.store.blobs import BlobStore
from dicomql.store.index import Index


@dataclass
class Service:
    """What every endpoint needs: the configuration, the index and the blob store."""

    config: ServiceConfig
    index: Index
    blobs: BlobStore
    # Runs long-running operations; endpoints that create one call ``workers.wake()``.
    workers: WorkerPool | None = field(default=None, repr=False)


def service_of(request: Request) -> Service:
    """The app's Service, set by its lifespan."""
    service: Service = request.app.state.service
    return service
