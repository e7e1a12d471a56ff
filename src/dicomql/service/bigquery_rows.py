"""One instance as a row of a BigQuery DICOM table, as export and streaming both write it, in
Google's flattened schema (Cloud Healthcare "Understanding the BigQuery DICOM schema"): a column
per top-level DICOM keyword, typed by VR, and the columns Google's export adds."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

from pydicom.datadict import dictionary_VM, dictionary_VR, keyword_for_tag, tag_for_keyword

# Every table has the UIDs, and the columns Google's export adds to the DICOM keywords (Cloud
# Healthcare "BigQuery schema" of DICOM exports); Type is CREATE for an export (DELETE rows come
# from streaming). DICOM keyword columns are typed by VR (see flatten).
BASE_COLUMNS = {
    "StudyInstanceUID": "VARCHAR",
    "SeriesInstanceUID": "VARCHAR",
    "SOPInstanceUID": "VARCHAR",
    "Type": "VARCHAR",
    # BigQuery TIMESTAMP is UTC; DuckDB's TIMESTAMP (naive, UTC) reads back without pytz.
    "LastUpdated": "TIMESTAMP",
    "StorageClass": "VARCHAR",
    "BlobStorageSize": "BIGINT",
}


def flatten(dicom_json: dict[str, Any]) -> dict[str, Any]:
    """Top-level attributes by keyword, typed as Google's BigQuery DICOM schema types them
    (Cloud Healthcare "Understanding the BigQuery DICOM schema"): DA as a date, TM as a time, DT
    as a timestamp, DS/FL/FD as floats, IS/SS/US/SL/UL/SV/UV as integers, PN as a record,
    sequences as JSON, everything else as text; a list where the dictionary's VM allows several
    values (see :func:`column_type`). Private and unknown tags have no keyword and are left out,
    as is bulk data given by reference; a value that does not parse as its VR becomes NULL."""
    row: dict[str, Any] = {}
    for tag, attribute in dicom_json.items():
        found = _keyword(tag)
        if found is None:
            continue
        keyword, vm = found
        value = _typed(attribute, repeated=vm != "1")
        if value is not None:
            row[keyword] = value
    return row


# VR → DuckDB type of one value (Google's table: String, Date, Time, Timestamp, Struct (Record),
# Floating point, Integer, and a Record for sequences, kept here as JSON).
_VR_TYPES = {
    "DA": "DATE",
    "TM": "TIME",
    "DT": "TIMESTAMP",
    "DS": "DOUBLE",
    "FL": "DOUBLE",
    "FD": "DOUBLE",
    "IS": "BIGINT",
    "SS": "BIGINT",
    "US": "BIGINT",
    "SL": "BIGINT",
    "UL": "BIGINT",
    "SV": "BIGINT",
    "UV": "BIGINT",
    "SQ": "JSON",
    # The three component groups of PS3.18 F.2.2's PN object.
    "PN": "STRUCT(Alphabetic VARCHAR, Ideographic VARCHAR, Phonetic VARCHAR)",
}


def column_type(keyword: str) -> str:
    """The DuckDB type of a keyword's column: its VR's type, as a list when the DICOM dictionary
    allows more than one value (BigQuery's REPEATED mode); VARCHAR for other columns.

    >>> column_type("StudyDate"), column_type("PixelSpacing"), column_type("Rows")
    ('DATE', 'DOUBLE[]', 'BIGINT')
    """
    found = _dictionary_entry(keyword)
    if found is None:
        return BASE_COLUMNS.get(keyword, "VARCHAR")
    vr, vm = found
    kind = _VR_TYPES.get(vr, "VARCHAR")
    if vm != "1" and vr != "SQ":
        kind += "[]"
    return kind


def _dictionary_entry(keyword: str) -> tuple[str, str] | None:
    tag = tag_for_keyword(keyword)
    if tag is None:
        return None
    try:
        # A VR such as "US or SS" (pixel-dependent) is typed by its first choice.
        return dictionary_VR(tag).split(" ")[0], dictionary_VM(tag)
    except KeyError:
        return None


def _keyword(tag: str) -> tuple[str, str] | None:
    try:
        number = int(tag, 16)
        keyword = keyword_for_tag(number)
        return (keyword, dictionary_VM(number)) if keyword else None
    except (ValueError, KeyError):
        return None


def _typed(attribute: dict[str, Any], *, repeated: bool) -> Any:
    """PS3.18 F.2 JSON of one attribute → its column value (None when empty or unparseable)."""
    if "InlineBinary" in attribute:
        return attribute["InlineBinary"]
    values = attribute.get("Value")
    if not values:
        return None
    vr = attribute.get("vr", "")
    if vr == "SQ":
        return json.dumps([_nested(item) for item in values])
    converted = [_convert(vr, value) for value in values]
    if repeated:
        kept = [value for value in converted if value is not None]
        return kept or None
    return converted[0]


def _convert(vr: str, value: Any) -> Any:
    if value is None:
        return None
    if vr == "PN":
        if not isinstance(value, dict):
            return {"Alphabetic": str(value), "Ideographic": None, "Phonetic": None}
        return {group: value.get(group) for group in ("Alphabetic", "Ideographic", "Phonetic")}
    converter = _CONVERTERS.get(vr)
    if converter is None:
        return str(value)
    try:
        return converter(value)
    except (ValueError, TypeError, OverflowError):
        return None


def _date(value: Any) -> date:
    text = str(value).strip().replace(".", "")  # ACR-NEMA "YYYY.MM.DD" still appears
    return datetime.strptime(text[:8], "%Y%m%d").date()


def _time(value: Any) -> time:
    text = str(value).strip().replace(":", "")  # ACR-NEMA "HH:MM:SS"
    whole, _, fraction = text.partition(".")
    hour, minute, second = int(whole[0:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
    micros = int((fraction + "000000")[:6]) if fraction else 0
    return time(hour, minute, min(second, 59), micros)  # a leap second "60" is kept in range


def _timestamp(value: Any) -> datetime:
    """DT (``YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX]``) as naive UTC, as DuckDB's and BigQuery's
    TIMESTAMP hold it; a value without an offset is taken as given."""
    text = str(value).strip()
    offset = None
    if len(text) > 9 and text[-5] in "+-":
        zone, text = text[-5:], text[:-5]
        minutes = int(zone[1:3]) * 60 + int(zone[3:5])
        offset = timezone(timedelta(minutes=minutes if zone[0] == "+" else -minutes))
    whole, _, fraction = text.partition(".")
    fields = [int(whole[0:4])] + [int(whole[i : i + 2]) for i in range(4, min(len(whole), 14), 2)]
    year, month, day, hour, minute, second = fields + [1, 1, 1, 0, 0, 0][len(fields) :]
    micros = int((fraction + "000000")[:6]) if fraction else 0
    moment = datetime(year, month, day, hour, minute, min(second, 59), micros)
    if offset is not None:
        moment = moment.replace(tzinfo=offset).astimezone(UTC).replace(tzinfo=None)
    return moment


_CONVERTERS: dict[str, Any] = {
    "DA": _date,
    "TM": _time,
    "DT": _timestamp,
    "DS": float,
    "FL": float,
    "FD": float,
    "IS": lambda value: int(float(value)) if isinstance(value, str) else int(value),
    "SS": int,
    "US": int,
    "SL": int,
    "UL": int,
    "SV": int,
    "UV": int,
}


def _value(attribute: dict[str, Any]) -> Any:
    """PS3.18 F.2 JSON of one nested attribute → a scalar, a list, or None when empty (the
    items of a sequence column, kept as JSON)."""
    if "InlineBinary" in attribute:
        return attribute["InlineBinary"]
    values = attribute.get("Value")
    if not values:
        return None
    if attribute.get("vr") == "SQ":
        return [_nested(item) for item in values]
    if attribute.get("vr") == "PN":
        values = [
            value.get("Alphabetic", "") if isinstance(value, dict) else value for value in values
        ]
    if len(values) == 1:
        return None if values[0] is None else str(values[0])
    return values


def _nested(item: dict[str, Any]) -> dict[str, Any]:
    nested = {}
    for tag, attribute in (item or {}).items():
        found = _keyword(tag)
        value = _value(attribute)
        if found is not None and value is not None:
            nested[found[0]] = value
    return nested


def instance_row(
    attributes: dict[str, Any],
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    last_updated: datetime | None,
    storage_class: str,
    size: int,
    source_store: str | None = None,
) -> dict[str, Any]:
    """One instance's table row, as export and streaming both write it: the flattened metadata
    and the columns Google adds (Type, LastUpdated, StorageClass, BlobStorageSize, and
    SourceStore with ``includeSourceStore``)."""
    row: dict[str, Any] = flatten(attributes)
    # The UIDs come from the index, so every row has them even if attributes lack them.
    row["StudyInstanceUID"] = study_instance_uid
    row["SeriesInstanceUID"] = series_instance_uid
    row["SOPInstanceUID"] = sop_instance_uid
    row["Type"] = "CREATE"
    row["LastUpdated"] = _utc(last_updated)
    row["StorageClass"] = storage_class
    row["BlobStorageSize"] = size
    if source_store is not None:
        row["SourceStore"] = source_store
    return row


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)
