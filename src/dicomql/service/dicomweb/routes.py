"""DICOMweb routes, relative to ``…/dicomStores/{dicom_store}/dicomWeb``."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
