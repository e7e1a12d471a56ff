"""Every DICOMweb link dicomql writes (``store.names``) is the path of the route that serves it
(``service.routes``): a RetrieveURL, a frame's or bulk data's Content-Location, a BulkDataURI or
a notification's instance name that the service itself would answer 404 to is a broken link."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette

from dicomql.service.app import create_app
from dicomql.service.config import ServiceConfig
from dicomql.store import names

STORE = {"project": "p", "location": "us", "dataset": "d.1", "dicom_store": "s-1"}
STUDY, SERIES, INSTANCE = "1.2.3", "1.2.3.4", "1.2.3.4.5"
AT_INSTANCE = {"study": STUDY, "series": SERIES, "instance": INSTANCE}
INSTANCE_PATH = names.dicomweb_path(STUDY, SERIES, INSTANCE)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Starlette:
    # The lifespan never runs: url_path_for reads the route table only.
    return create_app(ServiceConfig(data_dir=tmp_path_factory.mktemp("links")))


def _route_path(app: Starlette, route: str, **params: Any) -> str:
    return app.url_path_for(route, **STORE, **params)


def _link(path: str) -> str:
    store = names.dicom_store_name(*STORE.values())
    return f"/v1/{names.dicomweb_name(store)}/{path}"


@pytest.mark.parametrize(
    ("link", "route", "params"),
    [
        (names.dicomweb_path(STUDY), "dicomweb:study", {"study": STUDY}),
        (names.dicomweb_path(STUDY, SERIES), "dicomweb:series", {"study": STUDY, "series": SERIES}),
        (INSTANCE_PATH, "dicomweb:instance", AT_INSTANCE),
        (names.frame_path(INSTANCE_PATH, 3), "dicomweb:frames", {**AT_INSTANCE, "frames": "3"}),
        (
            names.rendered_frame_path(INSTANCE_PATH, 3),
            "dicomweb:frame-rendered",
            {**AT_INSTANCE, "frame": "3"},
        ),
        (
            names.bulkdata_path(INSTANCE_PATH, "7FE00010"),
            "dicomweb:bulkdata",
            {**AT_INSTANCE, "path": "7FE00010"},
        ),
        (
            names.bulkdata_path(INSTANCE_PATH, "00540016/0/00181072"),
            "dicomweb:bulkdata",
            {**AT_INSTANCE, "path": "00540016/0/00181072"},
        ),
    ],
)
def test_each_link_is_the_path_of_its_route(
    app: Starlette, link: str, route: str, params: dict[str, str]
) -> None:
    assert _link(link) == _route_path(app, route, **params)


def test_the_dicomweb_suffix_ends_the_store_s_dicomweb_prefix(app: Starlette) -> None:
    study = _route_path(app, "dicomweb:study", study=STUDY)
    prefix = "/" + names.dicomweb_suffix(STORE["dicom_store"])
    assert study.endswith(prefix + "/" + names.dicomweb_path(STUDY))
