"""Relational SQL over fetched rows (the in-memory SQLite workspace), against the embedded
service: WHERE on fields, json_extract, GROUP BY, ORDER BY/LIMIT, JOINs and subqueries."""

from __future__ import annotations

import pytest

from dicomql.sql.engine import Engine

IN_DATASET = "projectsId = 'proj' AND locationsId = 'us-central1' AND datasetsId = 'ds1'"
STORES = f"google.healthcare.dicom_stores WHERE {IN_DATASET}"
LABELS = {
    "alpha": {"env": "prod", "team": "radiology"},
    "beta": {"env": "dev", "team": "radiology"},
    "gamma": {"env": "prod", "team": "cardiology"},
    "delta": {},
}


@pytest.fixture
def database_url() -> None:
    """Relational work happens client-side; the index backend does not matter here (SQLite)."""
    return None


@pytest.fixture
def stores(engine: Engine, dataset: dict[str, str]) -> dict[str, str]:
    for store_id, labels in LABELS.items():
        engine.execute(
            "INSERT INTO google.healthcare.dicom_stores "
            "(data__labels, projectsId, locationsId, datasetsId, dicomStoreId) "
            "SELECT :labels, :p, :l, :d, :s",
            parameters={
                "labels": labels,
                "p": dataset["projectsId"],
                "l": dataset["locationsId"],
                "d": dataset["datasetsId"],
                "s": store_id,
            },
        )
    return dataset


def short(name: str) -> str:
    return name.rsplit("/", 1)[1]


def test_where_on_a_field_filters_fetched_rows(engine: Engine, stores: object) -> None:
    result = engine.execute(f"SELECT name FROM {STORES} AND name LIKE '%ta'")
    assert sorted(short(n) for (n,) in result.rows) == ["beta", "delta"]


def test_json_extract_reads_a_label(engine: Engine, stores: object) -> None:
    result = engine.execute(
        f"SELECT name FROM {STORES} AND json_extract(labels, '$.env') = 'prod' ORDER BY name"
    )
    assert [short(n) for (n,) in result.rows] == ["alpha", "gamma"]


def test_group_by_counts_stores_per_label(engine: Engine, stores: object) -> None:
    result = engine.execute(
        "SELECT json_extract(labels, '$.team') AS team, COUNT(*) AS n "
        f"FROM {STORES} GROUP BY team ORDER BY n DESC, team"
    )
    assert result.columns == ["team", "n"]
    # SQLite sorts NULL before text.
    assert result.rows == [("radiology", 2), (None, 1), ("cardiology", 1)]


def test_order_by_and_limit(engine: Engine, stores: object) -> None:
    result = engine.execute(f"SELECT name FROM {STORES} ORDER BY name DESC LIMIT 2")
    assert [short(n) for (n,) in result.rows] == ["gamma", "delta"]


def test_param_columns_are_visible_in_rows(engine: Engine, stores: object) -> None:
    result = engine.execute(f"SELECT DISTINCT datasetsId, projectsId FROM {STORES}")
    assert result.rows == [("ds1", "proj")]


def test_join_of_datasets_and_dicom_stores(engine: Engine, stores: object) -> None:
    result = engine.execute(
        "SELECT d.name AS dataset, s.name AS store "
        "FROM google.healthcare.datasets AS d "
        "JOIN google.healthcare.dicom_stores AS s ON s.name LIKE d.name || '/dicomStores/%' "
        "WHERE d.projectsId = 'proj' AND d.locationsId = 'us-central1' "
        "AND s.projectsId = 'proj' AND s.locationsId = 'us-central1' AND s.datasetsId = 'ds1' "
        "ORDER BY store"
    )
    assert result.columns == ["dataset", "store"]
    assert {d for d, _ in result.rows} == {"projects/proj/locations/us-central1/datasets/ds1"}
    assert [short(s) for _, s in result.rows] == ["alpha", "beta", "delta", "gamma"]


def test_join_feeds_a_parameter_from_the_other_side(engine: Engine, stores: object) -> None:
    # s.datasetsId comes from the fetched datasets: one dicomStores.list per dataset.
    engine.execute(
        "INSERT /*+ AWAIT */ INTO google.healthcare.datasets (projectsId, locationsId, datasetId) "
        "SELECT 'proj', 'us-central1', 'empty'"
    )
    result = engine.execute(
        "SELECT d.id, COUNT(s.name) AS stores FROM ("
        "  SELECT name, substr(name, length(rtrim(name, 'abcdefghijklmnopqrstuvwxyz0123456789'))"
        "  + 1) AS id FROM google.healthcare.datasets"
        "  WHERE projectsId = 'proj' AND locationsId = 'us-central1') AS d "
        "LEFT JOIN google.healthcare.dicom_stores AS s ON s.datasetsId = d.id "
        "AND s.projectsId = 'proj' AND s.locationsId = 'us-central1' "
        "GROUP BY d.id ORDER BY d.id"
    )
    assert result.rows == [("ds1", 4), ("empty", 0)]


def test_subquery_in_where(engine: Engine, stores: object) -> None:
    result = engine.execute(
        f"SELECT COUNT(*) FROM {STORES} AND name IN ("
        f"SELECT name FROM {STORES} AND json_extract(labels, '$.env') = 'prod')"
    )
    assert result.rows == [(2,)]


def test_subquery_in_from(engine: Engine, stores: object) -> None:
    result = engine.execute(
        "SELECT env, COUNT(*) FROM ("
        f"SELECT json_extract(labels, '$.env') AS env FROM {STORES}) AS t "
        "WHERE env IS NOT NULL GROUP BY env ORDER BY env"
    )
    assert result.rows == [("dev", 1), ("prod", 2)]


def test_common_table_expression(engine: Engine, stores: object) -> None:
    result = engine.execute(
        f"WITH prod AS (SELECT name FROM {STORES} AND labels LIKE '%prod%') "
        "SELECT COUNT(*) FROM prod"
    )
    assert result.rows == [(2,)]


def test_insert_from_a_select_over_a_resource_copies_stores(
    engine: Engine, stores: dict[str, str]
) -> None:
    engine.execute(
        "INSERT /*+ AWAIT */ INTO google.healthcare.datasets (projectsId, locationsId, datasetId) "
        "SELECT 'proj', 'us-central1', 'copy'"
    )
    result = engine.execute(
        "INSERT INTO google.healthcare.dicom_stores "
        "(data__labels, projectsId, locationsId, datasetsId, dicomStoreId) "
        "SELECT labels, 'proj', 'us-central1', 'copy', 'copy-' || replace(name, rtrim(name, "
        "'abcdefghijklmnopqrstuvwxyz'), '') "
        f"FROM {STORES} AND json_extract(labels, '$.env') = 'prod' RETURNING name, labels"
    )
    assert result.rowcount == 2
    copied = engine.execute(
        "SELECT name, json_extract(labels, '$.team') FROM google.healthcare.dicom_stores "
        "WHERE projectsId = 'proj' AND locationsId = 'us-central1' AND datasetsId = 'copy' "
        "ORDER BY name"
    )
    assert [(short(n), team) for n, team in copied.rows] == [
        ("copy-alpha", "radiology"),
        ("copy-gamma", "cardiology"),
    ]
