"""DICOM JSON (PS3.18 F.2) → rows with one column per DICOM keyword, for QIDO and metadata."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any


@functools.cache
def column_name(tag: str) -> str:
    """The DICOM keyword of an 8-hex-digit tag, or the tag itself when it has none.

    >>> column_name("0020000D")
    'StudyInstanceUID'
    >>> column_name("00091001")
    '00091001'
    """
    # Imported here: pydicom costs ~0.3 s to import, and most statements never need it
    # (``dicomql exec`` cold start).
    from pydicom.datadict import keyword_for_tag

    try:
        keyword = keyword_for_tag(int(tag, 16))
    except ValueError:
        return tag
    return keyword or tag


def element_value(
    element: Mapping[str, Any], convert: Callable[[Any, str | None], Any] | None = None
) -> Any:
    """One DICOM JSON element as a SQL value.

    PN gives its Alphabetic group; a single value is a scalar; several are a JSON array;
    sequences are JSON text; bulk data gives its URI (PS3.18 F.2.2–F.2.7). ``convert(value,
    vr)`` types each other value (the metadata tables' DATE, INTEGER, …).
    """
    if "BulkDataURI" in element:
        return element["BulkDataURI"]
    if "InlineBinary" in element:
        return element["InlineBinary"]
    values = element.get("Value")
    if not values:
        return None
    vr = element.get("vr")
    if vr == "SQ":
        return json.dumps(values)
    if vr == "PN":
        values = [v.get("Alphabetic") if isinstance(v, dict) else v for v in values]
    elif convert is not None:
        values = [convert(value, vr) for value in values]
    return one_or_array(values)


def one_or_array(values: list[Any]) -> Any:
    """One value as itself (an object as JSON text), several as a JSON array."""
    if len(values) == 1:
        value = values[0]
        return json.dumps(value) if isinstance(value, dict | list) else value
    return json.dumps(values)


def dicom_rows(datasets: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns (first-seen order) and rows of a DICOM JSON array."""
    columns: dict[str, None] = {}
    rows: list[dict[str, Any]] = []
    for dataset in datasets:
        row = {column_name(tag): element_value(element) for tag, element in dataset.items()}
        columns.update(dict.fromkeys(row))
        rows.append(row)
    return list(columns), rows
