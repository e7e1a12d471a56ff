"""SQL over DICOM metadata tables against the same QIDO calls made by hand, on an embedded store.

Loads ``--instances`` instances' index rows (bench/qido_scale.py's bulk loader: 10 instances a
study in 2 series, CT and SR, one patient per study) into a fresh embedded data directory, then
times, in one process over the in-process transport (``dicomql exec``'s default backend):

- ``SELECT Modality, COUNT(*) … FROM google.healthcare.instances … GROUP BY Modality`` beside the
  QIDO pages (``/instances?includefield=Modality&limit=5000&offset=…``) fetched and counted by
  hand;
- a study-level query with a pushed-down PatientID beside ``/studies?PatientID=…``.

Each figure is the median of ``--runs`` runs after one warm-up. Usage::

    /work/main/.venv/bin/python bench/sql_tables.py [--instances 100000] [--runs 5]

Writes bench/results/sql_tables.{md,json} (``--output`` to change).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.qido_scale import DICOMWEB, load
from dicomql.config import ConnectionConfig
from dicomql.dbapi import Connection
from dicomql.store.index import sqlite_url

SCOPE = "projectsId = 'bench' AND locationsId = 'local' AND datasetsId = 'bench'"
STORE = f"{SCOPE} AND dicomStoresId = 'bench'"
PAGE = 5000


def timed(function: Callable[[], Any], runs: int) -> tuple[float, Any]:
    function()  # warm-up: caches, pydicom's dictionary, SQLite pages
    times = []
    result = None
    for _ in range(runs):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sql-tables-"))
    try:
        started = time.perf_counter()
        facts = load(sqlite_url(work), args.instances)
        load_seconds = time.perf_counter() - started
        patient_id = facts[len(facts) // 2]["patient_id"]
        connection = Connection(ConnectionConfig.build(data_dir=work, page_limit=None))
        try:
            http = connection.engine.client.http

            def sql_group_by() -> list[tuple[Any, ...]]:
                result = connection.engine.execute(
                    "SELECT Modality, COUNT(*) AS n FROM google.healthcare.instances "
                    f"WHERE {STORE} GROUP BY Modality ORDER BY Modality"
                )
                return result.rows

            def qido_group_by() -> list[tuple[Any, ...]]:
                counts: Counter[str] = Counter()
                offset = 0
                while True:
                    page = http.get(
                        f"{DICOMWEB}/instances",
                        params={"includefield": "Modality", "limit": PAGE, "offset": offset},
                        headers={"Accept": "application/dicom+json"},
                    ).json()
                    counts.update(item["00080060"]["Value"][0] for item in page)
                    if len(page) < PAGE:
                        break
                    offset += len(page)
                return sorted(counts.items())

            def sql_patient() -> list[tuple[Any, ...]]:
                result = connection.engine.execute(
                    "SELECT StudyInstanceUID, StudyDate, NumberOfStudyRelatedInstances "
                    f"FROM google.healthcare.studies WHERE {STORE} AND PatientID = '{patient_id}'"
                )
                return result.rows

            def qido_patient() -> list[Any]:
                response = http.get(
                    f"{DICOMWEB}/studies",
                    params={"PatientID": patient_id},
                    headers={"Accept": "application/dicom+json"},
                )
                return list(response.json())

            figures: dict[str, Any] = {"instances": args.instances, "runs": args.runs}
            for name, function in (
                ("sql_group_by_modality", sql_group_by),
                ("qido_by_hand_group_by_modality", qido_group_by),
                ("sql_study_by_patient_id", sql_patient),
                ("qido_by_hand_study_by_patient_id", qido_patient),
            ):
                seconds, result = timed(function, args.runs)
                figures[name] = {"median_s": round(seconds, 4), "rows": len(result)}
                print(f"{name}: {seconds * 1000:.1f} ms ({len(result)} rows)", flush=True)
            grouped_sql, grouped_hand = sql_group_by(), qido_group_by()
            assert [tuple(r) for r in grouped_sql] == [tuple(r) for r in grouped_hand], (
                grouped_sql,
                grouped_hand,
            )
            figures["groups"] = [list(r) for r in grouped_sql]
            figures["load_s"] = round(load_seconds, 1)
        finally:
            connection.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write(args.output, figures)


def write(folder: Path, figures: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sql_tables.json").write_text(json.dumps(figures, indent=2) + "\n")
    rows = [
        ("GROUP BY Modality over instances", "group_by_modality"),
        ("studies WHERE PatientID = … (pushed down)", "study_by_patient_id"),
    ]
    lines = [
        f"# SQL metadata tables vs QIDO by hand ({figures['instances']:,} instances, embedded)",
        "",
        "Median of "
        f"{figures['runs']} runs after a warm-up, in-process transport, SQLite index; "
        "`python bench/sql_tables.py` (see its docstring). The machine is a shared 2-core box.",
        "",
        "| query | SQL | QIDO by hand | SQL / hand | rows |",
        "|---|---|---|---|---|",
    ]
    for label, key in rows:
        sql = figures[f"sql_{key}"]
        hand = figures[f"qido_by_hand_{key}"]
        ratio = sql["median_s"] / hand["median_s"] if hand["median_s"] else float("nan")
        lines.append(
            f"| {label} | {sql['median_s'] * 1000:.1f} ms | {hand['median_s'] * 1000:.1f} ms "
            f"| {ratio:.2f} | {sql['rows']} |"
        )
    lines += ["", f"Groups: {figures['groups']}; index load {figures['load_s']} s.", ""]
    (folder / "sql_tables.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
