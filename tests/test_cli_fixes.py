"""The sharp edges a new user hit, each driven through the real ``dicomql exec`` command over an
embedded store: numbers that sort as numbers, clear messages, per-file failures of a folder
upload, truncation warnings, final counters of an awaited operation, SHOW PROVIDERS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dicomql.cli import main
from tests.support.deflated import damaged_deflated

SCOPE = "projectsId = 'p' AND locationsId = 'us' AND datasetsId = 'ds'"
AT_SCOPE = "@projectsId='p', @locationsId='us', @datasetsId='ds'"


def run(data_dir: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, [*args, "--data-dir", str(data_dir)], input=input)


def store_folder(data_dir: Path, folder: Path) -> Result:
    """EXEC store_instances of ``folder`` into store a, as JSON rows."""
    return run(
        data_dir,
        "exec",
        f"EXEC google.healthcare.dicom_stores.store_instances {AT_SCOPE}, @dicomStoresId='a',"
        f" @path='{folder}'",
        "-o",
        "json",
    )


def write_instances(folder: Path, count: int) -> Path:
    """``count`` copies of pydicom's CT_small, each a new study, series and instance."""
    folder.mkdir(parents=True, exist_ok=True)
    template = dcmread(get_testdata_file("CT_small.dcm"))
    for index in range(count):
        template.StudyInstanceUID = generate_uid()
        template.SeriesInstanceUID = generate_uid()
        template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        template.PatientID = f"P{index % 2}"
        template.save_as(folder / f"{index}.dcm")
    return folder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dataset ds with store a (3 instances) and store b (12 instances)."""
    root = tmp_path_factory.mktemp("fixes")
    path = root / "data"
    setup = (
        "INSERT /*+ AWAIT */ INTO google.healthcare.datasets (projectsId, locationsId, datasetId)"
        " SELECT 'p', 'us', 'ds';"
    )
    for store, count in (("a", 3), ("b", 12)):
        folder = write_instances(root / store, count)
        setup += (
            "INSERT INTO google.healthcare.dicom_stores (projectsId, locationsId, datasetsId,"
            f" dicomStoreId) SELECT 'p', 'us', 'ds', '{store}';"
            f"EXEC google.healthcare.dicom_stores.store_instances {AT_SCOPE},"
            f" @dicomStoresId='{store}', @path='{folder}';"
        )
    result = run(path, "exec", setup)
    assert result.exit_code == 0, result.output
    return path


def test_int64_fields_compare_and_sort_as_numbers(data_dir: Path) -> None:
    result = run(
        data_dir,
        "exec",
        "SELECT dicomStoresId, instanceCount FROM google.healthcare.dicom_store_metrics "
        f"WHERE {SCOPE} AND dicomStoresId IN ('a', 'b') AND instanceCount > 2 "
        "ORDER BY instanceCount DESC",
        "-o",
        "json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"dicomStoresId": "b", "instanceCount": 12},
        {"dicomStoresId": "a", "instanceCount": 3},
    ]
    above = run(
        data_dir,
        "exec",
        "SELECT dicomStoresId FROM google.healthcare.dicom_store_metrics "
        f"WHERE {SCOPE} AND dicomStoresId IN ('a', 'b') AND instanceCount > 5",
        "-o",
        "csv",
    )
    assert above.stdout.splitlines() == ["dicomStoresId", "b"]


def test_describe_says_an_int64_field_is_a_string_holding_int64(data_dir: Path) -> None:
    result = run(data_dir, "exec", "DESCRIBE google.healthcare.dicom_store_metrics", "-o", "json")
    types = {row["name"]: row["type"] for row in json.loads(result.stdout)}
    assert types["instanceCount"] == "string (int64)"
    assert types["name"] == "string"


def test_an_unterminated_string_is_a_syntax_error_not_a_traceback(data_dir: Path) -> None:
    result = run(data_dir, "exec", "SELECT 'abc")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "Error: Unterminated string at line 1, column 8" in result.stderr


@pytest.mark.parametrize("wrong", ["projectId", "projectsid"])
def test_a_misspelt_parameter_suggests_projectsId(data_dir: Path, wrong: str) -> None:
    sql = f"SELECT name FROM google.healthcare.dicom_stores WHERE {SCOPE}".replace(
        "projectsId", wrong
    )
    result = run(data_dir, "exec", sql)
    assert result.exit_code == 1
    assert "missing required parameter projectsId" in result.stderr
    assert f"WHERE names '{wrong}'; did you mean 'projectsId'?" in result.stderr


def test_like_on_a_parameter_column_is_explained(data_dir: Path) -> None:
    sql = f"SELECT name FROM google.healthcare.dicom_stores WHERE {SCOPE}".replace(
        "datasetsId = 'ds'", "datasetsId LIKE 'd%'"
    )
    result = run(data_dir, "exec", sql)
    assert result.exit_code == 1
    assert "datasetsId is a parameter of the API call, given only by = or IN (not by LIKE)" in (
        result.stderr
    )


def test_a_join_on_a_missing_column_names_the_column(data_dir: Path) -> None:
    result = run(
        data_dir,
        "exec",
        "SELECT s.name FROM google.healthcare.datasets d JOIN google.healthcare.dicom_stores s "
        "ON s.datasetsId = d.datasetId WHERE d.projectsId = 'p' AND d.locationsId = 'us' "
        "AND s.projectsId = 'p' AND s.locationsId = 'us'",
    )
    assert result.exit_code == 1
    assert "unknown column 'd.datasetId' in google.healthcare.datasets" in result.stderr
    assert "cycle" not in result.stderr


def test_a_join_of_two_parameters_says_which_wait_on_each_other(data_dir: Path) -> None:
    result = run(
        data_dir,
        "exec",
        "SELECT a.name FROM google.healthcare.dicom_stores a JOIN google.healthcare.dicom_stores b "
        "ON a.datasetsId = b.datasetsId WHERE a.projectsId = 'p' AND a.locationsId = 'us' "
        "AND b.projectsId = 'p' AND b.locationsId = 'us'",
    )
    assert result.exit_code == 1
    assert "a.datasetsId from b.datasetsId" in result.stderr
    assert "give one of them in WHERE" in result.stderr


def test_a_join_of_two_parameters_feeds_the_side_that_needs_it(data_dir: Path) -> None:
    """datasets can be listed without datasetsId, dicom_stores cannot: datasets go first."""
    result = run(
        data_dir,
        "exec",
        "SELECT s.name FROM google.healthcare.datasets d JOIN google.healthcare.dicom_stores s "
        "ON s.datasetsId = d.datasetsId WHERE d.projectsId = 'p' AND d.locationsId = 'us' "
        "AND s.projectsId = 'p' AND s.locationsId = 'us' ORDER BY s.name",
        "-o",
        "csv",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:3] == [
        "projects/p/locations/us/datasets/ds/dicomStores/a",
        "projects/p/locations/us/datasets/ds/dicomStores/b",
    ]


def test_a_keyword_in_the_wrong_case_suggests_the_keyword(data_dir: Path) -> None:
    result = run(
        data_dir,
        "exec",
        f"EXEC google.healthcare.dicom_stores.search_for_studies {AT_SCOPE}, "
        "@dicomStoresId='a', @PatientId='P0'",
    )
    assert result.exit_code == 1
    assert "unknown DICOM attribute 'PatientId'" in result.stderr
    assert "did you mean 'PatientID'?" in result.stderr


def test_bad_json_is_located_in_the_script_file(data_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "bad.iql"
    script.write_text(
        "SHOW SERVICES;\n\n"
        "INSERT INTO google.healthcare.dicom_stores (data__labels, projectsId, locationsId,\n"
        '  datasetsId, dicomStoreId) SELECT \'{"a":\n'
        "  1,,}', 'p', 'us', 'ds', 'x';\n"
    )
    result = run(data_dir, "exec", "-f", str(script), "-o", "csv")
    assert result.exit_code == 1
    assert "statement 2 (line 3): data__labels is not valid JSON" in result.stderr
    assert "at line 5, column 5" in result.stderr
    assert "\n  1,,}', 'p', 'us', 'ds', 'x'\n    ^\n" in result.stderr  # under the 2nd comma


def test_a_folder_upload_names_each_failed_file_with_hex_code_and_reason(
    data_dir: Path, tmp_path: Path
) -> None:
    folder = write_instances(tmp_path / "mixed", 2)
    (folder / "notes.txt").write_text("not DICOM")
    result = store_folder(data_dir, folder)
    assert result.exit_code == 1
    rows = json.loads(result.stdout)
    assert sorted(row["status"] for row in rows) == ["failed", "stored", "stored"]
    (failed,) = [row for row in rows if row["status"] == "failed"]
    assert failed["path"] == str(folder / "notes.txt")
    assert failed["FailureReason"] == "0xC000"
    assert "Not a DICOM" in failed["FailureDescription"]
    assert "2 of 3 files stored" in result.stderr
    assert f"Error: 1 of 3 files failed:\n  {folder / 'notes.txt'}: 0xC000 Not a DICOM" in (
        result.stderr
    )


def test_a_damaged_deflated_file_in_a_folder_upload_is_named_as_failed(
    data_dir: Path, tmp_path: Path
) -> None:
    folder = write_instances(tmp_path / "deflated", 1)
    (folder / "cut.dcm").write_bytes(damaged_deflated("truncated"))
    result = store_folder(data_dir, folder)
    # Before, the report's own read of the file to name it raised zlib's error.
    assert result.exit_code == 1, result.output
    (failed,) = [row for row in json.loads(result.stdout) if row["status"] == "failed"]
    assert failed["path"] == str(folder / "cut.dcm")
    assert failed["FailureReason"] == "0xC000"
    assert "while decompressing data" in failed["FailureDescription"]


def test_a_page_cap_with_pages_left_is_a_warning(data_dir: Path) -> None:
    result = run(
        data_dir,
        "exec",
        f"SELECT name FROM google.healthcare.dicom_stores WHERE {SCOPE} AND pageSize = 1",
        "--page-limit",
        "1",
        "-o",
        "csv",
    )
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2
    assert "Warning: google.healthcare.dicom_stores.list: stopped after 1 pages" in result.stderr


def test_a_qido_page_cut_short_is_a_warning(data_dir: Path) -> None:
    search = (
        f"EXEC google.healthcare.dicom_stores.search_for_instances {AT_SCOPE}, @dicomStoresId='b'"
    )
    cut = run(data_dir, "exec", f"{search}, @limit=5", "-o", "csv")
    assert cut.exit_code == 0, cut.output
    assert "Warning: search_for_instances: There are additional results" in cut.stderr
    whole = run(data_dir, "exec", f"{search}, @limit=50", "-o", "csv")
    assert "Warning" not in whole.stderr


def test_await_of_an_import_prints_its_final_counters(data_dir: Path, tmp_path: Path) -> None:
    folder = write_instances(tmp_path / "import", 3)
    body = json.dumps({"gcsSource": {"uri": f"{folder}/*.dcm"}})
    result = run(
        data_dir,
        "exec",
        "INSERT INTO google.healthcare.dicom_stores (projectsId, locationsId, datasetsId,"
        " dicomStoreId) SELECT 'p', 'us', 'ds', 'imported';"
        f"EXEC /*+ AWAIT */ google.healthcare.dicom_stores.import {AT_SCOPE},"
        f" @dicomStoresId='imported' @@json='{body}'",
        "--import-root",
        str(folder),
    )
    assert result.exit_code == 0, result.output
    assert "done: 3 succeeded, 0 failed" in result.stderr


def test_show_providers_names_google(data_dir: Path) -> None:
    result = run(data_dir, "exec", "SHOW PROVIDERS", "-o", "json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["name"] == "google"
    assert row["version"].startswith("v1")


def test_show_insert_into_gives_a_template_that_runs_when_filled(
    data_dir: Path, tmp_path: Path
) -> None:
    result = run(data_dir, "exec", "SHOW INSERT INTO google.healthcare.dicom_stores", "-o", "json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    template = row["insert_statement"]
    assert template.startswith("INSERT INTO google.healthcare.dicom_stores(\n  projectsId,")
    assert "'{{ data__labels }}'" in template
    variables = {
        "projectsId": "p",
        "locationsId": "us",
        "datasetsId": "ds",
        "dicomStoreId": "templated",
        "data__labels": '{"made": "by-template"}',
    }
    names = [line.strip().rstrip(",") for line in template.split("(\n")[1].split(")")[0].split()]
    (tmp_path / "vars.json").write_text(json.dumps({n: variables.get(n, "") for n in names}))
    (tmp_path / "insert.iql").write_text(template)
    created = run(
        data_dir, "exec", "-f", str(tmp_path / "insert.iql"), "--vars", str(tmp_path / "vars.json")
    )
    assert created.exit_code == 0, created.output
    listed = run(
        data_dir,
        "exec",
        f"SELECT labels FROM google.healthcare.dicom_stores WHERE {SCOPE} "
        "AND dicomStoresId = 'templated'",
        "-o",
        "json",
    )
    assert json.loads(listed.stdout) == [{"labels": {"made": "by-template"}}]


def test_show_insert_required_keeps_only_required_parameters(data_dir: Path) -> None:
    result = run(
        data_dir,
        "exec",
        "SHOW INSERT /*+ REQUIRED */ INTO google.healthcare.dicom_stores",
        "-o",
        "json",
    )
    (row,) = json.loads(result.stdout)
    assert "data__" not in row["insert_statement"]
    assert "datasetsId" in row["insert_statement"]


def test_rendered_and_frame_bytes_are_written_to_files(data_dir: Path, tmp_path: Path) -> None:
    found = run(
        data_dir,
        "exec",
        "SELECT StudyInstanceUID AS st, SeriesInstanceUID AS se, SOPInstanceUID AS i "
        f"FROM google.healthcare.instances WHERE {SCOPE} AND dicomStoresId = 'a' LIMIT 1",
        "-o",
        "json",
    )
    (uids,) = json.loads(found.stdout)
    instance = (
        f"{AT_SCOPE}, @dicomStoresId='a', @studiesId='{uids['st']}', @seriesId='{uids['se']}',"
        f" @instancesId='{uids['i']}'"
    )
    png = tmp_path / "ct.png"
    rendered = run(
        data_dir,
        "exec",
        f"EXEC google.healthcare.instances_rendered.retrieve_rendered {instance},"
        f" @accept='image/png', @output='{png}'",
        "-o",
        "json",
    )
    assert rendered.exit_code == 0, rendered.output
    assert json.loads(rendered.stdout) == [
        {"path": str(png), "contentType": "image/png", "size": png.stat().st_size}
    ]
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    frame = tmp_path / "frame.raw"
    frames = run(
        data_dir,
        "exec",
        f"EXEC google.healthcare.dicom_stores.retrieve_frames {instance}, @framesId='1',"
        """ @accept='multipart/related; type="application/octet-stream"; transfer-syntax=*',"""
        f" @output='{frame}'",
    )
    assert frames.exit_code == 0, frames.output
    assert frame.stat().st_size == 128 * 128 * 2  # CT_small: 128x128, 16 bits, one frame


def test_bigquery_stand_in_tables_join_the_metadata_tables(data_dir: Path) -> None:
    body = json.dumps({"bigqueryDestination": {"tableUri": "bq://p.exported.instances"}})
    exported = run(
        data_dir,
        "exec",
        f"EXEC /*+ AWAIT */ google.healthcare.dicom_stores.export {AT_SCOPE},"
        f" @dicomStoresId='a' @@json='{body}'",
    )
    assert exported.exit_code == 0, exported.output
    joined = run(
        data_dir,
        "exec",
        'SELECT b.PatientID, COUNT(*) AS n FROM "bq://p.exported.instances" b '
        "JOIN google.healthcare.instances i ON i.SOPInstanceUID = b.SOPInstanceUID "
        f"WHERE i.{SCOPE.replace(' AND ', ' AND i.')} AND i.dicomStoresId = 'a' "
        "GROUP BY b.PatientID ORDER BY b.PatientID",
        "-o",
        "csv",
    )
    assert joined.exit_code == 0, joined.output
    direct = run(
        data_dir,
        "exec",
        "SELECT PatientID, COUNT(*) AS n FROM google.healthcare.instances "
        f"WHERE {SCOPE} AND dicomStoresId = 'a' GROUP BY PatientID ORDER BY PatientID",
        "-o",
        "csv",
    )
    # Every instance of store a was exported: the join counts what the store holds.
    assert joined.stdout.splitlines() == direct.stdout.splitlines()
    assert [line.split(",")[0] for line in joined.stdout.splitlines()] == ["PatientID", "P0", "P1"]
    explained = run(
        data_dir, "exec", 'EXPLAIN SELECT * FROM "bq://p.exported.instances"', "-o", "json"
    )
    assert json.loads(explained.stdout)[0]["method"] == "DuckDB"
    missing = run(data_dir, "exec", 'SELECT * FROM "bq://p.exported.nope"')
    assert missing.exit_code == 1
    assert "no table bq://p.exported.nope" in missing.stderr
