"""The benchmark report's QIDO growth table: the issue's 1.5× goal, computed from a run's JSON."""

from __future__ import annotations

import dataclasses
from typing import Any

from bench.phases import QUICK, SMOKE

from bench import report


def run_of(plan: Any, p50: dict[str, tuple[float, float]]) -> dict[str, Any]:
    small, large = plan.qido_scales[0], plan.qido_scales[-1]
    figures = {}
    for query, (before, after) in p50.items():
        figures[f"qido.{small}.{query}"] = {"p50_ms": before}
        figures[f"qido.{large}.{query}"] = {"p50_ms": after}
    return {"plan": dataclasses.asdict(plan), "targets": {"dicomql-sqlite": {"figures": figures}}}


def test_growth_is_the_larger_scales_p50_over_the_smallers_and_marks_the_goal_missed() -> None:
    lines = report._qido_growth(
        run_of(QUICK, {"study_by_patient_id": (10.0, 12.0), "study_by_date_range": (10.0, 16.0)})
    )
    cells = [line.strip("| ").split(" | ") for line in lines if not line.startswith("|---")]
    rows = dict(cells[1:])
    assert rows["study by patient id"] == "1.20"
    assert rows["study by date range"] == "1.60 ✗"
    assert rows["series of study"] == "—"  # not measured in this run


def test_a_run_with_one_qido_scale_has_no_growth_table() -> None:
    assert report._qido_growth(run_of(SMOKE, {"study_by_patient_id": (1.0, 1.0)})) == []
