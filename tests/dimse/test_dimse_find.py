"""C-FIND against a real ``dicomql serve --dimse-port``: dcmtk's findscu at each level of both
information models, over instances stored through STOW-RS, answered by QIDO's matching."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

from tests.support.dimse import AE_TITLE, DimseServer, dcmtk, dimse_server, need_dcmtk, stow_layout


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DimseServer]:
    need_dcmtk()
    with dimse_server(tmp_path_factory.mktemp("find") / "data") as running:
        running.create_store()
        stow_layout(running)
        yield running


def findscu(server: DimseServer, out: Path, model: str, *keys: str) -> list[Dataset]:
    """findscu with ``-k`` keys; the response identifiers it extracted."""
    out.mkdir()
    arguments = [part for key in keys for part in ("-k", key)]
    done = dcmtk(
        "findscu", model, "-aec", AE_TITLE, "-X", "-od", str(out), *arguments,
        "127.0.0.1", str(server.dimse_port),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    return [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]


def test_patient_root_patient_level_answers_once_per_patient(
    server: DimseServer, tmp_path: Path
) -> None:
    found = findscu(
        server, tmp_path / "r", "-P", "QueryRetrieveLevel=PATIENT", "PatientID=FIND-*",
        "PatientName",
    )  # fmt: skip
    assert sorted((d.PatientID, str(d.PatientName)) for d in found) == [
        ("FIND-P1", "Doe^Jane"),
        ("FIND-P2", "Roe^Rich"),
    ]


def test_study_level_with_a_date_range_and_wildcard_name(
    server: DimseServer, tmp_path: Path
) -> None:
    found = findscu(
        server, tmp_path / "r", "-S", "QueryRetrieveLevel=STUDY", "PatientName=Doe*",
        "StudyDate=20240101-20240201", "StudyInstanceUID", "PatientID",
    )  # fmt: skip
    assert [(d.StudyInstanceUID, d.PatientID, d.StudyDate) for d in found] == [
        ("1.2.3.40.1", "FIND-P1", "20240105")
    ]
    # Only the requested keys come back (PS3.4 C.4.1.1.3.2).
    assert "Modality" not in found[0] and "SOPInstanceUID" not in found[0]


def test_series_level_below_a_study_and_image_level_with_a_uid_list(
    server: DimseServer, tmp_path: Path
) -> None:
    series = findscu(
        server, tmp_path / "s", "-S", "QueryRetrieveLevel=SERIES",
        "StudyInstanceUID=1.2.3.40.1", "SeriesInstanceUID", "Modality",
    )  # fmt: skip
    assert sorted((d.SeriesInstanceUID, d.Modality) for d in series) == [
        ("1.2.3.40.1.1", "CT"),
        ("1.2.3.40.1.2", "MR"),
    ]
    images = findscu(
        server, tmp_path / "i", "-S", "QueryRetrieveLevel=IMAGE",
        "StudyInstanceUID=1.2.3.40.3", "SeriesInstanceUID=1.2.3.40.3.1",
        "SOPInstanceUID=1.2.3.40.3.1.1\\1.2.3.40.3.1.3", "InstanceNumber",
    )  # fmt: skip
    assert sorted((d.SOPInstanceUID, d.InstanceNumber) for d in images) == [
        ("1.2.3.40.3.1.1", 1),
        ("1.2.3.40.3.1.3", 3),
    ]


def test_no_match_is_an_empty_success_and_a_bad_key_is_refused(server: DimseServer) -> None:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", server.dimse_port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.PatientID = "NOBODY"
        responses = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
        assert [int(status.Status) for status, _ in responses] == [0x0000]
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.ProtocolName = "HEAD*"  # a series attribute: no matching key at study level
        [(status, _)] = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
        assert int(status.Status) == 0xC001
        assert "ProtocolName" in str(status.ErrorComment)
        query.QueryRetrieveLevel = "FRAME"
        [(status, _)] = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
        assert int(status.Status) == 0xC001
        assert "QueryRetrieveLevel" in str(status.ErrorComment)
    finally:
        assoc.release()
