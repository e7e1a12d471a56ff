"""``dicomql deploy`` end to end: the starter stack from ``init`` builds, tests and tears down
as written on the embedded backend; drift and bad manifests exit non-zero with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from dicomql.cli import main


def dicomql(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


@pytest.fixture
def starter(tmp_path: Path) -> Path:
    stack = tmp_path / "my_stack"
    result = dicomql("deploy", "init", stack)
    assert result.exit_code == 0, result.output
    return stack


def test_the_starter_stack_builds_tests_and_tears_down_as_written(
    starter: Path, tmp_path: Path
) -> None:
    data = ("--data-dir", tmp_path / "data")
    for env in ("dev", "prd"):
        built = dicomql("deploy", "build", starter, env, *data)
        assert built.exit_code == 0, built.output
        assert "imaging_dataset: created" in built.output
        assert "imaging_store: created" in built.output
        assert (
            f"dicom_store_name=projects/my-project/locations/us-central1/datasets/my-stack-{env}"
            f"/dicomStores/my-stack-{env}-store"
        ) in built.output

        again = dicomql("deploy", "build", starter, env, *data)
        assert again.exit_code == 0 and "2 unchanged; no changes" in again.output

        tested = dicomql("deploy", "test", starter, env, *data)
        assert tested.exit_code == 0 and "no drift" in tested.output

        torn = dicomql("deploy", "teardown", starter, env, *data)
        assert torn.exit_code == 0, torn.output
        assert "imaging_store: deleted\nimaging_dataset: deleted\n" in torn.output


def test_deploy_test_exits_1_naming_the_store_changed_behind_its_back(
    starter: Path, tmp_path: Path
) -> None:
    data = ("--data-dir", tmp_path / "data")
    assert dicomql("deploy", "build", starter, "dev", *data).exit_code == 0
    patched = dicomql(
        "exec",
        'UPDATE google.healthcare.dicom_stores SET data__labels = \'{"env": "prd"}\' '
        "WHERE projectsId = 'my-project' AND locationsId = 'us-central1' "
        "AND datasetsId = 'my-stack-dev' AND dicomStoresId = 'my-stack-dev-store' "
        "AND updateMask = 'labels'",
        *data,
    )
    assert patched.exit_code == 0, patched.output
    tested = dicomql("deploy", "test", starter, "dev", *data)
    assert tested.exit_code == 1
    assert "imaging_store: drifted" in tested.output
    assert 'found labels={"env": "prd"}' in tested.output
    assert "drift in 1 resource(s): imaging_store (drifted)" in tested.output
    repaired = dicomql("deploy", "build", starter, "dev", *data)
    assert "imaging_store: updated" in repaired.output
    assert dicomql("deploy", "test", starter, "dev", *data).exit_code == 0


def test_a_dry_run_prints_the_plan_and_queries_and_creates_nothing(
    starter: Path, tmp_path: Path
) -> None:
    data = ("--data-dir", tmp_path / "data")
    planned = dicomql("deploy", "build", starter, "dev", "--dry-run", *data)
    assert planned.exit_code == 0, planned.output
    assert "imaging_dataset: would be created" in planned.output
    assert (
        "/* imaging_store: create */\nINSERT INTO google.healthcare.dicom_stores" in planned.output
    )
    assert '\'{"env": "dev", "team": "imaging"}\'' in planned.output
    assert "2 would be created" in planned.output
    tested = dicomql("deploy", "test", starter, "dev", *data)
    assert "imaging_dataset: absent" in tested.output


def test_variables_from_e_and_an_env_file_fill_the_manifest(starter: Path, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("# the project\nexport GOOGLE_PROJECT='from-file'\n")
    data = ("--data-dir", tmp_path / "data")
    built = dicomql("deploy", "build", starter, "dev", "--env-file", env_file, *data)
    assert "datasets/my-stack-dev" in built.output and "projects/from-file/" in built.output
    planned = dicomql(
        "deploy",
        "teardown",
        starter,
        "dev",
        "--env-file",
        env_file,
        "-e",
        "GOOGLE_PROJECT=x",
        "--dry-run",
        *data,
    )
    assert "imaging_dataset: absent" in planned.output  # -e wins over the file


def test_a_bad_manifest_exits_1_naming_file_line_and_problem(starter: Path, tmp_path: Path) -> None:
    manifest = starter / "stackql_manifest.yml"
    manifest.write_text(
        manifest.read_text().replace("      - name: timeZone", "      - nme: timeZone")
    )
    result = dicomql("deploy", "build", starter, "dev", "--data-dir", tmp_path / "data")
    assert result.exit_code == 1
    assert (
        "stackql_manifest.yml:28:9: resources[0] (imaging_dataset).props[3]: unknown key 'nme'"
        in result.output
    )


def test_init_refuses_to_overwrite_a_stack(starter: Path) -> None:
    result = dicomql("deploy", "init", starter)
    assert result.exit_code == 1 and "already exists" in result.output


def test_a_malformed_e_variable_is_a_usage_error(starter: Path) -> None:
    result = dicomql("deploy", "build", starter, "dev", "-e", "NOVALUE")
    assert result.exit_code == 2 and "expected KEY=VALUE" in result.output


def test_the_starter_stack_deploys_to_a_served_api_over_http(
    starter: Path, live_server: object
) -> None:
    endpoint = ("--endpoint", live_server.url)  # type: ignore[attr-defined]
    built = dicomql("deploy", "build", starter, "dev", *endpoint)
    assert built.exit_code == 0, built.output
    assert "imaging_store: created" in built.output
    assert dicomql("deploy", "test", starter, "dev", *endpoint).exit_code == 0
    torn = dicomql("deploy", "teardown", starter, "dev", *endpoint)
    assert torn.exit_code == 0 and "imaging_dataset: deleted" in torn.output


def test_a_variable_cannot_add_fields_to_the_json_of_a_deploy_query(
    starter: Path, tmp_path: Path
) -> None:
    store_iql = starter / "resources" / "imaging_store.iql"
    store_iql.write_text(
        store_iql.read_text().replace(
            "'{{ labels }}',", """'{"env": "{{ stack_env }}", "owner": "o-{{ OWNER }}"}',""", 1
        )
    )
    data = ("--data-dir", tmp_path / "data")
    hostile = 'x", "admin": "yes'
    built = dicomql("deploy", "build", starter, "dev", "-e", f"OWNER={hostile}", *data)
    # The whole value is the owner label's (which the service refuses), not a second label.
    assert built.exit_code == 1
    assert f'Invalid value "o-{hostile}" for label "owner"' in built.output
    listed = dicomql(
        "exec",
        "SELECT name FROM google.healthcare.dicom_stores WHERE projectsId = 'my-project' "
        "AND locationsId = 'us-central1' AND datasetsId = 'my-stack-dev'",
        *data,
    )
    assert listed.exit_code == 0 and "my-stack-dev-store" not in listed.output
