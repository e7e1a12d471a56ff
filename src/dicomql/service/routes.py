"""The service's URL map: Cloud Healthcare v1 paths, as in the discovery document.

Path parameters use the ``rid`` convertor (``[^/:]+``) so a resource ID can never swallow a
custom verb such as ``:deidentify``. Parameter names: ``project``, ``location``, ``dataset``,
``dicom_store``, ``operation``, ``study``, ``series``, ``instance``.
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Router
from starlette.types import ASGIApp, Receive, Scope, Send


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
            from dicomql.service.errors import InvalidArgument, error_response

            response = error_response(
                InvalidArgument("The request path or query contains a NUL character.")
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


# Imported after the convertor is registered: their route paths use it.
from dicomql.service import (  # noqa: E402
    datasets,
    dicom_stores,
    iam,
    locations,
    operations,
    store_methods,
)
from dicomql.service.dicomweb import routes as dicomweb_routes  # noqa: E402

LOCATION = "/v1/projects/{project:rid}/locations/{location:rid}"
DICOM_STORE = "/datasets/{dataset:rid}/dicomStores/{dicom_store:rid}"

routes: list[BaseRoute] = [
    Mount(
        LOCATION,
        routes=[
            Mount(
                f"{DICOM_STORE}/dicomWeb",
                routes=dicomweb_routes.routes,
                middleware=[Middleware(RejectNulMiddleware)],
            ),
            # Custom verbs first (store_methods: :import, :export, …; iam: :getIamPolicy, …).
            *store_methods.routes,
            *iam.routes,
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
