"""The presentation contexts the SCP accepts: Verification, Storage Commitment Push Model,
Patient and Study Root C-FIND, C-GET and C-MOVE, and every storage SOP class in any transfer
syntax pynetdicom knows (dicomql stores the bytes as sent, compressed or not)."""

from __future__ import annotations

from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, build_context
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

QUERY_RETRIEVE = (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
)


def scp_contexts() -> list[PresentationContext]:
    contexts = [build_context(Verification), build_context(StorageCommitmentPushModel)]
    contexts += [build_context(model) for model in QUERY_RETRIEVE]
    for context in AllStoragePresentationContexts:
        assert context.abstract_syntax is not None  # each of pynetdicom's list names its class
        storage = build_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES[:])
        # Accept a C-GET requestor's SCP/SCU role selection (PS3.7 D.3.3.4): the sub-operations
        # are C-STOREs this server sends on the requestor's association.
        storage.scp_role = True
        storage.scu_role = True
        contexts.append(storage)
    return contexts
