"""DICOM JSON keys by keyword: ``json_key("StudyInstanceUID") == "0020000D"``, and the VRs
whose explicit VR element header has a 4-byte length.

DICOM JSON (PS3.18 F.2) keys attributes by their tag as eight upper-case hex digits; code names
the attribute by its keyword, from pydicom's data dictionary, and computes the key once, at
import, where it is used often.
"""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword


def json_key(keyword: str) -> str:
    """The DICOM JSON key of the attribute named ``keyword``.

    Raises:
        KeyError: ``keyword`` is not in the data dictionary.
    """
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"{keyword!r} is not a DICOM keyword")
    return f"{tag:08X}"


PIXEL_DATA_KEY = json_key("PixelData")
RETRIEVE_URL_KEY = json_key("RetrieveURL")
SOP_CLASS_UID_KEY = json_key("SOPClassUID")
SOP_INSTANCE_UID_KEY = json_key("SOPInstanceUID")
FAILED_SOP_SEQUENCE_KEY = json_key("FailedSOPSequence")
REFERENCED_SOP_SEQUENCE_KEY = json_key("ReferencedSOPSequence")

# PS3.5 7.1.2 and Table 7.1-1: in explicit VR, an element of one of these VRs has 2 reserved
# bytes and a 4-byte value length after its VR; every other VR a 2-byte length. The one list
# that reads and writes of element headers (the structure walk, the header read, C-FIND
# answers) share.
EXPLICIT_VR_LENGTH_32 = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
