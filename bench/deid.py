"""De-identification throughput: dicomql beside dicognito on the same files in the same run.

    python bench/deid.py [--instances 300] [--repeat 3] [--markdown bench/results/deid.md]

Each instance is read from disk, de-identified and written to disk. dicognito runs as its users
run it: one process, its own API (``Anonymizer.anonymize``, which is what its command line
calls per file). dicomql runs as the service's deidentify does when it has the cores: a process
pool (forkserver, one worker per core) of ``Deidentifier`` objects sharing one operation key.
dicognito is a bench-only dependency: ``pip install -e '.[bench]'``.

The files are copies of pydicom's CT_small.dcm (39 KB, 258 elements), each a distinct instance
(its own SOP Instance UID; ten instances a series, one series a study, one study a patient), so
UID mapping and per-patient state see realistic misses. They sit in the page cache, so this
measures parsing, de-identification and serialisation, not the disk. Each cell is the best of
``--repeat`` rounds; rounds interleave the tools so a burst of load from elsewhere on a shared
machine hits them alike. CPU seconds (all processes) are reported beside wall-clock rates:
they do not depend on what else the machine is running.
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pydicom
import pydicom.data
from pydicom.uid import generate_uid

from dicomql.dicom.deid import Deidentifier

INSTALL_HINT = (
    "dicognito is not installed; install the bench extra to compare against it:"
    " pip install -e '.[bench]'"
)
PROFILES: dict[str, dict[str, Any]] = {
    "basic profile": {"dicom": {"filterProfile": "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE"}},
    "minimal keep list": {"dicom": {"filterProfile": "MINIMAL_KEEP_LIST_PROFILE"}},
    "keep all (UIDs only)": {"dicom": {"filterProfile": "KEEP_ALL_PROFILE"}},
    "tag contents": {"dicom": {"filterProfile": "DEIDENTIFY_TAG_CONTENTS"}},
}
# The profile the headline ratio uses: like dicognito, it replaces every name, ID, date and UID.
HEADLINE = "basic profile"
# One key for the whole run: every process maps UIDs identically, as in the service.
OPERATION_KEY = b"bench-operation-key-0123456789ab"
# Files per pool task: large enough that task dispatch is noise, small enough to balance.
CHUNK = 16

Pairs = list[tuple[Path, Path]]


@dataclass
class Measurement:
    tool: str
    processes: int
    instances: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.instances / self.seconds

    @property
    def cpu_rate(self) -> float:
        return self.instances / self.cpu_seconds


def dicognito_available() -> bool:
    try:
        import dicognito  # noqa: F401
    except ImportError:
        return False
    return True


def make_corpus(root: Path, instances: int) -> Pairs:
    """``instances`` distinct instances made from CT_small.dcm under ``root/in``."""
    source = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    (root / "in").mkdir()
    (root / "out").mkdir()
    pairs = []
    for n in range(instances):
        if n % 10 == 0:
            study, series = generate_uid(), generate_uid()
            source.PatientID = f"BENCH-{n // 10:05d}"
            source.PatientName = f"Bench^Patient{n // 10}"
        source.StudyInstanceUID, source.SeriesInstanceUID = study, series
        source.SOPInstanceUID = source.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        source.InstanceNumber = n % 10 + 1
        path = root / "in" / f"{n:06d}.dcm"
        source.save_as(path, enforce_file_format=True)
        pairs.append((path, root / "out" / f"{n:06d}.dcm"))
    return pairs


def dicomql_runner(profile: str) -> Callable[[Path, Path], None]:
    deidentifier = Deidentifier(PROFILES[profile], operation_key=OPERATION_KEY)
    uid_map = deidentifier.uid_map()

    def run(source: Path, target: Path) -> None:
        ds = pydicom.dcmread(source)
        deidentifier.deidentify(ds, uid_map=uid_map)
        ds.save_as(target, enforce_file_format=True)

    return run


def dicognito_runner() -> Callable[[Path, Path], None]:
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer(seed="bench")

    def run(source: Path, target: Path) -> None:
        # What dicognito's command line does per file (dicognito/__main__.py).
        with pydicom.dcmread(source) as ds:
            anonymizer.anonymize(ds)
            ds.save_as(target, enforce_file_format=True)

    return run


_worker_run: Callable[[Path, Path], None] | None = None


def _start_worker(profile: str) -> None:
    global _worker_run
    _worker_run = dicomql_runner(profile)


def _deidentify_chunk(pairs: Pairs) -> tuple[int, float]:
    assert _worker_run is not None, "the pool initializer sets the runner"
    started = time.process_time()
    for source, target in pairs:
        _worker_run(source, target)
    return len(pairs), time.process_time() - started


def measure_in_process(tool: str, run: Callable[[Path, Path], None], pairs: Pairs) -> Measurement:
    started, cpu_started = time.perf_counter(), time.process_time()
    for source, target in pairs:
        run(source, target)
    return Measurement(
        tool,
        1,
        len(pairs),
        time.perf_counter() - started,
        time.process_time() - cpu_started,
    )


def measure_pool(profile: str, pairs: Pairs, processes: int) -> Measurement:
    """dicomql over ``pairs`` in a pool of ``processes`` workers, timed from the first task
    (the workers start, import and build their Deidentifier beforehand, as a service's do)."""
    context = multiprocessing.get_context("forkserver")
    chunks = [pairs[start : start + CHUNK] for start in range(0, len(pairs), CHUNK)]
    with ProcessPoolExecutor(
        max_workers=processes, mp_context=context, initializer=_start_worker, initargs=(profile,)
    ) as pool:
        # One empty task per worker, concurrently, so every worker is up before timing.
        list(pool.map(_deidentify_chunk, [[] for _ in range(processes)]))
        started = time.perf_counter()
        results = list(pool.map(_deidentify_chunk, chunks))
        seconds = time.perf_counter() - started
    return Measurement(
        f"dicomql {profile}",
        processes,
        sum(count for count, _ in results),
        seconds,
        sum(cpu for _, cpu in results),
    )


def run_rounds(
    pairs: Pairs, repeat: int, processes: int, with_dicognito: bool
) -> list[Measurement]:
    best: dict[tuple[str, int], Measurement] = {}

    def keep(measurement: Measurement) -> None:
        key = (measurement.tool, measurement.processes)
        if key not in best or measurement.rate > best[key].rate:
            best[key] = measurement

    for _ in range(repeat):
        if with_dicognito:
            keep(measure_in_process("dicognito", dicognito_runner(), pairs))
        keep(measure_in_process(f"dicomql {HEADLINE}", dicomql_runner(HEADLINE), pairs))
        for profile in PROFILES:
            keep(measure_pool(profile, pairs, processes))
    return list(best.values())


def report(measurements: list[Measurement], instances: int, repeat: int) -> str:
    """The results as a Markdown table (also readable as plain text)."""
    dicognito = next((m for m in measurements if m.tool == "dicognito"), None)
    size = Path(pydicom.data.get_testdata_file("CT_small.dcm")).stat().st_size // 1024
    lines = [
        "# De-identification: dicomql vs dicognito",
        "",
        f"{instances} distinct instances made from pydicom's CT_small.dcm ({size} KB), each read"
        " from disk, de-identified and written to disk; best of"
        f" {repeat} interleaved rounds. {_machine()}",
        "",
        "| tool | processes | instances/s | instances per CPU second | vs dicognito (wall) |"
        " vs dicognito (CPU) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in measurements:
        wall = cpu = "n/a"
        if dicognito is not None:
            wall = f"{m.rate / dicognito.rate:.1f}x"
            cpu = f"{m.cpu_rate / dicognito.cpu_rate:.1f}x"
        lines.append(
            f"| {m.tool} | {m.processes} | {m.rate:.0f} | {m.cpu_rate:.0f} | {wall} | {cpu} |"
        )
    lines.append("")
    if dicognito is None:
        lines.append(INSTALL_HINT)
    else:
        headline = next(
            m for m in measurements if m.tool == f"dicomql {HEADLINE}" and m.processes > 1
        )
        lines.append(
            f"Headline: dicomql's basic profile on {headline.processes} processes,"
            f" {headline.rate:.0f} instances/s, is {headline.rate / dicognito.rate:.1f}x"
            f" dicognito's {dicognito.rate:.0f} instances/s in one process (goal: 3x)."
        )
    return "\n".join(lines) + "\n"


def _machine() -> str:
    versions = f"pydicom {version('pydicom')}, dicomql {version('dicomql')}"
    if dicognito_available():
        versions += f", dicognito {version('dicognito')}"
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"Measured {datetime.date.today().isoformat()} on {os.cpu_count()} cores"
        f" (load average at the end {load}), Python {platform.python_version()}, {versions}."
    )


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--processes", type=int, default=os.cpu_count() or 2, help="dicomql pool size"
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        default=Path(__file__).parent / "results" / "deid.md",
        help="where to write the results table",
    )
    args = parser.parse_args(argv)
    with_dicognito = dicognito_available()
    if not with_dicognito:
        print(INSTALL_HINT, file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="dicomql-deid-bench-") as scratch:
        pairs = make_corpus(Path(scratch), args.instances)
        measurements = run_rounds(pairs, args.repeat, args.processes, with_dicognito)
    text = report(measurements, args.instances, args.repeat)
    print(text)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(text)
    return text


if __name__ == "__main__":
    main()
