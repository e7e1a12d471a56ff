"""DIMSE C-STORE throughput: dcmtk's ``storescu`` of N small instances (one association) into
``dicomql serve --dimse-port`` and into Orthanc's DICOM server, one after the other, on the
same generated files; instances/s and server CPU per instance. Then the cost of an association
alone: M runs of ``echoscu`` (associate, C-ECHO, release), server CPU per association.

    sudo python bench/dimse.py [--instances 1000] [--associations 200] [--no-orthanc]
        -> bench/results/dimse.{md,json}

Orthanc binds every interface, so as in ``compare.py`` the run re-executes itself under
``unshare -n`` (root) and every server and the client share a loopback-only namespace.
Both servers fsync each instance before answering (Orthanc: ``SyncStorageArea``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make the ``bench`` package importable
    sys.path.insert(0, str(REPO))

from bench import orthanc  # noqa: E402
from bench.compare import NETNS_MARK, bring_up_loopback  # noqa: E402
from bench.datagen import Corpus  # noqa: E402
from bench.servers import DIMSE_AE_TITLE, DicomqlServer, ServerProcess, free_port  # noqa: E402

RESULTS = REPO / "bench" / "results"


def write_instances(folder: Path, count: int) -> int:
    """``count`` CT_small-sized instances from the benchmark corpus; their total size."""
    corpus = Corpus(seed=7)
    total = 0
    for number, data in enumerate(corpus.small_instances(corpus.studies(count))):
        (folder / f"{number:06d}.dcm").write_bytes(data)
        total += len(data)
    return total


def storescu(server: ServerProcess, ae_title: str, port: int, folder: Path, count: int) -> dict:
    """One storescu run of the folder; wall time and the server's CPU over it."""
    cpu = server.cpu_seconds()
    start = time.perf_counter()
    done = subprocess.run(
        ["storescu", "-aec", ae_title, "+sd", "127.0.0.1", str(port), str(folder)],
        capture_output=True,
        text=True,
        # dcmtk leaves Nagle's algorithm on unless told: each C-STORE would then wait ~40 ms
        # for a delayed ACK on the client's side, and the figure would time the client.
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    wall = time.perf_counter() - start
    used = server.cpu_seconds() - cpu
    if done.returncode != 0:
        raise RuntimeError(f"storescu into {server.name} failed: {done.stderr[-2000:]}")
    return {
        "instances": count,
        "seconds": round(wall, 3),
        "instances_per_second": round(count / wall, 1),
        "server_cpu_ms_per_instance": round(used * 1000 / count, 3),
    }


def echoscu(server: ServerProcess, ae_title: str, port: int, count: int) -> dict:
    """``count`` associations, each with one C-ECHO; the server's CPU per association."""
    cpu = server.cpu_seconds()
    start = time.perf_counter()
    for _ in range(count):
        done = subprocess.run(
            ["echoscu", "-aec", ae_title, "127.0.0.1", str(port)],
            capture_output=True,
            text=True,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        if done.returncode != 0:
            raise RuntimeError(f"echoscu to {server.name} failed: {done.stderr[-2000:]}")
    wall = time.perf_counter() - start
    used = server.cpu_seconds() - cpu
    return {
        "associations": count,
        "seconds": round(wall, 3),
        "server_cpu_ms_per_association": round(used * 1000 / count, 3),
    }


def measure(
    server: ServerProcess, ae_title: str, port: int, folder: Path, count: int, associations: int
) -> dict:
    figures = storescu(server, ae_title, port, folder, count)
    if associations:
        figures["echo"] = echoscu(server, ae_title, port, associations)
    return figures


def run_dicomql(work: Path, folder: Path, count: int, associations: int) -> dict:
    port = free_port()
    server = DicomqlServer("dicomql-sqlite", work / "dicomql", None, work / "dicomql.log", port)
    server.command += ["--processes", "1"]
    server.start("/v1/projects/bench/locations/local")
    try:
        server.create_store()
        return measure(server, DIMSE_AE_TITLE, port, folder, count, associations)
    finally:
        server.stop()


def run_orthanc(work: Path, folder: Path, count: int, associations: int) -> dict:
    port = free_port()
    (work / "orthanc").mkdir()
    server = orthanc.OrthancServer(work / "orthanc", dicom_port=port)
    server.start()
    try:
        return measure(server, orthanc.DICOM_AE_TITLE, port, folder, count, associations)
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--associations", type=int, default=200, help="echoscu runs; 0: none")
    parser.add_argument("--no-orthanc", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if shutil.which("storescu") is None:
        sys.exit("dcmtk's storescu is needed: apt-get install dcmtk")
    if not args.no_orthanc and not os.environ.get(NETNS_MARK):
        orthanc.ensure_installed()
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            sys.exit("Orthanc must run in its own network namespace: run as root or --no-orthanc")
        env = {**os.environ, NETNS_MARK: "1"}
        argv = sys.argv[1:] if argv is None else argv
        os.execvpe("unshare", ["unshare", "-n", "--", sys.executable, __file__, *argv], env)
    bring_up_loopback()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="dicomql-bench-dimse-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        folder = work / "instances"
        folder.mkdir()
        size = write_instances(folder, args.instances)
        results["dicomql-sqlite"] = run_dicomql(work, folder, args.instances, args.associations)
        if not args.no_orthanc:
            results["orthanc"] = run_orthanc(work, folder, args.instances, args.associations)
    lines = [
        f"# DIMSE C-STORE: storescu of {args.instances} instances "
        f"({size // args.instances // 1024} KB each), one association",
        "",
        "| server | seconds | instances/s | server CPU ms/instance |",
        "|---|---|---|---|",
    ]
    for name, figures in results.items():
        lines.append(
            f"| {name} | {figures['seconds']} | {figures['instances_per_second']} "
            f"| {figures['server_cpu_ms_per_instance']} |"
        )
    if args.associations:
        lines += [
            "",
            f"# Associations: echoscu {args.associations} times (associate, C-ECHO, release)",
            "",
            "| server | seconds | server CPU ms/association |",
            "|---|---|---|",
        ]
        for name, figures in results.items():
            echo = figures["echo"]
            lines.append(
                f"| {name} | {echo['seconds']} | {echo['server_cpu_ms_per_association']} |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "dimse.md").write_text(text)
    (args.output / "dimse.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
