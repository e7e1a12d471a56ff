"""Manifest loading: a valid stack models correctly; every mistake names file, line and what."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomql.deploy.manifest import MANIFEST_FILE, load_manifest, parse_manifest
from dicomql.errors import ManifestError

GOOD = """\
version: 1
name: imaging
description: a dataset and a store
providers:
  - google
globals:
  - name: project
    value: "{{ GOOGLE_PROJECT }}"
    description: the project
  - name: location
    value: us-central1
resources:
  - name: dataset
    props:
      - name: dataset_id
        value: "{{ stack_name }}-{{ stack_env }}"
    exports:
      - dataset_name
      - name: dataset_path
  - name: store
    protected: true
    props:
      - name: labels
        values:
          dev:
            value: {env: dev}
          prd:
            value: {env: prd}
  - name: secret_lookup
    type: query
    sql: SELECT 'x' AS token
    exports: [token]
    protected: [token]
exports:
  - dataset_name
"""


def parse(text: str) -> object:
    return parse_manifest(text, Path("stack/stackql_manifest.yml"))


def error_of(text: str) -> ManifestError:
    with pytest.raises(ManifestError) as caught:
        parse(text)
    return caught.value


def test_a_valid_manifest_models_globals_resources_props_and_exports() -> None:
    manifest = parse_manifest(GOOD, Path("stack/stackql_manifest.yml"))
    assert manifest.name == "imaging"
    assert [g.name for g in manifest.globals] == ["project", "location"]
    dataset, store, lookup = manifest.resources
    assert dataset.props[0].value == "{{ stack_name }}-{{ stack_env }}"
    assert [(e.column, e.alias) for e in dataset.exports] == [
        ("dataset_name", "dataset_name"),
        ("name", "dataset_path"),
    ]
    assert store.keep_on_teardown is True
    assert store.props[0].value_for("prd") == {"env": "prd"}
    assert lookup.type == "query" and lookup.masked == {"token"}
    assert dataset.query_file == Path("stack/resources/dataset.iql")
    assert manifest.exports == ("dataset_name",)


def test_a_missing_environment_value_names_the_property_and_the_known_environments() -> None:
    manifest = parse_manifest(GOOD, Path("stack/stackql_manifest.yml"))
    with pytest.raises(ManifestError, match=r"no value for environment 'sit'.*dev, prd") as caught:
        manifest.resources[1].props[0].value_for("sit")
    assert caught.value.line == 23
    assert "resources[1] (store).props[0] (labels)" in str(caught.value)


def test_a_misspelt_key_is_reported_with_its_line_and_a_suggestion() -> None:
    error = error_of("name: s\nresources:\n  - name: a\n    prop:\n      - name: x\n")
    assert error.line == 4 and error.column == 5
    assert "unknown key 'prop'" in str(error) and "did you mean 'props'?" in str(error)
    assert str(error).startswith("stack/stackql_manifest.yml:4:5: resources[0] (a):")


def test_a_prop_without_a_value_is_an_error_at_the_prop() -> None:
    error = error_of("name: s\nresources:\n  - name: a\n    props:\n      - name: x\n")
    assert (error.line, error.column) == (5, 9)
    assert "'value' or 'values' is required" in str(error)


def test_value_and_values_together_are_rejected() -> None:
    text = "name: s\nresources:\n  - name: a\n    props:\n      - name: x\n        value: 1\n"
    error = error_of(text + "        values: {dev: {value: 2}}\n")
    assert "either 'value' or 'values'" in str(error)


def test_a_resource_declared_twice_names_both_lines() -> None:
    error = error_of("name: s\nresources:\n  - name: a\n  - name: a\n")
    assert error.line == 4 and "first at line 3" in str(error)


def test_a_duplicate_key_is_an_error_rather_than_silently_overwritten() -> None:
    error = error_of("name: s\nname: t\nresources: []\n")
    assert error.line == 2 and "'name' is given twice" in str(error)


def test_an_unknown_resource_type_lists_the_known_ones() -> None:
    error = error_of("name: s\nresources:\n  - name: a\n    type: bucket\n")
    assert error.line == 4 and "unknown type 'bucket'" in str(error) and "resource" in str(error)


def test_protected_names_must_be_exports_of_the_resource() -> None:
    text = "name: s\nresources:\n  - name: a\n    exports: [x]\n    protected: [y]\n"
    error = error_of(text)
    assert error.line == 5 and "'y' is not one of this resource's exports" in str(error)


def test_a_resource_file_cannot_leave_the_resources_directory() -> None:
    error = error_of("name: s\nresources:\n  - name: a\n    file: ../../etc/x.iql\n")
    assert "must be a path inside resources/" in str(error)


def test_broken_yaml_reports_the_parser_position() -> None:
    error = error_of("name: s\nresources:\n  - name: [a\n")
    assert error.line >= 3 and "not valid YAML" in str(error)


def test_the_name_and_resources_are_required() -> None:
    assert "'name' is required" in str(error_of("resources: []\n"))
    assert "'resources' is required" in str(error_of("name: s\n"))


def test_load_manifest_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=f"{MANIFEST_FILE} not found"):
        load_manifest(tmp_path)
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(tmp_path / "nope")


def test_yaml_anchors_and_merge_keys_are_allowed(tmp_path: Path) -> None:
    text = """\
name: s
resources:
  - &base
    name: a
    props: [{name: x, value: 1}]
  - <<: *base
    name: b
"""
    (tmp_path / MANIFEST_FILE).write_text(text)
    manifest = load_manifest(tmp_path)
    assert [r.name for r in manifest.resources] == ["a", "b"]
    assert manifest.resources[1].props[0].value == 1


def test_a_provider_other_than_google_is_refused_at_its_line() -> None:
    error = error_of("name: s\nproviders:\n  - google::v24.11.00267\n  - aws\nresources: []\n")
    assert error.line == 4 and "google provider only, not 'aws'" in str(error)
