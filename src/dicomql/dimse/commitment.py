"""Storage Commitment Push Model SCP (PS3.4 Annex J): an N-ACTION asks whether instances are
stored; an N-EVENT-REPORT answers, for each, from the store's index.

The N-ACTION is answered at once (the request is accepted, nothing is checked yet); the check
and the report follow in a thread of their own. The report goes on the requestor's association
while it is open; when it has gone, or the requestor does not answer the report with success on
it, on a new association to the requestor's AE title, if that is one of ``move_destinations``
(the only addresses the server knows). The report lives in the memory of the process that got
the N-ACTION: a restart before it is sent loses it, and the requestor asks again (PS3.4 J.3.3.1
leaves re-requesting to the SCU).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import N_EVENT_REPORT
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import A_ABORT, A_P_ABORT, A_RELEASE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StorageCommitmentPushModel,
)

from dicomql.dimse.find import find
from dicomql.dimse.settings import Destination
from dicomql.dimse.transport import exclusive_use
from dicomql.store.index import Index

log = logging.getLogger(__name__)

# The Storage Commitment Push Model SOP Instance UID: the one instance of the SOP class.
PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"
REQUEST_STORAGE_COMMITMENT = 1  # Action Type ID
ALL_SUCCESS = 1  # Event Type IDs of the report
SOME_FAILED = 2

# N-ACTION statuses (PS3.7 Annex C) and the report's Failure Reasons (PS3.4 J.3.3).
SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
MISSING_ATTRIBUTE = 0x0120
MISSING_ATTRIBUTE_VALUE = 0x0121
NO_SUCH_ACTION = 0x0123

# SOP Instance UIDs per index query (one UID-list match each).
_UIDS_PER_QUERY = 200
# Seconds to wait for the requestor's N-EVENT-REPORT response (pynetdicom's DIMSE timeout).
RESPONSE_TIMEOUT = 30.0
# Seconds and tries for a report on a new association (the requestor may be briefly away).
_RETRY_DELAYS = (0.0, 2.0, 10.0)


@dataclass(frozen=True)
class Reference:
    sop_class_uid: str
    sop_instance_uid: str


class RequestError(ValueError):
    """An N-ACTION the SCP refuses; ``status`` is the N-ACTION response status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_request(
    action_type: int | None, information: Dataset | None
) -> tuple[str, list[Reference]]:
    """The Transaction UID and the instances of a Request Storage Commitment N-ACTION.

    Raises:
        RequestError: another action, or a missing Transaction UID or Referenced SOP Sequence.
    """
    if action_type != REQUEST_STORAGE_COMMITMENT:
        raise RequestError(NO_SUCH_ACTION, f"Action Type ID {action_type} is not 1")
    if information is None or "TransactionUID" not in information:
        raise RequestError(MISSING_ATTRIBUTE, "No Transaction UID")
    if "ReferencedSOPSequence" not in information:
        raise RequestError(MISSING_ATTRIBUTE, "No Referenced SOP Sequence")
    transaction = str(information.TransactionUID or "").strip()
    references = [
        Reference(
            str(item.get("ReferencedSOPClassUID", "")).strip(),
            str(item.get("ReferencedSOPInstanceUID", "")).strip(),
        )
        for item in information.ReferencedSOPSequence
    ]
    if not transaction or not references:
        raise RequestError(
            MISSING_ATTRIBUTE_VALUE, "Empty Transaction UID or Referenced SOP Sequence"
        )
    if any(not ref.sop_class_uid or not ref.sop_instance_uid for ref in references):
        raise RequestError(
            MISSING_ATTRIBUTE_VALUE,
            "A Referenced SOP Sequence item lacks a SOP Class or Instance UID",
        )
    return transaction, references


def stored_classes(index: Index, store_pk: int, uids: list[str]) -> dict[str, str]:
    """The SOP Class UID of each of ``uids`` stored in the store, by SOP Instance UID (the same
    IMAGE-level matching as C-FIND, a UID list per query)."""
    found: dict[str, str] = {}
    unique = list(dict.fromkeys(uids))
    for start in range(0, len(unique), _UIDS_PER_QUERY):
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        chunk = unique[start : start + _UIDS_PER_QUERY]
        query.SOPInstanceUID = chunk if len(chunk) > 1 else chunk[0]
        query.SOPClassUID = ""
        for answer in find(index, store_pk, query, lambda: False):
            found[str(answer.SOPInstanceUID)] = str(answer.SOPClassUID)
    return found


def report(
    transaction: str, references: list[Reference], stored: dict[str, str]
) -> tuple[int, Dataset]:
    """The N-EVENT-REPORT's Event Type ID and Event Information: committed instances in the
    Referenced SOP Sequence, the others in the Failed SOP Sequence with their Failure Reason."""
    committed, failed = [], []
    for ref in references:
        item = Dataset()
        item.ReferencedSOPClassUID = ref.sop_class_uid
        item.ReferencedSOPInstanceUID = ref.sop_instance_uid
        stored_class = stored.get(ref.sop_instance_uid)
        if stored_class == ref.sop_class_uid:
            committed.append(item)
            continue
        item.FailureReason = (
            NO_SUCH_OBJECT_INSTANCE if stored_class is None else CLASS_INSTANCE_CONFLICT
        )
        failed.append(item)
    information = Dataset()
    information.TransactionUID = transaction
    if committed:
        information.ReferencedSOPSequence = committed
    if failed:
        information.FailedSOPSequence = failed
    return (SOME_FAILED if failed else ALL_SUCCESS), information


class Commitment:
    """Checks one accepted request and delivers its report, in a thread of its own.

    Args:
        check: the SOP Class UIDs stored, by SOP Instance UID, of the UIDs given.
        destination: where the requestor's AE listens, if it is configured.
        local_title: the AE title the N-ACTION called, the calling AE title of a new
            association.
    """

    def __init__(
        self,
        assoc: Association,
        transaction: str,
        references: list[Reference],
        check: Callable[[list[str]], dict[str, str]],
        requestor: str,
        destination: Destination | None,
        local_title: str,
    ) -> None:
        self.assoc = assoc
        self.transaction = transaction
        self.references = references
        self.check = check
        self.requestor = requestor
        self.destination = destination
        self.local_title = local_title

    def start(self) -> None:
        """Called by the N-ACTION's handler, before pynetdicom sends the N-ACTION response."""
        # The report must follow that response, not interleave with it: pynetdicom marks its
        # reactor paused while it serves a request (so pausing it does not wait for the
        # response), and two messages sent at once mix their fragments on the wire. The
        # first P-DATA sent after the request is its response.
        self._answered = threading.Event()
        answered = self._answered

        def on_sent(event: Any) -> None:
            if isinstance(event.pdu, P_DATA_TF):
                answered.set()

        self.assoc.bind(evt.EVT_PDU_SENT, on_sent)
        threading.Thread(target=self._run, name="dicomql-commitment", daemon=True).start()

    def _run(self) -> None:
        try:
            stored = self.check([ref.sop_instance_uid for ref in self.references])
        except Exception:  # a report with every instance failed, not no report
            log.exception("Storage commitment %s: the check failed", self.transaction)
            stored = {}
        event_type, information = report(self.transaction, self.references, stored)
        if self._send_on_requestors_association(event_type, information):
            return
        if self.destination is None:
            log.warning(
                "Storage commitment %s: %s left before its report and is not in "
                "move_destinations; the report is dropped",
                self.transaction,
                self.requestor,
            )
            return
        for delay in _RETRY_DELAYS:
            time.sleep(delay)
            if self._send_on_new_association(event_type, information):
                return
        log.warning(
            "Storage commitment %s: %s did not take the report", self.transaction, self.requestor
        )

    def _send_on_requestors_association(self, event_type: int, information: Dataset) -> bool:
        """The report on the N-ACTION's association, once its response has gone; False when
        the association has gone or is being released, or the requestor does not answer with
        success.

        Not pynetdicom's ``send_n_event_report``: it holds the reactor until a response or its
        30 s timeout, so a requestor that releases right after the N-ACTION response (many do,
        and take reports on a new association) would stall its release for 30 s and then be
        aborted. This waits for the response while watching for a release or an abort.
        """
        assoc = self.assoc
        while not self._answered.wait(0.01):
            if not assoc.is_established or not assoc.dul.is_alive():
                return False
        # pynetdicom's reactor serves the N-ACTION and sends its response before it pauses at
        # its checkpoint; wait for that pause, as its send_* methods do (kill() marks it
        # paused on every way out, so an association released meanwhile ends the wait too).
        assoc._reactor_checkpoint.clear()
        try:
            while not assoc._is_paused:
                time.sleep(0.001)
            # A C-STORE served on the upper layer's thread may still be answering (it does
            # not pass the checkpoint): the association is this thread's once it is done.
            with exclusive_use(assoc):
                return self._report(assoc, event_type, information)
        finally:
            assoc._reactor_checkpoint.set()

    def _report(self, assoc: Association, event_type: int, information: Dataset) -> bool:
        """Send the report and await its response, the association this thread's alone."""
        context = next(
            (
                cx
                for cx in assoc.accepted_contexts
                if cx.abstract_syntax == StorageCommitmentPushModel
            ),
            None,
        )
        if not assoc.is_established or context is None or _leaving(assoc):
            return False
        context_id = context.context_id
        if context_id is None:  # an accepted context always has its ID
            return False
        syntax = context.transfer_syntax[0]
        request = N_EVENT_REPORT()
        request.MessageID = 1  # the first (only) request this side sends on it
        request.AffectedSOPClassUID = StorageCommitmentPushModel
        request.AffectedSOPInstanceUID = PUSH_MODEL_INSTANCE
        request.EventTypeID = event_type
        encoded = encode(
            information, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated
        )
        if encoded is None:
            return False
        request.EventInformation = BytesIO(encoded)
        assoc.dimse.send_msg(request, context_id)
        deadline = time.monotonic() + RESPONSE_TIMEOUT
        while time.monotonic() < deadline:
            # The response, if it came before a release request (the peer's order).
            leaving = not assoc.is_established or _leaving(assoc)
            _, message = assoc.dimse.peek_msg()
            if message is not None:
                if not isinstance(message, N_EVENT_REPORT) or message.Status is None:
                    return False  # another request: the reactor serves it; report elsewhere
                assoc.dimse.get_msg(block=False)
                return int(message.Status) == SUCCESS
            if leaving:
                return False
            time.sleep(0.005)
        return False

    def _send_on_new_association(self, event_type: int, information: Dataset) -> bool:
        assert self.destination is not None
        ae = AE(ae_title=self.local_title)
        ae.add_requested_context(StorageCommitmentPushModel)
        # This side is the SCP of the SOP class on an association it requests (PS3.4 J.3.3).
        role = build_role(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        assoc = ae.associate(
            self.destination.host,
            self.destination.port,
            ae_title=self.requestor,
            ext_neg=[role],
        )
        if not assoc.is_established:
            return False
        try:
            response = assoc.send_n_event_report(
                information, event_type, StorageCommitmentPushModel, PUSH_MODEL_INSTANCE
            )[0]
        finally:
            assoc.release()
        return _succeeded(response)


def _leaving(assoc: Association) -> bool:
    """The requestor asked to release or abort the association (not yet handled: the reactor
    is paused), or its connection is gone."""
    pdu = assoc.dul.peek_next_pdu()
    return (
        isinstance(pdu, A_ABORT | A_P_ABORT)
        or (isinstance(pdu, A_RELEASE) and pdu.result is None)
        or not assoc.dul.is_alive()
    )


def _succeeded(response: Dataset | None) -> bool:
    return response is not None and "Status" in response and int(response.Status) == SUCCESS
