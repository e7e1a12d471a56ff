"""The one C-FIND client the benchmark queries every server's DICOM server with: pynetdicom as a
Study Root Query/Retrieve SCU (PS3.4 C.4.1) over one association kept open, so a timed request
is the C-FIND round trip and not the association setup."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from types import TracebackType

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

CALLING_AE_TITLE = "DICOMQLBENCH"
SUCCESS = 0x0000
PENDING = frozenset({0xFF00, 0xFF01})
# Generous: a slow answer should be measured, not abandoned.
TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class DimseAddress:
    """Where a server's DICOM server listens on the benchmark's loopback."""

    ae_title: str
    port: int
    host: str = "127.0.0.1"


class FindAssociation:
    """One association to ``address`` for Study Root C-FIND; a context manager."""

    def __init__(self, address: DimseAddress) -> None:
        ae = AE(ae_title=CALLING_AE_TITLE)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT_SECONDS
        self.address = address
        self._association: Association = ae.associate(
            address.host, address.port, ae_title=address.ae_title
        )
        if not self._association.is_established:
            raise RuntimeError(
                f"association to {address.ae_title}@{address.host}:{address.port} "
                "was rejected or aborted"
            )
        # pynetdicom leaves Nagle's algorithm on: a C-FIND request is two PDUs (command, then
        # identifier), and the second would wait for the server's delayed ACK (40 ms on Linux).
        # The client turns it off so that a figure times the server; a server that leaves it on
        # for its own responses (command, then identifier, per match) pays for that itself.
        raw = self._association.dul.socket.socket if self._association.dul.socket else None
        if raw is not None:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # pynetdicom's requestor reactor (a loop polling every millisecond) serves any message
        # it finds queued, and send_c_find's pause of it is racy: the reactor's "paused" flag is
        # still set for a moment after it has passed its checkpoint. A response arriving then
        # was taken by the reactor and dropped ("Received unexpected C-FIND service message"):
        # a match lost, or the final response, and the query waited for the server's network
        # timeout (60 s on dicomql) before failing. The client is sent no requests, so the
        # reactor's non-blocking reads find nothing; the query's blocking reads get every
        # response.
        dimse = self._association.dimse
        take = dimse.get_msg
        dimse.get_msg = lambda block=False: take(block) if block else (None, None)  # type: ignore[method-assign]

    def find(self, identifier: Dataset) -> int:
        """Send one C-FIND and read every response; the number of matches.

        Raises:
            RuntimeError: the final status is not success, or the association dropped.
        """
        matches = 0
        for status, _ in self._association.send_c_find(
            identifier, StudyRootQueryRetrieveInformationModelFind
        ):
            code = status.get("Status") if status else None
            if code in PENDING:
                matches += 1
                continue
            if code == SUCCESS:
                return matches
            comment = status.get("ErrorComment", "") if status else ""
            code_text = "no response (association dropped)" if code is None else f"0x{code:04X}"
            raise RuntimeError(
                f"C-FIND to {self.address.ae_title} ended with {code_text} {comment}"
            )
        raise RuntimeError(f"C-FIND to {self.address.ae_title} ended without a final status")

    def release(self) -> None:
        if self._association.is_established:
            self._association.release()

    def __enter__(self) -> FindAssociation:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def identifier(level: str, **keys: str) -> Dataset:
    """A C-FIND identifier at ``level``: keys with a value match, empty keys are returned."""
    dataset = Dataset()
    dataset.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(dataset, keyword, value)
    return dataset
