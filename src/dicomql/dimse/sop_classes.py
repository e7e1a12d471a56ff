"""The presentation contexts the SCP accepts: Verification, Patient and Study Root C-FIND, and
every storage SOP class in any transfer syntax pynetdicom knows (dicomql stores the bytes as sent,
compressed or not)."""

from __future__ import annotations

from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, build_context
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

QUERY = (PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind)


def scp_contexts() -> list[PresentationContext]:
    contexts = [build_context(Verification)]
    contexts += [build_context(model) for model in QUERY]
    for context in AllStoragePresentationContexts:
        contexts.append(build_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES[:]))
    return contexts
