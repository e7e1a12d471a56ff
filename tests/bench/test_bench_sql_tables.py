"""bench/sql_tables.py cannot rot: a tiny run loads a store, times the SQL and the hand-made QIDO
calls, checks they agree, and writes its figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_tiny_sql_tables_run_writes_agreeing_figures(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "sql_tables.py"), "--instances", "200",
         "--runs", "1", "--output", str(tmp_path)],
        check=True, env=env, timeout=300,
    )  # fmt: skip
    figures = json.loads((tmp_path / "sql_tables.json").read_text())
    assert figures["groups"] == [["CT", 100], ["SR", 100]]
    assert figures["sql_study_by_patient_id"]["rows"] == 1
    assert "| GROUP BY Modality over instances |" in (tmp_path / "sql_tables.md").read_text()
