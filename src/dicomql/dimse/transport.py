"""Blocking waits for pynetdicom's per-association threads, in place of its 1 ms polling.

pynetdicom 3.0 runs two threads per accepted association: the upper layer's reactor
(``DULServiceProvider.run_reactor``: reads PDUs, sends what the association queued) and the
association's reactor (``Association._run_reactor``: serves DIMSE requests, notices release,
abort and the network timeout). Both sleep 1 ms whenever they find nothing to do, so an idle
association costs ~6 % of a core, and a C-STORE pays for the polls around it. pynetdicom has no
setting for this (``_run_loop_delay`` only trades CPU for latency), so here each thread sleeps
until something it would act on happens:

- the upper layer in ``select`` on the connection and a wake-up socket that every put on its
  two input queues (primitives from the association, state-machine events) and a kill write to,
  with the ARTIM timer's remaining time as the timeout;
- the association on an event that the upper layer sets for every DIMSE message and ACSE
  primitive it hands up and when it stops, with the network (idle) timer's remaining time as
  the timeout.

Nor are there two threads from the start: the association's own thread runs the upper layer's
loop, and does the association's work between requests itself when that loop has nothing left
to do (:meth:`_BlockingAssociation.attend`: the A-ASSOCIATE-RQ and negotiation, the
A-RELEASE-RQ, an abort), until a request comes that the reactor serves; the reactor then
starts on a thread of its own and does that work from then on, as in pynetdicom. A C-STORE or
C-ECHO is served on the thread that read it, not handed to the association's reactor and its
response back (:meth:`_BlockingAssociation.serve_here`), so an association that only echoes
or stores has one thread and no hand-off between threads at all; a response's P-DATA is sent
by the thread that made it over plain TCP (:meth:`_DIMSE._sends_here`), a response's PDUs in
one write: one wake-up fewer per C-FIND answer, and one system call for a match's command and
identifier.

Each association also encodes its C-ECHO, C-STORE and C-FIND responses' command sets itself
and decodes those requests' (:mod:`dicomql.dimse.commands`), rather than through a pydicom
Dataset.

Each loop's body is pynetdicom's own, unchanged (the association's work done on the upper
layer's thread is copied from its reactor's), and every wait also ends after ``MAX_WAIT``
seconds, so a condition these signals miss is still seen, late, rather than never. Only
associations this server accepts use these classes (associations it requests for C-MOVE and
storage commitment are pynetdicom's own), and only on the pynetdicom versions in
``_SUPPORTED``; on any other, :func:`request_handler` returns pynetdicom's stock handler.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import queue
import select
import socket
import ssl
import struct
import threading
import time
import weakref
from copy import deepcopy
from datetime import datetime
from typing import Any, cast

import pynetdicom
from pydicom.uid import UID
from pynetdicom import _config, evt
from pynetdicom._globals import MODE_ACCEPTOR, MODE_REQUESTOR
from pynetdicom._validators import validate_ae, validate_ui
from pynetdicom.acse import ACSE
from pynetdicom.association import Association, ServiceUser
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import StateMachine
from pynetdicom.pdu import A_ABORT_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import A_ASSOCIATE, P_DATA
from pynetdicom.presentation import PresentationContext
from pynetdicom.timer import Timer
from pynetdicom.transport import AddressInformation, AssociationSocket, RequestHandler
from pynetdicom.utils import make_target

from dicomql.dimse.commands import command_set, request
from dicomql.dimse.queues import Checkpoint, LightQueue, MessageQueue, WakingQueue

log = logging.getLogger(__name__)
# pynetdicom's own logger: the copied loops report as pynetdicom's do.
_pynetdicom_log = logging.getLogger("pynetdicom")

# The loops below copy pynetdicom 3.0's; another version keeps its own (polling) loops.
_SUPPORTED = ("3.0.",)
# Upper bound of one wait: a missed wake-up costs at most this much latency, and an idle
# association wakes 2 / MAX_WAIT times a second instead of 2,000.
MAX_WAIT = 0.5
# How long an ended association's thread waits for its upper layer to stop (it has been told
# to: within one wait) before releasing their references to each other.
_RELEASE_WAIT = 4 * MAX_WAIT
# A timer already expired (pynetdicom would check it every millisecond): wait at least this.
_MIN_WAIT = 0.001


def supported(version: str = pynetdicom.__version__) -> bool:
    """Whether the blocking loops match this pynetdicom's (their bodies are copies of its)."""
    return version.startswith(_SUPPORTED)


def _timeout(remaining: float) -> float:
    return min(MAX_WAIT, max(_MIN_WAIT, remaining))


# The requests served on the thread that read them (_BlockingAssociation.serve_here): short,
# and never waiting for the peer (a C-FIND waits on it, and reads its C-CANCEL meanwhile).
_SERVED_HERE = (C_STORE, C_ECHO)


class _DIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, sending responses :func:`command_set` encodes itself and
    reading requests :func:`request` decodes itself."""

    def __init__(self, assoc: Association, messages: queue.Queue[Any] | None = None) -> None:
        # pynetdicom 3.0's DIMSEServiceProvider.__init__, with the association's message queue
        # (not a queue built and then replaced).
        self._assoc = assoc
        self.cancel_req = {}
        self.message = None
        self.msg_queue = queue.Queue() if messages is None else messages
        # The request whose data set is being received: (primitive, its parameter, context
        # ID, the data set so far).
        self._receiving: tuple[Any, str, int, io.BytesIO] | None = None
        self._peer_maximum_pdu_size: int | None = None

    @property
    def maximum_pdu_size(self) -> int:
        """The peer's maximum PDU length, as pynetdicom's (which looks for it among the peer's
        user information items at every message), kept once the association is established
        (it was negotiated then)."""
        size = self._peer_maximum_pdu_size
        if size is None:
            size = super().maximum_pdu_size
            if self.assoc.is_established:
                self._peer_maximum_pdu_size = size
        return size

    def receive_primitive(self, primitive: Any) -> None:
        if self._receiving is not None:
            self._receive_data_set(primitive.presentation_data_value_list)
        elif (
            self.message is not None  # pynetdicom's message in progress
            or _config.STORE_RECV_CHUNKED_DATASET
            or self.assoc.get_handlers(evt.EVT_DIMSE_RECV)  # expects pynetdicom's message
            or not self._start(primitive)
        ):
            super().receive_primitive(primitive)

    def _start(self, primitive: Any) -> bool:
        """Take a P-DATA that begins with a whole command set of a request decoded here."""
        fragments = primitive.presentation_data_value_list
        if not fragments or fragments[0][1][:1] != b"\x03":  # the last command fragment
            return False
        context_id, data = fragments[0]
        try:
            decoded = request(data[1:])
        except Exception as exc:  # what pynetdicom's receive_primitive does with it
            _pynetdicom_log.error("Received an invalid DIMSE message")
            _pynetdicom_log.exception(exc)
            self.dul.event_queue.put("Evt19")
            return True
        if decoded is None:
            return False
        message, parameter = decoded
        message._context_id = context_id
        if parameter is None:
            self._deliver(context_id, message)
        else:
            self._receiving = (message, parameter, context_id, io.BytesIO())
            self._receive_data_set(fragments[1:])
        return True

    def _receive_data_set(self, fragments: list[tuple[int, bytes]]) -> None:
        assert self._receiving is not None
        message, parameter, context_id, data_set = self._receiving
        for _, data in fragments:
            if data[0] & 1:  # a command fragment before the data set ended
                _pynetdicom_log.error("Received an invalid DIMSE message")
                self._receiving = None
                self.dul.event_queue.put("Evt19")
                return
            data_set.write(data[1:])
            if data[0] & 2:  # the last data set fragment
                self._receiving = None
                setattr(message, parameter, data_set)
                self._deliver(context_id, message)
                return

    def _deliver(self, context_id: int, message: Any) -> None:
        """A whole request: a C-STORE or C-ECHO served here when the association lets it
        (:meth:`_BlockingAssociation.serve_here`), anything else to the association's reactor."""
        assoc = self.assoc
        served_here = (
            isinstance(message, _SERVED_HERE)
            and isinstance(assoc, _BlockingAssociation)
            and assoc.serve_here(message, context_id)
        )
        if not served_here:
            self.msg_queue.put((context_id, message))

    def send_msg(self, primitive: Any, context_id: int) -> None:
        encoded = command_set(primitive)
        # Bound EVT_DIMSE_SENT handlers (pynetdicom's logging at INFO) expect its message.
        if encoded is None or self.assoc.get_handlers(evt.EVT_DIMSE_SENT):
            super().send_msg(primitive, context_id)
            return
        identifier = getattr(primitive, "Identifier", None)
        data = identifier.getvalue() if identifier else b""
        # As DIMSEMessage.encode_msg: PDVs of at most the peer's maximum PDU length less their
        # headers, one PDV per P-DATA, the control header marking command or data set and last.
        maximum = self.maximum_pdu_size
        size = maximum - 6 if maximum else 0
        values = [
            bytes([last if number == len(fragments) else more]) + fragment
            for fragments, more, last in (
                (_fragments(encoded, size), 1, 3),
                (_fragments(data, size), 0, 2),
            )
            for number, fragment in enumerate(fragments, 1)
        ]
        assoc = self.assoc
        if (
            self._sends_here()
            and not assoc.get_handlers(evt.EVT_PDU_SENT)
            and not assoc.get_handlers(evt.EVT_DATA_SENT)  # would see the PDUs joined
        ):
            # Its P-DATA-TF PDUs in one write (the upper layer's DT-1 for each, the same
            # bytes): a C-FIND match's command and identifier took two system calls.
            connection = cast(_AssociationSocket, self.dul.socket)
            connection.send(b"".join(_p_data_tf(context_id, value) for value in values))
            return
        for value in values:
            pdata = P_DATA()
            pdata.presentation_data_value_list.append((context_id, value))
            self._send_pdata(pdata)

    def _send_pdata(self, pdata: P_DATA) -> None:
        """Send a P-DATA on this thread when :meth:`_sends_here`, else queue it for the
        upper layer."""
        if self._sends_here():
            self.dul._send(P_DATA_TF(pdata))
        else:
            self.dul.send_pdu(pdata)

    def _sends_here(self) -> bool:
        """Whether this thread sends a P-DATA itself, as the upper layer's DT-1 would (in Sta6:
        a P-DATA-TF PDU, the state unchanged): when nothing is queued before it, so that the
        reactor's responses (C-FIND's, one a match) do not wake the upper layer's thread to
        send each. Not when the state machine's transitions are watched, nor over TLS (an
        OpenSSL connection must not write in one thread while it reads in another, as the
        upper layer's thread may be doing)."""
        dul = self.dul
        connection = dul.socket
        return (
            isinstance(connection, _AssociationSocket)
            and not isinstance(connection.socket, ssl.SSLSocket)
            and dul.state_machine.current_state == "Sta6"
            and dul.to_provider_queue.empty()
            and not self.assoc.get_handlers(evt.EVT_FSM_TRANSITION)
        )


def _p_data_tf(context_id: int, value: bytes) -> bytes:
    """A P-DATA-TF PDU of one presentation data value (PS3.8 9.3.5): its type, a reserved
    byte and its length, then the item's length, the presentation context ID and the value
    (the message control header and the fragment), as pynetdicom's ``P_DATA_TF.encode``."""
    return struct.pack(">BxIIB", 0x04, len(value) + 5, len(value) + 1, context_id) + value


def _fragments(data: bytes, size: int) -> list[bytes]:
    if not data:
        return []
    if size <= 0:
        return [data]
    return [data[start : start + size] for start in range(0, len(data), size)]


class _BlockingDUL(DULServiceProvider):
    """The upper layer, sleeping in ``select`` between events instead of 1 ms at a time."""

    def __init__(self, assoc: Association) -> None:
        # pynetdicom 3.0's DULServiceProvider.__init__ with the waking queues built in place of
        # its three plain ones (not built and then replaced).
        self._assoc = assoc
        self.socket = None
        self.event_queue = cast("queue.Queue[Any]", WakingQueue(self._wake_for_put))
        self.to_provider_queue = cast("queue.Queue[Any]", WakingQueue(self._wake_for_put))
        self.to_user_queue = cast("queue.Queue[Any]", WakingQueue(self._wake_association))
        self._recv_pdu = cast("queue.Queue[Any]", LightQueue())
        self._idle_timer = Timer(60)
        self.artim_timer = Timer(30)
        self.state_machine = StateMachine(self)
        self._run_loop_delay = 0.001
        # (A Thread, as pynetdicom's code expects, though never started: the association's
        # own thread runs this loop, see _BlockingAssociation.run_reactor.)
        threading.Thread.__init__(self)
        self.daemon = False
        self._kill_thread = False
        # The thread running the loop while it runs, and that it has ended.
        self._loop_thread: threading.Thread | None = None
        self._running = False
        self._stopped = threading.Event()
        # Socket objects rather than a pipe's descriptors: a write after close() raises
        # instead of reaching whatever file reused the number.
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)

    def is_alive(self) -> bool:
        """Whether the loop runs (on the association's thread), as a started upper layer's
        thread would be alive."""
        return self._running

    def join(self, timeout: float | None = None) -> None:
        if self._loop_thread is not None:
            self._stopped.wait(timeout)

    def _wake(self) -> None:
        # Full: a wake-up is pending anyway. Closed: the reactor has stopped.
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")

    def _wake_for_put(self) -> None:
        # The loop's own puts (the event of a PDU it read, those of its actions, those of the
        # association's work done on its thread) come before it looks at its queues again, so
        # only another thread's need a wake-up (a system call).
        # Nor a put before the loop starts: it looks at its queues first.
        loop_thread = self._loop_thread
        if loop_thread is not None and threading.current_thread() is not loop_thread:
            self._wake()

    def on_loop_thread(self) -> bool:
        return threading.current_thread() is self._loop_thread

    def _wake_association(self) -> None:
        work = getattr(self.assoc, "_work", None)
        if work is not None:
            work.set()

    def _wait(self) -> None:
        """Until the peer sent data, the association queued something, or the ARTIM timer is
        due; what pynetdicom does is ``time.sleep(self._run_loop_delay)``."""
        readers: list[Any] = [self._wake_reader]
        transport = self.socket
        connection = None
        if transport is not None and transport.socket is not None and transport._is_connected:
            connection = transport.socket
            # TLS may hold decrypted bytes that select cannot see (pynetdicom #528), and so may
            # the socket's own buffer.
            if isinstance(transport, _AssociationSocket) and transport._buffer:
                return
            if isinstance(connection, ssl.SSLSocket) and connection.pending():
                return
            readers.append(connection)
        association = cast(_BlockingAssociation, self.assoc)
        remaining = min(self.artim_timer.remaining, association._due_in())
        try:
            readable, _, _ = select.select(readers, [], [], _timeout(remaining))
        except (OSError, ValueError):
            return  # a closed connection: the loop's own check reports Evt17
        if isinstance(transport, _AssociationSocket) and connection in readable:
            transport._readable = True  # (its ready need not ask select again)
        if self._wake_reader in readable:
            # (Wake-ups are single bytes: more than this many pending wake it again at once.)
            with contextlib.suppress(OSError):
                self._wake_reader.recv(4096)

    def kill_dul(self) -> None:
        super().kill_dul()
        if not self.on_loop_thread():  # (the state machine's actions kill it on the loop's)
            self._wake()

    def stop_dul(self) -> bool:
        if self.state_machine.current_state == "Sta1":
            self._kill_thread = True
            self._wake()
        return super().stop_dul()

    def run_reactor(self) -> None:
        self._loop_thread = threading.current_thread()
        self._running = True
        try:
            self._run_blocking_reactor()
        finally:
            self._running = False
            self._stopped.set()
            self._wake_association()  # the reactor notices that its upper layer stopped
            self._wake_writer.close()
            self._wake_reader.close()

    def _run_blocking_reactor(self) -> None:
        # pynetdicom 3.0's DULServiceProvider.run_reactor; only the sleep is replaced.
        self._idle_timer.start()
        self.socket = cast(AssociationSocket, self.socket)
        sleep = False

        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                sleep = True

            if sleep:
                self._wait()

            if self._kill_thread:
                break

            if self.artim_timer.expired:
                self.event_queue.put("Evt18")

            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
                    # (Not waking the association's reactor, which waits on this timer: it wakes
                    # when the timer was due, finds it restarted and waits again.)
            except Exception as exc:
                _pynetdicom_log.error("Exception in DUL.run(), aborting association")
                _pynetdicom_log.exception(exc)
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return

            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                # (Not in pynetdicom's loop.) Nothing left to do here: the association's own
                # work, on this thread (_BlockingAssociation.attend); then, once it has been
                # killed, the loop ends with the connection (what stop_dul() would do).
                assoc = cast(_BlockingAssociation, self.assoc)
                if assoc.attend():
                    sleep = False
                    continue
                if assoc._kill and self.state_machine.current_state == "Sta1":
                    break
                sleep = True
                continue

            self.state_machine.do_action(event)
            sleep = False


# Association._bind_defaults's handlers by _config.LOG_HANDLER_LEVEL (see _bind_defaults).
_DEFAULT_HANDLERS: dict[str, dict[Any, Any]] = {}


def _copy_handlers(handlers: dict[Any, Any]) -> dict[Any, Any]:
    """An association's handlers as bind() records them, the lists (of notification events'
    handlers) copied."""
    return {
        event: list(bound) if isinstance(bound, list) else bound
        for event, bound in handlers.items()
    }


class _BlockingAssociation(Association):
    """An accepted association whose reactor waits for work instead of polling for it."""

    def __init__(self, ae: Any, mode: str) -> None:
        # pynetdicom 3.0's Association.__init__ with the upper layer, the DIMSE provider and
        # the reactor's checkpoint replaced: built once each, not built by it and then replaced
        # (a tenth of setting up an association).
        self._work = threading.Event()
        self._ae = ae
        self.mode = mode
        self._server = None
        self.requestor = ServiceUser(self, MODE_REQUESTOR)
        self.acceptor = ServiceUser(self, MODE_ACCEPTOR)
        self.is_established = False
        self.is_rejected = False
        self.is_aborted = False
        self.is_released = False
        self._sent_abort = False
        self._sent_release = False
        self._accepted_cx = {}
        self._rejected_cx = []
        self.acse = ACSE(self)
        self.dul = _BlockingDUL(self)
        self.dimse = _DIMSE(self, cast("queue.Queue[Any]", MessageQueue(self._message_queued)))
        self.acse_timeout = ae.acse_timeout
        self.connection_timeout = ae.connection_timeout
        self.dimse_timeout = ae.dimse_timeout
        self.network_timeout = ae.network_timeout
        self.network_timeout_response = "A-ABORT"
        self._handlers = {}
        self._bind_defaults()
        self._kill = False
        self._started_dul = False
        self._dul_ready = threading.Event()
        # A thread that pauses the reactor (send_* methods, the storage commitment report)
        # clears the checkpoint and waits until the reactor is paused at it: wake it to get there
        # (and the upper layer's loop, which starts it if it is not yet: attend).
        self._reactor_checkpoint = Checkpoint(self._pause_wanted)
        self._reactor_checkpoint.set()
        self._is_paused = False
        # Held by whichever thread serves a request: the reactor, or the upper layer's for a
        # C-STORE or C-ECHO (serve_here); and by another thread using the paused association.
        self.service_lock = threading.Lock()
        self._timer_resolution = _config.WINDOWS_TIMER_RESOLUTION
        # The reactor's thread, started for the first request it serves (see run_reactor).
        self._reactor: threading.Thread | None = None
        self._reactor_start = threading.Lock()
        # The A-ASSOCIATE-RQ was taken (or waited for in vain), and until when it is awaited.
        self._negotiated = False
        self._acse_deadline: float | None = None
        # The upper layer's loop, then the release of the object graph's cycles once it is done.
        threading.Thread.__init__(
            self, target=make_target(functools.partial(_serve_then_release, self))
        )
        self.daemon = True

    def _bind_defaults(self) -> None:
        """pynetdicom's default handlers, bound once for each logging level that decides them
        and copied for every other association (a tenth of building one)."""
        level = _config.LOG_HANDLER_LEVEL
        bound = _DEFAULT_HANDLERS.get(level)
        if bound is None:
            super()._bind_defaults()
            _DEFAULT_HANDLERS[level] = _copy_handlers(self._handlers)
        else:
            self._handlers = _copy_handlers(bound)

    def run_reactor(self) -> None:
        """pynetdicom 3.0's acceptor ``Association.run_reactor``, one thread for both loops
        until the association needs two: this thread runs the upper layer's loop, and takes
        the A-ASSOCIATE-RQ, answers the A-RELEASE-RQ and notes an abort itself whenever that
        loop has nothing left to do (:meth:`attend`), as pynetdicom's reactor would at that
        point; a C-ECHO or C-STORE is served as it is read (:meth:`serve_here`). Any other
        request starts the association's reactor on a thread of its own
        (:meth:`_start_reactor`), as pynetdicom runs it, which from then on does all of that
        instead. An association that only echoes or stores thus costs one thread, not two,
        and no hand-off between them for its negotiation and its release."""
        if self.acse_timeout is not None:
            self._acse_deadline = time.monotonic() + self.acse_timeout
        self._started_dul = True
        # (Set here, so the loop does not sleep before it looks at its queues: the transport
        # connection's event is queued already.)
        self._dul_ready.set()
        try:
            self.dul.run_reactor()
            if not self._kill and self._reactor is None:
                # The upper layer stopped by itself (an abort, a closed connection): what
                # pynetdicom's reactor then finds (it would also wait out the ACSE timeout for
                # an A-ASSOCIATE-RQ that can no longer come).
                if not self._negotiated:
                    self._take_request()
                if self.is_established:
                    self.attend()
                self.kill()
        finally:
            with self._reactor_start:  # (started, if it is set)
                reactor = self._reactor
            if reactor is not None:
                reactor.join()  # it notices that the upper layer stopped, and ends
                self._reactor = None
            # Ensure the connection is shutdown properly (as pynetdicom does)
            sock = cast(AssociationSocket, self.dul.socket)
            if self._server and sock.socket:
                self._server.shutdown_request(sock.socket)

    def attend(self) -> bool:
        """The association's work that pynetdicom's reactor does between requests, on the
        upper layer's thread while the reactor has not been started; True when it queued
        something for the upper layer to do."""
        if self._reactor is not None or self._kill:
            return False
        if not self._negotiated:
            return self._take_request()
        if not self.is_established:
            return False
        if not self._reactor_checkpoint.is_set() or self.service_lock.locked():
            # Another thread uses the association: the reactor waits for it, as in pynetdicom.
            self._start_reactor()
            return False
        # pynetdicom 3.0's Association._run_reactor, after serving a request.
        if self.acse.is_release_requested():
            self._release()
            return True
        if self.acse.is_aborted():
            self._end_aborted()
            return False
        if self.dul.idle_timer_expired():
            self._start_reactor()  # which times the association out, as pynetdicom's does
        return False

    def _release(self) -> None:
        """Answer the peer's A-RELEASE-RQ and end (pynetdicom 3.0's reactor)."""
        self.acse.send_release(is_response=True)
        _pynetdicom_log.info("Association Released")
        self.is_released = True
        self.is_established = False
        evt.trigger(self, evt.EVT_RELEASED, {})
        self.kill()

    def _end_aborted(self) -> None:
        """End after an A-ABORT or A-P-ABORT (pynetdicom 3.0's reactor)."""
        log_msg = "Association Aborted"
        if self.acse.is_aborted("a-p-abort"):
            log_msg += " (A-P-ABORT)"
        _pynetdicom_log.info(log_msg)
        self.dul.receive_pdu(wait=False)
        self.is_aborted = True
        self.is_established = False
        evt.trigger(self, evt.EVT_ABORTED, {})
        self.kill()

    def _take_request(self) -> bool:
        """pynetdicom 3.0's acceptor run_reactor up to its reactor loop: the A-ASSOCIATE-RQ
        (awaited for the ACSE timeout), the EVT_REQUESTED handlers, the negotiation."""
        primitive = self.dul.receive_pdu(wait=False)
        if primitive is None:
            if self._acse_deadline is not None and time.monotonic() >= self._acse_deadline:
                self._negotiated = True
                self.kill()  # timed out waiting for the A-ASSOCIATE-RQ
            return False
        self._negotiated = True
        self.requestor.primitive = cast(A_ASSOCIATE, primitive)
        evt.trigger(self, evt.EVT_REQUESTED, {})
        # User used EVT_REQUESTED to send an A-ABORT or A-ASSOCIATE-RJ
        if not self.is_aborted and not self.is_rejected:
            self.acse.negotiate_association()
        if not self.is_established:
            self.kill()
            if self.dul.to_provider_queue.empty():
                # Nothing to send (an answer would be queued): the connection is shut down
                # at once, as pynetdicom's run_reactor does.
                sock = cast(AssociationSocket, self.dul.socket)
                if self._server and sock.socket:
                    self._server.shutdown_request(sock.socket)
        return True

    def _due_in(self) -> float:
        """Seconds until :meth:`attend` has a timer to act on: the ACSE timeout before the
        A-ASSOCIATE-RQ, the network timeout once established (while the reactor, which
        watches it otherwise, has not been started)."""
        if self._reactor is not None or self._kill:
            return MAX_WAIT
        if not self._negotiated:
            if self._acse_deadline is None:
                return MAX_WAIT
            return self._acse_deadline - time.monotonic()
        if self.is_established:
            return self.dul._idle_timer.remaining
        return MAX_WAIT

    def _pause_wanted(self) -> None:
        self._work.set()
        dul = cast(_BlockingDUL, self.dul)
        if self._reactor is None and not dul.on_loop_thread():
            dul._wake()

    def _message_queued(self, item: tuple[int | None, Any]) -> None:
        """A DIMSE message for the reactor (one not served here, or a response to a request
        this side sent): started if it is not yet, and woken. Not started for the upper
        layer's ``(None, None)`` when its connection closes, nor before the association is
        established or once it is ending: pynetdicom's reactor runs only in between."""
        if item[1] is not None and self.is_established and not self._kill:
            self._start_reactor()
        self._work.set()

    def _start_reactor(self) -> None:
        """The association's reactor on a thread of its own, from now on."""
        if self._reactor is not None:
            return
        with self._reactor_start:
            if self._reactor is None:
                reactor = threading.Thread(
                    target=make_target(self._run_reactor),
                    name=f"{self.name}-reactor",
                    daemon=True,
                )
                self._reactor = reactor  # (first: attend() must stop at once)
                reactor.start()

    def kill(self) -> None:
        self._work.set()
        dul = cast(_BlockingDUL, self.dul)
        # As pynetdicom's kill(), which then waits until the upper layer is idle (Sta1) and
        # stops it: the upper layer's loop ends by itself then (see _BlockingDUL).
        self._reactor_checkpoint.set()
        self._kill = True
        self.is_established = False
        self._is_paused = True
        if dul.on_loop_thread():
            return  # it cannot wait for itself; its loop ends once the connection is closed
        dul._wake()
        dul.join()

    def serve_here(self, message: Any, context_id: int) -> bool:
        """Serve a whole C-STORE or C-ECHO request on the calling thread, the upper layer's,
        which read it: no hand-off to the reactor and back for the response (two thread
        wake-ups a request). False, leaving it to the reactor, unless the association is
        established (a request can arrive before the reactor, which sent the A-ASSOCIATE-AC,
        has marked it so, and pynetdicom's services answer nothing on an association that is
        not), its context was accepted (else pynetdicom aborts), no other request is being
        served or waiting (requests are served one at a time, in order), and no other thread
        has paused the reactor to use the association (a storage commitment report).
        """
        if not self.is_established or self._kill or self._sent_release:
            return False
        if context_id not in self._accepted_cx:
            return False
        if not self.service_lock.acquire(blocking=False):
            return False
        try:
            if not self._reactor_checkpoint.is_set() or not self.dimse.msg_queue.empty():
                return False
            self._serve_request(message, context_id)
            # Served, so not idle: a long C-STORE must not leave the network timer expired.
            self.dul._idle_timer.restart()
        finally:
            self.service_lock.release()
        return True

    def _await_work(self) -> None:
        """Until a DIMSE message or ACSE primitive arrives, the upper layer stops, the
        association is killed or the network timer is due; pynetdicom sleeps 1 ms."""
        self._work.clear()
        if self._kill or not self.dimse.msg_queue.empty() or not self.dul.to_user_queue.empty():
            return
        if not self.dul.is_alive():
            return
        self._work.wait(_timeout(self.dul._idle_timer.remaining))

    def _run_reactor(self) -> None:
        # pynetdicom 3.0's Association._run_reactor; only the sleep is replaced.
        self._is_paused = False
        while not self._kill:
            self._await_work()

            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            with self.service_lock:  # (not in pynetdicom's loop; see serve_here)
                context_id, msg = self.dimse.get_msg(block=False)
                if msg:
                    self._serve_request(msg, cast(int, context_id))

            if self.is_established and self.acse.is_release_requested():
                self._release()
                return

            if self.acse.is_aborted():
                self._end_aborted()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            # (Not while the upper layer's thread serves a request: see serve_here.)
            if self.dul.idle_timer_expired() and not self.service_lock.locked():
                _pynetdicom_log.error("Network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()

                self.kill()
                return

        # (Not in pynetdicom's loop.) Killed on the upper layer's thread, which does not wait
        # for itself to stop (see kill): this waits until it has.
        self.kill()


class _AssociationSocket(AssociationSocket):
    """pynetdicom's socket, reading what has arrived, up to 64 KiB, rather than 4 KiB at a time
    and exactly the bytes asked for: one system call for most PDUs (its header and the rest
    were two, and a C-STORE of 38 KB ~15), the bytes read past a PDU kept for the next. Still
    read as it arrives, so a peer announcing a huge PDU holds no buffer it did not send. Sends
    are serialized: more than one thread sends on it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The upper layer's thread and the one serving a request both send (_DIMSE.send_msg).
        self._sending = threading.Lock()
        # Bytes read past what recv() was asked for, and whether select found the connection
        # readable (the upper layer's wait) since it was last read.
        self._buffer = bytearray()
        self._readable = False

    def send(self, bytestream: bytes) -> None:
        with self._sending:
            super().send(bytestream)

    @property
    def ready(self) -> bool:
        if self.socket is None or self._is_connected is False:
            return False
        if self._buffer or self._readable:
            return True
        return bool(super().ready)

    def recv(self, nr_bytes: int) -> bytearray:
        received = self._buffer
        if len(received) >= nr_bytes:
            wanted = received[:nr_bytes]
            del received[:nr_bytes]
            return wanted
        self._buffer = bytearray()
        self._readable = False
        connection = cast(socket.socket, self.socket)
        while len(received) < nr_bytes:
            data = connection.recv(_RECEIVE_SIZE)
            if not data:  # the connection broke: what was read, as pynetdicom's
                break
            received += data
        if len(received) > nr_bytes:
            self._buffer = received[nr_bytes:]
            del received[nr_bytes:]
        return received


# Bytes asked of one recv: below the allocator's mmap threshold (128 KiB), so each call's
# buffer is not mapped and unmapped again.
_RECEIVE_SIZE = 65536


class SupportedContexts(list[PresentationContext]):
    """The server's supported presentation contexts, shared by every association: pynetdicom
    deep-copies the server's list for each one (~60 ms of CPU for every storage SOP class ×
    every transfer syntax), though negotiation only reads it. Each association negotiates over
    those of its requested abstract syntaxes only (:func:`_offer_requested_contexts`)."""

    def __init__(self, contexts: list[PresentationContext]) -> None:
        super().__init__(contexts)
        # As negotiate_as_acceptor indexes them: the last context of an abstract syntax wins.
        self.by_abstract_syntax = {context.abstract_syntax: context for context in self}

    def __deepcopy__(self, memo: dict[int, Any]) -> SupportedContexts:
        return self


def _offer_requested_contexts(event: evt.Event) -> None:
    """Before negotiation (EVT_REQUESTED): the acceptor's supported contexts narrowed to the
    abstract syntaxes the A-ASSOCIATE-RQ proposes. ``negotiate_as_acceptor`` only looks those
    up, so the outcome is the same, without indexing every supported context per association.
    The full list stays when none is supported (pynetdicom answers that case apart) and for
    pynetdicom's unrestricted storage service, which accepts what is not in the list."""
    assoc = event.assoc
    supported = assoc.acceptor._contexts
    request = assoc.requestor.primitive
    if not isinstance(supported, SupportedContexts) or request is None:
        return
    if _config.UNRESTRICTED_STORAGE_SERVICE:
        return
    by_abstract_syntax = supported.by_abstract_syntax
    offered: dict[int, PresentationContext] = {}
    for context in request.presentation_context_definition_list:
        match = by_abstract_syntax.get(context.abstract_syntax)
        if match is not None:
            offered[id(match)] = match
    if offered:
        assoc.acceptor._contexts = list(offered.values())


class _BlockingRequestHandler(RequestHandler):
    """pynetdicom's request handler, creating a :class:`_BlockingAssociation`."""

    def _create_association(self) -> Association:
        # pynetdicom 3.0's RequestHandler._create_association with the class replaced.
        assoc = _BlockingAssociation(self.ae, MODE_ACCEPTOR)
        assoc._server = self.server

        timestamp = datetime.strftime(datetime.now(), "%Y%m%d%H%M%S")
        assoc.name = f"AcceptorThread@{timestamp}"

        sock = _AssociationSocket(assoc, client_socket=self.request)
        assoc.set_socket(sock)

        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.ae_title
        assoc.acceptor.address_info = self._local()
        # (The acceptor's Implementation Class UID is the AE's already: ServiceUser sets it.)
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        assoc.acceptor.supported_contexts = deepcopy(self.server.contexts)

        assoc.requestor.address_info = self.remote
        # Bound first, so it runs before the server's own EVT_REQUESTED handlers.
        # (What bind() does, without taking the AE's lock for each: nothing else sees the
        # association yet.)
        handlers = assoc._handlers
        evt._add_handler(evt.EVT_REQUESTED, handlers, (_offer_requested_contexts, None))
        for event, bound in self.server._handlers.items():
            if event.is_intervention and bound:
                intervention = cast(evt._HandlerBase, bound)
                evt._add_handler(event, handlers, (intervention[0], intervention[1]))
            elif isinstance(event, evt.NotificationEvent):
                for notification in cast(list[evt._HandlerBase], bound):
                    evt._add_handler(event, handlers, (notification[0], notification[1]))

        return assoc

    def _local(self) -> AddressInformation:
        """The server's address, resolved once (``self.local`` resolves it per association)."""
        local = getattr(self.server, "_dicomql_local", None)
        if local is None:
            local = self.local
            setattr(self.server, "_dicomql_local", local)  # noqa: B010 (not an attribute of its class)
        return cast(AddressInformation, local)


def _serve_then_release(assoc: _BlockingAssociation) -> None:
    """Serve the association, then make its parts' references back to it (and to the upper
    layer) weak once its upper layer has stopped: reference counting then frees the few hundred
    objects of each association when the last holder lets go, instead of the cyclic collector
    walking them (measured: collections' CPU ~0.3 -> ~0.15 ms per association). An upper layer
    that does not stop (the reactor failed) is left as it is, to the collector."""
    try:
        assoc.run_reactor()
    finally:
        _release(assoc)


def exclusive_use(assoc: Association) -> contextlib.AbstractContextManager[Any]:
    """Held by a thread that sends on an association whose reactor it paused, so that no
    request is served on the upper layer's thread meanwhile (:meth:`_BlockingAssociation.
    serve_here`); nothing for pynetdicom's own associations, whose reactor serves them all."""
    if isinstance(assoc, _BlockingAssociation):
        return assoc.service_lock
    return contextlib.nullcontext()


def _release(assoc: _BlockingAssociation) -> None:
    dul = cast(_BlockingDUL, assoc.dul)
    dul.join(_RELEASE_WAIT)
    if dul.is_alive():
        return
    dul._loop_thread = None  # the association's own thread
    referent = weakref.proxy(assoc)
    dul._assoc = assoc.acse._assoc = assoc.dimse._assoc = referent
    assoc.requestor.assoc = assoc.acceptor.assoc = referent
    if dul.socket is not None:
        dul.socket._assoc = referent
    dul.state_machine.dul = weakref.proxy(dul)
    checkpoint = assoc._reactor_checkpoint
    if isinstance(checkpoint, Checkpoint):
        checkpoint._wake = assoc._work.set  # (its own method was a cycle through the association)
    for waking in (dul.event_queue, dul.to_provider_queue, dul.to_user_queue):
        if isinstance(waking, WakingQueue):
            waking._wake = _nothing  # nothing waits on a stopped upper layer
    messages = assoc.dimse.msg_queue
    if isinstance(messages, MessageQueue):
        messages._queued = _ignore
    # ACSE restores the blocking abort as an instance attribute (a bound method: a cycle); the
    # class's abort() is the same call.
    if assoc.__dict__.get("abort") == assoc._abort_blocking:
        del assoc.__dict__["abort"]


def _nothing() -> None:
    pass


def _ignore(item: object) -> None:
    pass


def memoize_validators() -> None:
    """pynetdicom checks every AE title and UID it is given (decoding an A-ASSOCIATE-RQ,
    building the A-ASSOCIATE-AC and each message's primitive) with the validators in
    ``_config.VALIDATORS``, its customisation point; its own two are pure functions of the
    value (and of ``_config.ENFORCE_UID_CONFORMANCE``), and the UI one builds a pydicom UID
    and matches it against a regular expression again: some thirty calls and a twentieth of
    an association's CPU, for the same few titles and UIDs each time. They are replaced by
    the same functions with their answers remembered; validators set by someone else are
    left alone."""
    if _config.VALIDATORS.get("AE") is validate_ae:
        _config.VALIDATORS["AE"] = _validate_ae
    if _config.VALIDATORS.get("UI") is validate_ui:
        _config.VALIDATORS["UI"] = _validate_ui


def _validate_ae(value: Any) -> tuple[bool, str]:
    if type(value) is not str:
        return validate_ae(value)
    return _validated_ae(value)


def _validate_ui(value: Any) -> tuple[bool, str]:
    if not isinstance(value, str):
        return validate_ui(value)
    return _validated_ui(str(value), _config.ENFORCE_UID_CONFORMANCE)


@functools.lru_cache(maxsize=256)
def _validated_ae(value: str) -> tuple[bool, str]:
    return validate_ae(value)


@functools.lru_cache(maxsize=1024)
def _validated_ui(value: str, enforce_conformance: bool) -> tuple[bool, str]:
    # (validate_ui reads ENFORCE_UID_CONFORMANCE itself: the key says which it saw.)
    return validate_ui(UID(value))


def request_handler() -> type[RequestHandler]:
    """The request handler for the DIMSE server: blocking waits on a pynetdicom whose loops
    they copy, pynetdicom's own handler (1 ms polling) on any other."""
    if supported():
        return _BlockingRequestHandler
    log.warning(
        "pynetdicom %s: its polling reactors are used (blocking waits need 3.0)",
        pynetdicom.__version__,
    )
    return RequestHandler
