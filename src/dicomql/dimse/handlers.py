"""What the SCP does for each DIMSE request (pynetdicom calls these in an association's thread).

C-STORE stores through the same unit of work as STOW (:class:`~dicomql.store.ingest.Ingest`), and
answers with the status STOW-RS reports as FailureReason (PS3.4 B.2.3): an identical instance
stored again is a success (Cloud Healthcare ignores duplicates), the same SOP Instance UID with
other bytes 0x0110 (as Google reports it), a data set dicomql cannot read 0xC000, no room on disk
0xA700; a store that does not exist (yet) 0x0110 with an Error Comment naming it.

The C-STOREs of one association share a :class:`_Session`: the store is looked up by the first,
and blob keys are journaled a batch at a time for the instances that follow (one journal commit
per batch, not per instance); every instance is still indexed, and fsynced, before its response.
"""

from __future__ import annotations

import functools
import io
import logging
import struct
import threading
import weakref
from collections.abc import Callable, Iterator

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import (
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    build_context,
)
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_FIND, C_STORE
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomql.dimse.answers import use_for_answers
from dicomql.dimse.commands import uid_value
from dicomql.dimse.commitment import Commitment, RequestError, parse_request, stored_classes
from dicomql.dimse.find import FindError, encoded_keys, find_in_store, identifier_keys
from dicomql.dimse.retrieve import (
    Matched,
    destination_contexts,
    matched_instances,
    sub_operations,
)
from dicomql.dimse.settings import CalledAE, Destination, DimseSettings
from dicomql.store.blobs import BlobStore
from dicomql.store.index import Index
from dicomql.store.ingest import BlobKeys, Ingest
from dicomql.store.instances import PROCESSING_FAILURE, StoreNotFound
from dicomql.store.resources import dicom_store_pk

log = logging.getLogger(__name__)

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
UNABLE_TO_PROCESS = 0xC001  # C-FIND failure, PS3.4 C.4.1.1.4
# A-ASSOCIATE-RJ diagnostics of the service user (PS3.8 9.3.4).
CALLING_AE_TITLE_NOT_RECOGNIZED = 0x03
CALLED_AE_TITLE_NOT_RECOGNIZED = 0x07


def status(code: int, comment: str = "") -> Dataset:
    """A C-STORE/C-FIND response status with an Error Comment (at most 64 characters, LO)."""
    response = Dataset()
    response.Status = code
    if comment:
        response.ErrorComment = comment[:64]
    return response


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return struct.pack("<HH2s2xI", 0x0002, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


# The file meta elements after the three of each instance (PS3.10 7.1), as pynetdicom writes them.
_IMPLEMENTATION = _meta_element(
    0x0012, b"UI", uid_value(PYNETDICOM_IMPLEMENTATION_UID)
) + _meta_element(
    0x0013,
    b"SH",
    PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii")
    + b" " * (len(PYNETDICOM_IMPLEMENTATION_VERSION) % 2),
)


def part10_header(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    """The preamble, ``DICM`` and file meta information that make a C-STORE's data set a
    PS3.10 file: the bytes of pynetdicom's ``Event.encoded_dataset(include_meta=True)``, which
    builds and encodes a pydicom FileMetaDataset for each instance (a tenth of a C-STORE's CPU)."""
    elements = (
        _meta_element(0x0001, b"OB", b"\0\1")
        + _meta_element(0x0002, b"UI", uid_value(sop_class_uid))
        + _meta_element(0x0003, b"UI", uid_value(sop_instance_uid))
        + _meta_element(0x0010, b"UI", uid_value(transfer_syntax_uid))
        + _IMPLEMENTATION
    )
    length = _meta_element(0x0000, b"UL", struct.pack("<I", len(elements)))
    return b"\0" * 128 + b"DICM" + length + elements


@functools.cache
def _encoding(transfer_syntax: str) -> tuple[bool, bool, bool]:
    """A transfer syntax's (implicit VR, little endian, deflated): pydicom's UID works each out
    on every access."""
    syntax = UID(transfer_syntax)
    return syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated


class _Session:
    """What the C-STOREs of one association share: the store's key (looked up by the first)
    and blob keys journaled ahead. Used by the thread that serves its C-STOREs (its upper
    layer's or its reactor's, dimse/transport.py), and released when its connection closes:
    the lock orders the two."""

    def __init__(self, keys: BlobKeys) -> None:
        self.lock = threading.Lock()
        self.store_pk: int | None = None
        self.keys = keys
        self.closed = False

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                self.keys.release()


class Handlers:
    """The SCP's event handlers for the AE titles a server answers to, each with its store.

    Args:
        index: the stores' index, to find a store each time (it may be created, deleted
            and created again while the server runs).
        blobs: where instances are written.
        settings: the AE titles answered (with their stores and allowed calling AE titles)
            and the C-MOVE destinations.
        space_shortage: why there is no room for another instance now, or None.
    """

    def __init__(
        self,
        index: Index,
        blobs: BlobStore,
        settings: DimseSettings,
        space_shortage: Callable[[], str | None],
    ) -> None:
        self.index = index
        self.blobs = blobs
        self.settings = settings
        self.space_shortage = space_shortage
        self.move_destinations = settings.move_destinations
        self._sessions: weakref.WeakKeyDictionary[Association, _Session] = (
            weakref.WeakKeyDictionary()
        )
        self._sessions_lock = threading.Lock()
        use_for_answers()  # C-FIND answers encoded without pydicom's writer (dimse/answers.py)

    def requested(self, event: Event) -> None:
        """An A-ASSOCIATE-RQ: rejected (permanent, by the service user, PS3.8 7.1.1.9) when
        its called AE title is none of this server's or its calling AE title is not allowed
        there; else the association answers as the called AE title."""
        request = event.assoc.requestor.primitive
        assert request is not None  # the A-ASSOCIATE-RQ this event is about
        called = self.settings.called_ae(str(request.called_ae_title))
        calling = str(request.calling_ae_title).strip()
        if called is None:
            reason = CALLED_AE_TITLE_NOT_RECOGNIZED
        elif not called.admits(calling):
            reason = CALLING_AE_TITLE_NOT_RECOGNIZED
        else:
            event.assoc.acceptor.ae_title = called.title
            return
        log.info("Association from %s to %s rejected", calling, request.called_ae_title)
        event.assoc.acse.send_reject(0x01, 0x01, reason)
        event.assoc.kill()

    def called(self, event: Event) -> CalledAE:
        """The AE title the association called (checked when it was requested)."""
        called = self.settings.called_ae(str(event.assoc.acceptor.ae_title))
        assert called is not None
        return called

    def echo(self, event: Event) -> int:
        return SUCCESS

    def store_pk(self, event: Event) -> int | None:
        name = self.called(event).store
        if name is None:
            return None
        with self.index.connect() as conn:
            return dicom_store_pk(conn, name.project, name.location, name.dataset, name.store)

    def no_store(self, event: Event) -> str:
        return f"No DICOM store {self.called(event).store or '(none set)'}"

    def _session(self, assoc: Association) -> _Session:
        with self._sessions_lock:
            session = self._sessions.get(assoc)
            if session is None:
                session = self._sessions[assoc] = _Session(BlobKeys(self.index, self.blobs))
            return session

    def closed(self, event: Event) -> None:
        """The association's connection closed: forget the keys its C-STOREs left unused."""
        with self._sessions_lock:
            session = self._sessions.get(event.assoc)
        if session is not None:
            try:
                session.close()
            except Exception:  # left to recovery, which forgets journaled keys without a blob
                log.exception("releasing the blob keys of an association failed")

    def store(self, event: Event) -> Dataset | int:
        # The PS3.10 file as received (file meta from the presentation context's transfer
        # syntax), not a re-encoding: what WADO returns is byte for byte what was sent.
        request = event.request
        assert isinstance(request, C_STORE)  # the EVT_C_STORE handler
        assert isinstance(request.DataSet, io.BytesIO)  # as received, not decoded
        header = part10_header(
            str(request.AffectedSOPClassUID),
            str(request.AffectedSOPInstanceUID),
            str(event.context.transfer_syntax),
        )
        data = header + request.DataSet.getvalue()
        session = self._session(event.assoc)
        with session.lock:
            for _ in range(2):
                cached = session.store_pk
                store_pk = cached if cached is not None else self.store_pk(event)
                if store_pk is None:
                    return status(PROCESSING_FAILURE, self.no_store(event))
                session.store_pk = store_pk
                ingest = Ingest(
                    self.index,
                    self.blobs,
                    store_pk,
                    space_shortage=self.space_shortage,
                    keys=None if session.closed else session.keys,
                )
                try:
                    # One instance, one transaction: acknowledged only once durable.
                    [outcome] = ingest.store([data])
                except StoreNotFound:
                    session.store_pk = None
                    if cached is not None:
                        continue  # deleted since the association looked it up: look again
                    return status(
                        PROCESSING_FAILURE, f"DICOM store {self.called(event).store} was deleted"
                    )
                except Exception:
                    log.exception("C-STORE into %s failed", self.called(event).store)
                    return status(PROCESSING_FAILURE, "Internal error storing the instance")
                code = outcome.failure_reason or SUCCESS
                # A bare status needs no Dataset built for pynetdicom to read back.
                return status(code, outcome.message) if outcome.message else code
        raise AssertionError("unreachable")

    def find(self, event: Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        store = self.called(event).store
        implicit, little, deflated = _encoding(event.context.transfer_syntax)
        try:
            # The identifier as received, read without pydicom where it can be (most are).
            request = event.request
            assert isinstance(request, C_FIND)  # the EVT_C_FIND handler
            encoded = request.Identifier
            keys = None
            if little and not deflated and isinstance(encoded, io.BytesIO):
                keys = encoded_keys(encoded.getvalue(), implicit)
            if keys is None:
                keys = identifier_keys(event.identifier)
            for answer in find_in_store(
                self.index, store, keys, lambda: event.is_cancelled, (implicit, little)
            ):
                if event.is_cancelled:  # checked per match too, not only per page read
                    break
                yield PENDING, answer
        except FindError as exc:
            yield status(UNABLE_TO_PROCESS, str(exc)), None
            return
        if event.is_cancelled:
            yield CANCEL, None

    def action(self, event: Event) -> tuple[Dataset, None]:
        """Storage Commitment (N-ACTION, Request Storage Commitment): accepted at once; the
        instances are checked and reported in a thread (:mod:`dicomql.dimse.commitment`)."""
        try:
            transaction, references = parse_request(event.action_type, event.action_information)
        except RequestError as exc:
            return status(exc.status, str(exc)), None
        store_pk = self.store_pk(event)
        if store_pk is None:
            return status(PROCESSING_FAILURE, self.no_store(event)), None
        requestor = str(event.assoc.requestor.ae_title).strip()
        Commitment(
            event.assoc,
            transaction,
            references,
            lambda uids: stored_classes(self.index, store_pk, uids),
            requestor,
            self.move_destinations.get(requestor),
            self.called(event).title,
        ).start()
        return status(SUCCESS), None

    def get(self, event: Event) -> Iterator[object]:
        """C-GET: the count of sub-operations, then each instance on this association."""
        yield from self._retrieve(event, move=False)

    def move(self, event: Event) -> Iterator[object]:
        """C-MOVE: the destination (host, port, association options), the count, then each
        instance. An AE title not configured is refused with 0xA801 (Move Destination
        unknown) before anything is read."""
        title = event.move_destination
        if isinstance(title, bytes):
            title = title.decode("ascii", "replace")
        destination = self.move_destinations.get(str(title).strip())
        if destination is None:
            yield None, None
            return
        yield from self._retrieve(event, move=True, destination=destination)

    def _retrieve(
        self, event: Event, *, move: bool, destination: Destination | None = None
    ) -> Iterator[object]:
        cancelled = lambda: event.is_cancelled  # noqa: E731
        store_pk = self.store_pk(event)
        failure: Dataset | None = None
        items: list[Matched] = []
        if store_pk is None:
            failure = status(UNABLE_TO_PROCESS, self.no_store(event))
        else:
            try:
                items = matched_instances(self.index, store_pk, event.identifier, cancelled)
            except FindError as exc:
                failure = status(UNABLE_TO_PROCESS, str(exc))
        if move:
            assert destination is not None
            # Nothing to send (or a failure to report): an association pynetdicom can open.
            contexts = destination_contexts(items) or [build_context(Verification)]
            yield destination.host, destination.port, {"contexts": contexts}
        if failure is not None:
            yield 1
            yield failure, None
            return
        yield len(items)
        if move:
            yield from sub_operations(self.blobs, items, cancelled)
        else:

            def accepted(sop_class: str) -> set[str]:
                return {
                    str(context.transfer_syntax[0])
                    for context in event.assoc.accepted_contexts
                    if context.abstract_syntax == sop_class and context.as_scu
                }

            yield from sub_operations(self.blobs, items, cancelled, accepted)
