"""Routes of projects.locations: get and list.

The embedded service has no regions, so every location ID is valid (datasets can be created in
any). ``list`` answers a fixed set of the regions where Google offers the Cloud Healthcare API,
plus every other location in which the project has a dataset, in ID order, so that a listing
shows where the project's data is.
"""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse

from dicomql.service.bodies import query_params
from dicomql.service.datasets import service_of
from dicomql.service.errors import InvalidArgument
from dicomql.service.label_filter import parse_filter
from dicomql.service.paging import decode_token, encode_token, page_size
from dicomql.service.validation import validate_path_ids
from dicomql.store import names
from dicomql.store import resources as store

METHOD = "healthcare.projects.locations."
# Cloud Healthcare API regions (Google's "Regions" page), multi-regions us and eu included.
KNOWN_LOCATIONS = (
    "asia-east2",
    "asia-northeast1",
    "asia-northeast3",
    "asia-south1",
    "asia-southeast1",
    "asia-southeast2",
    "australia-southeast1",
    "eu",
    "europe-west1",
    "europe-west2",
    "europe-west3",
    "europe-west4",
    "europe-west6",
    "europe-west9",
    "me-central2",
    "northamerica-northeast1",
    "northamerica-northeast2",
    "southamerica-east1",
    "us",
    "us-central1",
    "us-east1",
    "us-east4",
    "us-west1",
    "us-west2",
    "us-west3",
    "us-west4",
)


def location_resource(project: str, location: str) -> dict[str, Any]:
    return {"name": names.location_name(project, location), "locationId": location}


async def get_location(request: Request) -> JSONResponse:
    validate_path_ids(request.path_params)
    project = request.path_params["project"]
    location = request.path_params["location"]
    query_params(request, METHOD + "get")
    return JSONResponse(location_resource(project, location))


async def list_locations(request: Request) -> JSONResponse:
    service = service_of(request)
    validate_path_ids(request.path_params)
    project = request.path_params["project"]
    params = query_params(request, METHOD + "list")
    size = page_size(params.get("pageSize"))
    text = params.get("filter", "")
    predicate = parse_filter(
        text, fields=("name", "locationId", "displayName", "labels"), map_fields=("labels",)
    )
    context = f"projects/{project}/locations\n{text}"
    after = decode_token(params.get("pageToken"), context)
    if after is not None and not isinstance(after, str):
        raise InvalidArgument(f'Invalid page token "{params["pageToken"]}".')

    def read() -> list[str]:
        with service.index.connect() as conn:
            return store.dataset_locations(conn, project)

    locations = sorted(set(KNOWN_LOCATIONS) | set(await to_thread.run_sync(read)))
    matching = [
        resource
        for resource in (location_resource(project, location) for location in locations)
        if (after is None or resource["locationId"] > after) and predicate(resource)
    ]
    result: dict[str, Any] = {}
    if matching:
        result["locations"] = matching[:size]
    if len(matching) > size:
        result["nextPageToken"] = encode_token(matching[size - 1]["locationId"], context)
    return JSONResponse(result)
