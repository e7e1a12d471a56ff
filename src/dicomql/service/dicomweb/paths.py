"""Resolving a DICOMweb request's path parameters to the store (and study, series, instance)
they name; anything that does not exist is a 404 in Google's error shape."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from anyio import to_thread
from sqlalchemy import Connection, Row
from starlette.requests import Request

from dicomql.service.context import Service
from dicomql.service.errors import NotFound
from dicomql.service.security import public_origin
from dicomql.store.names import dicom_store_name, dicomweb_name, dicomweb_path, dicomweb_suffix
from dicomql.store.resources import find_dicom_store

T = TypeVar("T")


@dataclass(frozen=True)
class StoreContext:
    """The store a DICOMweb request addresses, and how to name and link its resources."""

    service: Service
    store: Row
    name: str  # projects/…/dicomStores/{id}
    base_url: str  # URL of …/dicomStores/{id}/dicomWeb (see dicomweb_url)

    @property
    def store_pk(self) -> int:
        pk: int = self.store.pk
        return pk

    @property
    def dataset_pk(self) -> int:
        pk: int = self.store.dataset_pk
        return pk

    def study_url(self, study: str) -> str:
        return f"{self.base_url}/{dicomweb_path(study)}"

    def instance_url(self, study: str, series: str, instance: str) -> str:
        return f"{self.base_url}/{dicomweb_path(study, series, instance)}"

    def study_name(self, study: str) -> str:
        return f"{dicomweb_name(self.name)}/{dicomweb_path(study)}"

    def series_name(self, study: str, series: str) -> str:
        return f"{dicomweb_name(self.name)}/{dicomweb_path(study, series)}"

    def instance_name(self, study: str, series: str, instance: str) -> str:
        return f"{dicomweb_name(self.name)}/{dicomweb_path(study, series, instance)}"


async def resolve_store(request: Request) -> StoreContext:
    """The store named by the path, or NotFound."""
    context, _ = await resolve_store_then(request, lambda conn, context: None)
    return context


async def resolve_store_then(
    request: Request, then: Callable[[Connection, StoreContext], T]
) -> tuple[StoreContext, T]:
    """The store named by the path (or NotFound), and what ``then`` makes of it: both in one
    worker-thread call on one connection. A hand-off to the thread pool costs about as much
    CPU as a small index query (docs/service.md, "Performance"), so a retrieval does its
    lookups, and may read a small blob, in a single trip."""
    params = request.path_params
    service: Service = request.app.state.service
    name = dicom_store_name(
        params["project"], params["location"], params["dataset"], params["dicom_store"]
    )
    base_url = dicomweb_url(request)

    def lookup() -> tuple[StoreContext, T]:
        with service.index.connect() as conn:
            context = StoreContext(service, require_store(conn, params), name, base_url)
            return context, then(conn, context)

    return await to_thread.run_sync(lookup)


def require_store(conn: Connection, params: Mapping[str, str]) -> Row:
    """The row of the store a DICOMweb path's parameters name, or NotFound."""
    project, location = params["project"], params["location"]
    dataset, dicom_store = params["dataset"], params["dicom_store"]
    store = find_dicom_store(conn, project, location, dataset, dicom_store)
    if store is None:
        name = dicom_store_name(project, location, dataset, dicom_store)
        raise NotFound(f"DICOM store {name} not found.")
    return store


def dicomweb_url(request: Request) -> str:
    """The URL of the store's ``…/dicomWeb`` that RetrieveURLs and BulkDataURIs start with
    (absolute over HTTP, PS3.18 10.5.3 and F.2.6): the server's public origin (see
    ``service.security.public_origin``; ``""`` in-process, making them relative) and the path."""
    path = request.url.path
    # The store's ID ends the prefix: a dataset or UID segment may also read "dicomWeb".
    marker = "/" + dicomweb_suffix(request.path_params["dicom_store"])
    return public_origin(request) + path[: path.index(marker) + len(marker)]
