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
