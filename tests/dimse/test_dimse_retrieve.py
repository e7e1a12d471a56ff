"""C-GET and C-MOVE against a real ``dicomql serve --dimse-port``: dcmtk's getscu, and movescu to
a dcmtk storescp the test starts, of instances stored through STOW-RS; pynetdicom for the
sub-operation counts and refusals."""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pynetdicom import AE, build_role
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from tests.support.dimse import (
    AE_TITLE,
    DimseServer,
    dataset_bytes,
    dcmtk,
    dimse_server,
    need_dcmtk,
    stow_layout,
    values_of,
)
from tests.support.ports import free_port


@pytest.fixture(scope="module")
def storescp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """dcmtk's storescp, the C-MOVE destination, writing what it receives to a folder."""
    need_dcmtk()
    port, folder = free_port(), tmp_path_factory.mktemp("received")
    process = subprocess.Popen(
        ["storescp", "-aet", "STORESCP", "-od", str(folder), "+B", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while dcmtk("echoscu", "-aec", "STORESCP", "127.0.0.1", str(port)).returncode != 0:
            assert process.poll() is None and time.monotonic() < deadline, "storescp did not start"
            time.sleep(0.05)
        yield port, folder
    finally:
        process.terminate()
        process.wait()


@pytest.fixture(scope="module")
def stored(
    tmp_path_factory: pytest.TempPathFactory, storescp: tuple[int, Path]
) -> Iterator[tuple[DimseServer, dict[str, bytes]]]:
    config = tmp_path_factory.mktemp("config") / "dimse.yaml"
    config.write_text(f"move_destinations:\n  STORESCP: {{host: 127.0.0.1, port: {storescp[0]}}}\n")
    data = tmp_path_factory.mktemp("retrieve") / "data"
    with dimse_server(data, "--dimse-config", str(config)) as server:
        server.create_store()
        yield server, stow_layout(server)


def test_getscu_of_a_series_receives_what_stow_stored(
    stored: tuple[DimseServer, dict[str, bytes]], tmp_path: Path
) -> None:
    server, sent = stored
    done = dcmtk(
        "getscu", "-S", "-aec", AE_TITLE, "-od", str(tmp_path),
        "-k", "QueryRetrieveLevel=SERIES", "-k", "StudyInstanceUID=1.2.3.40.3",
        "-k", "SeriesInstanceUID=1.2.3.40.3.1", "127.0.0.1", str(server.dimse_port),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    received = {str(dcmread(p).SOPInstanceUID): p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(received) == ["1.2.3.40.3.1.1", "1.2.3.40.3.1.2", "1.2.3.40.3.1.3"]
    for uid, data in received.items():
        # getscu's contexts were accepted in implicit VR: the same values, re-encoded.
        assert values_of(dcmread(io.BytesIO(data))) == values_of(dcmread(io.BytesIO(sent[uid])))


def test_movescu_of_a_study_to_storescp_sends_the_stored_bytes(
    stored: tuple[DimseServer, dict[str, bytes]], storescp: tuple[int, Path]
) -> None:
    server, sent = stored
    done = dcmtk(
        "movescu", "-S", "-aec", AE_TITLE, "-aem", "STORESCP",
        "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=1.2.3.40.1",
        "127.0.0.1", str(server.dimse_port),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    received = {str(dcmread(p).SOPInstanceUID): p.read_bytes() for p in storescp[1].iterdir()}
    assert sorted(received) == ["1.2.3.40.1.1.1", "1.2.3.40.1.1.2", "1.2.3.40.1.2.1"]
    for uid, data in received.items():
        assert dataset_bytes(data) == dataset_bytes(sent[uid]), uid


def _study(uid: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = uid
    return query


def _c_get_association(server: DimseServer, on_store: Callable[[Any], int]) -> Association:
    """An association that asks for Study Root C-GET and takes back the CT instances it sends,
    each through ``on_store``."""
    from pynetdicom import evt

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(
        "127.0.0.1",
        server.dimse_port,
        ae_title=AE_TITLE,
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    return assoc


def test_c_get_reports_sub_operation_counts(stored: tuple[DimseServer, dict[str, bytes]]) -> None:
    server, _ = stored
    received: list[str] = []

    def on_store(event: object) -> int:
        received.append(str(event.dataset.SOPInstanceUID))  # type: ignore[attr-defined]
        return 0x0000

    assoc = _c_get_association(server, on_store)
    try:
        responses = list(
            assoc.send_c_get(_study("1.2.3.40.2"), StudyRootQueryRetrieveInformationModelGet)
        )
    finally:
        assoc.release()
    final = responses[-1][0]
    assert int(final.Status) == 0x0000
    assert int(final.NumberOfCompletedSuboperations) == 1
    assert int(final.NumberOfFailedSuboperations) == 0
    assert received == ["1.2.3.40.2.1.1"]


def test_c_move_to_an_unknown_destination_is_refused(
    stored: tuple[DimseServer, dict[str, bytes]],
) -> None:
    server, _ = stored
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", server.dimse_port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        responses = list(
            assoc.send_c_move(
                _study("1.2.3.40.2"), "NOWHERE", StudyRootQueryRetrieveInformationModelMove
            )
        )
    finally:
        assoc.release()
    assert int(responses[-1][0].Status) == 0xA801  # Move Destination unknown


def test_c_move_of_a_bad_identifier_fails_naming_the_problem(
    stored: tuple[DimseServer, dict[str, bytes]],
) -> None:
    server, _ = stored
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", server.dimse_port, ae_title=AE_TITLE)
    assert assoc.is_established
    query = _study("1.2.3.40.2")
    query.QueryRetrieveLevel = "FRAME"
    try:
        responses = list(
            assoc.send_c_move(query, "STORESCP", StudyRootQueryRetrieveInformationModelMove)
        )
    finally:
        assoc.release()
    final = responses[-1][0]
    assert int(final.Status) == 0xC001
    assert "QueryRetrieveLevel" in str(final.ErrorComment)


def test_a_bad_dimse_config_is_refused_naming_the_problem(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from dicomql.cli import main

    config = tmp_path / "dimse.yaml"
    config.write_text("move_destinations:\n  VIEWER: {host: 10.0.0.7}\n")
    result = CliRunner().invoke(
        main,
        ["serve", "--data-dir", str(tmp_path), "--dimse-port", "11112", "--dimse-config",
         str(config)],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "move_destinations.VIEWER" in result.output


def test_c_cancel_stops_a_c_get_before_the_next_sub_operation(
    stored: tuple[DimseServer, dict[str, bytes]],
) -> None:
    server, _ = stored
    received: list[str] = []

    def on_store(event: object) -> int:
        # The cancel reaches the server before this C-STORE's response, so deterministically
        # before it starts the next sub-operation.
        received.append(str(event.dataset.SOPInstanceUID))  # type: ignore[attr-defined]
        get_context = next(
            cx
            for cx in assoc.accepted_contexts
            if cx.abstract_syntax == StudyRootQueryRetrieveInformationModelGet
        )
        assoc.send_c_cancel(7, get_context.context_id)
        return 0x0000

    assoc = _c_get_association(server, on_store)
    try:
        responses = list(
            assoc.send_c_get(
                _study("1.2.3.40.3"), StudyRootQueryRetrieveInformationModelGet, msg_id=7
            )
        )
    finally:
        assoc.release()
    final = responses[-1][0]
    assert int(final.Status) == 0xFE00
    assert received == ["1.2.3.40.3.1.1"]
    assert int(final.NumberOfRemainingSuboperations) == 2
