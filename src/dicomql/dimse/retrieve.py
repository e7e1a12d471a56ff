"""C-GET and C-MOVE (PS3.4 C.4.2, C.4.3): the instances an identifier names, sent as C-STORE
sub-operations, on the same association (C-GET) or to a configured destination AE (C-MOVE).

The instances are those an IMAGE-level C-FIND with the identifier's keys matches (same matching
as QIDO), in the order they were stored; each is read from its blob when its sub-operation
starts, so memory does not grow with the study.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context
from pynetdicom.presentation import PresentationContext

from dicomql.dimse.find import find, search_parameters
from dicomql.store.blobs import BlobStore
from dicomql.store.index import Index
from dicomql.store.instances import find_instances

# PS3.7: the Number of … Sub-operations attributes are US.
MAX_SUB_OPERATIONS = 65535
# pynetdicom proposes at most 128 presentation contexts in an association (PS3.8's limit).
_MAX_CONTEXTS = 128


@dataclass(frozen=True)
class Matched:
    blob_key: str
    sop_class_uid: str
    transfer_syntax_uid: str


def matched_instances(
    index: Index, store_pk: int, identifier: Dataset, is_cancelled: Callable[[], bool]
) -> list[Matched]:
    """The stored instances an identifier names, at whatever level it asks.

    Raises:
        FindError: as C-FIND would for the identifier.
    """
    search_parameters(identifier)  # the level and keys, checked as C-FIND checks them
    query = Dataset()
    for element in identifier:
        if element.keyword not in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            query.add(element)
    query.QueryRetrieveLevel = "IMAGE"
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if keyword not in query:
            setattr(query, keyword, "")  # a return key: which instance matched
    found: list[Matched] = []
    for answer in find(index, store_pk, query, is_cancelled):
        with index.connect() as conn:
            rows = find_instances(
                conn,
                store_pk,
                str(answer.StudyInstanceUID),
                str(answer.SeriesInstanceUID),
                str(answer.SOPInstanceUID),
            )
        found += [Matched(row.blob_key, row.sop_class_uid, row.transfer_syntax_uid) for row in rows]
    return found


def read_instance(blobs: BlobStore, item: Matched) -> Dataset:
    with blobs.open(item.blob_key) as file:
        return dcmread(file)


def sub_operations(
    blobs: BlobStore,
    items: list[Matched],
    is_cancelled: Callable[[], bool],
    accepted: Callable[[str], set[str]] | None = None,
) -> Iterator[tuple[int, Dataset | None]]:
    """The (status, dataset) pairs pynetdicom sends as C-STORE sub-operations, stopping with
    Cancel (0xFE00) at a C-CANCEL.

    Args:
        accepted: the transfer syntaxes the peer accepted for a SOP class (C-GET), so that an
            uncompressed instance goes out in the uncompressed syntax the peer chose; None
            when a context for each stored syntax was proposed (C-MOVE).
    """
    for item in items:
        if is_cancelled():
            yield 0xFE00, None
            return
        dataset = read_instance(blobs, item)
        if accepted is not None:
            _fit(dataset, accepted(item.sop_class_uid))
        yield 0xFF00, dataset


_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)


def _fit(dataset: Dataset, accepted: set[str]) -> None:
    """Send an uncompressed instance in an uncompressed syntax the peer accepted (pydicom
    re-encodes it); a compressed one goes as stored or, not accepted, fails its sub-operation
    (dicomql does not transcode pixel data here)."""
    stored = dataset.file_meta.TransferSyntaxUID
    if stored in accepted or stored.is_compressed:
        return
    for syntax in _UNCOMPRESSED:
        if syntax in accepted:
            dataset.file_meta.TransferSyntaxUID = syntax
            dataset.set_original_encoding(
                syntax.is_implicit_VR, syntax.is_little_endian, dataset.original_character_set
            )
            return


def destination_contexts(items: list[Matched]) -> list[PresentationContext]:
    """What C-MOVE proposes to its destination: one context per SOP class and stored transfer
    syntax sent, so each instance goes out as stored (at most 128 contexts, PS3.8's limit)."""
    pairs = dict.fromkeys((item.sop_class_uid, item.transfer_syntax_uid) for item in items)
    return [build_context(sop, syntax) for sop, syntax in list(pairs)[:_MAX_CONTEXTS]]
