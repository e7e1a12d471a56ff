"""The DIMSE listener of one ``dicomql serve`` process: a pynetdicom application entity with the
service classes of :mod:`dicomql.dimse.handlers`, on a port every server process shares.

Every process binds the port with SO_REUSEPORT, as each accepts HTTP on the shared socket, so
each process answers DIMSE and the kernel spreads new associations over them; an association
lives in the process that accepted it. A port another program holds fails the process's start
(and so ``dicomql serve``) with the reason.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from typing import Any

from pynetdicom import AE, _config, evt
from pynetdicom.transport import ThreadedAssociationServer

from dicomql.dimse.handlers import Handlers
from dicomql.dimse.settings import DimseSettings
from dicomql.dimse.sop_classes import scp_contexts
from dicomql.dimse.transport import SupportedContexts, memoize_validators, request_handler

log = logging.getLogger(__name__)

# Associations one process serves at once; more are rejected (transient, "local limit").
MAX_ASSOCIATIONS = 32
# Seconds without a PDU before an association is aborted (a vanished peer frees its thread).
NETWORK_TIMEOUT = 60


def _quiet_pynetdicom() -> None:
    """pynetdicom decodes and pretty-prints every identifier and PDU for its log whether or not
    the record is emitted (a fifth of a C-FIND's CPU); skip that unless its logger would show it."""
    if not logging.getLogger("pynetdicom").isEnabledFor(logging.INFO):
        _config.LOG_HANDLER_LEVEL = "none"
        _config.LOG_REQUEST_IDENTIFIERS = False
        _config.LOG_RESPONSE_IDENTIFIERS = False


class _SharedPortServer(ThreadedAssociationServer):
    """pynetdicom's server with SO_REUSEPORT, so every server process can bind the port, with
    TCP_NODELAY on each connection, and with the TLS handshake in the connection's own thread:
    pynetdicom's runs it in the accept loop, where one client that connects and stays silent
    would stop every other."""

    def server_bind(self) -> None:
        assert self.socket is not None  # socketserver made it before binding
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, Any]:
        assert self.socket is not None  # the server is listening
        client, address = self.socket.accept()
        # A DIMSE response is a command PDU then a data PDU: with Nagle's algorithm the second
        # waits for the peer's delayed ACK (~40 ms on Linux), so every C-FIND match paid it.
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is not None:
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False
            )
        return client, address

    def service_actions(self) -> None:
        """Nothing. pynetdicom runs a full ``gc.collect()`` every 60 turns of the accept loop
        (for association threads it found uncollected): tens of milliseconds in a serve process,
        so about a millisecond of CPU per association under load. Python's own collector frees
        them (their sockets are closed when each association ends)."""

    def process_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            super().process_request(request, client_address)  # a thread for the handshake
            return
        # Without TLS nothing here waits for the peer: the association (which starts its own
        # threads) is set up in the accept loop rather than in a thread started for that alone.
        self.process_request_thread(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.settimeout(NETWORK_TIMEOUT)
                request.do_handshake()
                request.settimeout(None)
            except (OSError, ssl.SSLError) as exc:
                # A plain DICOM client, an untrusted certificate, a silent peer: no association.
                log.info("TLS handshake with %s failed: %s", client_address, exc)
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)


class DimseServer:
    """Starts and stops one process's DIMSE listener (in the serve process's lifespan)."""

    def __init__(self, settings: DimseSettings, handlers: Handlers) -> None:
        self.settings = settings
        self.handlers = handlers
        self._server: ThreadedAssociationServer | None = None

    def start(self) -> None:
        _quiet_pynetdicom()
        memoize_validators()
        # Called and calling AE titles are checked per association (Handlers.requested): one
        # listener answers several AE titles, each with its own store and callers.
        ae = AE(ae_title=self.settings.called_aes[0].title)
        ae.maximum_associations = MAX_ASSOCIATIONS
        ae.network_timeout = NETWORK_TIMEOUT
        for context in scp_contexts():
            assert context.abstract_syntax is not None  # scp_contexts() builds each from one
            # Not ``ae.supported_contexts = …``: that setter drops the contexts' roles.
            ae.add_supported_context(
                context.abstract_syntax,
                context.transfer_syntax,
                scu_role=context.scu_role,
                scp_role=context.scp_role,
            )
        tls = self.settings.tls
        server = ae.make_server(
            (self.settings.host, self.settings.port),
            ssl_context=tls.server_context() if tls else None,
            evt_handlers=[
                (evt.EVT_REQUESTED, self.handlers.requested),
                (evt.EVT_C_ECHO, self.handlers.echo),
                (evt.EVT_C_STORE, self.handlers.store),
                (evt.EVT_C_FIND, self.handlers.find),
                (evt.EVT_C_GET, self.handlers.get),
                (evt.EVT_C_MOVE, self.handlers.move),
                (evt.EVT_N_ACTION, self.handlers.action),
                (evt.EVT_CONN_CLOSE, self.handlers.closed),
            ],
            server_class=_SharedPortServer,
            # Associations that wait for work instead of polling every millisecond.
            request_handler=request_handler(),
        )
        server.contexts = SupportedContexts(server.contexts)
        ae._servers.append(server)  # so ae.shutdown() stops it, as ae.start_server does
        server.daemon_threads = True
        self._ae = ae
        self._server = server
        threading.Thread(target=server.serve_forever, name="dicomql-dimse", daemon=True).start()
        log.info("DIMSE %s", self.settings.describe())

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        """Stop accepting and abort the associations in flight (a sender retries them)."""
        if self._server is not None:
            self._ae.shutdown()
            self._server = None
