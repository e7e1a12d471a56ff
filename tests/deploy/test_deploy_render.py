"""Templating: globals, per-environment props, exports and filters render as stackql-deploy's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dicomql.deploy.manifest import parse_manifest
from dicomql.deploy.queries import parse_queries
from dicomql.deploy.render import Renderer, generate_patch_document, merge_lists
from dicomql.errors import ManifestError

MANIFEST = """\
name: imaging
globals:
  - name: project
    value: "{{ GOOGLE_PROJECT }}"
  - name: prefix
    value: "{{ stack_name }}-{{ stack_env }}"
  - name: password
    value: "{{ vars.SECRET }}"
    protected: true
resources:
  - name: store
    props:
      - name: store_id
        value: "{{ prefix }}-store"
      - name: labels
        values:
          dev:
            value: {env: "{{ stack_env }}", owner: "o'neil"}
          prd:
            value: {env: prd}
      - name: enabled
        value: true
"""


def renderer(env: str = "dev") -> Renderer:
    manifest = parse_manifest(MANIFEST, Path("s/stackql_manifest.yml"))
    return Renderer(manifest, env, {"GOOGLE_PROJECT": "p1", "SECRET": "hunter2"})


def store_context(r: Renderer) -> dict[str, object]:
    return r.resource_context(r.manifest.resources[0], r.global_context())


def test_globals_render_in_order_from_variables_and_the_stack_name_and_environment() -> None:
    context = renderer().global_context()
    assert context["project"] == "p1"
    assert context["prefix"] == "imaging-dev"
    assert context["password"] == "hunter2"


def test_props_use_their_environment_value_and_objects_become_json_text() -> None:
    context = store_context(renderer("dev"))
    assert context["store_id"] == "imaging-dev-store"
    assert json.loads(context["labels"]) == {"env": "dev", "owner": "o'neil"}
    assert json.loads(store_context(renderer("prd"))["labels"]) == {"env": "prd"}


def test_a_prop_without_a_value_for_the_environment_fails_naming_it() -> None:
    r = renderer("sit")
    with pytest.raises(ManifestError, match="no value for environment 'sit'"):
        store_context(r)


def test_queries_quote_values_for_sql_string_literals() -> None:
    r = renderer()
    query = parse_queries(
        "/*+ create */\nSELECT '{{ labels }}', {{ enabled }}, '{{ store_id }}';\n", Path("q.iql")
    ).get("create")
    sql = r.query(query, Path("q.iql"), store_context(r))
    assert sql == ("""SELECT '{"env": "dev", "owner": "o''neil"}', TRUE, 'imaging-dev-store';""")


def render_with(template: str, **values: object) -> str:
    r = renderer()
    query = parse_queries(f"/*+ create */\n{template}\n", Path("q.iql")).get("create")
    return r.query(query, Path("q.iql"), {**store_context(r), **values})


def test_a_value_in_a_json_string_of_a_literal_cannot_close_the_string() -> None:
    hostile = 'x", "admin": "yes\' \\'
    sql = render_with("""EXEC x @@json='{"labels": {"owner": "o-{{ owner }}"}}';""", owner=hostile)
    body = sql[sql.index("'") + 1 : sql.rindex("'")].replace("''", "'")
    assert json.loads(body) == {"labels": {"owner": "o-" + hostile}}


def test_a_value_outside_quotes_is_one_sql_literal() -> None:
    sql = render_with(
        "SELECT {{ a }}, {{ n }}, {{ none }};", a="1; DROP TABLE t --", n=5, none=None
    )
    assert sql == "SELECT '1; DROP TABLE t --', 5, NULL;"


def test_a_value_in_a_comment_cannot_end_the_comment() -> None:
    sql = render_with("-- by {{ who }}\nSELECT 1 /* {{ who }} */;", who="a\nDROP */ b")
    assert sql == "-- by a DROP * / b\nSELECT 1 /* a DROP * / b */;"


def test_a_bare_json_value_that_is_not_json_names_the_value() -> None:
    with pytest.raises(ManifestError, match="the value 'not json' stands as a bare JSON value"):
        render_with("""EXEC x @@json='{"pageSize": {{ n }}}';""", n="not json")


def test_a_protected_value_is_masked_as_escaped_inside_json() -> None:
    r = renderer()
    r.remember_secrets(['pa"ss'])
    assert r.mask("""'{"k": "pa\\"ss"}'""") == """'{"k": "****"}'"""


def test_a_whole_json_string_placeholder_is_filled_with_the_object() -> None:
    r = renderer()
    query = parse_queries(
        """/*+ command */\nEXEC x @@json='{"labels": "{{ labels }}", "id": "{{ store_id }}"}';\n""",
        Path("q.iql"),
    ).get("command")
    sql = r.query(query, Path("q.iql"), store_context(r))
    body = sql[sql.index("'") + 1 : sql.rindex("'")].replace("''", "'")
    assert json.loads(body) == {
        "labels": {"env": "dev", "owner": "o'neil"},
        "id": "imaging-dev-store",
    }


def test_jinja_loops_and_stackql_deploy_filters_work_in_queries() -> None:
    r = renderer()
    template = (
        "/*+ statecheck */\nSELECT 1 WHERE 1=1"
        "{% for key, value in labels | from_json | dictsort %}"
        " AND json_extract(labels, '$.{{ key }}') = '{{ value }}'{% endfor %};\n"
    )
    query = parse_queries(template, Path("q.iql")).get("statecheck")
    sql = r.query(query, Path("q.iql"), store_context(r))
    assert sql == (
        "SELECT 1 WHERE 1=1 AND json_extract(labels, '$.env') = 'dev'"
        " AND json_extract(labels, '$.owner') = 'o''neil';"
    )


def test_an_undefined_name_in_a_query_names_the_file_and_line() -> None:
    r = renderer()
    query = parse_queries("/*+ exists */\nSELECT 1\nWHERE x = '{{ stor_id }}'\n", Path("q.iql"))
    with pytest.raises(ManifestError, match="'stor_id' is undefined") as caught:
        r.query(query.get("exists"), Path("resources/store.iql"), store_context(r))
    assert caught.value.line == 3
    assert str(caught.value).startswith("resources/store.iql:3: query 'exists'")


def test_a_template_syntax_error_names_the_line() -> None:
    r = renderer()
    query = parse_queries("/*+ exists */\nSELECT 1\n{% if %}\n", Path("q.iql"))
    with pytest.raises(ManifestError, match="template syntax error") as caught:
        r.query(query.get("exists"), Path("q.iql"), store_context(r))
    assert caught.value.line == 3


def test_the_sandbox_refuses_access_to_python_internals() -> None:
    r = renderer()
    query = parse_queries("/*+ exists */\nSELECT '{{ ''.__class__.__mro__ }}'\n", Path("q"))
    with pytest.raises(ManifestError):
        r.query(query.get("exists"), Path("q"), store_context(r))


def test_protected_values_are_masked() -> None:
    r = renderer()
    r.global_context()
    assert r.mask("password='hunter2'") == "password='****'"


def test_conditions_are_jinja_expressions_over_the_context() -> None:
    text = MANIFEST + "    if: \"stack_env == 'prd'\"\n"
    manifest = parse_manifest(text, Path("s/stackql_manifest.yml"))
    for env, expected in (("prd", True), ("dev", False)):
        r = Renderer(manifest, env, {"GOOGLE_PROJECT": "p", "SECRET": "s"})
        resource = manifest.resources[0]
        assert r.condition(resource, r.resource_context(resource, r.global_context())) is expected


def test_merge_and_patch_filters_accept_json_text() -> None:
    assert merge_lists('[{"a": 1}]', [{"a": 1}, {"b": 2}]) == [{"a": 1}, {"b": 2}]
    assert json.loads(generate_patch_document({"Tags": '[{"k": "v"}]', "Name": "n"})) == [
        {"op": "add", "path": "/Tags", "value": [{"k": "v"}]},
        {"op": "add", "path": "/Name", "value": "n"},
    ]
