"""C-FIND (PS3.4 C.4.1): a Query/Retrieve identifier answered by the same matching as QIDO-RS.

The identifier's keys with a value become QIDO search parameters (single value, ``*``/``?``
wildcards, ``a-b`` date and time ranges, backslash-separated UID lists: the same syntax in both),
parsed by :func:`dicomql.dicom.qido.parse_search` with PS3.18's required keys and run by
:func:`dicomql.store.search.search`, page by page; keys without a value are return keys
(``includefield``). Each match is answered with the requested keys only (PS3.4 C.4.1.1.3.2),
empty where the store has no value.

Levels: STUDY, SERIES and IMAGE are QIDO's studies, series and instances. PATIENT (Patient Root)
is a study search answered once per distinct Patient ID (the index has no patient table).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from sqlalchemy import Connection

from dicomql.dicom.attributes import Level
from dicomql.dicom.qido import MAX_LIMIT, QueryError, SearchQuery, parse_search
from dicomql.dimse.answers import EXPLICIT_LITTLE, Encoding, answer_identifier
from dicomql.dimse.identifier import elements, matching_value
from dicomql.dimse.settings import StoreName
from dicomql.store import search as index_search
from dicomql.store.index import Index
from dicomql.store.resources import dicom_store_pk

LEVELS = {
    "PATIENT": Level.STUDY,
    "STUDY": Level.STUDY,
    "SERIES": Level.SERIES,
    "IMAGE": Level.INSTANCE,
}
# Keys of the identifier that are about the query, not matching or return keys.
_NOT_KEYS = frozenset({0x00080005, 0x00080052, 0x00080056, 0x00080054})
_LEVEL = 0x00080052  # QueryRetrieveLevel
_PATIENT_ID_KEY = "00100020"


class FindError(ValueError):
    """An identifier the SCP cannot answer; the message goes into the Error Comment."""


@dataclass(frozen=True)
class Keys:
    """What an identifier asks: its Query/Retrieve Level, the QIDO level and parameters
    searched, and the keys each answer holds (tag and DICOM JSON key), in tag order."""

    level_name: str
    level: Level
    params: list[tuple[str, str]]
    wanted: list[tuple[BaseTag, str]]


def search_parameters(identifier: Dataset) -> tuple[str, Level, list[tuple[str, str]]]:
    """The query level, the QIDO level searched and the QIDO parameters of an identifier."""
    keys = identifier_keys(identifier)
    return keys.level_name, keys.level, keys.params


def identifier_keys(identifier: Dataset) -> Keys:
    """The keys of an identifier pydicom decoded.

    Raises:
        FindError: an unsupported level.
    """
    level_name = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    return _keys(
        level_name, sorted(identifier.keys()), lambda tag: _matching_value(identifier[tag])
    )


def encoded_keys(data: bytes, implicit: bool) -> Keys | None:
    """The keys of an identifier as it was received, in implicit or explicit VR little endian,
    read as :func:`identifier_keys` reads them once pydicom has decoded it; None for one left
    to pydicom (:mod:`dicomql.dimse.identifier`). Private and file meta elements are not read:
    neither is searched.

    Raises:
        FindError: an unsupported level.
    """
    found = elements(data, implicit)
    if found is None:
        return None
    values: dict[int, str] = {}
    level_name = ""
    for tag, vr, value in found:
        if tag == _LEVEL or (tag not in _NOT_KEYS and _searched(tag)):
            text = matching_value(tag, vr, value)
            if text is None or (tag == _LEVEL and "\\" in text):
                return None  # pydicom's str() of several levels: pydicom's to report
            if tag == _LEVEL:
                level_name = text.upper()
            values[tag] = text
    return _keys(level_name, [tag for tag, _, _ in found], values.__getitem__)


def _keys(level_name: str, tags: Iterable[int], value_of: Callable[[int], str]) -> Keys:
    if level_name not in LEVELS:
        raise FindError(f"QueryRetrieveLevel {level_name!r} is not PATIENT/STUDY/SERIES/IMAGE")
    params: list[tuple[str, str]] = []
    wanted: list[tuple[BaseTag, str]] = []
    for tag in tags:
        if tag in _NOT_KEYS:
            continue
        key = f"{tag:08X}"
        wanted.append((BaseTag(tag), key))
        if not _searched(tag):
            continue
        value = value_of(tag)
        if value:
            params.append((key, value))
        else:
            params.append(("includefield", key))
    return Keys(level_name, LEVELS[level_name], params, wanted)


def _searched(tag: int) -> bool:
    """Neither a private element (an odd group) nor file meta information (group 2)."""
    group = tag >> 16
    return not group & 1 and group != 0x0002


def _matching_value(element: Any) -> str:
    """The element's value as QIDO writes it; empty for universal matching (a return key)."""
    if element.VR == "SQ" or element.value is None or element.value == "":
        return ""
    if element.VM > 1:  # a list of UIDs (PS3.4 C.2.2.2.2), backslash-separated in QIDO too
        return "\\".join(str(item) for item in element.value)
    return str(element.value).strip()


def find(
    index: Index, store_pk: int, identifier: Dataset, is_cancelled: Callable[[], bool]
) -> Iterator[Dataset]:
    """The identifiers of the matches, in index order, until the end or a cancel. Each page is
    read in its own connection, released before its matches are sent to a peer that may be slow.

    Raises:
        FindError: an unsupported level or key, or a malformed value (before any match).
    """
    keys = identifier_keys(identifier)
    return _find(index, lambda conn: store_pk, keys, is_cancelled, EXPLICIT_LITTLE)


def find_in_store(
    index: Index,
    store: StoreName | None,
    keys: Keys,
    is_cancelled: Callable[[], bool],
    encoding: Encoding = EXPLICIT_LITTLE,
) -> Iterator[Dataset]:
    """:func:`find` of an identifier's keys in the store named, looked up in the connection
    that reads the first page (one connection per request, not two; the store may be created,
    deleted and created again while the server runs). ``encoding`` is the one the answers will
    be sent in: their elements are encoded in it up front, so that sending them copies bytes
    (:func:`answer_identifier`).

    Raises:
        FindError: no such store, or as :func:`find` (before any match).
    """
    return _find(index, lambda conn: _store_pk(conn, store), keys, is_cancelled, encoding)


def _find(
    index: Index,
    store_pk_in: Callable[[Connection], int],
    keys: Keys,
    is_cancelled: Callable[[], bool],
    encoding: Encoding,
) -> Iterator[Dataset]:
    level_name, level, params, wanted = keys.level_name, keys.level, keys.params, keys.wanted
    if level_name == "PATIENT":  # answered once per Patient ID, requested or not
        params = [*params, ("includefield", _PATIENT_ID_KEY)]
    limit = MAX_LIMIT[level]

    def page(offset: int) -> SearchQuery:
        return parse_search(
            [*params, ("limit", str(limit)), ("offset", str(offset))], level, standard=True
        )

    try:
        query = page(0)  # refuse a bad identifier up front
    except QueryError as exc:
        raise FindError(str(exc)) from exc
    patients: set[str] = set()
    offset = 0
    store_pk: int | None = None
    while not is_cancelled():
        with index.connect() as conn:
            if store_pk is None:
                store_pk = store_pk_in(conn)
            result = index_search.search(
                conn, store_pk, query, index_search.Scope(), "", defaults=False
            )
        for match in result.matches:
            if level_name == "PATIENT":
                patient = _first_value(match, _PATIENT_ID_KEY)
                if patient in patients:
                    continue
                patients.add(patient)
            yield answer_identifier(match, wanted, level_name, encoding)
        if not result.more:
            return
        offset += limit
        query = page(offset)


def _store_pk(conn: Connection, store: StoreName | None) -> int:
    pk = None
    if store is not None:
        pk = dicom_store_pk(conn, store.project, store.location, store.dataset, store.store)
    if pk is None:
        raise FindError(f"No DICOM store {store or '(none set)'}")
    return pk


def _first_value(match: dict[str, Any], key: str) -> str:
    values = match.get(key, {}).get("Value") or [""]
    return str(values[0])
