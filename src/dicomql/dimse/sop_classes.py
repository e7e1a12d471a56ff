"""The presentation contexts the SCP accepts: Verification, and every storage SOP class in any
transfer syntax pynetdicom knows (dicomql stores the bytes as sent, compressed or not)."""

from __future__ import annotations

from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, build_context
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]


def scp_contexts() -> list[PresentationContext]:
    contexts = [build_context(Verification)]
    for context in AllStoragePresentationContexts:
        contexts.append(build_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES[:]))
    return contexts
