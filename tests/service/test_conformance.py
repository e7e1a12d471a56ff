"""The two conformance profiles (``dicomql serve --conformance google|standard``): what Google's
DICOM conformance statement documents is served under both; what only PS3.18 requires is served
under ``standard`` and refused under ``google`` as Google refuses it."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from dicomweb_client import DICOMwebClient
from PIL import Image
from pydicom import dcmread
from pydicom.uid import generate_uid

from dicomql import config as client_config
from dicomql.service import conformance
from dicomql.service.config import ServiceConfig
from tests.support.dicomweb import (
    DICOMWEB,
    DicomWebClient,
    create_store,
    make_instance,
    read_multipart,
)


@pytest.fixture
def standard_config(service_config: ServiceConfig) -> ServiceConfig:
    return replace(service_config, conformance="standard")


@pytest.fixture(params=["google", "standard"])
def profile_client(request: pytest.FixtureRequest, service_config: ServiceConfig) -> Iterator:
    client = DicomWebClient(replace(service_config, conformance=request.param))
    try:
        yield request.param, client
    finally:
        client.close()


def _stored_study(client: DicomWebClient, frames: int = 1) -> tuple[str, str, str]:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    response = client.stow([make_instance(study, series, sop, rows=16, columns=16, frames=frames)])
    assert response.status_code == 200, response.text
    return study, series, sop


def test_profiles_are_named_alike_by_the_front_end_and_the_service() -> None:
    assert client_config.CONFORMANCE_PROFILES == conformance.PROFILES


def test_an_unknown_profile_is_refused_everywhere(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dicomql import connect
    from dicomql.cli import main
    from dicomql.errors import InterfaceError

    with pytest.raises(ValueError, match="google, standard"):
        ServiceConfig(data_dir=tmp_path, conformance="strict")
    with pytest.raises(InterfaceError, match="google, standard"):
        connect(tmp_path, conformance="strict")
    result = CliRunner().invoke(main, ["serve", "--conformance", "strict"])
    assert result.exit_code == 2 and "google" in result.output


def test_the_db_api_passes_its_profile_to_the_embedded_service(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dicomql import connect

    with connect(tmp_path, conformance="standard") as connection:
        assert connection.config.conformance == "standard"
        transport = connection._http._transport  # the embedded service, built lazily
        app_config = transport._open()._app.state.service.config  # type: ignore[attr-defined]
        assert app_config.conformance == "standard"


# Google's conformance statement, "Retrieve transaction": rendered resources are Instance and
# Frames only, and "It does not support Thumbnail resources."
_STANDARD_ONLY = [
    "/studies/{study}/rendered",
    "/studies/{study}/series/{series}/rendered",
    "/studies/{study}/thumbnail",
    "/studies/{study}/series/{series}/thumbnail",
    "/studies/{study}/series/{series}/instances/{sop}/thumbnail",
    "/studies/{study}/series/{series}/instances/{sop}/frames/1/thumbnail",
]


@pytest.mark.parametrize("path", _STANDARD_ONLY)
def test_study_and_series_rendering_and_thumbnails_follow_the_profile(
    profile_client: tuple[str, DicomWebClient], path: str
) -> None:
    """PS3.18 10.4.1.1.3 (rendered study/series) and 10.4.1.1.5 (thumbnails)."""
    profile, client = profile_client
    study, series, sop = _stored_study(client)
    url = DICOMWEB + path.format(study=study, series=series, sop=sop)
    accept = 'multipart/related; type="image/png"' if path.endswith("rendered") else "image/png"
    response = client.http.get(url, headers={"accept": accept})
    if profile == "google":
        assert response.status_code == 404
        assert response.json()["error"]["status"] == "NOT_FOUND"
        assert "--conformance standard" in response.json()["error"]["message"]
        return
    assert response.status_code == 200, response.text
    if path.endswith("rendered"):
        assert response.headers["content-type"].startswith('multipart/related; type="image/png"')
    else:
        image = Image.open(io.BytesIO(response.content))
        assert image.format == "PNG" and max(image.size) <= 128


def test_rendered_series_is_one_part_per_frame_over_http(
    standard_config: ServiceConfig, start_live_server: Any
) -> None:
    """PS3.18 10.4.1.1.3 over a real server. dicomweb-client's retrieve_series_rendered asks
    for a single-part image/png, which Table 10.4.4-1's note says a study or series cannot
    satisfy (406), so the multipart request is made with httpx."""
    create_store(standard_config)
    study, series = generate_uid(), generate_uid()
    server = start_live_server(standard_config)
    client = DICOMwebClient(url=f"{server.url}{DICOMWEB}")
    for seed in (1, 2):
        data = make_instance(study, series, rows=16, columns=24, frames=3, seed=seed)
        client.store_instances([dcmread(io.BytesIO(data))])
    url = f"{server.url}{DICOMWEB}/studies/{study}/series/{series}/rendered"
    response = httpx.get(url, headers={"accept": 'multipart/related; type="image/png"'})
    single = httpx.get(url, headers={"accept": "image/png"})
    assert response.status_code == 200
    parts = read_multipart(response.headers["content-type"], response.content)
    assert len(parts) == 6
    assert all(h["content-location"].endswith("/rendered") for h, _ in parts)
    images = [Image.open(io.BytesIO(body)) for _, body in parts]
    assert all(image.format == "PNG" and image.size == (24, 16) for image in images)
    assert single.status_code == 406


def test_405_allow_lists_every_method_the_resource_serves(embedded: httpx.Client) -> None:
    """RFC 9110 15.5.6: Allow names the methods served; POST stores on /studies."""
    response = embedded.put(f"{DICOMWEB}/studies")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, POST"
    response = embedded.post(f"{DICOMWEB}/studies/1.2/metadata")
    assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD"
    response = embedded.put(f"{DICOMWEB}/studies/1.2/series/3/instances/4")
    assert response.headers["allow"] == "DELETE, GET, HEAD"


def test_frames_and_bulkdata_parts_carry_content_location(
    profile_client: tuple[str, DicomWebClient],
) -> None:
    """PS3.18 10.4.3.3.5 (and 8.6.1.2): every part of a frames or bulk data answer names it."""
    _, client = profile_client
    study, series, sop = _stored_study(client, frames=3)
    instance = f"{DICOMWEB}/studies/{study}/series/{series}/instances/{sop}"
    response = client.http.get(f"{instance}/frames/3,1")
    assert response.status_code == 200
    parts = read_multipart(response.headers["content-type"], response.content)
    locations = [headers["content-location"] for headers, _ in parts]
    # In-process the URLs are paths (no origin to name; docs/security.md, "Absolute URLs").
    assert locations == [f"{instance}/frames/3", f"{instance}/frames/1"]
    response = client.http.get(f"{instance}/bulkdata/7FE00010")
    parts = read_multipart(response.headers["content-type"], response.content)
    assert parts[0][0]["content-location"] == f"{instance}/bulkdata/7FE00010"


def test_the_environment_names_the_embedded_profile(tmp_path) -> None:  # type: ignore[no-untyped-def]
    built = client_config.ConnectionConfig.build(
        data_dir=tmp_path, environ={"DICOMQL_CONFORMANCE": "standard"}
    )
    assert built.conformance == "standard"
    assert client_config.ConnectionConfig.build(data_dir=tmp_path, environ={}).conformance == (
        "google"
    )
