"""Association setup of the DIMSE listener: negotiation over many proposed contexts gives what
pynetdicom's negotiation over every supported context gives, against a real ``dicomql serve``;
and an association's objects are freed once it ends, without the cyclic garbage collector."""

from __future__ import annotations

import contextlib
import gc
import socket
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import UID
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, build_role, evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor
from pynetdicom.service_class import VerificationServiceClass
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

from dicomql.dimse.server import _quiet_pynetdicom, _SharedPortServer
from dicomql.dimse.sop_classes import scp_contexts
from dicomql.dimse.transport import (
    SupportedContexts,
    _AssociationSocket,
    _BlockingAssociation,
    request_handler,
)
from tests.support.dimse import AE_TITLE, DimseServer, dimse_server

# A SOP class no server supports, and a transfer syntax pynetdicom does not know.
UNKNOWN_SOP_CLASS = "1.2.826.0.1.3680043.8.498.1.99"
UNKNOWN_SYNTAX = "1.2.826.0.1.3680043.8.498.1.98"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DimseServer]:
    with dimse_server(tmp_path_factory.mktemp("association") / "data") as running:
        yield running


def many_contexts() -> tuple[AE, list[SCP_SCU_RoleSelectionNegotiation]]:
    """An SCU proposing 128 contexts (the most one association may): storage SOP classes in
    one, several or no supported transfer syntax, an unknown SOP class, the same SOP class
    twice, C-GET and Verification; with SCP/SCU role selection for some of them."""
    ae = AE(ae_title="MANYSCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(UNKNOWN_SOP_CLASS)
    ae.add_requested_context(CTImageStorage, [UNKNOWN_SYNTAX])  # no transfer syntax accepted
    ae.add_requested_context(CTImageStorage)  # the same SOP class again, accepted
    for number, context in enumerate(AllStoragePresentationContexts[: 128 - 5]):
        syntaxes = [UNKNOWN_SYNTAX, ALL_TRANSFER_SYNTAXES[number % len(ALL_TRANSFER_SYNTAXES)]]
        ae.add_requested_context(context.abstract_syntax, syntaxes)
    roles = [
        build_role(CTImageStorage, scp_role=True),
        build_role(MRImageStorage, scu_role=True, scp_role=True),
        build_role(AllStoragePresentationContexts[7].abstract_syntax, scu_role=True),
    ]
    return ae, roles


def outcome(contexts: list[PresentationContext]) -> list[tuple[object, ...]]:
    return sorted(
        (cx.context_id, cx.abstract_syntax, cx.result, tuple(cx.transfer_syntax))
        + ((cx.as_scu, cx.as_scp) if cx.result == 0x00 else ())
        for cx in contexts
    )


def test_many_proposed_contexts_get_the_results_and_roles_of_negotiating_over_every_supported(
    server: DimseServer,
) -> None:
    ae, roles = many_contexts()
    requested = ae.requested_contexts
    assert len(requested) == 128
    assoc = ae.associate("127.0.0.1", server.dimse_port, ae_title=AE_TITLE, ext_neg=roles)
    assert assoc.is_established
    try:
        got = outcome(assoc.accepted_contexts + assoc.rejected_contexts)
        got_roles = sorted(
            (str(uid), item.scu_role, item.scp_role)
            for uid, item in assoc.acceptor.role_selection.items()
        )
    finally:
        assoc.release()
    # What pynetdicom's own negotiation gives over the server's full list, as the acceptor.
    for number, context in enumerate(requested):
        context.context_id = 2 * number + 1
    expected, expected_roles = negotiate_as_acceptor(
        requested,
        scp_contexts(),
        {role.sop_class_uid: (role.scu_role, role.scp_role) for role in roles},
    )
    # The requestor's view of SCU/SCP is the acceptor's reversed.
    assert got == [
        entry if entry[2] != 0x00 else (*entry[:4], entry[5], entry[4])
        for entry in outcome(expected)
    ]
    assert got_roles == sorted(
        (str(role.sop_class_uid), role.scu_role, role.scp_role) for role in expected_roles
    )
    results = {entry[2] for entry in got}
    assert results == {0x00, 0x03, 0x04}  # accepted, SOP class and transfer syntax rejected


@contextlib.contextmanager
def listener(
    contexts: list[str], handlers: list[tuple[evt.EventType, Any]], network_timeout: float = 60
) -> Iterator[tuple[AE, int]]:
    """A bare listener with this server's association classes (no store): its AE and port."""
    _quiet_pynetdicom()
    ae = AE(ae_title=AE_TITLE)
    ae.network_timeout = network_timeout
    for context in contexts:
        ae.add_supported_context(context)
    server = ae.make_server(
        ("127.0.0.1", 0),
        evt_handlers=handlers,
        server_class=_SharedPortServer,
        request_handler=request_handler(),
    )
    server.contexts = SupportedContexts(server.contexts)
    ae._servers.append(server)  # so ae.shutdown() stops it, as DimseServer does
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield ae, server.server_address[1]
    finally:
        ae.shutdown()


def echo_association(port: int) -> Association:
    """An established association to the listener on ``port`` for C-ECHO (DIMSE timeout 5 s)."""
    requestor = AE(ae_title="ECHOSCU")
    requestor.add_requested_context(Verification)
    requestor.dimse_timeout = 5
    assoc = requestor.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established
    return assoc


def test_an_ended_association_is_freed_without_the_cyclic_garbage_collector() -> None:
    """Each association's few hundred objects go when it ends, by reference counting, rather
    than as cyclic garbage a collection has to find (its CPU is paid per association)."""
    accepted: list[weakref.ref[object]] = []
    ended = threading.Event()
    handlers = [
        (evt.EVT_ACCEPTED, lambda event: accepted.append(weakref.ref(event.assoc))),
        (evt.EVT_CONN_CLOSE, lambda event: ended.set()),
    ]
    with listener([Verification], handlers) as (_, port):
        collecting = gc.isenabled()
        gc.collect()
        gc.disable()
        try:
            assoc = echo_association(port)
            assert assoc.send_c_echo().Status == 0x0000
            assoc.release()
            assert ended.wait(10)
            deadline = time.monotonic() + 10
            while accepted[0]() is not None and time.monotonic() < deadline:
                time.sleep(0.01)  # its thread releases the last references as it ends
            assert accepted[0]() is None
        finally:
            if collecting:
                gc.enable()


def test_c_store_and_c_echo_are_served_by_the_thread_that_read_them_c_find_by_the_reactor() -> None:
    """A C-STORE or C-ECHO is answered without handing it to the association's reactor thread
    and its response back (two thread wake-ups a request); a C-FIND stays on the reactor, so
    the upper layer goes on reading (a C-CANCEL) while it runs. Answers stay in order."""
    served: list[tuple[str, str]] = []

    def which(kind: str, status: int) -> Any:
        def handler(event: evt.Event) -> Any:
            thread = threading.current_thread()
            served.append((kind, "upper layer" if thread is event.assoc else "reactor"))
            if kind == "find":
                return iter([(0x0000, None)])
            return status

        return handler

    handlers = [
        (evt.EVT_C_ECHO, which("echo", 0x0000)),
        (evt.EVT_C_STORE, which("store", 0x0000)),
        (evt.EVT_C_FIND, which("find", 0x0000)),
    ]
    with listener(
        [Verification, CTImageStorage, StudyRootQueryRetrieveInformationModelFind], handlers
    ) as (_, port):
        requestor = AE(ae_title="SCU")
        for context in (Verification, CTImageStorage, StudyRootQueryRetrieveInformationModelFind):
            requestor.add_requested_context(context)
        assoc = requestor.associate("127.0.0.1", port, ae_title=AE_TITLE)
        assert assoc.is_established
        try:
            instance = dcmread(get_testdata_file("CT_small.dcm"))
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = ""
            statuses = [
                assoc.send_c_echo().Status,
                assoc.send_c_store(instance).Status,
                [
                    status.Status
                    for status, _ in assoc.send_c_find(
                        query, StudyRootQueryRetrieveInformationModelFind
                    )
                ],
                assoc.send_c_store(instance).Status,
            ]
        finally:
            assoc.release()
    assert statuses == [0x0000, 0x0000, [0x0000], 0x0000]
    assert served == [
        ("echo", "upper layer"),
        ("store", "upper layer"),
        ("find", "reactor"),
        ("store", "upper layer"),
    ]


def test_a_request_sent_right_after_the_a_associate_ac_is_answered() -> None:
    """The requestor may send its first request as soon as it has the A-ASSOCIATE-AC, before
    the acceptor has marked the association established (pynetdicom does so after its
    EVT_ACCEPTED handlers, made slow here): the request waits for that, and is answered."""
    handlers = [(evt.EVT_ACCEPTED, lambda event: time.sleep(0.3))]
    with listener([Verification], handlers) as (_, port):
        assoc = echo_association(port)
        try:
            assert assoc.send_c_echo().Status == 0x0000
        finally:
            assoc.release()


def test_a_service_failing_unexpectedly_aborts_the_association_and_its_threads_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pynetdicom aborts an association whose service raised; served on the upper layer's
    thread, that abort must not wait for the very thread it runs on: the requestor sees the
    abort, and the association's thread (running its upper layer) ends."""

    def broken(self: object, request: object, context: object) -> None:
        raise RuntimeError("a service bug")

    monkeypatch.setattr(VerificationServiceClass, "SCP", broken)
    accepted: list[Any] = []
    handlers = [(evt.EVT_ACCEPTED, lambda event: accepted.append(event.assoc))]
    with listener([Verification], handlers) as (_, port):
        assoc = echo_association(port)
        assoc.send_c_echo()
        deadline = time.monotonic() + 10
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.01)
        assert assoc.is_aborted
        served = accepted[0]
        served.join(10)
        served.dul.join(10)
        assert not served.is_alive() and not served.dul.is_alive()


def reactors() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.endswith("-reactor")]


def test_an_association_that_only_echoes_has_one_thread_one_that_finds_two() -> None:
    """The association's own thread runs its upper layer and does its negotiation and release;
    the reactor's thread is started for the first request it serves (a C-FIND), and both end
    with the association. Each is released as pynetdicom releases it."""
    outcomes: list[tuple[str, bool]] = []
    ended = threading.Event()

    def note(what: str) -> Any:
        return lambda event: outcomes.append((what, bool(reactors())))

    handlers = [
        (evt.EVT_C_ECHO, lambda event: outcomes.append(("echo", bool(reactors()))) or 0x0000),
        (evt.EVT_C_FIND, lambda event: iter([(0xFF00, event.identifier), (0x0000, None)])),
        (evt.EVT_RELEASED, note("released")),
        (evt.EVT_CONN_CLOSE, lambda event: ended.set()),
    ]
    with listener([Verification, StudyRootQueryRetrieveInformationModelFind], handlers) as (
        ae,
        port,
    ):
        assoc = echo_association(port)
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
        assert assoc.is_released and ended.wait(10)
        ended.clear()
        requestor = AE(ae_title="SCU")
        requestor.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = requestor.associate("127.0.0.1", port, ae_title=AE_TITLE)
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        answers = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
        assert [status.Status for status, _ in answers] == [0xFF00, 0x0000]
        assoc.release()
        assert assoc.is_released and ended.wait(10)
        deadline = time.monotonic() + 10
        while (ae.active_associations or reactors()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not ae.active_associations and not reactors()
    assert outcomes == [("echo", False), ("released", False), ("released", True)]


@pytest.mark.parametrize("ending", ["abort", "dropped connection", "network timeout"])
def test_an_association_without_a_reactor_notices_an_abort_and_times_out(ending: str) -> None:
    """Without a reactor thread, the association's thread reports an abort by the peer (an
    A-ABORT, or the connection closed without one) and aborts an idle association after the
    network timeout, as pynetdicom's reactor does."""
    aborted = threading.Event()
    handlers = [(evt.EVT_ABORTED, lambda event: aborted.set())]
    with listener([Verification], handlers, network_timeout=0.5) as (ae, port):
        assoc = echo_association(port)
        assert assoc.send_c_echo().Status == 0x0000
        if ending == "abort":
            assoc.abort()
        elif ending == "dropped connection":
            connection = assoc.dul.socket.socket  # type: ignore[union-attr]
            connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        assert aborted.wait(10)
        if ending == "network timeout":
            deadline = time.monotonic() + 10
            while not assoc.is_aborted and time.monotonic() < deadline:
                time.sleep(0.01)
            assert assoc.is_aborted
        deadline = time.monotonic() + 10
        while ae.active_associations and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not ae.active_associations


def test_the_socket_reads_what_has_arrived_and_keeps_what_follows_the_pdu_asked_for() -> None:
    """One recv for a PDU's header and body, and for several PDUs sent together: the bytes
    past the PDU read are the next one's, ready without another system call; a PDU split
    over several writes is still read whole; a closed connection gives what was read."""
    assoc = _BlockingAssociation(AE(ae_title=AE_TITLE), MODE_ACCEPTOR)
    ours, peer = socket.socketpair()
    try:
        connection = _AssociationSocket(assoc, client_socket=ours)
        assert not connection.ready
        first, second = b"\x04\x00\x00\x00\x00\x03abc", b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
        peer.sendall(first + second)
        assert connection.ready
        assert connection.recv(6) == first[:6] and connection.recv(3) == b"abc"
        assert connection.ready  # (from what was read with the first)
        assert connection.recv(6) + connection.recv(4) == second
        assert not connection.ready
        peer.sendall(second[:3])
        threading.Timer(0.1, peer.sendall, [second[3:]]).start()
        assert connection.recv(6) == second[:6] and connection.recv(4) == second[6:]
        peer.sendall(first[:4])
        peer.close()
        assert connection.recv(6) == first[:4]
    finally:
        ours.close()
        assoc.dul._wake_reader.close()  # type: ignore[attr-defined]
        assoc.dul._wake_writer.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kind", "values"),
    [
        ("AE", ["STORESCU", " PADDED  ", "x" * 17, "BACK\\SLASH", "TAB\tS", "ÄE", ""]),
        ("UI", ["1.2.840.10008.1.1", "1.2.3.", "01.2", "1." + "2" * 70, "abc", ""]),
    ],
)
def test_remembered_validators_answer_as_pynetdicoms(kind: str, values: list[str]) -> None:
    from pynetdicom import _config
    from pynetdicom._validators import validate_ae, validate_ui

    from dicomql.dimse.transport import memoize_validators

    default = {"AE": validate_ae, "UI": validate_ui}[kind]
    saved = dict(_config.VALIDATORS)
    try:
        _config.VALIDATORS[kind] = default
        memoize_validators()
        remembered = _config.VALIDATORS[kind]
        assert remembered is not default
        for enforce in (False, True):
            _config.ENFORCE_UID_CONFORMANCE = enforce
            for value in [*values, None, b"bytes"]:
                for _ in range(2):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # pydicom's, on an invalid UID
                        given = UID(value) if kind == "UI" and isinstance(value, str) else value
                        assert remembered(given) == default(given), value
        mine = lambda value: (True, "")  # noqa: E731
        _config.VALIDATORS[kind] = mine
        memoize_validators()
        assert _config.VALIDATORS[kind] is mine  # someone else's: left alone
    finally:
        _config.ENFORCE_UID_CONFORMANCE = False
        _config.VALIDATORS.clear()
        _config.VALIDATORS.update(saved)


def test_a_connection_closed_before_its_a_associate_rq_ends_its_association_at_once() -> None:
    """pynetdicom waited out the ACSE timeout (30 s) for an A-ASSOCIATE-RQ that could no longer
    come, the association counting against the server's maximum meanwhile (a TCP health check
    held a slot for 30 s); one that stays silent still waits the ACSE timeout."""
    with listener([Verification], []) as (ae, port):
        socket.create_connection(("127.0.0.1", port)).close()
        silent = socket.create_connection(("127.0.0.1", port))
        deadline = time.monotonic() + 5
        while len(ae.active_associations) != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert len(ae.active_associations) == 1  # the silent one, within its ACSE timeout
        silent.close()
        deadline = time.monotonic() + 5
        while ae.active_associations and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not ae.active_associations
