"""What ``dicomql serve --dimse-*`` asks for, parsed once at the edge and carried in
``ServiceConfig.dimse``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dicomql.store.names import dicom_store_name

DEFAULT_AE_TITLE = "DICOMQL"

_STORE_NAME = re.compile(
    r"projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/datasets/(?P<dataset>[^/]+)/dicomStores/(?P<store>[^/]+)"
)
# PS3.5 AE value representation: up to 16 characters, no backslash or control characters.
_AE_TITLE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")


@dataclass(frozen=True)
class StoreName:
    """A DICOM store's resource name, split into its parts."""

    project: str
    location: str
    dataset: str
    store: str

    @classmethod
    def parse(cls, name: str) -> StoreName:
        match = _STORE_NAME.fullmatch(name.strip("/"))
        if match is None:
            raise ValueError(
                f"{name!r} is not a DICOM store name: expected "
                "projects/PROJECT/locations/LOCATION/datasets/DATASET/dicomStores/STORE"
            )
        return cls(*match.group("project", "location", "dataset", "store"))

    def __str__(self) -> str:
        return dicom_store_name(self.project, self.location, self.dataset, self.store)


def check_ae_title(title: str) -> str:
    """The AE title, stripped of padding; ValueError naming the rule it breaks."""
    stripped = title.strip()
    if not _AE_TITLE.fullmatch(stripped):
        raise ValueError(
            f"{title!r} is not an AE title: 1 to 16 printable ASCII characters, no backslash"
        )
    return stripped


@dataclass(frozen=True)
class Destination:
    """Where a C-MOVE destination AE listens."""

    host: str
    port: int


@dataclass(frozen=True)
class DimseSettings:
    """The DIMSE listener of a ``dicomql serve`` process.

    Attributes:
        port: the TCP port (every server process binds it with SO_REUSEPORT; the kernel
            spreads associations over them).
        host: the address to bind, the HTTP server's.
        ae_title: the called AE title this server answers to; associations calling another
            are rejected.
        store: the DICOM store C-STORE writes into and C-FIND searches; it may be created
            after the server starts.
    """

    port: int
    host: str = "127.0.0.1"
    ae_title: str = DEFAULT_AE_TITLE
    store: StoreName | None = None
    calling_ae_titles: tuple[str, ...] = ()
    move_destinations: dict[str, Destination] = field(default_factory=dict)

    @classmethod
    def from_options(
        cls,
        host: str,
        port: int | None,
        ae_title: str,
        store: str | None,
        config_file: Path | None = None,
    ) -> DimseSettings | None:
        """The settings ``serve``'s options ask for, None without ``--dimse-port``."""
        if port is None:
            if config_file is not None:
                raise OptionError("--dimse-config", "--dimse-config needs --dimse-port")
            return None
        calling, destinations = _read_config(config_file) if config_file else ((), {})
        try:
            title = check_ae_title(ae_title)
        except ValueError as exc:
            raise OptionError("--dimse-ae-title", str(exc)) from exc
        try:
            name = StoreName.parse(store) if store else None
        except ValueError as exc:
            raise OptionError("--dimse-store", str(exc)) from exc
        return cls(
            port=port,
            host=host,
            ae_title=title,
            store=name,
            calling_ae_titles=calling,
            move_destinations=destinations,
        )


class OptionError(ValueError):
    """A ``--dimse-*`` option's value is wrong; ``option`` names it."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


def _read_config(path: Path) -> tuple[tuple[str, ...], dict[str, Destination]]:
    """``--dimse-config``: the calling AE titles allowed and the C-MOVE destinations.

    .. code-block:: yaml

        calling_ae_titles: [CT01, PACS]        # absent or empty: any calling AE title
        move_destinations:
          VIEWER: {host: 10.0.0.7, port: 11112}
    """

    def bad(message: str) -> OptionError:
        return OptionError("--dimse-config", f"{path}: {message}")

    try:
        loaded: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise bad(f"cannot read it: {exc}") from exc
    loaded = loaded or {}
    if not isinstance(loaded, dict):
        raise bad("expected a mapping with calling_ae_titles and move_destinations")
    unknown = set(loaded) - {"calling_ae_titles", "move_destinations"}
    if unknown:
        raise bad(f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    calling = loaded.get("calling_ae_titles") or []
    if not isinstance(calling, list):
        raise bad("calling_ae_titles must be a list of AE titles")
    try:
        titles = tuple(check_ae_title(str(title)) for title in calling)
    except ValueError as exc:
        raise bad(f"calling_ae_titles: {exc}") from exc
    destinations: dict[str, Destination] = {}
    moves = loaded.get("move_destinations") or {}
    if not isinstance(moves, dict):
        raise bad("move_destinations must map AE titles to {host, port}")
    for title, where in moves.items():
        try:
            name = check_ae_title(str(title))
        except ValueError as exc:
            raise bad(f"move_destinations: {exc}") from exc
        port = where.get("port") if isinstance(where, dict) else None
        if not (
            isinstance(where, dict)
            and isinstance(where.get("host"), str)
            and isinstance(port, int)
            and 0 < port < 65536
            and set(where) <= {"host", "port"}
        ):
            raise bad(f"move_destinations.{name} must be {{host: NAME, port: 1-65535}}")
        destinations[name] = Destination(where["host"], port)
    return titles, destinations
