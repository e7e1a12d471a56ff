"""C-ECHO and C-STORE against a real ``dicomql serve --dimse-port``, driven by dcmtk's echoscu
and storescu and by pynetdicom as the SCU for statuses dcmtk does not show."""

from __future__ import annotations

import contextlib
import io
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pynetdicom
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from tests.support.deflated import damaged_deflated
from tests.support.dimse import (
    AE_TITLE,
    DICOMWEB,
    TEST_FILES,
    DimseServer,
    dataset_bytes,
    dcmtk,
    dimse_server,
    need_dcmtk,
    values_of,
)

ANY_SYNTAX = {"accept": "application/dicom; transfer-syntax=*"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dimse") / "data"


@pytest.fixture(scope="module")
def server(data_dir: Path) -> Iterator[DimseServer]:
    need_dcmtk()
    # Two processes: both bind the DIMSE port (SO_REUSEPORT) and either may take a sender.
    with dimse_server(data_dir, processes=2) as running:
        yield running


def journaled_keys(data_dir: Path) -> int:
    with contextlib.closing(sqlite3.connect(data_dir / "index.sqlite3")) as conn:
        return int(conn.execute("SELECT count(*) FROM blob_journal").fetchone()[0])


def c_store(server: DimseServer, dataset: object) -> int:
    """One C-STORE through pynetdicom; the response status."""
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", server.dimse_port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        response = assoc.send_c_store(dataset)
    finally:
        assoc.release()
    return int(response.Status)


def test_echoscu_is_answered_and_another_called_ae_title_is_rejected(server: DimseServer) -> None:
    ok = dcmtk("echoscu", "-aec", AE_TITLE, "127.0.0.1", str(server.dimse_port))
    assert ok.returncode == 0, ok.stderr
    refused = dcmtk("echoscu", "-aec", "SOMEONEELSE", "127.0.0.1", str(server.dimse_port))
    assert refused.returncode != 0
    assert "Called AE Title Not Recognized" in refused.stderr + refused.stdout


def test_c_store_into_a_store_not_yet_created_fails_then_succeeds_once_it_exists(
    server: DimseServer, tmp_path: Path
) -> None:
    source = dcmread(get_testdata_file("CT_small.dcm"))
    source.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.777001"
    assert c_store(server, source) == 0x0110
    server.create_store()
    assert c_store(server, source) == 0x0000


def storescu(server: DimseServer, *arguments: str) -> None:
    sent = dcmtk("storescu", "-aec", AE_TITLE, "127.0.0.1", str(server.dimse_port), *arguments)
    assert sent.returncode == 0, sent.stderr + sent.stdout


def test_storescu_of_a_folder_is_retrievable_byte_identical_over_wado(
    server: DimseServer, tmp_path: Path, data_dir: Path
) -> None:
    server.create_store()
    folder = tmp_path / "send"
    folder.mkdir()
    for name in TEST_FILES:
        path = get_testdata_file(name)
        assert path is not None, name
        compressed = name in ("JPEG2000.dcm", "SC_rgb_rle.dcm")
        (folder / "uncompressed").mkdir(exist_ok=True)
        shutil.copy(path, folder / name if compressed else folder / "uncompressed" / name)
    # storescu proposes uncompressed transfer syntaxes unless told one compressed one.
    storescu(server, "+sd", str(folder / "uncompressed"))
    storescu(server, "-xw", str(folder / "JPEG2000.dcm"))  # JPEG 2000, lossless or lossy
    storescu(server, "-xr", str(folder / "SC_rgb_rle.dcm"))  # RLE lossless
    for path in folder.rglob("*.dcm"):
        ds = dcmread(path)
        response = server.http.get(
            f"{DICOMWEB}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}",
            headers=ANY_SYNTAX,
        )
        assert response.status_code == 200, (path.name, response.text)
        # In the file's own transfer syntax, under file meta built from the presentation
        # context. (storescu re-encodes what it reads, so the bytes may differ from the file's;
        # the test below sends a file's bytes as they are.)
        stored = dcmread(io.BytesIO(response.content))
        assert stored.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID, path.name
        assert values_of(stored) == values_of(ds), path.name
    # The same files again: an identical instance stored again is a success.
    storescu(server, "+sd", str(folder / "uncompressed"))
    # The blob keys the associations journaled ahead and left unused are forgotten when each
    # association's connection closes (just after storescu exits).
    deadline = time.monotonic() + 10
    while journaled_keys(data_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert journaled_keys(data_dir) == 0


def test_an_instance_split_over_few_or_many_pdus_is_stored_the_same(
    server: DimseServer, tmp_path: Path
) -> None:
    server.create_store()
    # The server receives PDUs of up to 16382 bytes (pynetdicom's default), so storescu sends
    # the 38 KB CT below in three P-DATA-TFs by default and in ~10 with --max-send-pdu 4096.
    source = get_testdata_file("CT_small.dcm")
    assert source is not None
    stored = []
    for number, pdu_option in enumerate(([], ["--max-send-pdu", "4096"])):
        ds = dcmread(source)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.3.998.{number}"
        path = tmp_path / f"{number}.dcm"
        ds.save_as(path, enforce_file_format=True)
        storescu(server, *pdu_option, str(path))
        response = server.http.get(
            f"{DICOMWEB}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}",
            headers=ANY_SYNTAX,
        )
        assert response.status_code == 200, response.text
        stored.append(dataset_bytes(response.content))
    # Byte-identical but for the SOP Instance UID each was given (same length).
    assert stored[0].replace(b"1.2.3.998.0", b"1.2.3.998.1") == stored[1]


def test_what_c_store_received_is_what_wado_returns_byte_for_byte(
    server: DimseServer, tmp_path: Path
) -> None:
    server.create_store()
    ae = AE(ae_title="TESTSCU")
    files = []
    for number, name in enumerate(TEST_FILES):
        ds = dcmread(get_testdata_file(name))
        # New UIDs: the other tests store these files' own (as storescu re-encoded them).
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.3.999.{number}"
        ds.save_as(tmp_path / name, enforce_file_format=True)
        files.append((tmp_path / name, ds))
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", server.dimse_port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        for path, _ in files:
            # Given a path, pynetdicom sends the file's data set bytes without decoding them.
            response = assoc.send_c_store(path)
            assert response.Status == 0x0000, path.name
    finally:
        assoc.release()
    for path, ds in files:
        response = server.http.get(
            f"{DICOMWEB}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}",
            headers=ANY_SYNTAX,
        )
        assert response.status_code == 200, (path.name, response.text)
        assert dataset_bytes(response.content) == dataset_bytes(path.read_bytes()), path.name


def test_a_conflicting_instance_and_an_unreadable_one_get_failure_statuses(
    server: DimseServer,
) -> None:
    server.create_store()
    first = dcmread(get_testdata_file("CT_small.dcm"))
    first.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.777002"
    assert c_store(server, first) == 0x0000
    conflicting = dcmread(get_testdata_file("CT_small.dcm"))
    conflicting.SOPInstanceUID = first.SOPInstanceUID
    conflicting.PatientName = "Other^Patient"
    assert c_store(server, conflicting) == 0x0110  # as Google's STOW; nothing overwritten
    unreadable = dcmread(get_testdata_file("CT_small.dcm"))
    unreadable.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.777003"
    del unreadable.StudyInstanceUID  # the index cannot place an instance without its study
    assert c_store(server, unreadable) & 0xF000 == 0xC000
    kept = server.http.get(
        f"{DICOMWEB}/instances", params={"SOPInstanceUID": first.SOPInstanceUID}
    ).json()
    assert [item["00100010"]["Value"][0]["Alphabetic"] for item in kept] == [str(first.PatientName)]


def test_a_damaged_deflated_data_set_fails_with_0xc000_and_the_association_goes_on(
    server: DimseServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.create_store()
    path = get_testdata_file("image_dfl.dcm")
    assert path is not None
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(damaged_deflated("truncated"))
    # Files sent as their bytes are, unread by pydicom (which refuses the cut one).
    monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", True)
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(dcmread(path).SOPClassUID, DeflatedExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", server.dimse_port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        refused = assoc.send_c_store(cut)
        stored = assoc.send_c_store(Path(path))
    finally:
        assoc.release()
    # Before, zlib's error escaped the parse: 0x0110, "Internal error storing the instance".
    assert refused.Status == 0xC000
    assert "while decompressing data" in refused.ErrorComment
    assert stored.Status == 0x0000


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--dimse-store", "projects/p/datasets/d", "--dimse-store"),
        ("--dimse-ae-title", "A" * 17, "--dimse-ae-title"),
        ("--dimse-ae-title", "BACK\\SLASH", "--dimse-ae-title"),
    ],
)
def test_a_bad_dimse_option_is_refused_naming_it(
    option: str, value: str, named: str, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from dicomql.cli import main

    result = CliRunner().invoke(
        main,
        ["serve", "--data-dir", str(tmp_path), "--dimse-port", "11112", option, value],
    )
    assert result.exit_code == 2, result.output
    assert named in result.output
