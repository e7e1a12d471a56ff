"""Query files: anchors split queries, options parse, and mistakes name the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomql.deploy.queries import load_query_file, parse_queries, split_statements
from dicomql.errors import ManifestError

IQL = """\
-- a DICOM store
/*+ exists */
SELECT COUNT(*) AS count FROM google.healthcare.dicom_stores
WHERE dicomStoresId = '{{ store_id }}';

/*+ create */
INSERT /*+ AWAIT */ INTO google.healthcare.dicom_stores (dicomStoreId) SELECT '{{ store_id }}';

/*+ statecheck, retries=5, retry_delay=2 */
SELECT COUNT(*) AS count FROM google.healthcare.dicom_stores WHERE 1 = 1;
"""


def test_anchors_split_the_file_into_queries_with_their_options() -> None:
    queries = parse_queries(IQL, Path("r.iql"))
    assert set(queries.queries) == {"exists", "create", "statecheck"}
    assert queries.get("exists").line == 2
    assert "INSERT /*+ AWAIT */ INTO" in queries.get("create").template
    statecheck = queries.get("statecheck")
    assert statecheck.options == {"retries": 5, "retry_delay": 2}
    assert statecheck.option("postdelete_retries", 7) == 7


def test_a_stackql_hint_on_its_own_line_stays_in_the_query() -> None:
    queries = parse_queries("/*+ create */\n/*+ AWAIT */\nINSERT INTO x SELECT 1;\n", Path("r"))
    assert queries.get("create").template.strip().startswith("/*+ AWAIT */")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("/*+ exist */\nSELECT 1\n", 1, "unknown anchor 'exist'"),
        ("/*+ exists */\nSELECT 1\n/*+ exists */\nSELECT 2\n", 3, "appears twice"),
        ("/*+ exists, retries=x */\nSELECT 1\n", 1, "needs a whole number"),
        ("/*+ exists, tries=3 */\nSELECT 1\n", 1, "unknown option 'tries=3'"),
        ("SELECT 1\n/*+ exists */\nSELECT 1\n", 1, "text before the first anchor"),
        ("/*+ exists */\n\n/*+ create */\nINSERT\n", 1, "anchor 'exists' has no query"),
    ],
)
def test_query_file_mistakes_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ManifestError, match=message) as caught:
        parse_queries(text, Path("resources/store.iql"))
    assert caught.value.line == line
    assert str(caught.value).startswith(f"resources/store.iql:{line}: ")


def test_a_missing_query_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="query file not found"):
        load_query_file(tmp_path / "resources" / "store.iql")


def test_statements_split_at_semicolons_outside_strings_and_comments() -> None:
    sql = "DELETE FROM a WHERE x = 'p;q'; -- done; really\nSELECT 1 /* ; */;\n;\n-- only a comment"
    assert split_statements(sql) == [
        "DELETE FROM a WHERE x = 'p;q'",
        "-- done; really\nSELECT 1 /* ; */",
    ]
