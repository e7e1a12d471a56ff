"""What ``dicomql serve --dimse-*`` asks for, parsed once at the edge and carried in
``ServiceConfig.dimse``."""

from __future__ import annotations

import re
import ssl
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
    """Where a C-MOVE destination AE listens (and a Storage Commitment requestor, for an
    N-EVENT-REPORT on a new association)."""

    host: str
    port: int


@dataclass(frozen=True)
class CalledAE:
    """An AE title this server answers to: the store it serves and who may call it.

    Attributes:
        title: the called AE title.
        store: the DICOM store C-STORE writes into and C-FIND/C-GET/C-MOVE read; None when
            ``--dimse-store`` is not given (C-STORE then fails naming the missing store).
        calling_ae_titles: the calling AE titles allowed; empty: any.
    """

    title: str
    store: StoreName | None = None
    calling_ae_titles: tuple[str, ...] = ()

    def admits(self, calling: str) -> bool:
        return not self.calling_ae_titles or calling in self.calling_ae_titles


@dataclass(frozen=True)
class TlsFiles:
    """The certificate and key the DIMSE listener presents (PEM), and the CA certificates a
    client's certificate must chain to (none: clients are not asked for one)."""

    certificate: Path
    key: Path
    ca: Path | None = None

    def server_context(self) -> ssl.SSLContext:
        """A server context for the BCP 195 profile (PS3.15 B.9): TLS 1.2 or later, with
        OpenSSL's default (forward secret, AEAD first) cipher suites.

        Raises:
            OSError, ssl.SSLError: a file cannot be read or does not hold what it should.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.certificate, self.key)
        if self.ca is not None:
            context.load_verify_locations(cafile=self.ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context


@dataclass(frozen=True)
class DimseSettings:
    """The DIMSE listener of a ``dicomql serve`` process.

    Attributes:
        port: the TCP port (every server process binds it with SO_REUSEPORT; the kernel
            spreads associations over them).
        host: the address to bind, the HTTP server's.
        called_aes: the AE titles answered, each with its store; an association calling
            another is rejected ("called AE title not recognized").
        move_destinations: the AE titles C-MOVE may send to (and Storage Commitment may
            report to on a new association), and where they listen.
        tls: TLS on the port (every association), or None for plain TCP.
    """

    port: int
    host: str = "127.0.0.1"
    called_aes: tuple[CalledAE, ...] = (CalledAE(DEFAULT_AE_TITLE),)
    move_destinations: dict[str, Destination] = field(default_factory=dict)
    tls: TlsFiles | None = None

    def called_ae(self, title: str) -> CalledAE | None:
        """The AE a called AE title names (trailing padding ignored), or None."""
        title = title.strip()
        return next((ae for ae in self.called_aes if ae.title == title), None)

    def describe(self) -> str:
        """One line for the start banner: each AE title with its store, the port, TLS."""
        titles = ", ".join(f"{ae.title} (store {ae.store or 'not set'})" for ae in self.called_aes)
        return f"{titles} on port {self.port}" + (" with TLS" if self.tls else "")

    @classmethod
    def from_options(
        cls,
        host: str,
        port: int | None,
        ae_title: str | None,
        store: str | None,
        config_file: Path | None = None,
        tls_certificate: Path | None = None,
        tls_key: Path | None = None,
        tls_ca: Path | None = None,
    ) -> DimseSettings | None:
        """The settings ``serve``'s options ask for, None without ``--dimse-port``.

        Args:
            ae_title: ``--dimse-ae-title``, None when not given (``DICOMQL`` then, unless the
                config lists ``ae_titles`` and no ``--dimse-store`` is given: the config's
                AE titles are then all there is).
        """
        if port is None:
            for option, value in (
                ("--dimse-config", config_file),
                ("--dimse-tls-cert", tls_certificate),
                ("--dimse-tls-key", tls_key),
                ("--dimse-tls-ca", tls_ca),
            ):
                if value is not None:
                    raise OptionError(option, f"{option} needs --dimse-port")
            return None
        config = _read_config(config_file) if config_file else _Config()
        try:
            name = StoreName.parse(store) if store else None
        except ValueError as exc:
            raise OptionError("--dimse-store", str(exc)) from exc
        called = list(config.called_aes)
        if not called or name is not None or ae_title is not None:
            if called and name is None:
                raise OptionError(
                    "--dimse-ae-title",
                    "--dimse-ae-title needs --dimse-store when --dimse-config lists ae_titles",
                )
            try:
                title = check_ae_title(DEFAULT_AE_TITLE if ae_title is None else ae_title)
            except ValueError as exc:
                raise OptionError("--dimse-ae-title", str(exc)) from exc
            if any(ae.title == title for ae in called):
                raise OptionError(
                    "--dimse-ae-title",
                    f"{title} is both --dimse-ae-title and an entry of ae_titles in "
                    f"{config_file}: give each AE title once",
                )
            called.insert(0, CalledAE(title, name, config.calling_ae_titles))
        return cls(
            port=port,
            host=host,
            called_aes=tuple(called),
            move_destinations=config.move_destinations,
            tls=_tls_files(tls_certificate, tls_key, tls_ca),
        )


class OptionError(ValueError):
    """A ``--dimse-*`` option's value is wrong; ``option`` names it."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


def _tls_files(certificate: Path | None, key: Path | None, ca: Path | None) -> TlsFiles | None:
    """``--dimse-tls-*``, checked by loading them once (each server process loads its own)."""
    if certificate is None and key is None:
        if ca is not None:
            raise OptionError("--dimse-tls-ca", "--dimse-tls-ca needs --dimse-tls-cert and -key")
        return None
    if certificate is None or key is None:
        missing = "--dimse-tls-cert" if certificate is None else "--dimse-tls-key"
        raise OptionError(missing, "TLS needs both --dimse-tls-cert and --dimse-tls-key")
    files = TlsFiles(certificate, key, ca)
    try:
        files.server_context()
    except (OSError, ssl.SSLError) as exc:
        option = "--dimse-tls-ca" if ca is not None and "verify" in str(exc) else "--dimse-tls-cert"
        raise OptionError(option, f"cannot use the TLS certificate, key or CA: {exc}") from exc
    return files


@dataclass(frozen=True)
class _Config:
    calling_ae_titles: tuple[str, ...] = ()
    move_destinations: dict[str, Destination] = field(default_factory=dict)
    called_aes: tuple[CalledAE, ...] = ()


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in a mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_CONFIG_KEYS = ("calling_ae_titles", "move_destinations", "ae_titles")


def _read_config(path: Path) -> _Config:
    """``--dimse-config``: the AE titles answered with their stores, the calling AE titles
    allowed and the C-MOVE destinations.

    .. code-block:: yaml

        calling_ae_titles: [CT01, PACS]   # for --dimse-ae-title, and entries without their own
        ae_titles:
          CT_ARCHIVE: {store: projects/p/locations/l/datasets/d/dicomStores/ct,
                       calling_ae_titles: [CT01]}
        move_destinations:
          VIEWER: {host: 10.0.0.7, port: 11112}
    """

    def bad(message: str) -> OptionError:
        return OptionError("--dimse-config", f"{path}: {message}")

    try:
        loaded: Any = yaml.load(
            path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader
        )  # a safe loader
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise bad(f"cannot read it: {exc}") from exc
    loaded = loaded or {}
    if not isinstance(loaded, dict):
        raise bad(f"expected a mapping with {', '.join(_CONFIG_KEYS)}")
    unknown = set(loaded) - set(_CONFIG_KEYS)
    if unknown:
        raise bad(f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    try:
        calling = _ae_titles(loaded.get("calling_ae_titles"))
    except ValueError as exc:
        raise bad(f"calling_ae_titles: {exc}") from exc
    destinations: dict[str, Destination] = {}
    moves = loaded.get("move_destinations") or {}
    if not isinstance(moves, dict):
        raise bad("move_destinations must map AE titles to {host, port}")
    for title, where in moves.items():
        name = _unique_title(title, destinations, "move_destinations", bad)
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
    called: dict[str, CalledAE] = {}
    entries = loaded.get("ae_titles") or {}
    if not isinstance(entries, dict):
        raise bad("ae_titles must map AE titles to {store, calling_ae_titles}")
    for title, entry in entries.items():
        name = _unique_title(title, called, "ae_titles", bad)
        where = f"ae_titles.{name}"
        if not isinstance(entry, dict) or "store" not in entry:
            raise bad(f"{where} must be {{store: projects/…/dicomStores/S, calling_ae_titles}}")
        extra = set(entry) - {"store", "calling_ae_titles"}
        if extra:
            raise bad(f"{where}: unknown key(s) {', '.join(sorted(map(str, extra)))}")
        try:
            store = StoreName.parse(str(entry["store"]))
        except ValueError as exc:
            raise bad(f"{where}.store: {exc}") from exc
        try:
            own = _ae_titles(entry.get("calling_ae_titles"))
        except ValueError as exc:
            raise bad(f"{where}.calling_ae_titles: {exc}") from exc
        called[name] = CalledAE(name, store, own or calling)
    return _Config(calling, destinations, tuple(called.values()))


def _ae_titles(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError("must be a list of AE titles")
    return tuple(check_ae_title(str(title)) for title in value)


def _unique_title(title: Any, seen: dict[str, Any], section: str, bad: Any) -> str:
    """An AE title key of a section, checked and not given before (``CT`` and ``"CT "`` are
    one AE title: trailing spaces are padding)."""
    try:
        name = check_ae_title(str(title))
    except ValueError as exc:
        raise bad(f"{section}: {exc}") from exc
    if name in seen:
        raise bad(f"{section}: {name} is given twice")
    return name
