"""Resource names as Cloud Healthcare spells them (``projects/p/locations/l/datasets/d/…``), and
every DICOMweb link dicomql writes: one function a link shape, each the same as the service's
route for it (``service.routes``; tests/service/test_links.py holds them to ``url_path_for``).
They are plain string joins, not route lookups, because a retrieval writes one a frame."""

from __future__ import annotations

from dicomql.dicom.jsonmodel import relative_bulkdata_uri


def location_name(project: str, location: str) -> str:
    return f"projects/{project}/locations/{location}"


def dataset_name(project: str, location: str, dataset: str) -> str:
    return f"{location_name(project, location)}/datasets/{dataset}"


def dicom_store_name(project: str, location: str, dataset: str, dicom_store: str) -> str:
    return f"{dataset_name(project, location, dataset)}/dicomStores/{dicom_store}"


def operation_name(project: str, location: str, dataset: str, operation: str) -> str:
    return f"{dataset_name(project, location, dataset)}/operations/{operation}"


def dicomweb_name(dicom_store_name: str) -> str:
    """The store's DICOMweb root, ``…/dicomStores/{id}/dicomWeb``: the prefix of its studies'
    resource names and (after ``/v1/``) of their URLs."""
    return f"{dicom_store_name}/dicomWeb"


def dicomweb_suffix(dicom_store: str) -> str:
    """How a store's ``dicomWeb`` root ends, ``dicomStores/{id}/dicomWeb``: the store's ID ends
    the prefix of a DICOMweb URL, where a dataset or UID segment may also read "dicomWeb"."""
    return dicomweb_name(f"dicomStores/{dicom_store}")


def dicomweb_path(study: str, series: str | None = None, instance: str | None = None) -> str:
    """Where a study, series or instance sits under a store's ``dicomWeb``:
    ``studies/{study}[/series/{series}[/instances/{instance}]]``, in its resource name and in
    its URL alike (an instance is named only with its series)."""
    path = f"studies/{study}"
    if series is not None:
        path += f"/series/{series}"
        if instance is not None:
            path += f"/instances/{instance}"
    return path


# The links below extend an instance's link: its URL (``…/dicomWeb/`` + its ``dicomweb_path``)
# or its ``dicomweb_path`` alone.


def frame_path(instance: str, frame: int | str) -> str:
    """A frame of an instance (frames count from 1): ``{instance}/frames/{frame}``."""
    return f"{instance}/frames/{frame}"


def rendered_frame_path(instance: str, frame: int | str) -> str:
    """A frame of an instance, rendered: ``{instance}/frames/{frame}/rendered``."""
    return f"{frame_path(instance, frame)}/rendered"


def bulkdata_path(instance: str, tag_path: str) -> str:
    """An instance's bulk data element (``dicom.jsonmodel``'s BulkDataURI convention):
    ``{instance}/bulkdata/{tag_path}``."""
    return f"{instance}/{relative_bulkdata_uri(tag_path)}"
