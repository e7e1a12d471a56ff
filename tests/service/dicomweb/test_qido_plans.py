"""The main QIDO query shapes run from indexes: SQLite's EXPLAIN QUERY PLAN shows no full SCAN of
studies, series, instances or name tokens, so selective searches cost the same in any store size."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.dialects import sqlite

from dicomql.dicom.attributes import Level
from dicomql.dicom.qido import parse_search
from dicomql.store.index import Index
from dicomql.store.search import Scope, search_statement

S, R, I = Level.STUDY, Level.SERIES, Level.INSTANCE  # noqa: E741

SHAPES = [
    (S, [("PatientID", "p1")], Scope()),
    (S, [("StudyInstanceUID", "1.2,1.3")], Scope()),
    (S, [("AccessionNumber", "A*")], Scope()),
    (S, [("StudyDate", "20200101-20201231")], Scope()),
    (S, [("StudyDate", "-20201231")], Scope()),
    (S, [("PatientName", "doe^john")], Scope()),
    (S, [("PatientName", "doe*")], Scope()),
    (S, [("PatientName", "jo do"), ("fuzzymatching", "true")], Scope()),
    (S, [("ReferringPhysicianName", "ho"), ("fuzzymatching", "true")], Scope()),
    (S, [("limit", "100")], Scope()),
    (S, [("limit", "100"), ("offset", "5000")], Scope()),
    (R, [], Scope("1.2")),
    (R, [("Modality", "CT")], Scope("1.2")),
    (R, [("Modality", "CT")], Scope()),
    (R, [("SeriesInstanceUID", "1.2")], Scope()),
    (R, [("PatientID", "p1")], Scope()),
    (R, [], Scope()),
    (I, [], Scope("1.2", "1.3")),
    (I, [], Scope("1.2")),
    (I, [("SOPInstanceUID", "1.2")], Scope()),
    (I, [("SOPInstanceUID", "1.2")], Scope("1.2", "1.3")),
    (I, [("PatientID", "p1")], Scope()),
    (I, [("PatientName", "jo"), ("fuzzymatching", "true")], Scope()),
    (I, [("Modality", "CT")], Scope()),
    (I, [], Scope()),
]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Index:
    path: Path = tmp_path_factory.mktemp("plans") / "index.sqlite3"
    return Index.open(f"sqlite:///{path}")


@pytest.mark.parametrize(("level", "params", "scope"), SHAPES, ids=str)
def test_search_never_scans_a_whole_table(
    index: Index, level: Level, params: list[tuple[str, str]], scope: Scope
) -> None:
    statement = search_statement(parse_search(params, level), scope, 1, "sqlite")
    sql = str(statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    with index.connect() as conn:
        plan = [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]
    scans = [step for step in plan if step.startswith("SCAN")]
    assert not scans, plan
    assert any(step.startswith("SEARCH") for step in plan), plan
    # Walking the store's (store_pk, pk) index is right only when nothing narrows the search;
    # otherwise it would visit every study/series/instance of the store to find a few.
    walks_store = any(step.endswith("_store_pk (store_pk=?)") for step in plan)
    narrowed = bool(params and params[0][0] not in ("limit",)) or scope != Scope()
    assert walks_store is not narrowed, plan
