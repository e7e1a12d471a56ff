"""The ``dicomql exec`` command: statements and scripts, output formats, template variables,
errors at the edge, and the same CLI against a real ``dicomql serve`` subprocess over HTTP."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from dicomql.cli import main

DATASET = (
    "INSERT /*+ AWAIT */ INTO google.healthcare.datasets (projectsId, locationsId, datasetId) "
    "SELECT 'p', 'us', 'ds';"
)
STORE = (
    "INSERT INTO google.healthcare.dicom_stores "
    "(data__labels, projectsId, locationsId, datasetsId, dicomStoreId) "
    "SELECT '{{ labels }}', 'p', 'us', 'ds', '{{ store }}';"
)
LIST = (
    "SELECT name, labels FROM google.healthcare.dicom_stores "
    "WHERE projectsId = 'p' AND locationsId = 'us' AND datasetsId = 'ds' ORDER BY name;"
)


def run(*args: str, data_dir: Path | None = None) -> Result:
    extra = ["--data-dir", str(data_dir)] if data_dir is not None else []
    return CliRunner().invoke(main, [*args, *extra], catch_exceptions=False)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data dir holding dataset ds with stores a (env=dev) and b (env=prod)."""
    path = tmp_path / "data"
    script = tmp_path / "setup.iql"
    script.write_text(
        DATASET
        + STORE.replace("{{ labels }}", '{"env": "dev"}').replace("{{ store }}", "a")
        + STORE.replace("{{ labels }}", '{"env": "prod"}').replace("{{ store }}", "b")
    )
    result = run("exec", "-f", str(script), data_dir=path)
    assert result.exit_code == 0, result.output
    return path


def test_exec_json_prints_an_array_of_row_objects_with_json_cells_as_objects(
    data_dir: Path,
) -> None:
    result = run("exec", LIST, "-o", "json", data_dir=data_dir)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"name": "projects/p/locations/us/datasets/ds/dicomStores/a", "labels": {"env": "dev"}},
        {"name": "projects/p/locations/us/datasets/ds/dicomStores/b", "labels": {"env": "prod"}},
    ]


def test_exec_csv_has_a_header_and_compact_json_cells(data_dir: Path) -> None:
    result = run("exec", LIST, "-o", "csv", data_dir=data_dir)
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["name", "labels"]
    assert rows[1] == ["projects/p/locations/us/datasets/ds/dicomStores/a", '{"env":"dev"}']
    assert len(rows) == 3


def test_exec_jsonl_prints_one_object_per_line(data_dir: Path) -> None:
    result = run("exec", LIST, "-o", "jsonl", data_dir=data_dir)
    lines = result.stdout.splitlines()
    assert [json.loads(line)["labels"]["env"] for line in lines] == ["dev", "prod"]


def test_exec_text_is_tab_separated_with_a_header(data_dir: Path) -> None:
    result = run("exec", LIST, "-o", "text", data_dir=data_dir)
    assert result.stdout.splitlines() == [
        "name\tlabels",
        'projects/p/locations/us/datasets/ds/dicomStores/a\t{"env":"dev"}',
        'projects/p/locations/us/datasets/ds/dicomStores/b\t{"env":"prod"}',
    ]


def test_exec_table_is_the_default_and_shows_every_value(data_dir: Path) -> None:
    result = run("exec", LIST, data_dir=data_dir)
    assert result.exit_code == 0
    assert "| name " in result.stdout
    assert "projects/p/locations/us/datasets/ds/dicomStores/b" in result.stdout
    assert '{"env":"prod"}' in result.stdout


def test_exec_filters_labels_relationally(data_dir: Path) -> None:
    sql = LIST.replace(
        "ORDER BY name", "AND json_extract(labels, '$.env') = '{{ env }}' ORDER BY name"
    )
    result = run("exec", sql, "--var", "env=prod", "-o", "csv", data_dir=data_dir)
    assert result.exit_code == 0, result.output
    assert [row[0][-1] for row in csv.reader(io.StringIO(result.stdout))][1:] == ["b"]


def test_var_overrides_vars_file(data_dir: Path, tmp_path: Path) -> None:
    variables = tmp_path / "vars.json"
    variables.write_text(json.dumps({"labels": {"team": "ct"}, "store": "from-file"}))
    result = run(
        "exec", STORE, "--vars", str(variables), "--var", "store=c", "-o", "json",
        data_dir=data_dir,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    listed = run("exec", LIST, "-o", "json", data_dir=data_dir)
    stores = {row["name"].rsplit("/", 1)[1]: row["labels"] for row in json.loads(listed.stdout)}
    assert stores["c"] == {"team": "ct"}
    assert "from-file" not in stores


def test_exec_file_runs_every_statement_and_reports_messages_on_stderr(tmp_path: Path) -> None:
    script = tmp_path / "script.iql"
    script.write_text(f"-- a comment\n{DATASET}\nSHOW SERVICES;\n")
    result = run("exec", "-f", str(script), "-o", "csv", data_dir=tmp_path / "d")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "name,title,version"
    assert "datasets" in result.stderr


def test_exec_reads_a_script_from_stdin(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["exec", "-f", "-", "-o", "csv", "--data-dir", str(tmp_path / "d")],
        input="SHOW SERVICES;",
    )
    assert result.exit_code == 0, result.output
    assert "google.healthcare" in result.stdout


def test_api_error_exits_non_zero_with_googles_code_status_and_message(data_dir: Path) -> None:
    sql = LIST.replace("'ds'", "'missing'")
    result = run("exec", sql, "-o", "json", data_dir=data_dir)
    assert result.exit_code == 1
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: 404 NOT_FOUND: ")
    assert "missing" in line


def test_error_in_a_script_names_the_statement_and_stops(tmp_path: Path) -> None:
    script = tmp_path / "script.iql"
    script.write_text("SHOW SERVICES;\nSELECT FROM;\nSHOW SERVICES;\n")
    result = run("exec", "-f", str(script), "-o", "csv", data_dir=tmp_path / "d")
    assert result.exit_code == 1
    assert result.stdout.count("google.healthcare") == 1
    assert "statement 2 (line 2)" in result.stderr


def test_syntax_error_shows_the_caret(tmp_path: Path) -> None:
    result = run("exec", "SELECT name FROMM google.healthcare.dicom_stores", data_dir=tmp_path)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert any(line.strip() == "^" or line.rstrip().endswith("^") for line in lines)
    assert "line 1, column" in result.stderr


def test_missing_template_variable_is_an_error_naming_it(tmp_path: Path) -> None:
    result = run("exec", STORE, data_dir=tmp_path)
    assert result.exit_code == 1
    assert "labels" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["exec"], "give either a SQL string or -f FILE"),
        (["exec", "SHOW SERVICES", "--var", "novalue"], "NAME=VALUE"),
        (["exec", "SHOW SERVICES", "--endpoint", "http://x", "--data-dir", "d"], "not both"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_vars_file_must_hold_a_json_object(tmp_path: Path) -> None:
    variables = tmp_path / "vars.json"
    variables.write_text("[1, 2]")
    result = run("exec", "SHOW SERVICES", "--vars", str(variables), data_dir=tmp_path)
    assert result.exit_code == 2
    assert "JSON object" in result.stderr


@pytest.fixture(scope="module")
def served_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("served")


@pytest.fixture(scope="module")
def served(served_dir: Path) -> Iterator[str]:
    """``dicomql serve --auth-token`` in a subprocess on a loopback port; yields its URL.

    One server for the module: starting a process costs seconds.
    """
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMQL_")}
    process = subprocess.Popen(
        [
            sys.executable, "-m", "dicomql.cli", "serve", "--port", str(port),
            "--data-dir", str(served_dir), "--auth-token", "s3cret",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/v1/projects/p/locations/us/datasets", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"dicomql serve did not start: {process.stderr.read()!r}"  # type: ignore[union-attr]
                    ) from None
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stderr.close()  # type: ignore[union-attr]


def test_exec_against_a_served_endpoint_with_its_token(served: str, served_dir: Path) -> None:
    endpoint = ["--endpoint", served, "--token", "s3cret"]
    created = run("exec", DATASET, *endpoint)
    assert created.exit_code == 0, created.output
    listed = run(
        "exec",
        "SELECT name FROM google.healthcare.datasets WHERE projectsId='p' AND locationsId='us'",
        "-o", "json", *endpoint,
    )  # fmt: skip
    assert json.loads(listed.stdout) == [{"name": "projects/p/locations/us/datasets/ds"}]
    # The data lives in the server's data dir, not in a local embedded store.
    assert (served_dir / "index.sqlite3").exists()


def test_exec_against_a_served_endpoint_without_the_token_is_401(served: str) -> None:
    result = run(
        "exec",
        "SELECT name FROM google.healthcare.datasets WHERE projectsId='p' AND locationsId='us'",
        "--endpoint", served, "--token", "wrong",
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: 401 UNAUTHENTICATED")


def test_endpoint_comes_from_the_environment(served: str) -> None:
    result = CliRunner(env={"DICOMQL_ENDPOINT": served, "DICOMQL_TOKEN": "s3cret"}).invoke(
        main,
        [
            "exec",
            "SELECT name FROM google.healthcare.datasets WHERE projectsId='p' "
            "AND locationsId='nowhere'",
            "-o", "json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []


def test_quickstart_runs_twice_on_the_same_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The README's first command: run from the repository root (the script's @path is relative).
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    for _ in range(2):
        result = run(
            "exec", "-f", "examples/quickstart.iql", "-o", "jsonl", data_dir=tmp_path / "qs"
        )
        assert result.exit_code == 0, result.output
        assert "2 of 2 files stored" in result.stderr
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert {"env": "test", "stores": 1} in rows
        assert any(row.get("PatientID") == "1CT1" for row in rows)
        modalities = {row["Modality"]: row["instances"] for row in rows if "studies" in row}
        assert modalities == {"CT": 1, "MR": 1}


def test_unusable_data_dir_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run(
        "exec",
        "SELECT name FROM google.healthcare.datasets WHERE projectsId='p' AND locationsId='us'",
        data_dir=blocker / "data",
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ")
    assert "Not a directory" in result.stderr


def test_metadata_tables_against_a_served_endpoint(served: str, tmp_path: Path) -> None:
    """SELECT on studies and instances through `dicomql serve` (QIDO over real HTTP)."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    folder = tmp_path / "in"
    folder.mkdir()
    template = dcmread(get_testdata_file("CT_small.dcm"))
    for index, (patient, modality) in enumerate([("A", "CT"), ("A", "MR"), ("B", "CT")]):
        template.PatientID, template.Modality, template.StudyDate = patient, modality, "20200101"
        template.StudyInstanceUID = template.SeriesInstanceUID = generate_uid()
        template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        template.save_as(folder / f"{index}.dcm")
    endpoint = ["--endpoint", served, "--token", "s3cret"]
    scope = "projectsId = 'p' AND locationsId = 'us' AND datasetsId = 'meta'"
    setup = run(
        "exec",
        "INSERT /*+ AWAIT */ INTO google.healthcare.datasets (projectsId, locationsId, datasetId)"
        " SELECT 'p', 'us', 'meta';"
        "INSERT INTO google.healthcare.dicom_stores (projectsId, locationsId, datasetsId,"
        " dicomStoreId) SELECT 'p', 'us', 'meta', 's';"
        "EXEC google.healthcare.dicom_stores.store_instances @projectsId='p', @locationsId='us',"
        f" @datasetsId='meta', @dicomStoresId='s', @path='{folder}';",
        *endpoint,
    )
    assert setup.exit_code == 0, setup.output
    studies = run(
        "exec",
        "SELECT PatientID, StudyDate FROM google.healthcare.studies "
        f"WHERE {scope} AND dicomStoresId = 's' AND PatientID = 'A'",
        "-o", "json", *endpoint,
    )  # fmt: skip
    assert studies.exit_code == 0, studies.output
    assert json.loads(studies.stdout) == [{"PatientID": "A", "StudyDate": "2020-01-01"}] * 2
    grouped = run(
        "exec",
        "SELECT Modality, COUNT(*) AS n FROM google.healthcare.instances "
        f"WHERE {scope} AND dicomStoresId = 's' GROUP BY Modality ORDER BY Modality",
        "-o", "csv", *endpoint,
    )  # fmt: skip
    assert grouped.stdout.splitlines() == ["Modality,n", "CT,2", "MR,1"]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["serve", "--min-free-space", "lots"], "--min-free-space"),
        (["serve", "--min-free-space", "150%"], "--min-free-space"),
        (["serve", "--max-import-file-size", "5%"], "--max-import-file-size"),
        (["serve", "--import-root", "/no/such/folder"], "--import-root"),
        (
            ["exec", "--endpoint", "http://127.0.0.1:9", "--import-root", ".", "SHOW SERVICES"],
            "import_roots",
        ),
    ],
)
def test_storage_limits_are_checked_before_anything_starts(args: list[str], named: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert named in result.output
