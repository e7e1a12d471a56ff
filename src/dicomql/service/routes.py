"""The service's URL map: Cloud Healthcare v1 paths, as in the discovery document.

Path parameters use the ``rid`` convertor (``[^/:]+``) so a resource ID can never swallow a
custom verb such as ``:deidentify``. Parameter names: ``project``, ``location``, ``dataset``,
``dicom_store``, ``operation``, ``study``, ``series``, ``instance``.
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor
from starlette.routing import BaseRoute, Mount, Router


class ResourceIdConvertor(Convertor[str]):
    regex = "[^/:]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("rid", ResourceIdConvertor())

# Imported after the convertor is registered: their route paths use it.
from dicomql.service import datasets, dicom_stores, locations, operations  # noqa: E402
from dicomql.service import store_methods  # noqa: E402
from dicomql.service.dicomweb import routes as dicomweb_routes  # noqa: E402

LOCATION = "/v1/projects/{project:rid}/locations/{location:rid}"
DICOM_STORE = "/datasets/{dataset:rid}/dicomStores/{dicom_store:rid}"

routes: list[BaseRoute] = [
    Mount(
        LOCATION,
        routes=[
            Mount(f"{DICOM_STORE}/dicomWeb", routes=dicomweb_routes.routes),
            # Custom verbs first (store_methods: :import, :export, …).
            *store_methods.routes,
            *dicom_stores.routes,
            *operations.routes,
            *datasets.routes,
        ],
    ),
    # After LOCATION: a Mount matches every path under its prefix, so this one, being shorter,
    # would otherwise swallow …/locations/{location}/datasets and answer 404.
    Mount("/v1/projects/{project:rid}", routes=locations.routes),
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
