"""QIDO-RS results as PS3.18 Annex F writes them, read through dicomweb-client: attributes that
are present but empty stay as ``{"vr": …}`` (F.2.5), and person names are split into their
Alphabetic, Ideographic and Phonetic groups (F.2.2), as WADO metadata already writes them."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from dicomweb_client import DICOMwebClient
from pydicom import dcmread
from pydicom.uid import generate_uid

from dicomql.service.config import ServiceConfig
from tests.support.dicomweb import DICOMWEB, create_store, make_instance


@pytest.fixture
def dicomweb(service_config: ServiceConfig, live_server) -> Iterator[DICOMwebClient]:  # type: ignore[no-untyped-def]
    create_store(service_config)
    yield DICOMwebClient(url=f"{live_server.url}{DICOMWEB}")


def _store(client: DICOMwebClient, **attributes: object) -> str:
    study = generate_uid()
    ds = dcmread(io.BytesIO(make_instance(study)))
    for name, value in attributes.items():
        setattr(ds, name, value)
    client.store_instances([ds])
    return study


def test_present_but_empty_attributes_are_kept_without_a_value(dicomweb: DICOMwebClient) -> None:
    """PS3.18 F.2.5: an empty attribute is ``{"vr": …}`` with no Value, also when asked for."""
    study = _store(dicomweb, StudyDate="", AccessionNumber="", PatientName="", InstanceNumber=None)
    [result] = dicomweb.search_for_studies(
        search_filters={"StudyInstanceUID": study}, fields=["AccessionNumber"]
    )
    assert result["00080020"] == {"vr": "DA"}
    assert result["00080050"] == {"vr": "SH"}
    assert result["00100010"] == {"vr": "PN"}
    [instance] = dicomweb.search_for_instances(study_instance_uid=study)
    assert instance["00200013"] == {"vr": "IS"}


def test_absent_attributes_stay_absent(dicomweb: DICOMwebClient) -> None:
    study = _store(dicomweb)
    [result] = dicomweb.search_for_studies(search_filters={"StudyInstanceUID": study})
    assert "00080050" not in result  # AccessionNumber was never in the file


def test_person_names_are_split_into_their_groups(dicomweb: DICOMwebClient) -> None:
    """PS3.18 F.2.2, the standard's own example name."""
    study = _store(
        dicomweb,
        SpecificCharacterSet=["", "ISO 2022 IR 87"],
        PatientName="Yamada^Tarou=山田^太郎=やまだ^たろう",
        ReferringPhysicianName="Wang^XiaoDong=王^小東",
    )
    [result] = dicomweb.search_for_studies(search_filters={"StudyInstanceUID": study})
    assert result["00100010"]["Value"] == [
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
    ]
    assert result["00080090"]["Value"] == [
        {"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小東"}
    ]
    [series] = dicomweb.search_for_series(search_filters={"StudyInstanceUID": study})
    assert series["00100010"]["Value"][0]["Ideographic"] == "山田^太郎"
