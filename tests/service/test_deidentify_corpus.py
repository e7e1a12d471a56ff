"""Every storable file of pydicom's test data, stored through STOW and de-identified under each
filter profile: each one that stores de-identifies, unless it fails for a reason that is a real
property of the file (Cloud Healthcare: failed instances are counted and left out)."""

from __future__ import annotations

import logging
import warnings

import httpx
import pydicom
import pytest

from dicomql.dicom.deid.config import FILTER_PROFILES
from tests.support.dicomweb import uid_bearing_test_files
from tests.support.lro import counter, make_stores, run, store_name, store_path

PROFILES = sorted(FILTER_PROFILES - {"TAG_FILTER_PROFILE_UNSPECIFIED"})
# Files that store but cannot be de-identified, and the property of the file that is why.
EXPECTED_FAILURES: dict[str, str] = {}


@pytest.fixture(scope="module")
def corpus() -> list[tuple[str, bytes]]:
    files = []
    for path in uid_bearing_test_files():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        files.append((path.name, sop, path.read_bytes()))
    return files  # type: ignore[return-value]


@pytest.mark.parametrize("profile", PROFILES)
def test_every_stored_file_de_identifies_under_each_profile(
    embedded: httpx.Client,
    corpus: list[tuple[str, str, bytes]],
    profile: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    make_stores(embedded, "src", "out")
    stored: dict[str, str] = {}
    for name, sop, data in corpus:
        response = embedded.post(
            f"{store_path('src')}/dicomWeb/studies",
            content=data,
            headers={"Content-Type": "application/dicom"},
        )
        if response.status_code == 200:
            stored[sop] = name
    assert len(stored) >= 100
    body = {"destinationStore": store_name("out"), "config": {"dicom": {"filterProfile": profile}}}
    with caplog.at_level(logging.WARNING, logger="dicomql"):
        operation = run(embedded, f"{store_path('src')}:deidentify", body)
    assert "error" not in operation, operation
    failed = {
        stored.get(record.args[0], record.args[0]): str(record.args[1])  # type: ignore[index]
        for record in caplog.records
        if record.msg.startswith("de-identifying %s failed")
    }
    unexplained = {name: why for name, why in failed.items() if name not in EXPECTED_FAILURES}
    assert not unexplained
    assert counter(operation).get("success") == len(stored) - len(failed)
