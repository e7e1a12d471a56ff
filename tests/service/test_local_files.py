"""Local files named by a request (import sources, filter files, export destinations): only regular
files under the server's import roots, never a device or a FIFO, never through a symlink that
leaves the roots, and never echoed in an error. Real files, FIFOs and symlinks on the local disk;
the service in-process, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import update

from dicomql.provider.transports import InProcessTransport
from dicomql.service.app import create_app
from dicomql.service.config import ServiceConfig
from dicomql.store.index import Index
from dicomql.store.schema import studies
from tests.support.lro import counter, make_stores, run, store_path, stow

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
SECRET = "s3cret-line-that-must-not-leak"
PERMISSION_DENIED = 7


def client_for(config: ServiceConfig) -> httpx.Client:
    return httpx.Client(
        transport=InProcessTransport(create_app(config)), base_url="http://embedded", timeout=60
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The import root: a folder with one DICOM file, a FIFO, a symlink to /dev/zero, one to a
    secret outside the root, and a symlinked folder leading out of it."""
    folder = tmp_path / "root"
    source = folder / "in"
    source.mkdir(parents=True)
    (source / "ct.dcm").write_bytes(CT_SMALL.read_bytes())
    os.mkfifo(source / "pipe.dcm")
    (source / "zero.dcm").symlink_to("/dev/zero")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(f"/studies/{SECRET}\n")
    (outside / "other.dcm").write_bytes(CT_SMALL.read_bytes())
    (source / "secret.dcm").symlink_to(outside / "secret.txt")
    (source / "away").symlink_to(outside, target_is_directory=True)
    return folder


@pytest.fixture
def client(tmp_path: Path, root: Path, database_url: str | None) -> Iterator[httpx.Client]:
    config = ServiceConfig(
        data_dir=tmp_path / "data", database_url=database_url, import_roots=(root,)
    )
    with client_for(config) as client:
        make_stores(client, "s")
        yield client


def _error(operation: dict[str, Any]) -> dict[str, Any]:
    assert "error" in operation, operation
    error: dict[str, Any] = operation["error"]
    assert SECRET not in str(operation)
    return error


def test_a_folder_with_a_fifo_a_device_and_symlinks_out_imports_only_its_regular_file(
    client: httpx.Client, root: Path
) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    operation = run(client, f"{store_path('s')}:import", {"gcsSource": {"uri": f"{root}/in/*"}})
    # ct.dcm stored; pipe.dcm (FIFO), zero.dcm (→ /dev/zero), secret.dcm (→ outside) refused,
    # without blocking the worker or reading /dev/zero into memory.
    assert counter(operation) == {"success": 1, "failure": 3}
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB
    # "**" walks the folder without following the symlinked folder out of the root.
    operation = run(client, f"{store_path('s')}:import", {"gcsSource": {"uri": f"{root}/**"}})
    assert counter(operation) == {"success": 1, "failure": 3}
    found = client.get(f"{store_path('s')}/dicomWeb/instances").json()
    assert len(found) == 1


@pytest.mark.parametrize(
    "uri",
    [
        "/dev/zero",
        "/etc/passwd",
        "file:///etc/passwd",
        "{root}/in/away/other.dcm",  # through a symlinked folder that leads out of the root
        "{root}/in/../../outside/other.dcm",
        "{root}/../outside/*.dcm",
        "local:///etc/passwd",  # fsspec's own local filesystem
        "http://127.0.0.1:9/x.dcm",
        "zip::file:///etc/passwd",
    ],
)
def test_an_import_uri_outside_the_roots_is_refused_without_reading_it(
    client: httpx.Client, root: Path, uri: str
) -> None:
    uri = uri.format(root=root)
    operation = run(client, f"{store_path('s')}:import", {"gcsSource": {"uri": uri}})
    error = _error(operation)
    assert error["code"] == PERMISSION_DENIED, error
    assert "root:" not in error["message"]  # nothing of /etc/passwd
    assert client.get(f"{store_path('s')}/dicomWeb/instances").json() == []


@pytest.mark.parametrize(
    "filter_uri",
    ["{outside}/secret.txt", "{root}/in/secret.dcm", "/dev/zero", "{root}/in/pipe.dcm"],
)
def test_a_filter_file_outside_the_roots_or_not_regular_is_refused_and_never_echoed(
    client: httpx.Client, root: Path, tmp_path: Path, filter_uri: str
) -> None:
    stow(client, "s", CT_SMALL.read_bytes())
    uri = filter_uri.format(root=root, outside=tmp_path / "outside")
    body = {
        "gcsDestination": {"uriPrefix": str(root / "out")},
        "filterConfig": {"resourcePathsGcsUri": uri},
    }
    error = _error(run(client, f"{store_path('s')}:export", body))
    assert error["code"] == PERMISSION_DENIED, error
    assert not (root / "out").exists()


def test_a_malformed_filter_file_inside_the_roots_is_refused_by_line_number_only(
    client: httpx.Client, root: Path
) -> None:
    stow(client, "s", CT_SMALL.read_bytes())
    (root / "filter.txt").write_text(f"/studies/1.2.3\n{SECRET} in a line of its own\n")
    body = {
        "gcsDestination": {"uriPrefix": str(root / "out")},
        "filterConfig": {"resourcePathsGcsUri": str(root / "filter.txt")},
    }
    error = _error(run(client, f"{store_path('s')}:export", body))
    assert error["code"] == 3 and "Line 2" in error["message"]


def test_an_export_prefix_outside_the_roots_is_refused(
    client: httpx.Client, tmp_path: Path
) -> None:
    stow(client, "s", CT_SMALL.read_bytes())
    target = tmp_path / "elsewhere"
    body = {"gcsDestination": {"uriPrefix": str(target)}}
    assert _error(run(client, f"{store_path('s')}:export", body))["code"] == PERMISSION_DENIED
    assert not target.exists()


def test_an_export_never_writes_outside_its_prefix_even_for_a_stored_hostile_uid(
    client: httpx.Client, root: Path, tmp_path: Path, database_url: str | None
) -> None:
    """A study UID of ``../../../escaped`` stored by an older version (new ones are refused
    on the way in) is not exported, and nothing is written above the prefix."""
    stow(client, "s", CT_SMALL.read_bytes())
    index = Index.open(database_url or f"sqlite:///{tmp_path / 'data' / 'index.sqlite3'}")
    try:
        with index.begin() as conn:
            conn.execute(update(studies).values(study_instance_uid="../../../escaped"))
    finally:
        index.close()
    out = root / "a" / "b" / "out"
    operation = run(
        client, f"{store_path('s')}:export", {"gcsDestination": {"uriPrefix": str(out)}}
    )
    assert counter(operation) == {"failure": 1}
    assert not list(tmp_path.rglob("escaped"))
    assert not list(root.rglob("*.dcm.part"))


def test_without_import_roots_no_local_path_is_read_or_written(
    tmp_path: Path, database_url: str | None
) -> None:
    """``dicomql serve`` without --import-root: local paths are refused, naming the flag."""
    config = ServiceConfig(data_dir=tmp_path / "data", database_url=database_url)
    (tmp_path / "ct.dcm").write_bytes(CT_SMALL.read_bytes())
    with client_for(config) as client:
        make_stores(client, "s")
        for path, body in (
            (":import", {"gcsSource": {"uri": str(tmp_path / "ct.dcm")}}),
            (":export", {"gcsDestination": {"uriPrefix": str(tmp_path / "out")}}),
        ):
            error = _error(run(client, f"{store_path('s')}{path}", body))
            assert error["code"] == PERMISSION_DENIED and "--import-root" in error["message"]
    assert not (tmp_path / "out").exists()


def test_a_file_over_the_size_bound_is_counted_a_failure(
    tmp_path: Path, root: Path, database_url: str | None
) -> None:
    size = CT_SMALL.stat().st_size
    config = ServiceConfig(
        data_dir=tmp_path / "data",
        database_url=database_url,
        import_roots=(root,),
        max_import_file_bytes=size - 1,
    )
    with client_for(config) as client:
        make_stores(client, "s")
        uri = str(root / "in" / "ct.dcm")
        operation = run(client, f"{store_path('s')}:import", {"gcsSource": {"uri": uri}})
    assert counter(operation) == {"failure": 1}


def test_the_embedded_backend_reads_under_the_current_directory_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``connect()`` without ``import_roots``: the current directory (at connect time) is the
    one root; a file elsewhere is refused until ``import_roots`` names its folder."""
    import dicomql

    work = tmp_path / "work"
    work.mkdir()
    (work / "ct.dcm").write_bytes(CT_SMALL.read_bytes())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "ct.dcm").write_bytes(CT_SMALL.read_bytes())
    monkeypatch.chdir(work)
    params = "@projectsId='p', @locationsId='l', @datasetsId='d', @dicomStoresId='s'"

    def import_sql(path: Path) -> str:
        body = json.dumps({"gcsSource": {"uri": str(path)}})
        return f"EXEC /*+ AWAIT */ google.healthcare.dicom_stores.import {params} @@json='{body}'"

    with dicomql.connect(tmp_path / "data") as conn:
        cursor = conn.cursor()
        cursor.execute(
            "INSERT /*+ AWAIT */ INTO google.healthcare.datasets (projectsId, locationsId,"
            " datasetId) SELECT 'p', 'l', 'd'"
        )
        cursor.execute(
            "INSERT INTO google.healthcare.dicom_stores (projectsId, locationsId, datasetsId,"
            " dicomStoreId) SELECT 'p', 'l', 'd', 's'"
        )
        cursor.execute(import_sql(Path("ct.dcm").resolve()))
        with pytest.raises(dicomql.Error, match=r"--import-root|outside"):
            cursor.execute(import_sql(elsewhere / "ct.dcm"))
    with dicomql.connect(tmp_path / "data", import_roots=[elsewhere]) as conn:
        conn.cursor().execute(import_sql(elsewhere / "ct.dcm"))
