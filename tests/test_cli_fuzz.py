"""No input makes ``dicomql exec`` print a Python traceback: hypothesis builds statements out of
the dialect's words, quotes, parameters and punctuation (and plain noise) and runs them through
the real CLI over an embedded store; each ends with rows or a clear error and a matching exit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicomql.cli import main

EXAMPLES = int(os.environ.get("DICOMQL_FUZZ_EXAMPLES", "120"))
SCOPE = "projectsId = 'p' AND locationsId = 'us' AND datasetsId = 'ds'"
WORDS = [
    "SELECT", "*", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "JOIN", "ON", "GROUP BY",
    "ORDER BY", "LIMIT", "COUNT(*)", "INSERT INTO", "VALUES", "UPDATE", "SET", "DELETE", "EXEC",
    "SHOW", "SERVICES", "RESOURCES", "METHODS", "DESCRIBE", "EXPLAIN", "/*+ AWAIT */", "--", "/*",
    "*/", "'", "''", '"', ";", ",", "(", ")", "=", "@", "@@json=", "{{", "}}", "{{ x }}", ":p",
    "google.healthcare.dicom_stores", "google.healthcare.datasets", "google.healthcare.studies",
    "google.healthcare.instances", "google.healthcare.dicom_stores.search_for_studies",
    "google.healthcare.dicom_stores.store_instances", "projectsId", "locationsId", "datasetsId",
    "dicomStoresId", "'p'", "'us'", "'ds'", "'s'", "@projectsId='p'", "@path='/nonexistent'",
    "@PatientID='X'", "name", "labels", "json_extract(labels, '$.a')", "PatientID", "StudyDate",
    "'2020-01-01'", "1", "-1", "1e999", "NULL", "TRUE", "x.y", "d.name", "\\x", "\x00", "é",
]  # fmt: skip
statements = st.one_of(
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join),
    st.sampled_from(WORDS).flatmap(
        lambda w: st.just(f"SELECT * FROM google.healthcare.dicom_stores WHERE {SCOPE} AND {w}")
    ),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=40),
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "data"
    setup = (
        "INSERT /*+ AWAIT */ INTO google.healthcare.datasets (projectsId, locationsId, datasetId)"
        " SELECT 'p', 'us', 'ds';"
        "INSERT INTO google.healthcare.dicom_stores (projectsId, locationsId, datasetsId,"
        " dicomStoreId) SELECT 'p', 'us', 'ds', 's';"
    )
    result = CliRunner().invoke(main, ["exec", setup, "--data-dir", str(path)])
    assert result.exit_code == 0, result.output
    return path


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sql=statements)
def test_no_statement_makes_exec_print_a_traceback(data_dir: Path, sql: str) -> None:
    if "\x00" in sql:
        # The operating system refuses NUL in argv; a script file carries it.
        args = ["exec", "-f", "-"]
        result = CliRunner().invoke(main, [*args, "--data-dir", str(data_dir)], input=sql)
    else:
        result = CliRunner().invoke(main, ["exec", sql, "--data-dir", str(data_dir)])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{sql!r} raised {result.exception!r}"
    )
    assert "Traceback" not in result.output
    if result.exit_code != 0:
        assert result.exit_code in (1, 2)
        assert "Error:" in result.output, result.output
