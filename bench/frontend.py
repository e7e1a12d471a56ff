"""Front-end benchmarks: a simple SELECT (get) through the DB-API on the embedded backend, and
``dicomql exec`` cold start (wall time of a fresh process, and what its imports cost).

Run: ``python bench/frontend.py [--calls 300] [--starts 7]``. Goals: ≤ 5 ms per SELECT,
≤ 400 ms cold start (StackQL publishes about 7 ms per simple SELECT against a mock server).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dicomql

PARENT = "projectsId = 'bench' AND locationsId = 'us' AND datasetsId = 'ds'"
GET = (
    "SELECT name, labels FROM google.healthcare.dicom_stores "
    f"WHERE {PARENT} AND dicomStoresId = 's'"
)
DICOMQL = [sys.executable, "-m", "dicomql.cli"]


def select_ms(data_dir: Path, calls: int) -> tuple[list[float], float]:
    """Wall milliseconds per ``SELECT … WHERE <all path params>`` (dicomStores.get), warm,
    and the mean CPU milliseconds per call (client and in-process service together; less
    sensitive than wall time to a busy machine)."""
    with dicomql.connect(data_dir) as connection:
        cursor = connection.cursor()
        cursor.execute(
            "INSERT /*+ AWAIT */ INTO google.healthcare.datasets "
            "(projectsId, locationsId, datasetId) SELECT 'bench', 'us', 'ds'"
        )
        cursor.execute(
            "INSERT INTO google.healthcare.dicom_stores (data__labels, projectsId, locationsId, "
            "datasetsId, dicomStoreId) SELECT '{\"env\": \"bench\"}', 'bench', 'us', 'ds', 's'"
        )
        for _ in range(20):  # warm up: service started, caches filled
            cursor.execute(GET).fetchall()
        timings = []
        cpu_start = time.process_time()
        for _ in range(calls):
            start = time.perf_counter()
            cursor.execute(GET)
            rows = cursor.fetchall()
            timings.append((time.perf_counter() - start) * 1000)
            assert len(rows) == 1
        cpu_ms = (time.process_time() - cpu_start) * 1000 / calls
    return timings, cpu_ms


def cold_start_ms(args: list[str], starts: int) -> tuple[list[float], float]:
    """Wall milliseconds of ``dicomql <args>`` in a fresh process, each run; and the mean
    CPU (user + system) milliseconds of one run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMQL_")}
    timings = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(starts):
        start = time.perf_counter()
        subprocess.run([*args], check=True, env=env, stdout=subprocess.DEVNULL)
        timings.append((time.perf_counter() - start) * 1000)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000 / starts
    return timings, cpu


def import_costs(args: list[str], top: int = 8) -> list[tuple[str, float]]:
    """The slowest top-level-ish imports of ``dicomql <args>`` (python -X importtime), in ms."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMQL_")}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "dicomql.cli", *args],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    )
    costs: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if not cumulative.strip().isdigit():
            continue
        depth = (len(name) - len(name.lstrip())) // 2
        if depth <= 1:
            costs[name.strip()] = int(cumulative) / 1000
    return sorted(costs.items(), key=lambda item: -item[1])[:top]


def summary(measured: tuple[list[float], float]) -> str:
    timings, cpu_ms = measured
    ordered = sorted(timings)
    p90 = ordered[int(len(ordered) * 0.9) - 1] if len(ordered) >= 10 else ordered[-1]
    return (
        f"median {statistics.median(ordered):7.2f} ms   mean {statistics.fmean(ordered):7.2f} ms"
        f"   p90 {p90:7.2f} ms   cpu {cpu_ms:7.2f} ms   (n={len(ordered)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--starts", type=int, default=7)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        print("DB-API SELECT (dicomStores.get) on the embedded backend (goal <= 5 ms):")
        print("  " + summary(select_ms(data_dir, options.calls)))

        show = ["exec", "SHOW SERVICES", "--data-dir", str(data_dir), "-o", "csv"]
        get = ["exec", GET, "--data-dir", str(data_dir), "-o", "csv"]
        print("dicomql exec cold start (goal <= 400 ms):")
        for label, command in (
            ("SHOW SERVICES (no API call):     ", [*DICOMQL, *show]),
            ("SELECT (starts embedded service):", [*DICOMQL, *get]),
            ("for comparison, python -c pass:  ", [sys.executable, "-c", "pass"]),
        ):
            print(f"  {label} " + summary(cold_start_ms(command, options.starts)))
        for label, args in (("SHOW SERVICES", show), ("SELECT", get)):
            print(f"slowest imports of `dicomql {label}` (cumulative ms, python -X importtime):")
            for name, ms in import_costs(args):
                print(f"  {ms:7.1f}  {name}")


if __name__ == "__main__":
    main()
