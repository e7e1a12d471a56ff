"""An instance on its way into the index: parsed, its blob written. Its own module because both
the indexing (``store.instances``) and the event outbox written in the same transaction
(``store.events``) read it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dicomql.dicom.parse import ParsedInstance


@dataclass(frozen=True)
class InstanceRecord:
    """A parsed instance whose blob is written (or held, to be written inline), ready to be
    indexed."""

    parsed: ParsedInstance
    blob_key: str
    size: int
    sha256: str
    study_attributes: dict[str, Any]
    series_attributes: dict[str, Any]
    instance_attributes: dict[str, Any]
    # The instance's bytes, when the index keeps them (store/inline_blobs.py); else its blob
    # under ``blob_key`` is written and durable.
    inline_data: bytes | None = None
