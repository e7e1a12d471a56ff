"""DEIDENTIFY_TAG_CONTENTS: finding sensitive text in attribute values (by the attribute's
meaning, and by recognisers in free text) and transforming it per Cloud Healthcare's TextConfig.

InfoType names follow Cloud DLP's (PERSON_NAME, DATE, AGE, PHONE_NUMBER, EMAIL_ADDRESS,
LOCATION, …). The free-text recognisers are deliberately simple patterns: dates in common
layouts, e-mail addresses, URLs, IP addresses, phone numbers, US SSNs, street addresses, long
digit runs and prefixed identifiers, honorific + name, and any name the instance itself carries
in a PN attribute (a patient's name repeated in ImageComments is the common leak).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from dicomql.dicom.deid.config import Transformation

# The VRs DEIDENTIFY_TAG_CONTENTS inspects (Cloud Healthcare DicomConfig.filterProfile).
TEXT_VRS = frozenset({"AE", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "DA", "DT", "AS"})
# VRs whose values are free text, searched with the recognisers.
FREE_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UC", "UT"})
# PS3.5 Table 6.2-1 maximum lengths (characters; PN per component group).
MAX_LENGTH = {"AE": 16, "AS": 4, "DA": 8, "DT": 26, "LO": 64, "PN": 64, "SH": 16, "ST": 1024}
DATE_SHIFT_DAYS = 100  # Cloud Healthcare shifts dates by up to 100 days either way

_ID_SUFFIXES = ("ID", "IDs", "Number", "Numbers")


def attribute_info_type(keyword: str, vr: str) -> str | None:
    """The infoType an attribute's whole value has by the attribute's meaning, if any.

    >>> attribute_info_type("PatientName", "PN"), attribute_info_type("PatientID", "LO")
    ('PERSON_NAME', 'MEDICAL_RECORD_NUMBER')
    """
    if vr == "PN":
        return "PERSON_NAME"
    if vr in ("DA", "DT"):
        return "DATE"
    if vr == "AS":
        return "AGE"
    if keyword in ("PatientID", "OtherPatientIDs"):
        return "MEDICAL_RECORD_NUMBER"
    if "Telephone" in keyword or "Phone" in keyword:
        return "PHONE_NUMBER"
    if "Mail" in keyword:
        return "EMAIL_ADDRESS"
    if "Address" in keyword or keyword in (
        "StationName",
        "CountryOfResidence",
        "RegionOfResidence",
    ):
        return "LOCATION"
    if keyword.startswith("Institution") and keyword.endswith("Name"):
        return "ORGANIZATION_NAME"
    if keyword.endswith(_ID_SUFFIXES):
        return "GENERIC_ID"
    return None


@dataclass(frozen=True)
class Finding:
    start: int
    end: int
    info_type: str


_MONTHS = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
# (pattern, strptime/strftime layout) pairs for dates in free text, most specific first.
_DATE_LAYOUTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), layout)
    for pattern, layout in (
        (r"\b\d{4}-\d{2}-\d{2}\b", "%Y-%m-%d"),
        (r"\b\d{4}/\d{2}/\d{2}\b", "%Y/%m/%d"),
        (r"\b\d{4}\.\d{2}\.\d{2}\b", "%Y.%m.%d"),
        (r"\b\d{1,2}/\d{1,2}/\d{4}\b", "%m/%d/%Y"),
        (r"\b\d{1,2}-\d{1,2}-\d{4}\b", "%m-%d-%Y"),
        (r"\b\d{1,2}\.\d{1,2}\.\d{4}\b", "%d.%m.%Y"),
        (rf"\b(?:{_MONTHS})[a-z]*\.? \d{{1,2}}, \d{{4}}\b", "%B %d, %Y"),
        (rf"\b\d{{1,2}} (?:{_MONTHS})[a-z]* \d{{4}}\b", "%d %B %Y"),
        (r"\b(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\b", "%Y%m%d"),
    )
)
_RECOGNISERS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (info_type, re.compile(pattern, flags))
    for info_type, pattern, flags in (
        ("EMAIL_ADDRESS", r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", 0),
        ("URL", r"\bhttps?://[^\s\\]+", re.IGNORECASE),
        ("IP_ADDRESS", r"\b(?:\d{1,3}\.){3}\d{1,3}\b", 0),
        ("US_SOCIAL_SECURITY_NUMBER", r"\b\d{3}-\d{2}-\d{4}\b", 0),
        (
            "PHONE_NUMBER",
            r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{3}\)\s?|\b\d{3}[\s.-])\d{3}[\s.-]\d{4}\b",
            0,
        ),
        (
            "LOCATION",
            r"\b\d{1,5}\s+(?:[A-Z][a-z]+\s+){1,3}(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd"
            r"|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Parkway|Pkwy)\b\.?",
            0,
        ),
        (
            "GENERIC_ID",
            r"\b(?:MRN|ID|Acc(?:ession)?|Patient ID)\s*(?:#|No\.?|:)?\s*[A-Z0-9-]*\d[A-Z0-9-]*",
            re.IGNORECASE,
        ),
        ("GENERIC_ID", r"\b\d{6,}\b", 0),
        (
            "PERSON_NAME",
            r"\b(?:Dr|Mr|Mrs|Ms|Miss|Prof)\.?\s+[A-Z][A-Za-z'-]+(?:\s+[A-Z][A-Za-z'-]+)?",
            0,
        ),
    )
)


def known_name_pattern(
    names: Iterable[str], identifiers: Iterable[str] = ()
) -> re.Pattern[str] | None:
    """A pattern matching any word of the given person names (PN values), or any of the given
    identifiers (PatientID, …) whole, as whole words."""
    words = {
        word
        for name in names
        for word in re.split(r"[\^=\s,.]+", name)
        if len(word) >= 2 and not word.isdigit()
    }
    words.update(identifier.strip() for identifier in identifiers if len(identifier.strip()) >= 3)
    if not words:
        return None
    alternatives = "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))
    return re.compile(rf"\b(?:{alternatives})\b", re.IGNORECASE)


def find(text: str, names: re.Pattern[str] | None = None) -> list[Finding]:
    """Sensitive spans in free text, without overlaps (earlier, then longer, wins).

    >>> [(f.info_type, f.start, f.end) for f in find("Seen 2019-03-04 by Dr. Who")]
    [('DATE', 5, 15), ('PERSON_NAME', 19, 26)]
    """
    candidates: list[Finding] = []
    for pattern, _layout in _DATE_LAYOUTS:
        candidates.extend(Finding(m.start(), m.end(), "DATE") for m in pattern.finditer(text))
    for info_type, pattern in _RECOGNISERS:
        candidates.extend(Finding(m.start(), m.end(), info_type) for m in pattern.finditer(text))
    if names is not None:
        candidates.extend(Finding(m.start(), m.end(), "PERSON_NAME") for m in names.finditer(text))
    candidates.sort(key=lambda f: (f.start, -(f.end - f.start)))
    chosen: list[Finding] = []
    for finding in candidates:
        if finding.end > finding.start and (not chosen or finding.start >= chosen[-1].end):
            chosen.append(finding)
    return chosen


def date_shift_days(key: bytes, patient: str) -> int:
    """The consistent shift, in days, for one patient under one key: within ±100, never 0."""
    digest = hmac.new(key, b"date-shift\0" + patient.encode(), hashlib.sha256).digest()
    days = int.from_bytes(digest[:8], "big") % (2 * DATE_SHIFT_DAYS) - DATE_SHIFT_DAYS
    return days + 1 if days >= 0 else days


def shift_dicom_date(value: str, vr: str, days: int) -> str | None:
    """A DA or DT value moved by ``days``; None if it is not a full date (PS3.5 6.2).

    >>> shift_dicom_date("20200131", "DA", 1), shift_dicom_date("20200131120000.5", "DT", -31)
    ('20200201', '20191231120000.5')
    """
    if len(value) < 8 or (vr == "DA" and len(value) != 8):
        return None
    try:
        moved = datetime.strptime(value[:8], "%Y%m%d").date() + timedelta(days=days)
    except ValueError:
        return None
    return moved.strftime("%Y%m%d") + value[8:]


def shift_text_date(text: str, days: int) -> str | None:
    """A date written in free text moved by ``days`` in the same layout; None if unparseable."""
    for pattern, layout in _DATE_LAYOUTS:
        if pattern.fullmatch(text):
            for variant in (layout, layout.replace("%B", "%b")):
                try:
                    parsed: date = datetime.strptime(text.replace("Sept", "Sep"), variant).date()
                except ValueError:
                    continue
                return (parsed + timedelta(days=days)).strftime(variant)
    return None


def crypto_hash(key: bytes, text: str) -> str:
    """Cloud Healthcare's CryptoHashConfig surrogate: base64 of HMAC-SHA256."""
    return base64.b64encode(hmac.new(key, text.encode(), hashlib.sha256).digest()).decode()


def transform(
    text: str,
    info_type: str,
    transformation: Transformation,
    *,
    key: bytes,
    shift_days: int,
    vr: str | None = None,
) -> str:
    """The replacement of one sensitive value or span.

    Args:
        vr: when the text is a whole DICOM value (not a span of free text), its VR, so that a
            date is shifted in DICOM form.
    """
    kind = transformation.kind
    if kind == "redact":
        return ""
    if kind == "mask":
        return transformation.masking_character * len(text)
    if kind == "replace":
        return f"[{info_type}]"
    if kind == "hash":
        return crypto_hash(transformation.crypto_key or key, text)
    # date_shift: only chosen for DATE findings (Transformation.applies_to).
    if vr in ("DA", "DT"):
        shifted = shift_dicom_date(text, vr, shift_days)
    else:
        shifted = shift_text_date(text, shift_days)
    return "" if shifted is None else shifted


def fit_value(value: str, vr: str) -> str:
    """Make a transformed value valid for its VR: a value the VR cannot hold becomes empty
    (redaction), a long one is cut to the VR's maximum length."""
    if vr == "DA" and not re.fullmatch(r"\d{8}", value):
        return ""
    if vr == "DT" and not re.fullmatch(r"\d{4,14}(\.\d{1,6})?([+-]\d{4})?", value):
        return ""
    if vr == "AS" and not re.fullmatch(r"\d{3}[DWMY]", value):
        return ""
    if vr == "PN":
        # '=' separates PN component groups and '\\' values; base64 padding is not a name.
        value = value.replace("=", "").replace("\\", "")
    elif vr != "UT" and vr != "UC":
        value = value.replace("\\", "/")
    limit = MAX_LENGTH.get(vr)
    return value[:limit] if limit else value
