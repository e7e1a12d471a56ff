"""De-identification throughput: dicomql's Deidentifier beside dicognito, read + de-identify +
write over copies of pydicom's CT_small.dcm, in 1 and 2 processes.

    /work/venv/bin/python bench/deid.py [--instances 300] [--repeat 3]

dicognito (PyPI) is a bench-only dependency: ``pip install dicognito``. Each cell is the best of
``--repeat`` runs (the machine is shared and noisy); the files sit in the page cache, so this
measures parsing, de-identification and serialisation, not the disk.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pydicom
import pydicom.data

from dicomql.dicom.deid import Deidentifier

CONFIGS: dict[str, dict[str, Any]] = {
    "dicomql basic profile": {
        "dicom": {"filterProfile": "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE"}
    },
    "dicomql keep all (UIDs only)": {"dicom": {"filterProfile": "KEEP_ALL_PROFILE"}},
    "dicomql tag contents": {"dicom": {"filterProfile": "DEIDENTIFY_TAG_CONTENTS"}},
}


def dicomql_worker(config: dict[str, Any], key: bytes) -> Callable[[Path, Path], None]:
    deidentifier = Deidentifier(config, operation_key=key)
    uid_map = deidentifier.uid_map()

    def run(source: Path, target: Path) -> None:
        ds = pydicom.dcmread(source)
        deidentifier.deidentify(ds, uid_map=uid_map)
        ds.save_as(target)

    return run


def dicognito_worker() -> Callable[[Path, Path], None]:
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer(seed="bench")

    def run(source: Path, target: Path) -> None:
        ds = pydicom.dcmread(source)
        anonymizer.anonymize(ds)
        ds.save_as(target)

    return run


def make_worker(tool: str) -> Callable[[Path, Path], None]:
    if tool == "dicognito":
        return dicognito_worker()
    # A fixed key: every process of one run must map UIDs identically (as the service does).
    return dicomql_worker(CONFIGS[tool], b"bench-operation-key-0123456789ab")


def process_chunk(tool: str, pairs: list[tuple[Path, Path]]) -> int:
    run = make_worker(tool)
    for source, target in pairs:
        run(source, target)
    return len(pairs)


def measure(tool: str, pairs: list[tuple[Path, Path]], processes: int) -> float:
    """Instances per second for ``tool`` over ``pairs`` with ``processes`` processes."""
    if processes == 1:
        run = make_worker(tool)
        start = time.perf_counter()
        for source, target in pairs:
            run(source, target)
        return len(pairs) / (time.perf_counter() - start)
    chunks = [pairs[n::processes] for n in range(processes)]
    with ProcessPoolExecutor(max_workers=processes) as pool:
        pool.submit(len, []).result()  # start the workers outside the timed section
        start = time.perf_counter()
        done = sum(pool.map(process_chunk, [tool] * processes, chunks))
        return done / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    tools = [*CONFIGS, "dicognito"]
    try:
        import dicognito  # noqa: F401
    except ImportError:
        tools.remove("dicognito")
        print("dicognito is not installed; comparing dicomql profiles only", file=sys.stderr)
    source_file = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
    with tempfile.TemporaryDirectory(prefix="dicomql-deid-bench-") as scratch:
        root = Path(scratch)
        (root / "in").mkdir()
        (root / "out").mkdir()
        pairs = []
        for n in range(args.instances):
            source = root / "in" / f"{n:06d}.dcm"
            shutil.copyfile(source_file, source)
            pairs.append((source, root / "out" / f"{n:06d}.dcm"))
        results: dict[tuple[str, int], float] = {}
        # Rounds interleave the tools, so a burst of load from elsewhere on a shared machine
        # hits them alike; each cell keeps its best round.
        for _ in range(args.repeat):
            for processes in (1, 2):
                for tool in tools:
                    rate = measure(tool, pairs, processes)
                    results[tool, processes] = max(rate, results.get((tool, processes), 0.0))
    size = source_file.stat().st_size // 1024
    print(
        f"\nDe-identification, read + de-identify + write, {args.instances} copies of"
        f" CT_small.dcm ({size} KB), best of {args.repeat}\n"
    )
    header = f"{'tool':<32} {'1 process':>12} {'2 processes':>12} {'vs dicognito (1p / 2p)':>24}"
    print(header)
    print("-" * len(header))
    for tool in tools:
        one, two = results[tool, 1], results[tool, 2]
        ratio = ""
        if "dicognito" in tools:
            ratio = f"{one / results['dicognito', 1]:.1f}x / {two / results['dicognito', 2]:.1f}x"
        print(f"{tool:<32} {one:>10.0f}/s {two:>10.0f}/s {ratio:>24}")


if __name__ == "__main__":
    main()
