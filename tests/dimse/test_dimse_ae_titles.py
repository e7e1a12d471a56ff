"""Several AE titles on one listener, each with its own DICOM store and allowed callers
(``ae_titles`` in --dimse-config), driven by dcmtk's storescu, findscu and echoscu."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.support.dimse import LOCATION, DimseServer, dcmtk, dimse_server, need_dcmtk

STORES = "projects/p/locations/l/datasets/d/dicomStores"
CONFIG = f"""\
ae_titles:
  CT_ARCHIVE: {{store: {STORES}/ct, calling_ae_titles: [CT01]}}
  MR_ARCHIVE: {{store: {STORES}/mr}}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DimseServer]:
    need_dcmtk()
    config = tmp_path_factory.mktemp("config") / "dimse.yaml"
    config.write_text(CONFIG)
    data = tmp_path_factory.mktemp("aes") / "data"
    # No --dimse-store: the config's AE titles are all the server answers to.
    with dimse_server(data, "--dimse-config", str(config), store=None) as running:
        running.create_store("ct")
        running.create_store("mr")
        yield running


def sop_instance_uids(server: DimseServer, store_id: str) -> list[str]:
    response = server.http.get(f"{LOCATION}/datasets/d/dicomStores/{store_id}/dicomWeb/instances")
    assert response.status_code == 200, response.text
    return sorted(item["00080018"]["Value"][0] for item in response.json())


def findscu_images(server: DimseServer, called: str, out: Path) -> list[str]:
    out.mkdir()
    done = dcmtk(
        "findscu", "-S", "-aet", "CT01", "-aec", called, "-X", "-od", str(out),
        "-k", "QueryRetrieveLevel=IMAGE", "-k", "StudyInstanceUID", "-k", "SOPInstanceUID",
        "127.0.0.1", str(server.dimse_port),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    return sorted(str(dcmread(path).SOPInstanceUID) for path in out.glob("rsp*.dcm"))


def test_storescu_to_two_ae_titles_lands_in_two_stores_and_findscu_sees_only_its_own(
    server: DimseServer, tmp_path: Path
) -> None:
    ct, mr = get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm")
    assert ct is not None and mr is not None
    port = str(server.dimse_port)
    for calling, called, path in (("CT01", "CT_ARCHIVE", ct), ("ANYONE", "MR_ARCHIVE", mr)):
        sent = dcmtk("storescu", "-aet", calling, "-aec", called, "127.0.0.1", port, path)
        assert sent.returncode == 0, sent.stderr + sent.stdout
    ct_uid, mr_uid = str(dcmread(ct).SOPInstanceUID), str(dcmread(mr).SOPInstanceUID)
    assert sop_instance_uids(server, "ct") == [ct_uid]
    assert sop_instance_uids(server, "mr") == [mr_uid]
    assert findscu_images(server, "CT_ARCHIVE", tmp_path / "ct") == [ct_uid]
    assert findscu_images(server, "MR_ARCHIVE", tmp_path / "mr") == [mr_uid]


def test_an_unknown_called_ae_title_and_a_caller_not_listed_for_one_are_rejected(
    server: DimseServer,
) -> None:
    port = str(server.dimse_port)
    # DICOMQL (--dimse-ae-title's default) is not served: no --dimse-store was given.
    unknown = dcmtk("echoscu", "-aet", "CT01", "-aec", "DICOMQL", "127.0.0.1", port)
    assert unknown.returncode != 0
    assert "Called AE Title Not Recognized" in unknown.stderr + unknown.stdout
    stranger = dcmtk("echoscu", "-aet", "STRANGER", "-aec", "CT_ARCHIVE", "127.0.0.1", port)
    assert stranger.returncode != 0
    assert "Calling AE Title Not Recognized" in stranger.stderr + stranger.stdout
    # MR_ARCHIVE lists no callers: anyone may associate.
    anyone = dcmtk("echoscu", "-aet", "STRANGER", "-aec", "MR_ARCHIVE", "127.0.0.1", port)
    assert anyone.returncode == 0, anyone.stderr


def entry(title: str, store: str = "a", extra: str = "") -> str:
    return f"  {title}: {{store: {STORES}/{store}{extra}}}\n"


@pytest.mark.parametrize(
    ("config", "options", "named"),
    [
        ("ae_titles:\n" + entry("CT", extra=", port: 1"), [], "CT: unknown key(s) port"),
        ("ae_titles:\n" + entry("BACK\\\\SLASH"), [], "is not an AE title"),
        ("ae_titles:\n  CT: {store: projects/p/dicomStores/ct}\n", [], "ae_titles.CT.store"),
        ("ae_titles:\n  CT: {calling_ae_titles: [A]}\n", [], "ae_titles.CT must be"),
        ("ae_titles:\n" + entry("CT") + entry("CT", "b"), [], "given twice"),
        ("ae_titles:\n" + entry("CT") + entry("'CT '", "b"), [], "CT is given twice"),
        (
            "ae_titles:\n" + entry("CT"),
            ["--dimse-ae-title", "CT", "--dimse-store", f"{STORES}/b"],
            "CT is both --dimse-ae-title",
        ),
        (
            "ae_titles:\n" + entry("CT"),
            ["--dimse-ae-title", "MR"],
            "--dimse-ae-title needs --dimse-store",
        ),
        ("ae_title:\n" + entry("CT"), [], "unknown key(s) ae_title"),
    ],
)
def test_a_bad_ae_titles_entry_is_refused_naming_it(
    config: str, options: list[str], named: str, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from dicomql.cli import main

    path = tmp_path / "dimse.yaml"
    path.write_text(config)
    result = CliRunner().invoke(
        main,
        ["serve", "--data-dir", str(tmp_path), "--dimse-port", "11112",
         "--dimse-config", str(path), *options],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert named in " ".join(result.output.split()), result.output
