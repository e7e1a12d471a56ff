"""Resolving a DICOMweb request's path parameters to the store (and study, series, instance)
they name; anything that does not exist is a 404 in Google's error shape."""

from __future__ import annotations

from dataclasses import dataclass

from anyio import to_thread
from sqlalchemy import Row
from starlette.requests import Request

from dicomql.service.context import Service
from dicomql.service.errors import NotFound
from dicomql.service.names import dicom_store_name
from dicomql.store.resources import find_dicom_store


@dataclass(frozen=True)
class StoreContext:
    """The store a DICOMweb request addresses, and how to name and link its resources."""

    service: Service
    store: Row
    name: str  # projects/…/dicomStores/{id}
    base_url: str  # absolute URL of …/dicomStores/{id}/dicomWeb

    @property
    def store_pk(self) -> int:
        pk: int = self.store.pk
        return pk

    @property
    def dataset_pk(self) -> int:
        pk: int = self.store.dataset_pk
        return pk

    def study_url(self, study: str) -> str:
        return f"{self.base_url}/studies/{study}"

    def series_url(self, study: str, series: str) -> str:
        return f"{self.study_url(study)}/series/{series}"

    def instance_url(self, study: str, series: str, instance: str) -> str:
        return f"{self.series_url(study, series)}/instances/{instance}"

    def study_name(self, study: str) -> str:
        return f"{self.name}/dicomWeb/studies/{study}"

    def series_name(self, study: str, series: str) -> str:
        return f"{self.study_name(study)}/series/{series}"

    def instance_name(self, study: str, series: str, instance: str) -> str:
        return f"{self.series_name(study, series)}/instances/{instance}"


async def resolve_store(request: Request) -> StoreContext:
    """The store named by the path, or NotFound."""
    params = request.path_params
    service: Service = request.app.state.service
    name = dicom_store_name(
        params["project"], params["location"], params["dataset"], params["dicom_store"]
    )

    def lookup() -> Row | None:
        with service.index.connect() as conn:
            return find_dicom_store(
                conn,
                params["project"],
                params["location"],
                params["dataset"],
                params["dicom_store"],
            )

    store = await to_thread.run_sync(lookup)
    if store is None:
        raise NotFound(f"DICOM store {name} not found.")
    return StoreContext(service, store, name, _dicomweb_base(request))


def _dicomweb_base(request: Request) -> str:
    # The URL up to and including ``/dicomWeb``, as the client addressed it (RetrieveURL values
    # and BulkDataURIs are absolute, PS3.18 10.5.3 and F.2.6).
    url = str(request.url.replace(query=""))
    marker = "/dicomWeb"
    return url[: url.index(marker) + len(marker)]
