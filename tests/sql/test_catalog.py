"""SHOW and DESCRIBE: the catalog of services, resources, methods and columns, from the
registry alone (no API call is made)."""

from __future__ import annotations

from dicomql.sql.engine import Engine
from tests.support.sqltest import Recorder


def test_show_services(recording_engine: Engine, recorder: Recorder) -> None:
    result = recording_engine.execute("SHOW SERVICES")
    assert (result.kind, result.columns) == ("show", ["name", "title", "version"])
    assert result.rows == [("google.healthcare", "Cloud Healthcare API", "v1")]
    assert recorder.calls == []


def test_show_resources_like_filters_case_insensitively(recording_engine: Engine) -> None:
    result = recording_engine.execute("SHOW RESOURCES IN google.healthcare LIKE '%DICOM_STORE%'")
    assert [row[0] for row in result.rows] == [
        "dicom_store_metrics",
        "dicom_stores",
        "dicom_stores_iam_policies",
    ]
    assert result.rows[1][1] == "google.healthcare.dicom_stores"


def test_show_methods_gives_verbs_and_required_parameters(recording_engine: Engine) -> None:
    result = recording_engine.execute("SHOW METHODS IN google.healthcare.dicom_stores")
    assert result.columns == ["MethodName", "RequiredParams", "SQLVerb"]
    methods = {row[0]: row for row in result.rows}
    assert methods["list"] == ("list", "projectsId, locationsId, datasetsId", "SELECT")
    assert methods["create"][2] == "INSERT"
    assert methods["patch"][2] == "UPDATE"
    assert methods["search_for_studies"][2] == "EXEC"
    assert "get_dicomstore_metrics" in methods


def test_show_extended_methods_adds_optional_parameters(recording_engine: Engine) -> None:
    result = recording_engine.execute(
        "SHOW EXTENDED METHODS IN google.healthcare.dicom_stores LIKE 'list'"
    )
    assert result.columns[-2:] == ["OptionalParams", "Description"]
    assert result.rows[0][3] == "filter, pageSize, pageToken"


def test_describe_lists_schema_fields(recording_engine: Engine) -> None:
    result = recording_engine.execute("DESCRIBE google.healthcare.dicom_stores")
    assert result.columns == ["name", "type", "description"]
    types = {row[0]: row[1] for row in result.rows}
    assert types == {
        "name": "string",
        "labels": "object",
        "notificationConfig": "object",
        "notificationConfigs": "array",
        "streamConfigs": "array",
    }


def test_describe_extended_names_the_schema_and_method(recording_engine: Engine) -> None:
    result = recording_engine.execute("DESCRIBE EXTENDED google.healthcare.dicom_stores")
    records = {r["name"]: r for r in result.records()}
    assert records["notificationConfig"]["schema"] == "NotificationConfig"
    assert records["name"]["method"] == "get"
