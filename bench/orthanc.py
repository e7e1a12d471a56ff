"""Orthanc, the peer dicomql is measured against: install it from Debian if missing, write its
configuration, and run it where it can be reached only over loopback.

Orthanc binds every interface (``RemoteAccessAllowed: false`` only refuses non-local clients
after accepting them), so it is started only inside a network namespace whose one interface is
``lo``; ``compare.py`` creates that namespace with ``unshare -n`` and runs both servers and the
load client inside it, which keeps the client path identical for every server.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import httpx

from bench.servers import ServerError, ServerProcess

BINARY = "Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
PACKAGES = ("orthanc", "orthanc-dicomweb")
PORT = 8042
DICOMWEB_ROOT = "/dicom-web/"
DICOM_AE_TITLE = "ORTHANC"


def installed() -> bool:
    return shutil.which(BINARY) is not None and DICOMWEB_PLUGIN.exists()


def ensure_installed() -> None:
    """``apt-get install orthanc orthanc-dicomweb`` unless both are present (needs root).

    Debian's post-install script would start the system service; the daemon's default config
    listens on all interfaces, so it is stopped again if the packaging started it.
    """
    if installed():
        return
    if os.geteuid() != 0:
        raise ServerError(
            "Orthanc is not installed and installing it needs root: "
            "apt-get install orthanc orthanc-dicomweb (or pass --no-orthanc)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    if subprocess.run(command, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(command, env=env, check=True)
    subprocess.run(
        ["service", "orthanc", "stop"],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if not installed():
        raise ServerError("apt-get finished but Orthanc or its DICOMweb plugin is missing")


def only_loopback() -> bool:
    """True when this process's network namespace has no interface but ``lo``."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def write_config(work_dir: Path, dicom_port: int | None = None) -> Path:
    """Orthanc's configuration for the run: storage under ``work_dir``, HTTP only, no auth;
    with ``dicom_port``, also its DICOM server (AE title ``ORTHANC``; any calling AE title may
    C-ECHO, C-STORE and C-FIND)."""
    storage = work_dir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "dicomql-bench",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "StorageCompression": False,
        "HttpPort": PORT,
        "HttpServerEnabled": True,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        # On by default, and httpx asks for gzip; dicomql does not compress, so neither does
        # Orthanc here: the figures should measure the servers, not zlib.
        "HttpCompressionEnabled": False,
        # Orthanc's default since 1.7.4, spelled out: fsync each stored file, as dicomql does,
        # so both acknowledge a STOW only once the instance is durable.
        "SyncStorageArea": True,
        # Orthanc's default: QIDO may read stored files for attributes its index lacks.
        "StorageAccessOnFind": "Always",
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": DICOMWEB_ROOT, "EnableWado": False},
    }
    if dicom_port is not None:
        config.update(
            {
                "DicomServerEnabled": True,
                "DicomPort": dicom_port,
                "DicomAet": DICOM_AE_TITLE,
                # Any calling AE title may echo, store and find, with no DicomModalities entry
                # (the namespace has only loopback); the called AE title is checked, as dicomql
                # checks its own.
                "DicomCheckCalledAet": True,
                "DicomAlwaysAllowEcho": True,
                "DicomAlwaysAllowStore": True,
                "DicomAlwaysAllowFind": True,
                "DicomModalities": {},
            }
        )
    path = work_dir / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    return path


class OrthancServer(ServerProcess):
    """Orthanc with its DICOMweb plugin on 127.0.0.1:8042 of an isolated namespace."""

    name = "orthanc"

    def __init__(self, work_dir: Path, dicom_port: int | None = None) -> None:
        config = write_config(work_dir, dicom_port)
        # DCMTK (3.6.7, under Orthanc's DICOM server) leaves Nagle's algorithm on unless
        # TCP_NODELAY=1 is in the environment; with it on, a C-FIND match (command PDU, then
        # identifier PDU) waits for the client's delayed ACK, about 45 ms a request on Linux.
        # Orthanc is measured at its best, so the variable is set.
        env = {**os.environ, "TCP_NODELAY": "1"}
        super().__init__([BINARY, str(config)], PORT, work_dir / "orthanc.log", env=env)
        self.dicomweb_url = self.url + DICOMWEB_ROOT.rstrip("/")

    def start(self, ready_path: str = "/system", timeout: float = 60.0) -> None:
        if not only_loopback():
            raise ServerError(
                "refusing to start Orthanc: it listens on every interface and this network "
                "namespace has more than lo; run bench/compare.py as root so it can unshare -n"
            )
        super().start(ready_path, timeout)

    def versions(self) -> dict[str, str]:
        system = httpx.get(self.url + "/system", timeout=10).json()
        plugin = httpx.get(self.url + "/plugins/dicom-web", timeout=10).json()
        return {
            "orthanc": system.get("Version", "?"),
            "dicomweb_plugin": plugin.get("Version", "?"),
        }
