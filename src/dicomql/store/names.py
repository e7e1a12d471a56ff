"""Resource names as Cloud Healthcare spells them (``projects/p/locations/l/datasets/d/…``)."""

from __future__ import annotations


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
