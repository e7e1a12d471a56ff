"""The free-space floor: below it, new instances are refused before the disk is actually full,
so that deletes, the index and its journal always have room (the idea of Elasticsearch's disk
watermarks).

The floor is a size (``500MB``, ``2GiB``) or a share of the file system (``5%``); by default
the smaller of 1 GiB and 5 %, so a small disk is not refused everything. It applies to the local
directories the service writes (the blob root and a SQLite index's directory); blobs in object
storage have no floor.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

GIB = 1024**3
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


@dataclass(frozen=True)
class SpaceFloor:
    """How much free space must remain: ``size`` bytes, ``percent`` of the file system, or
    (both given) the smaller of the two."""

    size: int | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, text: str) -> SpaceFloor:
        """``"500MB"``, ``"1GiB"``, ``"5%"``, ``"0"`` (no floor), or a size and a percentage
        separated by a comma (``"1GiB,5%"``: whichever is smaller).

        >>> SpaceFloor.parse("1GiB,5%") == DEFAULT_FLOOR
        True

        Raises:
            ValueError: anything else, with a message naming the accepted forms.
        """
        parts = [cls._parse_one(part) for part in text.split(",")]
        sizes = [part.size for part in parts if part.size is not None]
        percents = [part.percent for part in parts if part.percent is not None]
        if len(sizes) > 1 or len(percents) > 1:
            raise ValueError(f"{text!r}: give at most one size and one percentage")
        return cls(size=sizes[0] if sizes else None, percent=percents[0] if percents else None)

    @classmethod
    def _parse_one(cls, text: str) -> SpaceFloor:
        value = text.strip().lower().replace(" ", "")
        match = re.fullmatch(r"(\d+(?:\.\d+)?)(%|[kmgt]?i?b?)", value)
        if match is None or (match[2] not in _UNITS and match[2] != "%"):
            raise ValueError(
                f"{text!r} is not a free-space floor: give a size such as 500MB or 2GiB,"
                " or a percentage of the file system such as 5%"
            )
        number = float(match[1])
        if match[2] == "%":
            if number > 100:
                raise ValueError(f"{text!r}: a percentage of at most 100% is expected")
            return cls(percent=number)
        return cls(size=int(number * _UNITS[match[2]]))

    def bytes_for(self, total: int) -> int:
        """The floor in bytes on a file system of ``total`` bytes."""
        candidates = []
        if self.size is not None:
            candidates.append(self.size)
        if self.percent is not None:
            candidates.append(int(total * self.percent / 100))
        return min(candidates) if candidates else 0

    def __str__(self) -> str:
        parts = []
        if self.size is not None:
            parts.append(_human(self.size))
        if self.percent is not None:
            parts.append(f"{self.percent:g}%")
        return " or ".join(parts) + (" (whichever is smaller)" if len(parts) > 1 else "")


DEFAULT_FLOOR = SpaceFloor(size=GIB, percent=5.0)
NO_FLOOR = SpaceFloor(size=0)


@dataclass(frozen=True)
class FreeSpace:
    path: Path
    free: int  # bytes an unprivileged process may still write
    total: int


def parse_size(text: str) -> int:
    """Bytes in ``"500MB"``, ``"2GiB"``, ``"1024"``.

    Raises:
        ValueError: not a size.
    """
    floor = SpaceFloor._parse_one(text)
    if floor.size is None:
        raise ValueError(f"{text!r} is not a size such as 500MB or 2GiB")
    return floor.size


def free_space(path: Path) -> FreeSpace:
    """Free and total bytes of the file system holding ``path`` (its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    stats = os.statvfs(probe)
    return FreeSpace(path, stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize)


def shortage(paths: Iterable[Path], floor: SpaceFloor) -> str | None:
    """Why new data must be refused (a path's free space is below the floor), or None."""
    for path in paths:
        space = free_space(path)
        needed = floor.bytes_for(space.total)
        if space.free < needed or (needed == 0 and space.free == 0):
            return (
                f"Refused: out of resources. The server's disk has {_human(space.free)} free,"
                f" below its free-space floor of {_human(needed)} (--min-free-space {floor});"
                " delete data or add space, then retry."
            )
    return None


def _human(size: int) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"
