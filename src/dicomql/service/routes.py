"""The service's URL map in one table: Cloud Healthcare v1 paths, as in the discovery document,
to the endpoint functions that answer them.

Endpoint modules define functions only; this module is the one place that knows a path, so each
of them imports on its own and a reader finds every URL here. Path parameters use the ``rid``
convertor (``[^/:]+``), registered below before any route is built, so a resource ID can never
swallow a custom verb such as ``:deidentify``. Parameter names: ``project``, ``location``,
``dataset``, ``dicom_store``, ``operation``, ``study``, ``series``, ``instance``.

Order matters where paths overlap: Starlette takes the first route whose path and method match,
and answers 405 with the methods of the first whose path alone matches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.convertors import Convertor, register_url_convertor
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from dicomql.service import datasets, dicom_stores, iam, locations, operations, store_methods
from dicomql.service.dicomweb import delete, metadata, metrics, retrieve, search, store
from dicomql.service.errors import InvalidArgument, error_response


class ResourceIdConvertor(Convertor[str]):
    regex = "[^/:]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("rid", ResourceIdConvertor())


class RejectNulMiddleware:
    """400 for a NUL in a DICOMweb path or query: no UID or search value holds one, and
    PostgreSQL text cannot (``studies?PatientID=%00`` was a 500 there; tests/reliability)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and ("\x00" in scope["path"] or b"%00" in scope["query_string"]):
            response = error_response(
                InvalidArgument("The request path or query contains a NUL character.")
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


# --- path templates --------------------------------------------------------------------------

PROJECT = "/v1/projects/{project:rid}"
LOCATION = PROJECT + "/locations/{location:rid}"
# Relative to LOCATION:
DATASETS = "/datasets"
DATASET = DATASETS + "/{dataset:rid}"
DICOM_STORES = DATASET + "/dicomStores"
DICOM_STORE = DICOM_STORES + "/{dicom_store:rid}"
OPERATIONS = DATASET + "/operations"
OPERATION = OPERATIONS + "/{operation:rid}"
DICOMWEB = DICOM_STORE + "/dicomWeb"
# Relative to DICOMWEB:
STUDIES = "/studies"
STUDY = STUDIES + "/{study:rid}"
SERIES = STUDY + "/series/{series:rid}"
INSTANCE = SERIES + "/instances/{instance:rid}"


def _get(path: str, endpoint: Callable[..., Any], name: str) -> Route:
    return Route(path, endpoint, methods=["GET"], name=name)


def _post(path: str, endpoint: Callable[..., Any], name: str) -> Route:
    return Route(path, endpoint, methods=["POST"], name=name)


def _delete(path: str, endpoint: Callable[..., Any], name: str) -> Route:
    return Route(path, endpoint, methods=["DELETE"], name=name)


# Relative to DICOMWEB. Custom verbs and /metadata before the plain retrieve paths.
dicomweb_routes: list[BaseRoute] = [
    # dicomweb/metrics.py
    _get(STUDY + ":getStudyMetrics", metrics.get_study_metrics, "dicomweb:study-metrics"),
    _get(SERIES + ":getSeriesMetrics", metrics.get_series_metrics, "dicomweb:series-metrics"),
    _get(INSTANCE + ":getStorageInfo", metrics.get_storage_info, "dicomweb:storage-info"),
    # store_methods.py
    *(
        _post(
            path + ":setBlobStorageSettings",
            store_methods.set_blob_storage_settings,
            f"dicomweb:{level}-set-blob-storage-settings",
        )
        for path, level in ((STUDY, "study"), (SERIES, "series"), (INSTANCE, "instance"))
    ),
    # dicomweb/metadata.py
    _get(STUDY + "/metadata", metadata.retrieve_metadata, "dicomweb:study-metadata"),
    _get(SERIES + "/metadata", metadata.retrieve_metadata, "dicomweb:series-metadata"),
    _get(INSTANCE + "/metadata", metadata.retrieve_metadata, "dicomweb:instance-metadata"),
    # dicomweb/search.py (QIDO-RS)
    _get(STUDIES, search.search_for_studies, "dicomweb:search-studies"),
    _get("/series", search.search_for_series, "dicomweb:search-series"),
    _get(STUDY + "/series", search.search_for_series, "dicomweb:search-study-series"),
    _get("/instances", search.search_for_instances, "dicomweb:search-instances"),
    _get(STUDY + "/instances", search.search_for_instances, "dicomweb:search-study-instances"),
    _get(SERIES + "/instances", search.search_for_instances, "dicomweb:search-series-instances"),
    # dicomweb/store.py (STOW-RS)
    _post(STUDIES, store.store_instances, "dicomweb:store"),
    _post(STUDY, store.store_instances, "dicomweb:store-study"),
    # dicomweb/delete.py
    _delete(STUDY, delete.delete_resource, "dicomweb:delete-study"),
    _delete(SERIES, delete.delete_resource, "dicomweb:delete-series"),
    _delete(INSTANCE, delete.delete_resource, "dicomweb:delete-instance"),
    # dicomweb/retrieve.py (WADO-RS)
    _get(STUDY, retrieve.retrieve_dicom, "dicomweb:study"),
    _get(STUDY + "/rendered", retrieve.retrieve_rendered_many, "dicomweb:study-rendered"),
    _get(SERIES + "/rendered", retrieve.retrieve_rendered_many, "dicomweb:series-rendered"),
    _get(STUDY + "/thumbnail", retrieve.retrieve_thumbnail, "dicomweb:study-thumbnail"),
    _get(SERIES + "/thumbnail", retrieve.retrieve_thumbnail, "dicomweb:series-thumbnail"),
    _get(INSTANCE + "/thumbnail", retrieve.retrieve_thumbnail, "dicomweb:instance-thumbnail"),
    _get(
        INSTANCE + "/frames/{frame}/thumbnail",
        retrieve.retrieve_thumbnail,
        "dicomweb:frame-thumbnail",
    ),
    _get(SERIES, retrieve.retrieve_dicom, "dicomweb:series"),
    _get(INSTANCE, retrieve.retrieve_dicom, "dicomweb:instance"),
    _get(INSTANCE + "/rendered", retrieve.retrieve_rendered, "dicomweb:rendered"),
    _get(INSTANCE + "/frames/{frames}", retrieve.retrieve_frames, "dicomweb:frames"),
    _get(
        INSTANCE + "/frames/{frame}/rendered", retrieve.retrieve_rendered, "dicomweb:frame-rendered"
    ),
    _get(STUDY + "/bulkdata", retrieve.retrieve_instance_bulkdata, "dicomweb:study-bulkdata"),
    _get(SERIES + "/bulkdata", retrieve.retrieve_instance_bulkdata, "dicomweb:series-bulkdata"),
    _get(INSTANCE + "/bulkdata", retrieve.retrieve_instance_bulkdata, "dicomweb:instance-bulkdata"),
    _get(INSTANCE + "/bulkdata/{path:path}", retrieve.retrieve_bulkdata, "dicomweb:bulkdata"),
]

# Relative to LOCATION. Custom verbs first (:import, :export, …, :getIamPolicy, …).
location_routes: list[BaseRoute] = [
    # store_methods.py
    _post(DICOM_STORE + ":import", store_methods.import_dicom_data, "dicomStores.import"),
    _post(DICOM_STORE + ":export", store_methods.export_dicom_data, "dicomStores.export"),
    _post(
        DICOM_STORE + ":deidentify", store_methods.deidentify_dicom_store, "dicomStores.deidentify"
    ),
    _post(
        DICOM_STORE + ":setBlobStorageSettings",
        store_methods.set_blob_storage_settings,
        "dicomStores.setBlobStorageSettings",
    ),
    # iam.py
    *(
        route
        for path, kind in ((DICOM_STORE, "dicomStores"), (DATASET, "datasets"))
        for route in (
            _get(path + ":getIamPolicy", iam.get_iam_policy, f"{kind}.getIamPolicy"),
            _post(path + ":setIamPolicy", iam.set_iam_policy, f"{kind}.setIamPolicy"),
            _post(
                path + ":testIamPermissions", iam.test_iam_permissions, f"{kind}.testIamPermissions"
            ),
        )
    ),
    # dicom_stores.py
    _get(DICOM_STORES, dicom_stores.list_dicom_stores, "dicomStores.list"),
    _post(DICOM_STORES, dicom_stores.create_dicom_store, "dicomStores.create"),
    _get(
        DICOM_STORE + ":getDICOMStoreMetrics",
        dicom_stores.get_dicom_store_metrics,
        "dicomStores.getDICOMStoreMetrics",
    ),
    _get(DICOM_STORE, dicom_stores.get_dicom_store, "dicomStores.get"),
    Route(DICOM_STORE, dicom_stores.patch_dicom_store, methods=["PATCH"], name="dicomStores.patch"),
    _delete(DICOM_STORE, dicom_stores.delete_dicom_store, "dicomStores.delete"),
    # operations.py
    _get(OPERATIONS, operations.list_operations, "operations.list"),
    _post(OPERATION + ":cancel", operations.cancel_operation, "operations.cancel"),
    _get(OPERATION, operations.get_operation, "operations.get"),
    # datasets.py
    _get(DATASETS, datasets.list_datasets, "datasets.list"),
    _post(DATASETS, datasets.create_dataset, "datasets.create"),
    _get(DATASET, datasets.get_dataset, "datasets.get"),
    Route(DATASET, datasets.patch_dataset, methods=["PATCH"], name="datasets.patch"),
    _delete(DATASET, datasets.delete_dataset, "datasets.delete"),
]

routes: list[BaseRoute] = [
    Mount(
        LOCATION,
        routes=[
            Mount(DICOMWEB, routes=dicomweb_routes, middleware=[Middleware(RejectNulMiddleware)]),
            *location_routes,
        ],
    ),
    # After LOCATION: a Mount matches every path under its prefix, so this one, being shorter,
    # would otherwise swallow …/locations/{location}/datasets and answer 404.
    Mount(
        PROJECT,
        routes=[
            _get("/locations", locations.list_locations, "locations.list"),
            _get("/locations/{location:rid}", locations.get_location, "locations.get"),
        ],
    ),
]


def _without_slash_redirects(route_list: list[BaseRoute]) -> None:
    """Google answers 404 for a path it does not know; Starlette would 307 to the path with a
    slash added, which for ``dicomStores/t%2FdicomWeb`` points into store ``t`` (see
    tests/reliability/test_path_safety.py)."""
    for route in route_list:
        if isinstance(route, Mount) and isinstance(route.app, Router):
            route.app.redirect_slashes = False
            _without_slash_redirects(route.routes)


_without_slash_redirects(routes)
