"""De-identification of DICOM instances per Cloud Healthcare's DeidentifyConfig (pure library).

>>> deidentifier = Deidentifier({"dicom": {"filterProfile": "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE"}})
>>> uid_map = deidentifier.uid_map()

then ``deidentifier.deidentify(dataset, uid_map=uid_map)`` per instance, in any thread or process.
"""

from __future__ import annotations

from dicomql.dicom.deid.config import (
    DeidentifyConfigError,
    DeidentifyOptions,
    DeidentifyRequest,
    UnsupportedDeidentifyConfigError,
    parse_config,
    parse_request,
)
from dicomql.dicom.deid.engine import Deidentifier, deidentify_bytes
from dicomql.dicom.deid.uids import UidMap

__all__ = [
    "Deidentifier",
    "DeidentifyConfigError",
    "DeidentifyOptions",
    "DeidentifyRequest",
    "UidMap",
    "UnsupportedDeidentifyConfigError",
    "deidentify_bytes",
    "parse_config",
    "parse_request",
]
