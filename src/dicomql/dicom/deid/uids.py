"""The old → new UID mapping of a de-identification, derived from a keyed hash so that it needs
no shared state.

Every worker, in every process, of one de-identify operation holds the same operation key, so
each maps a given old UID to the same new UID without coordination, and references between
instances (ReferencedSOPInstanceUID → another instance's SOPInstanceUID) stay consistent however
the instances are spread over workers, and across a restart if the key is stored with the
operation. The new UID is ``2.25.`` followed by the first 128 bits of HMAC-SHA256(key, old UID)
as a decimal integer: PS3.5 B.2 allows a UUID-sized integer under the 2.25 root, which is at most
39 digits, so the UID is at most 44 characters (PS3.5 9.1: at most 64). Without the key the
mapping cannot be reversed or recomputed (PS3.15 E.3.9).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from typing import Any

from pydicom.datadict import keyword_for_tag

# Well-known UIDs (SOP classes, transfer syntaxes, coding schemes, …) are defined by the standard
# under this root and identify no patient; PS3.15 E.3.9 only replaces instance UIDs.
WELL_KNOWN_ROOT = "1.2.840.10008."
# UI attributes that name a kind of thing rather than an instance (a vendor's private SOP class
# or transfer syntax must survive, or the object no longer decodes).
_CLASS_SUFFIXES = ("ClassUID", "SyntaxUID", "ClassUIDInFile", "SyntaxUIDInFile", "SchemeUID")
_CACHE_LIMIT = 100_000


class UidMap:
    """Maps original UIDs to replacement UIDs, the same way in every process sharing ``key``.

    Args:
        key: the operation's secret (at least 16 bytes).
        record: keep every mapping made in :attr:`mapping` (for a MIDI-B style old → new
            UID report); off by default to keep memory flat over millions of instances.
    """

    def __init__(self, key: bytes, *, record: bool = False) -> None:
        if len(key) < 16:
            raise ValueError("a UID map key must be at least 16 bytes")
        self._key = key
        self._record = record
        self.mapping: dict[str, str] = {}
        self._cache: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"key": self._key, "record": self._record}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["key"], record=state["record"])  # type: ignore[misc]

    def __call__(self, uid: str) -> str:
        """The replacement of ``uid``; well-known UIDs and empty values are returned unchanged.

        >>> uid_map = UidMap(b"0123456789abcdef")
        >>> uid_map("1.2.3.4") == uid_map("1.2.3.4") != uid_map("1.2.3.5")
        True
        >>> uid_map("1.2.840.10008.1.2.1")
        '1.2.840.10008.1.2.1'
        """
        uid = uid.strip("\0 ")
        if not uid or uid.startswith(WELL_KNOWN_ROOT):
            return uid
        new = self._cache.get(uid)
        if new is None:
            digest = hmac.new(self._key, uid.encode("ascii", "replace"), hashlib.sha256).digest()
            new = f"2.25.{int.from_bytes(digest[:16], 'big')}"
            if len(self._cache) >= _CACHE_LIMIT:  # recomputing is cheap; memory must stay flat
                self._cache.clear()
            self._cache[uid] = new
            if self._record:
                self.mapping[uid] = new
        return new


@functools.cache  # called for every UI element of every instance; few distinct UI tags exist
def is_instance_uid_tag(tag: int) -> bool:
    """Whether the UI attribute ``tag`` identifies an instance (and so is remapped), as opposed
    to naming a class, syntax or scheme."""
    keyword = keyword_for_tag(tag)
    return not keyword.endswith(_CLASS_SUFFIXES)
