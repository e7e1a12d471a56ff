"""What every endpoint works with: the :class:`Service` (configuration, index, blobs, workers) and
how a request finds it.

Kept apart from ``service.app`` because the app imports the routes, and the routes need this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import Request

from dicomql.service.config import ServiceConfig
from dicomql.service.workers import WorkerPool
from dicomql.store.blobs import BlobStore
from dicomql.store.index import Index

if TYPE_CHECKING:
    from dicomql.service.events import EventDeliverer


@dataclass
class Service:
    """What every endpoint needs: the configuration, the index and the blob store."""

    config: ServiceConfig
    index: Index
    blobs: BlobStore
    # Runs long-running operations; endpoints that create one call ``workers.wake()``.
    workers: WorkerPool | None = field(default=None, repr=False)
    # Delivers the outbox's events; told when instances were stored (``instances_stored``).
    deliverer: EventDeliverer | None = field(default=None, repr=False)

    def instances_stored(self) -> None:
        """Instances were stored here: their notification or streaming events, if the store
        has any, are delivered within the deliverer's shortest wait rather than a backed-off
        one. Only an optimisation; events stored by any process are found by polling."""
        if self.deliverer is not None:
            self.deliverer.soon()


def service_of(request: Request) -> Service:
    """The app's Service, set by its lifespan."""
    service: Service = request.app.state.service
    return service
