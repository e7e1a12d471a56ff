"""Who may associate (``calling_ae_titles`` in --dimse-config), and C-STORE below the free-space
floor, against a real ``dicomql serve --dimse-port``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from tests.support.dimse import AE_TITLE, DICOMWEB, DimseServer, dcmtk, dimse_server, need_dcmtk


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DimseServer]:
    need_dcmtk()
    config = tmp_path_factory.mktemp("config") / "dimse.yaml"
    config.write_text("calling_ae_titles: [MODALITY1]\n")
    data = tmp_path_factory.mktemp("access") / "data"
    # A floor no disk clears: every new instance meets a full disk.
    with dimse_server(data, "--dimse-config", str(config), "--min-free-space", "100%") as running:
        running.create_store()
        yield running


def test_only_the_listed_calling_ae_titles_may_associate(server: DimseServer) -> None:
    port = str(server.dimse_port)
    allowed = dcmtk("echoscu", "-aet", "MODALITY1", "-aec", AE_TITLE, "127.0.0.1", port)
    assert allowed.returncode == 0, allowed.stderr
    refused = dcmtk("echoscu", "-aet", "STRANGER", "-aec", AE_TITLE, "127.0.0.1", port)
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stderr + refused.stdout


def test_c_store_below_the_free_space_floor_is_refused_out_of_resources(
    server: DimseServer,
) -> None:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ae = AE(ae_title="MODALITY1")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", server.dimse_port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        response = assoc.send_c_store(ds)
    finally:
        assoc.release()
    assert int(response.Status) == 0xA700
    assert "free" in str(response.ErrorComment).lower()
    found = server.http.get(f"{DICOMWEB}/instances", params={"SOPInstanceUID": ds.SOPInstanceUID})
    assert found.status_code == 200 and found.json() == []


def test_a_dimse_port_another_program_holds_stops_serve_with_the_reason(tmp_path: Path) -> None:
    import socket
    import subprocess

    from tests.support.dimse import DICOMQL
    from tests.support.ports import free_port

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        done = subprocess.run(
            [str(DICOMQL), "serve", "--port", str(free_port()), "--data-dir", str(tmp_path),
             "--processes", "1", "--dimse-port", str(taken)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 3, done.stderr[-2000:]
    assert "Address already in use" in done.stderr
