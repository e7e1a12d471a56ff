"""What the DIMSE server encodes itself instead of through pynetdicom's pydicom Datasets is
byte for byte what pynetdicom would have sent: the file meta a C-STORE's instance is stored
under, and the command sets of C-ECHO, C-STORE and C-FIND responses."""

from __future__ import annotations

import io
from typing import Any

import pytest
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_STORE
from pynetdicom.dsutils import create_file_meta, encode_file_meta
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from dicomql.dimse.handlers import part10_header
from dicomql.dimse.transport import _DIMSE, command_set

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
    def __init__(self) -> None:
        self.sent: list[list[tuple[int, bytes]]] = []

    def send_pdu(self, pdata: Any) -> None:
        self.sent.append(list(pdata.presentation_data_value_list))


class _Assoc:
    is_requestor = False

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


def test_what_is_not_encoded_here_is_left_to_pynetdicom() -> None:
    request = _store(0x0000)
    request.MessageIDBeingRespondedTo = None
    request.MessageID = 3
    assert command_set(request) is None
    assert command_set(_store(0xC000, "não ASCII")) is None
