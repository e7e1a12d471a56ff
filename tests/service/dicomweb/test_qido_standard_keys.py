"""PS3.18 Table 10.6.1-5's required matching keys beyond Google's list (StudyTime, StudyID,
ModalitiesInStudy, SeriesNumber, PerformedProcedureStepStart{Date,Time}, SOPClassUID,
InstanceNumber; PS3.4 C.2.2.2 matching), through dicomweb-client under ``--conformance
standard``; under ``google`` they are refused with a 400 listing what can be searched, as
Google's conformance statement's fixed attribute list implies."""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Any

import pytest
import requests
from dicomweb_client import DICOMwebClient
from pydicom import dcmread
from pydicom.uid import generate_uid

from dicomql.service.config import ServiceConfig
from tests.support.dicomweb import DICOMWEB, DicomWebClient, create_store, make_instance

MR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.4"


@pytest.fixture
def standard(service_config: ServiceConfig, start_live_server: Any) -> DICOMwebClient:
    config = replace(service_config, conformance="standard")
    create_store(config)
    server = start_live_server(config)
    return DICOMwebClient(url=f"{server.url}{DICOMWEB}")


def _store(client: DICOMwebClient, study: str, modality: str, **attributes: object) -> None:
    ds = dcmread(io.BytesIO(make_instance(study, modality=modality)))
    for name, value in attributes.items():
        setattr(ds, name, value)
    client.store_instances([ds])


@pytest.fixture
def two_studies(standard: DICOMwebClient) -> tuple[DICOMwebClient, str, str]:
    first, second = generate_uid(), generate_uid()
    _store(standard, first, "CT", StudyTime="083000", StudyID="S-1", SeriesNumber=1)
    _store(standard, first, "MR", SeriesNumber=2, InstanceNumber=7, SOPClassUID=MR_SOP_CLASS)
    _store(standard, second, "SEG", StudyTime="141500", StudyID="S-2", SeriesNumber=1)
    return standard, first, second


def _studies(client: DICOMwebClient, **filters: str) -> set[str]:
    return {r["0020000D"]["Value"][0] for r in client.search_for_studies(search_filters=filters)}


def test_modalities_in_study_matches_any_of_the_studys_modalities(two_studies) -> None:  # type: ignore[no-untyped-def]
    client, first, second = two_studies
    assert _studies(client, ModalitiesInStudy="MR") == {first}
    assert _studies(client, ModalitiesInStudy="CT") == {first}
    assert _studies(client, ModalitiesInStudy="SEG") == {second}
    assert _studies(client, ModalitiesInStudy="SE") == set()  # not a prefix match
    assert _studies(client, ModalitiesInStudy="S*") == {second}


def test_study_time_and_study_id(two_studies) -> None:  # type: ignore[no-untyped-def]
    client, first, second = two_studies
    assert _studies(client, StudyTime="080000-120000") == {first}
    assert _studies(client, StudyTime="1415-") == {second}
    assert _studies(client, StudyID="S-2") == {second}
    assert _studies(client, StudyID="S-*") == {first, second}


def test_series_number_sop_class_and_instance_number(two_studies) -> None:  # type: ignore[no-untyped-def]
    client, first, _ = two_studies
    series = client.search_for_series(search_filters={"SeriesNumber": "2"})
    assert [s["00080060"]["Value"] for s in series] == [["MR"]]
    instances = client.search_for_instances(search_filters={"SOPClassUID": MR_SOP_CLASS})
    assert len(instances) == 1 and instances[0]["00200013"]["Value"] == [7]
    instances = client.search_for_instances(
        study_instance_uid=first, search_filters={"InstanceNumber": "7"}
    )
    assert len(instances) == 1
    with pytest.raises(requests.HTTPError) as raised:
        client.search_for_instances(search_filters={"InstanceNumber": "seven"})
    assert raised.value.response.status_code == 400


@pytest.mark.parametrize("key", ["ModalitiesInStudy", "StudyTime", "StudyID"])
def test_google_profile_refuses_the_keys_google_does_not_list(
    service_config: ServiceConfig, key: str
) -> None:
    client = DicomWebClient(service_config)  # conformance="google", the default
    try:
        response = client.http.get(f"{DICOMWEB}/studies", params={key: "X"})
    finally:
        client.close()
    assert response.status_code == 400
    assert "PatientName" in response.json()["error"]["message"]
