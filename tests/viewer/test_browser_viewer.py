"""The OHIF viewer in a real browser: ``dicomql serve --viewer --auth-token`` on loopback, and
headless Chromium (Debian's, driven by Playwright; nothing downloads a browser) signing in,
searching the study list by patient name and by a date range, opening a CT series, scrolling it,
and checking from screenshots that the viewport painted an image and that scrolling changed it;
then JPEG Baseline, JPEG 2000 and multi-frame studies (scrolling the frames).

The OHIF build comes from ``dicomql viewer install`` (``.ci/run`` runs it); when it is missing,
the test installs it into the same place, and skips only if the npm registry cannot be reached.
A failing run leaves its screenshots and the browser's console under test-artifacts/viewer/.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Locator, Page, Playwright, sync_playwright

from dicomql.viewer.dist import OHIF_VERSION, default_viewer_dir, viewer_problem
from tests.support.ports import free_port
from tests.support.viewer_data import CT, FRAMES, OTHERS, fill

# About 40 s: OHIF's 17 MB bundle in a software-rendered browser. On one worker: one server and
# one Chromium for the module (docs/development.md).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("browser-viewer")]

TOKEN = "browser-viewer-token"
SLICES = 12
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "viewer"
DEADLINE = 30.0  # seconds for any one thing the page must show


def chromium() -> str:
    for candidate in (
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.skip("no Chromium installed (Debian: apt-get install chromium); .ci/run installs it")


@pytest.fixture(scope="module")
def ohif() -> Path:
    """The installed OHIF build: $DICOMQL_VIEWER_DIR, else where `dicomql viewer install` puts
    the pinned version (installed there now if missing, as .ci/run would)."""
    chromium()  # no 200 MB download for a test that would skip
    given = os.environ.get("DICOMQL_VIEWER_DIR")
    if given:
        problem = viewer_problem(Path(given))
        assert problem is None, f"DICOMQL_VIEWER_DIR: {problem}"
        return Path(given)
    data_dir = Path(os.environ.get("DICOMQL_DATA_DIR", "~/.local/share/dicomql")).expanduser()
    folder = default_viewer_dir(data_dir)
    if viewer_problem(folder) is None:
        return folder
    from dicomql.viewer.install import RegistryUnreachable, install

    try:
        # Over HTTPS, not npm: offline, npm retries for a minute or more before failing.
        install(OHIF_VERSION, folder, npm=None)
    except RegistryUnreachable as exc:
        pytest.skip(f"OHIF is not installed and the npm registry cannot be reached: {exc}")
    return folder


@dataclass(frozen=True)
class Server:
    url: str
    studies: dict[str, str]  # StudyInstanceUID by encoding


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ohif: Path) -> Iterator[Server]:
    """`dicomql serve --viewer` as a user starts it, with a token, holding the test studies."""
    tmp_path = tmp_path_factory.mktemp("viewer")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "dicomql.cli",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path / "data"),
        "--processes",
        "1",
        "--workers",
        "0",
        "--auth-token",
        TOKEN,
        "--viewer",
        "--viewer-dir",
        str(ohif),
    ]
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{url}/viewer/login", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "dicomql serve did not start"
            time.sleep(0.1)
        yield Server(url, fill(url, TOKEN, SLICES))
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


class Evidence:
    """Screenshots taken along the way, written out (with the console) only if the test fails."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.shots: list[tuple[str, bytes]] = []
        self.console: list[str] = []
        page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))

    def keep(self, name: str, png: bytes) -> bytes:
        self.shots.append((name, png))
        return png

    def save(self, test_name: str) -> Path:
        folder = ARTIFACTS / test_name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for number, (name, png) in enumerate(self.shots):
            (folder / f"{number:02d}-{name}.png").write_bytes(png)
        try:
            (folder / "page-at-failure.png").write_bytes(self.page.screenshot(full_page=True))
        except Exception as exc:  # the page may be what failed
            self.console.append(f"(no final screenshot: {exc})")
        (folder / "console.txt").write_text("\n".join(self.console) + "\n")
        return folder


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)


def wait_for(what: str, check: Callable[[], bool], page: Page) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.wait_for_timeout(200)


def rows(page: Page) -> list[str]:
    """The patient names the study list shows."""
    names = {CT.patient_name, *(study.patient_name for study in OTHERS)}
    shown = page.locator("tbody").all_inner_texts()
    return sorted(name for name in names if any(_as_listed(name) in text for text in shown))


def _as_listed(patient_name: str) -> str:
    family, given = patient_name.split("^")
    return f"{family}, {given}"  # OHIF writes "FAMILY, GIVEN"


def position(page: Page, images: int) -> str:
    """OHIF's image overlay, e.g. "(4/12)"."""
    match = re.search(rf"\((\d+)/{images}\)", page.locator("body").inner_text())
    return match.group(0) if match else ""


def painted(evidence: Evidence, canvas: Locator, name: str) -> np.ndarray:
    """The viewport's pixels once they are an image: many grey levels, not a blank canvas."""
    image: np.ndarray = np.zeros(0)

    def has_image() -> bool:
        nonlocal image
        image = pixels(evidence.keep(name, canvas.screenshot()))
        return image.std() > 20 and len(np.unique(image)) > 8  # a blank canvas has 1 level

    wait_for(f"the viewport to paint ({name})", has_image, evidence.page)
    return image


def signed_in(playwright: Playwright, server: Server) -> tuple[Browser, Page]:
    browser = playwright.chromium.launch(executable_path=chromium())
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    # Nothing but this server: the viewer must not need the internet.
    context.route(re.compile(r"^(?!http://127\.0\.0\.1:\d+/).*"), lambda route: route.abort())
    # OHIF's first-visit tour would cover part of the viewport.
    context.add_init_script(
        "localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']))"
    )
    return browser, context.new_page()


def run(server: Server, request: pytest.FixtureRequest, steps: Callable[..., None]) -> None:
    """Drive a signed-in page through ``steps``; on failure keep the evidence."""
    with sync_playwright() as playwright:
        browser, page = signed_in(playwright, server)
        try:
            evidence = Evidence(page)
            try:
                # Sign in with the server's token: the page then shows the study list.
                page.goto(f"{server.url}/viewer/")
                page.fill("#token", TOKEN)
                page.click("button[type=submit]")
                steps(page, server, evidence)
            except BaseException:
                folder = evidence.save(request.node.name)
                print(f"\nviewer test artifacts (screenshots, console): {folder}")
                raise
        finally:
            browser.close()


def test_study_list_search_open_and_scroll_a_ct_series(
    server: Server, request: pytest.FixtureRequest
) -> None:
    run(server, request, study_list_and_ct)


def study_list_and_ct(page: Page, server: Server, evidence: Evidence) -> None:
    everyone = sorted([CT.patient_name, *(study.patient_name for study in OTHERS)])
    wait_for("the study list", lambda: rows(page) == everyone, page)
    evidence.keep("study-list", page.screenshot())

    # Patient name (OHIF sends PatientName=*VIEWER* with fuzzymatching).
    patient = page.locator("input").first  # the Patient column's filter
    patient.fill("VIEWER")
    wait_for("the patient name search", lambda: rows(page) == [CT.patient_name], page)
    evidence.keep("search-patient", page.screenshot())

    # A date range holding only OTHER^SECOND's 2022-10-10 (StudyDate=20220101-20221231).
    patient.fill("")
    wait_for("the cleared search", lambda: rows(page) == everyone, page)
    page.locator('[data-cy="input-date-range-start"]').fill("2022-01-01")
    page.locator('[data-cy="input-date-range-end"]').fill("2022-12-31")
    page.keyboard.press("Enter")
    wait_for("the date range search", lambda: rows(page) == ["OTHER^SECOND"], page)
    evidence.keep("search-dates", page.screenshot())

    # Open the CT study from the list.
    page.goto(f"{server.url}/viewer/?patientName=VIEWER")
    wait_for("the CT study", lambda: rows(page) == [CT.patient_name], page)
    page.get_by_text(_as_listed(CT.patient_name)).click()
    page.get_by_role("button", name="Basic Viewer").click()
    scroll(page, evidence, "CT", SLICES)


def scroll(page: Page, evidence: Evidence, what: str, images: int) -> None:
    """The viewport paints, and the mouse wheel over it shows another image of ``images``."""
    canvas = page.locator("canvas.cornerstone-canvas").first
    canvas.wait_for(timeout=DEADLINE * 1000)
    first = painted(evidence, canvas, f"{what}-first")
    wait_for(f"the {what} image overlay", lambda: position(page, images) != "", page)
    before = position(page, images)
    canvas.hover()
    for _ in range(min(4, images - 1)):
        page.mouse.wheel(0, 120)
    wait_for(f"the {what} scroll", lambda: position(page, images) not in ("", before), page)
    later = painted(evidence, canvas, f"{what}-later")
    evidence.keep(f"{what}-viewer", page.screenshot())
    difference = np.abs(first - later).mean()
    after = position(page, images)
    assert difference > 5, f"{what} images {before} and {after} look the same ({difference})"


def test_jpeg_jpeg2000_and_multi_frame_studies_are_painted(
    server: Server, request: pytest.FixtureRequest
) -> None:
    run(server, request, encodings)


def encodings(page: Page, server: Server, evidence: Evidence) -> None:
    wait_for("the study list", lambda: CT.patient_name in rows(page), page)
    for what, study in server.studies.items():
        page.goto(f"{server.url}/viewer/viewer?StudyInstanceUIDs={study}")
        if what == "multi-frame":
            scroll(page, evidence, what, FRAMES)  # frames retrieved one by one
        else:
            canvas = page.locator("canvas.cornerstone-canvas").first
            canvas.wait_for(timeout=DEADLINE * 1000)
            painted(evidence, canvas, what)
