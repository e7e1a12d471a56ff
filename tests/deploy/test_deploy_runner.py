"""Build, test and teardown of real stacks on the embedded service, through the SQL engine."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import httpx
import pytest

from dicomql.deploy.manifest import load_manifest
from dicomql.deploy.report import (
    ABSENT,
    CREATED,
    DELETED,
    DRIFTED,
    IN_STATE,
    KEPT,
    UNCHANGED,
    UPDATED,
    Report,
)
from dicomql.deploy.runner import StackRunner
from dicomql.errors import ApiError, DeployError, ManifestError
from dicomql.provider.client import Client
from dicomql.sql.engine import Engine

EXAMPLE = Path(__file__).parents[2] / "examples" / "stacks" / "imaging"

MANIFEST = """\
version: 1
name: lab
globals:
  - name: project
    value: "{{ PROJECT }}"
  - name: location
    value: us-central1
resources:
  - name: dataset
    props:
      - name: dataset_id
        value: "{{ stack_name }}-{{ stack_env }}"
      - name: time_zone
        value: UTC
    exports:
      - dataset_id
      - name: dataset_name
  - name: store_a
    file: dicom_store.iql
    props:
      - name: store_id
        value: a
      - name: labels
        values:
          dev: {value: {env: dev, tier: hot}}
          prd: {value: {env: prd, tier: hot}}
      - name: notification_configs
        value: []
  - name: store_b
    file: dicom_store.iql
    props:
      - name: store_id
        value: b
      - name: labels
        value: {env: "{{ stack_env }}", tier: cold}
      - name: notification_configs
        value: [{pubsubTopic: "projects/{{ project }}/topics/lab"}]
    exports:
      - name: store_b_name
exports:
  - dataset_name
  - store_b_name
"""


@pytest.fixture
def engine(embedded: httpx.Client) -> Engine:
    return Engine(Client(embedded))


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    """A stack of a dataset and two DICOM stores, using the example's query files."""
    stack_dir = tmp_path / "lab"
    shutil.copytree(EXAMPLE / "resources", stack_dir / "resources")
    (stack_dir / "stackql_manifest.yml").write_text(MANIFEST)
    return stack_dir


def run(stack_dir: Path, engine: Engine, command: str, env: str = "dev", **kw: object) -> Report:
    runner = StackRunner(
        load_manifest(stack_dir),
        env,
        engine,
        variables={"PROJECT": "p1", "GOOGLE_PROJECT": "p1"},
        sleep=lambda seconds: None,
        **kw,  # type: ignore[arg-type]
    )
    report: Report = getattr(runner, command)()
    return report


def actions(report: Report) -> dict[str, str]:
    return {outcome.resource: outcome.action for outcome in report.outcomes}


def store_labels(engine: Engine, store: str, dataset: str = "lab-dev") -> dict[str, str]:
    result = engine.execute(
        "SELECT labels FROM google.healthcare.dicom_stores WHERE projectsId = 'p1' "
        f"AND locationsId = 'us-central1' AND datasetsId = '{dataset}' "
        f"AND dicomStoresId = '{store}'"
    )
    labels = result.rows[0][0]
    # Google leaves an empty map out of a resource.
    return json.loads(labels) if isinstance(labels, str) else labels or {}


def test_a_stack_builds_is_idempotent_updates_one_label_detects_drift_and_tears_down(
    stack: Path, engine: Engine
) -> None:
    first = run(stack, engine, "build")
    assert actions(first) == {"dataset": CREATED, "store_a": CREATED, "store_b": CREATED}
    assert store_labels(engine, "a") == {"env": "dev", "tier": "hot"}
    assert first.exports == {
        "dataset_name": "projects/p1/locations/us-central1/datasets/lab-dev",
        "store_b_name": "projects/p1/locations/us-central1/datasets/lab-dev/dicomStores/b",
    }

    again = run(stack, engine, "build")
    assert actions(again) == {"dataset": UNCHANGED, "store_a": UNCHANGED, "store_b": UNCHANGED}
    assert again.changed == []
    assert again.summary().endswith("no changes")

    manifest = stack / "stackql_manifest.yml"
    manifest.write_text(manifest.read_text().replace("tier: cold", "tier: frozen"))
    edited = run(stack, engine, "build")
    assert actions(edited) == {"dataset": UNCHANGED, "store_a": UNCHANGED, "store_b": UPDATED}
    assert store_labels(engine, "b") == {"env": "dev", "tier": "frozen"}
    assert store_labels(engine, "a") == {"env": "dev", "tier": "hot"}

    assert actions(run(stack, engine, "test")) == {
        "dataset": IN_STATE,
        "store_a": IN_STATE,
        "store_b": IN_STATE,
    }
    # A change behind the stack's back, through the engine like any user's PATCH.
    engine.execute(
        'UPDATE google.healthcare.dicom_stores SET data__labels = \'{"env": "dev", '
        '"tier": "hot", "owner": "someone"}\' WHERE projectsId = \'p1\' '
        "AND locationsId = 'us-central1' AND datasetsId = 'lab-dev' AND dicomStoresId = 'a' "
        "AND updateMask = 'labels'"
    )
    tested = run(stack, engine, "test")
    assert actions(tested)["store_a"] == DRIFTED
    # The troubleshoot query shows what the store holds now.
    assert '"owner": "someone"' in tested.outcomes[1].detail
    assert [outcome.resource for outcome in tested.drifted] == ["store_a"]
    assert store_labels(engine, "a")["owner"] == "someone"  # test changes nothing

    torn = run(stack, engine, "teardown")
    assert [(o.resource, o.action) for o in torn.outcomes] == [
        ("store_b", DELETED),
        ("store_a", DELETED),
        ("dataset", DELETED),
    ]
    with pytest.raises(ApiError) as gone:
        engine.execute(
            "SELECT name FROM google.healthcare.datasets WHERE projectsId = 'p1' "
            "AND locationsId = 'us-central1' AND datasetsId = 'lab-dev'"
        )
    assert gone.value.code == 404
    assert {o.action for o in run(stack, engine, "teardown").outcomes} == {ABSENT}


def test_each_environment_gets_its_own_values(stack: Path, engine: Engine) -> None:
    run(stack, engine, "build", env="prd")
    assert store_labels(engine, "a", dataset="lab-prd") == {"env": "prd", "tier": "hot"}
    assert store_labels(engine, "b", dataset="lab-prd") == {"env": "prd", "tier": "cold"}


def test_a_dry_run_changes_nothing_and_shows_the_queries_it_would_run(
    stack: Path, engine: Engine
) -> None:
    shown: list[tuple[str, str, str]] = []

    class Recorder:
        def resource(self, resource: object, message: str) -> None:
            pass

        def query(self, resource: object, anchor: str, sql: str) -> None:
            shown.append((resource.name, anchor, sql))  # type: ignore[attr-defined]

        def outcome(self, outcome: object) -> None:
            pass

    report = run(stack, engine, "build", dry_run=True, reporter=Recorder())
    assert [str(o) for o in report.outcomes] == [
        "dataset: would be created",
        "store_a: would be created",
        "store_b: would be created",
    ]
    creates = [sql for name, anchor, sql in shown if anchor == "create"]
    assert len(creates) == 3 and "INSERT /*+ AWAIT */ INTO google.healthcare.datasets" in creates[0]
    assert "'lab-dev'" in creates[0]
    with pytest.raises(ApiError):
        engine.execute(
            "SELECT name FROM google.healthcare.datasets WHERE projectsId = 'p1' "
            "AND locationsId = 'us-central1' AND datasetsId = 'lab-dev'"
        )

    run(stack, engine, "build")
    planned = run(stack, engine, "teardown", dry_run=True)
    assert [str(o) for o in planned.outcomes] == [
        "store_b: would be deleted",
        "store_a: would be deleted",
        "dataset: would be deleted",
    ]
    assert actions(run(stack, engine, "test"))["store_b"] == IN_STATE


def test_a_bad_query_in_a_later_resource_fails_before_anything_is_created(
    stack: Path, engine: Engine
) -> None:
    store = stack / "resources" / "dicom_store.iql"
    store.write_text(
        store.read_text().replace(
            "'{{ store_id }}';\n\n/*+ statecheck", "'{{ stor_id }}';\n\n/*+ statecheck"
        )
    )
    with pytest.raises(ManifestError, match="'stor_id' is undefined") as caught:
        run(stack, engine, "build")
    assert str(caught.value).startswith(f"{store}:")
    with pytest.raises(ApiError):
        engine.execute(
            "SELECT name FROM google.healthcare.datasets WHERE projectsId = 'p1' "
            "AND locationsId = 'us-central1' AND datasetsId = 'lab-dev'"
        )


def test_teardown_keeps_a_protected_store_and_the_dataset_it_lives_in(
    tmp_path: Path, engine: Engine
) -> None:
    stack_dir = tmp_path / "imaging"
    shutil.copytree(EXAMPLE, stack_dir)
    built = run(stack_dir, engine, "build")
    assert set(actions(built).values()) == {CREATED}
    torn = run(stack_dir, engine, "teardown")
    assert [(o.resource, o.action, o.detail) for o in torn.outcomes] == [
        ("clinical_store", KEPT, "protected"),
        ("research_store", DELETED, ""),
        ("dataset", KEPT, "clinical_store depends on it"),
    ]
    assert store_labels(engine, "clinical", dataset="imaging-dev")["purpose"] == "clinical"


def test_a_store_that_cannot_reach_its_desired_state_fails_the_build_clearly(
    stack: Path, engine: Engine
) -> None:
    store = stack / "resources" / "dicom_store.iql"
    # An update that changes nothing: the statecheck after it still fails.
    text = store.read_text().replace("data__labels = '{{ labels }}',", "data__labels = '{}',")
    store.write_text(text)
    run(stack, engine, "build")
    manifest = stack / "stackql_manifest.yml"
    manifest.write_text(manifest.read_text().replace("tier: cold", "tier: frozen"))
    with pytest.raises(
        DeployError,
        match=r"store_b: still not in the desired state after it was updated \(3 checks\); "
        r"found labels=null, notificationConfigs=",
    ):
        run(stack, engine, "build")


KINDS = """\
name: kinds
globals:
  - name: project
    value: p1
  - name: location
    value: us-central1
resources:
  - name: dataset
    props:
      - name: dataset_id
        value: kinds-{{ stack_env }}
      - name: time_zone
        value: UTC
    exports: [dataset_id]
  - name: lookup
    type: query
    sql: >
      SELECT COUNT(*) AS store_count FROM google.healthcare.dicom_stores
      WHERE projectsId = '{{ project }}' AND locationsId = '{{ location }}'
      AND datasetsId = '{{ dataset.dataset_id }}'
    exports: [store_count]
  - name: tool
    type: script
    run: "echo '{\\"suffix\\": \\"{{ stack_env }}-{{ store_count }}\\"}'"
    exports: [suffix]
  - name: prod_only
    if: "stack_env == 'prd'"
    file: dicom_store.iql
    props:
      - name: store_id
        value: only-prd
      - name: labels
        value: {}
      - name: notification_configs
        value: []
  - name: store
    file: dicom_store.iql
    props:
      - name: store_id
        value: "s-{{ suffix }}"
      - name: labels
        value: {}
      - name: notification_configs
        value: []
"""


def test_query_script_and_conditional_resources_feed_later_resources(
    tmp_path: Path, engine: Engine
) -> None:
    stack_dir = tmp_path / "kinds"
    shutil.copytree(EXAMPLE / "resources", stack_dir / "resources")
    (stack_dir / "stackql_manifest.yml").write_text(KINDS)
    built = run(stack_dir, engine, "build")
    assert actions(built) == {
        "dataset": CREATED,
        "lookup": "exported",
        "tool": "ran",
        "prod_only": "skipped",
        "store": CREATED,
    }
    # The query counted no stores yet, the script turned that into a suffix, the store used it.
    assert store_labels(engine, "s-dev-0", dataset="kinds-dev") == {}
    rebuilt = run(stack_dir, engine, "build")
    assert actions(rebuilt)["store"] == CREATED  # the count is now 1: a new suffix, a new store
    assert actions(run(stack_dir, engine, "teardown"))["prod_only"] == "skipped"


SECRETS = """\
name: secrets
globals:
  - name: project
    value: p1
  - name: location
    value: us-central1
resources:
  - name: vault
    type: query
    sql: SELECT 'hunter2' AS token, 'secrets-dev' AS dataset_id
    exports: [token, dataset_id]
    protected: [token]
  - name: dataset
    props:
      - name: time_zone
        value: UTC
exports: [token, dataset_id]
"""


def test_protected_exports_are_masked_in_printed_queries_and_stack_outputs(
    tmp_path: Path, engine: Engine
) -> None:
    stack_dir = tmp_path / "secrets"
    shutil.copytree(EXAMPLE / "resources", stack_dir / "resources")
    dataset_iql = stack_dir / "resources" / "dataset.iql"
    dataset_iql.write_text(
        dataset_iql.read_text()
        .replace("/*+ update */", "/*+ update */\n-- token {{ token }}\n", 1)
        .replace("/*+ create */", "/*+ create */\n-- token {{ token }}", 1)
    )
    (stack_dir / "stackql_manifest.yml").write_text(SECRETS)
    shown: list[str] = []

    class Recorder:
        def resource(self, resource: object, message: str) -> None:
            pass

        def query(self, resource: object, anchor: str, sql: str) -> None:
            shown.append(sql)

        def outcome(self, outcome: object) -> None:
            pass

    report = run(stack_dir, engine, "build", show_queries=True, reporter=Recorder())
    assert report.exports == {"token": "****", "dataset_id": "secrets-dev"}
    create = next(sql for sql in shown if "INSERT" in sql)
    # The vault query itself holds the literal; every query after it is masked.
    assert "-- token ****" in create and "hunter2" not in "".join(shown[1:])


def test_a_command_resource_runs_on_every_build_and_is_not_torn_down(
    stack: Path, engine: Engine
) -> None:
    manifest = stack / "stackql_manifest.yml"
    manifest.write_text(
        manifest.read_text().replace(
            "exports:\n  - dataset_name",
            """  - name: stamp
    type: command
    sql: >
      UPDATE google.healthcare.dicom_stores SET data__labels = '{"stamped": "{{ stack_env }}"}'
      WHERE projectsId = '{{ project }}' AND locationsId = '{{ location }}'
      AND datasetsId = '{{ dataset_id }}' AND dicomStoresId = 'a' AND updateMask = 'labels'
exports:
  - dataset_name""",
        )
    )
    assert actions(run(stack, engine, "build"))["stamp"] == "ran"
    assert store_labels(engine, "a") == {"stamped": "dev"}
    # The next build puts store_a back as the manifest says, then stamps it again.
    again = actions(run(stack, engine, "build"))
    assert (again["store_a"], again["stamp"]) == (UPDATED, "ran")
    torn = actions(run(stack, engine, "teardown"))
    assert "stamp" not in torn and torn["dataset"] == DELETED


def test_a_dry_run_of_a_new_stack_passes_placeholders_through_query_resources(
    tmp_path: Path, engine: Engine
) -> None:
    stack_dir = tmp_path / "kinds"
    shutil.copytree(EXAMPLE / "resources", stack_dir / "resources")
    (stack_dir / "stackql_manifest.yml").write_text(KINDS)
    planned = run(stack_dir, engine, "build", dry_run=True)
    assert [str(o) for o in planned.outcomes] == [
        "dataset: would be created",
        "lookup: exported",
        "tool: would run",
        "prod_only: skipped (its 'if' is false)",
        "store: would be created",
    ]


SEED_PAGE = Path("/work/shared/seeds")
SEED_STACK = """\
name: seed
globals:
  - {name: projectsId, value: p1}
  - {name: locationsId, value: us-central1}
  - {name: datasetsId, value: seed-ds}
resources:
  - name: dicom_stores
    props:
      - {name: name, value: ""}
      - {name: notificationConfig, value: {}}
      - {name: labels, value: {env: dev}}
      - {name: streamConfigs, value: []}
      - {name: notificationConfigs, value: []}
      - {name: dicomStoreId, value: seed-store}
      - {name: dicomStoresId, value: seed-store}
      - {name: updateMask, value: labels}
"""


def test_the_stackql_docs_dicom_stores_queries_work_verbatim_as_a_resource(
    tmp_path: Path, engine: Engine
) -> None:
    pages = sorted(SEED_PAGE.glob("000_*.txt"))
    if not pages:
        pytest.skip(f"the StackQL doc page is not in {SEED_PAGE}")
    blocks = re.findall(r"```sql\n(.*?)```", pages[0].read_text(), re.S)

    def block(start: str) -> str:
        return next(b for b in blocks if b.startswith(start))

    get = block("SELECT\nname,")
    exists = re.sub(r"SELECT\n.*?\nFROM", "SELECT COUNT(*) AS count\nFROM", get, flags=re.S)
    statecheck = exists.replace(
        "-- required;", "-- required\nAND {{ labels | json_matches('labels') }};"
    )
    stack_dir = tmp_path / "seed"
    (stack_dir / "resources").mkdir(parents=True)
    anchored = {
        "exists": exists,
        "create": block("INSERT INTO google.healthcare.dicom_stores"),
        "statecheck": statecheck,
        "update": block("UPDATE google.healthcare.dicom_stores"),
        "delete": block("DELETE FROM google.healthcare.dicom_stores"),
    }
    (stack_dir / "resources" / "dicom_stores.iql").write_text(
        "".join(f"/*+ {anchor} */\n{sql}\n" for anchor, sql in anchored.items())
    )
    manifest = stack_dir / "stackql_manifest.yml"
    manifest.write_text(SEED_STACK)
    engine.execute(
        "INSERT /*+ AWAIT */ INTO google.healthcare.datasets (projectsId, locationsId, datasetId) "
        "SELECT 'p1', 'us-central1', 'seed-ds'"
    )
    assert actions(run(stack_dir, engine, "build")) == {"dicom_stores": CREATED}
    manifest.write_text(SEED_STACK.replace("{env: dev}", "{env: prd}"))
    assert actions(run(stack_dir, engine, "build")) == {"dicom_stores": UPDATED}
    assert store_labels(engine, "seed-store", dataset="seed-ds") == {"env": "prd"}
    assert actions(run(stack_dir, engine, "test")) == {"dicom_stores": IN_STATE}
    assert actions(run(stack_dir, engine, "teardown")) == {"dicom_stores": DELETED}


def test_an_exists_query_that_returns_a_field_captures_it_as_this(
    stack: Path, engine: Engine
) -> None:
    store = stack / "resources" / "dicom_store.iql"
    text = store.read_text()
    text = text.replace(
        "/*+ exists */\nSELECT COUNT(*) AS count\n", "/*+ exists */\nSELECT name AS path\n", 1
    )
    text = text.replace(
        "/*+ exports */\nSELECT name\n", "/*+ exports */\nSELECT name, '{{ this.path }}' AS seen\n"
    )
    store.write_text(text)
    manifest = stack / "stackql_manifest.yml"
    manifest.write_text(
        manifest.read_text().replace(
            "      - name: store_b_name", "      - name: store_b_name\n      - seen"
        )
    )
    manifest.write_text(
        manifest.read_text().replace("  - store_b_name\n", "  - store_b_name\n  - seen\n")
    )
    built = run(stack, engine, "build")
    assert actions(built)["store_b"] == CREATED
    # After the create, the exists query ran again and captured the new store's name.
    assert built.exports["seen"] == built.exports["store_b_name"]
    rebuilt = run(stack, engine, "build")
    assert actions(rebuilt)["store_b"] == UNCHANGED
    torn = run(stack, engine, "teardown")
    assert actions(torn) == {"store_b": DELETED, "store_a": DELETED, "dataset": DELETED}
