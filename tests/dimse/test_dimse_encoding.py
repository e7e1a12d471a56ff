"""What the DIMSE server encodes and decodes itself instead of through pynetdicom's pydicom
Datasets is what pynetdicom would have: byte for byte, the file meta a C-STORE's instance is
stored under and the command sets of C-ECHO, C-STORE and C-FIND responses; value for value,
the requests of those services."""

from __future__ import annotations

import io
import queue
from typing import Any

import pytest
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_STORE
from pynetdicom.dsutils import create_file_meta, encode_file_meta
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from dicomql.dimse.commands import command_set, request
from dicomql.dimse.handlers import part10_header
from dicomql.dimse.transport import _DIMSE, _AssociationSocket

FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve Information Model - FIND


def test_part10_header_is_the_file_meta_pynetdicom_writes() -> None:
    for sop_class, sop_instance, syntax in [
        (CTImageStorage, "1.2.3.4", ExplicitVRLittleEndian),  # odd lengths: padded
        ("1.2.840.10008.5.1.4.1.1.7", "1.2.3.45", ImplicitVRLittleEndian),
    ]:
        expected = encode_file_meta(
            create_file_meta(
                sop_class_uid=UID(sop_class),
                sop_instance_uid=UID(sop_instance),
                transfer_syntax=UID(syntax),
            )
        )
        assert part10_header(sop_class, sop_instance, syntax) == b"\0" * 128 + b"DICM" + expected


class _Sink:
    socket = None  # no connection: P-DATA is queued (send_pdu), not sent at once

    def __init__(self) -> None:
        self.sent: list[list[tuple[int, bytes]]] = []

    def send_pdu(self, pdata: Any) -> None:
        self.sent.append(list(pdata.presentation_data_value_list))


class _Assoc:
    is_requestor = False
    is_established = True

    def __init__(self, max_pdu: int) -> None:
        self.dul = _Sink()
        self.requestor = type("Requestor", (), {"maximum_length": max_pdu})()

    def get_handlers(self, event: Any) -> list[Any]:
        return []


def _sent(provider: type[DIMSEServiceProvider], primitive: Any, max_pdu: int) -> list[Any]:
    assoc = _Assoc(max_pdu)
    provider(assoc).send_msg(primitive, 3)  # type: ignore[arg-type]
    return assoc.dul.sent


def _echo(comment: str | None = None) -> C_ECHO:
    rsp = C_ECHO()
    rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPClassUID = "1.2.840.10008.1.1"
    rsp.Status = 0x0000
    rsp.ErrorComment = comment
    return rsp


def _store(status: int, comment: str | None = None, instance: str = "1.2.3.45") -> C_STORE:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 65535
    rsp.AffectedSOPClassUID = CTImageStorage
    rsp.AffectedSOPInstanceUID = instance
    rsp.Status = status
    rsp.ErrorComment = comment
    return rsp


def _find(identifier: bytes | None, status: int = 0xFF00) -> C_FIND:
    rsp = C_FIND()
    rsp.MessageIDBeingRespondedTo = 1
    rsp.AffectedSOPClassUID = FIND
    rsp.Status = status
    rsp.Identifier = None if identifier is None else io.BytesIO(identifier)
    return rsp


RESPONSES = {
    "C-ECHO": lambda: _echo(),
    "C-ECHO with a comment": lambda: _echo("odd"),
    "C-STORE success": lambda: _store(0x0000),
    "C-STORE even UID": lambda: _store(0x0000, instance="1.2.3.4"),
    "C-STORE failure": lambda: _store(0x0110, "No DICOM store projects/p/locations/l/x"),
    "C-FIND match": lambda: _find(b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY " * 40),
    "C-FIND final": lambda: _find(None, 0x0000),
}


@pytest.mark.parametrize("make", RESPONSES.values(), ids=RESPONSES.keys())
@pytest.mark.parametrize("max_pdu", [0, 16384, 50])
def test_responses_are_sent_as_pynetdicom_sends_them(make: Any, max_pdu: int) -> None:
    assert command_set(make()) is not None
    assert _sent(_DIMSE, make(), max_pdu) == _sent(DIMSEServiceProvider, make(), max_pdu)


class _Connection(_AssociationSocket):
    """A plain TCP connection that records what is written to it."""

    def __init__(self) -> None:  # no socket: nothing is read or written for real
        self.socket = None
        self.written: list[bytes] = []

    def send(self, bytestream: bytes) -> None:
        self.written.append(bytes(bytestream))


class _UpperLayer:
    """An established association's upper layer with nothing queued to send (Sta6)."""

    def __init__(self) -> None:
        self.socket = _Connection()
        self.state_machine = type("StateMachine", (), {"current_state": "Sta6"})()
        self.to_provider_queue: queue.Queue[Any] = queue.Queue()


@pytest.mark.parametrize("make", RESPONSES.values(), ids=RESPONSES.keys())
@pytest.mark.parametrize("max_pdu", [0, 16384, 50])
def test_a_response_sent_by_the_serving_thread_is_its_pdus_in_one_write(
    make: Any, max_pdu: int
) -> None:
    assoc = _Assoc(max_pdu)
    upper_layer = _UpperLayer()
    assoc.dul = upper_layer  # type: ignore[assignment]
    _DIMSE(assoc).send_msg(make(), 3)  # type: ignore[arg-type]
    expected = []
    for values in _sent(DIMSEServiceProvider, make(), max_pdu):
        pdata = P_DATA()
        pdata.presentation_data_value_list.extend(values)
        expected.append(P_DATA_TF(pdata).encode())
    assert upper_layer.socket.written == [b"".join(expected)]


def test_what_is_not_encoded_here_is_left_to_pynetdicom() -> None:
    request = _store(0x0000)
    request.MessageIDBeingRespondedTo = None
    request.MessageID = 3
    assert command_set(request) is None
    assert command_set(_store(0xC000, "não ASCII")) is None


class _Requestor(_Assoc):
    """An association that sends requests: their P-DATA, as pynetdicom sends them."""

    is_requestor = True

    def __init__(self, max_pdu: int) -> None:
        super().__init__(max_pdu)
        self.acceptor = self.requestor


def _request_pdata(primitive: Any, max_pdu: int) -> list[Any]:
    assoc = _Requestor(max_pdu)
    DIMSEServiceProvider(assoc).send_msg(primitive, 5)  # type: ignore[arg-type]
    pdatas = []
    for fragments in assoc.dul.sent:
        pdata = P_DATA()
        pdata.presentation_data_value_list = [list(fragment) for fragment in fragments]
        pdatas.append(pdata)
    return pdatas


class _Receiver(_Assoc):
    def __init__(self) -> None:
        super().__init__(0)
        self.dul.event_queue = queue.Queue()  # type: ignore[attr-defined]


def _received(provider: type[DIMSEServiceProvider], pdatas: list[Any]) -> tuple[Any, ...]:
    assoc = _Receiver()
    dimse = provider(assoc)  # type: ignore[arg-type]
    for pdata in pdatas:
        dimse.receive_primitive(pdata)
    context_id, message = dimse.msg_queue.get_nowait()
    assert dimse.msg_queue.empty()
    data = getattr(message, "DataSet", None) or getattr(message, "Identifier", None)
    return (
        type(message),
        context_id,
        message._context_id,
        message.MessageID,
        message.AffectedSOPClassUID,
        getattr(message, "AffectedSOPInstanceUID", None),
        getattr(message, "Priority", None),
        getattr(message, "MoveOriginatorApplicationEntityTitle", None),
        None if data is None else data.getvalue(),
    )


def _store_request(instance: str = "1.2.3.45", move_originator: str | None = None) -> C_STORE:
    rq = C_STORE()
    rq.MessageID = 12
    rq.AffectedSOPClassUID = CTImageStorage
    rq.AffectedSOPInstanceUID = instance
    rq.Priority = 1
    rq.DataSet = io.BytesIO(b"\x08\x00\x18\x00\x08\x00\x00\x001.2.3.4\x00" * 300)
    if move_originator is not None:
        rq.MoveOriginatorApplicationEntityTitle = move_originator
        rq.MoveOriginatorMessageID = 3
    return rq


def _echo_request() -> C_ECHO:
    rq = C_ECHO()
    rq.MessageID = 1
    rq.AffectedSOPClassUID = "1.2.840.10008.1.1"
    return rq


def _find_request() -> C_FIND:
    rq = C_FIND()
    rq.MessageID = 2
    rq.AffectedSOPClassUID = FIND
    rq.Priority = 2
    rq.Identifier = io.BytesIO(b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ")
    return rq


REQUESTS = {
    "C-ECHO": (_echo_request, True),
    "C-STORE": (_store_request, True),
    "C-STORE even UID": (lambda: _store_request("1.2.3.4"), True),
    "C-FIND": (_find_request, True),
    "C-STORE of a C-MOVE": (lambda: _store_request(move_originator="MOVER"), False),
}


@pytest.mark.parametrize(("make", "decoded_here"), REQUESTS.values(), ids=REQUESTS.keys())
@pytest.mark.parametrize("max_pdu", [0, 16384, 100])
def test_requests_are_read_as_pynetdicom_reads_them(
    make: Any, decoded_here: bool, max_pdu: int
) -> None:
    pdatas = _request_pdata(make(), max_pdu)
    if max_pdu != 100:  # a command set split over PDUs is always pynetdicom's to read
        command = pdatas[0].presentation_data_value_list[0][1][1:]
        assert (request(command) is not None) == decoded_here
    assert _received(_DIMSE, pdatas) == _received(DIMSEServiceProvider, pdatas)


def test_a_request_with_a_value_it_refuses_ends_the_association() -> None:
    pdatas = _request_pdata(_store_request(), 0)
    command = bytearray(pdatas[0].presentation_data_value_list[0][1])
    priority = command.index(b"\x00\x00\x00\x07\x02\x00\x00\x00") + 8
    command[priority] = 9  # Priority 9: not 0, 1 or 2
    pdatas[0].presentation_data_value_list = [[5, bytes(command)]]
    for provider in (_DIMSE, DIMSEServiceProvider):
        assoc = _Receiver()
        dimse = provider(assoc)  # type: ignore[arg-type]
        for pdata in pdatas:
            dimse.receive_primitive(pdata)
        assert assoc.dul.event_queue.get_nowait() == "Evt19"  # type: ignore[attr-defined]
        assert dimse.msg_queue.empty()
