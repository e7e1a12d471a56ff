"""DICOMweb routes, relative to ``…/dicomStores/{dicom_store}/dicomWeb``.

Several routes share a path and differ by method (GET /studies searches, POST /studies stores);
Starlette keeps looking past a path-only match for one whose method also matches.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from dicomql.service import store_methods
from dicomql.service.dicomweb import delete, metadata, metrics, retrieve, search, store

routes: list[BaseRoute] = [
    *metrics.routes,
    *store_methods.dicomweb_routes,
    *metadata.routes,
    *search.routes,
    *store.routes,
    *delete.routes,
    *retrieve.routes,
]
