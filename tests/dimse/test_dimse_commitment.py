"""Storage Commitment Push Model (N-ACTION, N-EVENT-REPORT) against a real ``dicomql serve
--dimse-port``, with pynetdicom as the SCU (Debian's dcmtk has no storage commitment SCU)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    MRImageStorage,
    StorageCommitmentPushModel,
)

from tests.support.dimse import AE_TITLE, CT, DimseServer, dimse_server, stow_layout
from tests.support.ports import free_port

PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"
Report = tuple[int, Dataset, str]  # event type, event information, association it came on


@pytest.fixture(scope="module")
def reports_listener() -> Iterator[tuple[int, queue.Queue[Report]]]:
    """The requestor's own SCU AE listening for reports on a new association (MODALITY)."""
    reports: queue.Queue[Report] = queue.Queue()

    def on_report(event: Any) -> tuple[int, None]:
        reports.put((event.event_type, event.event_information, "new association"))
        return 0x0000, None

    ae = AE(ae_title="MODALITY")
    # The SCU role of Storage Commitment; the dicomql side proposes itself as the SCP.
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]
    )
    try:
        yield port, reports
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, reports_listener: tuple[int, queue.Queue[Report]]
) -> Iterator[DimseServer]:
    config = tmp_path_factory.mktemp("config") / "dimse.yaml"
    config.write_text(
        f"move_destinations:\n  MODALITY: {{host: 127.0.0.1, port: {reports_listener[0]}}}\n"
    )
    with dimse_server(
        tmp_path_factory.mktemp("commit") / "data", "--dimse-config", str(config)
    ) as running:
        running.create_store()
        stow_layout(running)  # CT instances 1.2.3.40.1.1.1, 1.2.3.40.1.1.2, …
        yield running


def reference(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item


def request_commitment(
    server: DimseServer, references: list[Dataset], *, take_report: bool
) -> tuple[str, int, queue.Queue[Report]]:
    """An N-ACTION from MODALITY; the Transaction UID, the N-ACTION status and the reports that
    came on the same association. The association waits for the report and its answer (success
    when ``take_report``, else 0x0110: an SCU that takes reports only on its own listener)
    before it is released."""
    reports: queue.Queue[Report] = queue.Queue()
    reported, answered = threading.Event(), threading.Event()

    def on_sent(event: Any) -> None:
        # The first P-DATA this side sends after the report came is the response to it (the
        # DIMSE "sent" event fires before the message is queued, this one once it is sent).
        if reported.is_set() and type(event.pdu).__name__ == "P_DATA_TF":
            answered.set()

    def on_report(event: Any) -> tuple[int, None]:
        reported.set()
        if not take_report:
            return 0x0110, None
        reports.put((event.event_type, event.event_information, "same association"))
        return 0x0000, None

    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(
        "127.0.0.1", server.dimse_port, ae_title=AE_TITLE,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report), (evt.EVT_PDU_SENT, on_sent)],
    )  # fmt: skip
    assert assoc.is_established
    information = Dataset()
    information.TransactionUID = generate_uid()
    information.ReferencedSOPSequence = references
    try:
        status, _ = assoc.send_n_action(
            information, 1, StorageCommitmentPushModel, PUSH_MODEL_INSTANCE
        )
        # The report and the answer to it sent: releasing first would leave the server
        # without the answer.
        assert reported.wait(timeout=60) and answered.wait(timeout=60)
    finally:
        assoc.release()
    return str(information.TransactionUID), int(status.Status), reports


def uids(sequence: Any) -> list[tuple[str, str]]:
    return [(item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID) for item in sequence]


def test_all_stored_is_reported_with_event_type_1_on_the_same_association(
    server: DimseServer,
) -> None:
    refs = [reference(CT, "1.2.3.40.1.1.1"), reference(CT, "1.2.3.40.3.1.3")]
    transaction, status, reports = request_commitment(server, refs, take_report=True)
    assert status == 0x0000
    event_type, information, where = reports.get_nowait()
    assert (event_type, where) == (1, "same association")
    assert information.TransactionUID == transaction
    assert uids(information.ReferencedSOPSequence) == uids(refs)
    assert "FailedSOPSequence" not in information


def test_missing_instances_are_reported_failed_with_event_type_2(server: DimseServer) -> None:
    stored, absent = reference(CT, "1.2.3.40.2.1.1"), reference(CT, "1.2.3.99.99")
    other_class = reference(MRImageStorage, "1.2.3.40.1.1.2")  # stored, but as CT
    transaction, status, reports = request_commitment(
        server, [stored, absent, other_class], take_report=True
    )
    assert status == 0x0000
    event_type, information, _ = reports.get_nowait()
    assert event_type == 2 and information.TransactionUID == transaction
    assert uids(information.ReferencedSOPSequence) == uids([stored])
    failed = information.FailedSOPSequence
    assert uids(failed) == uids([absent, other_class])
    # No such object instance; class/instance conflict (PS3.4 J.3.3).
    assert [int(item.FailureReason) for item in failed] == [0x0112, 0x0119]


def test_a_report_the_association_does_not_take_goes_to_the_requestors_ae(
    server: DimseServer, reports_listener: tuple[int, queue.Queue[Report]]
) -> None:
    _, listened = reports_listener
    refs = [reference(CT, "1.2.3.40.1.2.1")]
    transaction, status, same = request_commitment(server, refs, take_report=False)
    assert status == 0x0000
    event_type, information, where = listened.get(timeout=60)
    assert (event_type, where) == (1, "new association")
    assert information.TransactionUID == transaction
    assert uids(information.ReferencedSOPSequence) == uids(refs)
    assert same.empty()


def test_a_request_without_a_transaction_uid_is_refused(server: DimseServer) -> None:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate("127.0.0.1", server.dimse_port, ae_title=AE_TITLE)
    assert assoc.is_established
    information = Dataset()
    information.ReferencedSOPSequence = [reference(CT, "1.2.3.40.1.1.1")]
    try:
        status, _ = assoc.send_n_action(
            information, 1, StorageCommitmentPushModel, PUSH_MODEL_INSTANCE
        )
    finally:
        assoc.release()
    assert int(status.Status) == 0x0120  # missing attribute
