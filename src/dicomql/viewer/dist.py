"""Where an installed OHIF viewer lives, and whether a folder holds one prepared for /viewer/.

Shared by ``dicomql viewer install`` (which writes the folder) and the service (which serves
it), so both agree on the pinned version, the default folder and the preparation marker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# The OHIF release the browser test runs against (npm: @ohif/app); docs/viewer.md.
OHIF_VERSION = "3.13.2"
# The path the viewer is served under; the prebuilt dist names "/" and is rewritten for it.
BASE_PATH = "/viewer/"
# Written last by the installer: its presence means the folder is complete and relocated.
MARKER = "dicomql-viewer.json"


def default_viewer_dir(data_dir: Path, version: str = OHIF_VERSION) -> Path:
    """``<data dir>/ohif/<version>``: where ``viewer install`` puts a version by default."""
    return data_dir / "ohif" / version


def viewer_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be served at /viewer/, or None if it can.

    A folder qualifies when it holds OHIF's ``index.html`` built or rewritten for /viewer/:
    one ``dicomql viewer install`` wrote, or an OHIF build made with ``PUBLIC_URL=/viewer/``.
    """
    index = folder / "index.html"
    if not index.is_file():
        return f"{folder} holds no OHIF viewer (no index.html)"
    marker = folder / MARKER
    if marker.is_file():
        try:
            json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return f"{folder}/{MARKER} is unreadable: install the viewer again"
        return None
    text = index.read_text(encoding="utf-8", errors="replace")
    if f'PUBLIC_URL="{BASE_PATH}"' in text or f"PUBLIC_URL='{BASE_PATH}'" in text:
        return None
    return (
        f"{folder} holds an OHIF build for another path than {BASE_PATH} (its index.html does "
        f"not set PUBLIC_URL to {BASE_PATH}); install one with `dicomql viewer install --dir "
        f"{folder}`, or build OHIF with PUBLIC_URL={BASE_PATH}"
    )


@dataclass(frozen=True)
class ViewerSettings:
    """What ``dicomql serve --viewer`` serves: the OHIF folder, and the one DICOM store its
    configuration names (``projects/…/dicomStores/…``), or None for every store."""

    folder: Path
    store: str | None = None
