"""What ``dicomql serve --dimse-*`` asks for, parsed once at the edge and carried in
``ServiceConfig.dimse``."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
        return (
            f"projects/{self.project}/locations/{self.location}"
            f"/datasets/{self.dataset}/dicomStores/{self.store}"
        )


def check_ae_title(title: str) -> str:
    """The AE title, stripped of padding; ValueError naming the rule it breaks."""
    stripped = title.strip()
    if not _AE_TITLE.fullmatch(stripped):
        raise ValueError(
            f"{title!r} is not an AE title: 1 to 16 printable ASCII characters, no backslash"
        )
    return stripped


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

    @classmethod
    def from_options(
        cls, host: str, port: int | None, ae_title: str, store: str | None
    ) -> DimseSettings | None:
        """The settings ``serve``'s options ask for, None without ``--dimse-port``."""
        if port is None:
            return None
        try:
            title = check_ae_title(ae_title)
        except ValueError as exc:
            raise OptionError("--dimse-ae-title", str(exc)) from exc
        try:
            name = StoreName.parse(store) if store else None
        except ValueError as exc:
            raise OptionError("--dimse-store", str(exc)) from exc
        return cls(port=port, host=host, ae_title=title, store=name)


class OptionError(ValueError):
    """A ``--dimse-*`` option's value is wrong; ``option`` names it."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option
