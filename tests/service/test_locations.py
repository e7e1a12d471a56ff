"""projects.locations get and list through google-api-python-client."""

from __future__ import annotations

from typing import Any

import pytest
from googleapiclient.errors import HttpError


def test_any_location_id_can_be_got(healthcare: Any) -> None:
    locations = healthcare.projects().locations()
    for location in ("us-central1", "my-lab"):
        assert locations.get(name=f"projects/p/locations/{location}").execute() == {
            "name": f"projects/p/locations/{location}",
            "locationId": location,
        }


def test_list_has_googles_regions_and_every_location_holding_a_dataset(healthcare: Any) -> None:
    locations = healthcare.projects().locations()
    datasets = locations.datasets()
    datasets.create(parent="projects/p/locations/my-lab", datasetId="d", body={}).execute()
    datasets.create(parent="projects/other/locations/elsewhere", datasetId="d", body={}).execute()
    ids: list[str] = []
    request = locations.list(name="projects/p", pageSize=10)
    while request is not None:
        response = request.execute()
        assert len(response["locations"]) <= 10
        ids += [location["locationId"] for location in response["locations"]]
        for location in response["locations"]:
            assert location["name"] == f"projects/p/locations/{location['locationId']}"
        request = locations.list_next(request, response)
    assert {"us-central1", "us-east4", "europe-west4", "us", "eu", "my-lab"} <= set(ids)
    assert "elsewhere" not in ids  # another project's location
    assert ids == sorted(ids)
    assert len(ids) == len(set(ids))


def test_list_filters_on_location_id(healthcare: Any) -> None:
    response = (
        healthcare.projects()
        .locations()
        .list(name="projects/p", filter="locationId=us-central1 OR locationId=eu")
        .execute()
    )
    assert [location["locationId"] for location in response["locations"]] == ["eu", "us-central1"]


def test_list_with_a_bad_filter_is_400(healthcare: Any) -> None:
    with pytest.raises(HttpError) as caught:
        healthcare.projects().locations().list(name="projects/p", filter="region=x").execute()
    assert caught.value.resp.status == 400
