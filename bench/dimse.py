"""DIMSE C-STORE throughput: dcmtk's ``storescu`` of N small instances (one association) into
``dicomql serve --dimse-port`` and into Orthanc's DICOM server, one after the other, on the
same generated files; instances/s and server CPU per instance. Then the cost of an association
alone: M runs of ``echoscu`` (associate, C-ECHO, release), server CPU per association.

    sudo python bench/dimse.py [--instances 1000] [--associations 200] [--rounds 3]
                               [--no-orthanc]
        -> bench/results/dimse.{md,json}

Orthanc binds every interface, so as in ``compare.py`` the run re-executes itself under
``unshare -n`` (root) and every server and the client share a loopback-only namespace.
Both servers make each instance durable before answering: Orthanc fsyncs its file
(``SyncStorageArea``), dicomql commits it with its index row (instances of at most 64 KiB are
kept in the index, ``--inline-blob-size``; larger ones are fsynced files first). The machine
is shared and noisy, so each server runs ``--rounds`` times on a fresh data directory, the two
alternating which goes first, and the medians are reported beside each figure's range. Each
server stores 20 other instances first, not measured (its setup, paid once in its life).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
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
# The folder, beside the measured instances', of the instances each server stores first.
WARM_UP = "warm-up"
WARM_UP_INSTANCES = 20


def write_instances(folder: Path, count: int, seed: int = 7) -> int:
    """``count`` CT_small-sized instances from the benchmark corpus; their total size."""
    corpus = Corpus(seed=seed)
    total = 0
    for number, data in enumerate(corpus.small_instances(corpus.studies(count))):
        (folder / f"{number:06d}.dcm").write_bytes(data)
        total += len(data)
    return total


def storescu(server: ServerProcess, ae_title: str, port: int, folder: Path, count: int) -> dict:
    """One storescu run of the folder; wall time and the server's CPU over it."""
    user, system = server.cpu_split()
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
    user_after, system_after = server.cpu_split()
    if done.returncode != 0:
        raise RuntimeError(f"storescu into {server.name} failed: {done.stderr[-2000:]}")
    used, kernel = user_after - user + system_after - system, system_after - system
    return {
        "instances": count,
        "seconds": round(wall, 3),
        "instances_per_second": round(count / wall, 1),
        "server_cpu_ms_per_instance": round(used * 1000 / count, 3),
        "server_system_cpu_ms_per_instance": round(kernel * 1000 / count, 3),
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
    # Other instances first, not measured: a server's first C-STOREs pay for what it sets up
    # once in its life (for dicomql's Python, ~0.2 s of CPU: imports, compiled statements).
    warm_up = folder.parent / WARM_UP
    storescu(server, ae_title, port, warm_up, WARM_UP_INSTANCES)
    figures = storescu(server, ae_title, port, folder, count)
    if associations:
        figures["echo"] = echoscu(server, ae_title, port, associations)
    figures["load_average"] = round(os.getloadavg()[0], 1)
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
        shutil.rmtree(work / "dicomql", ignore_errors=True)


def run_orthanc(work: Path, folder: Path, count: int, associations: int) -> dict:
    port = free_port()
    (work / "orthanc").mkdir()
    server = orthanc.OrthancServer(work / "orthanc", dicom_port=port)
    server.start()
    try:
        return measure(server, orthanc.DICOM_AE_TITLE, port, folder, count, associations)
    finally:
        server.stop()
        shutil.rmtree(work / "orthanc", ignore_errors=True)


RUNNERS = {"dicomql-sqlite": run_dicomql, "orthanc": run_orthanc}


def run_rounds(
    work: Path, folder: Path, count: int, associations: int, rounds: int, servers: list[str]
) -> dict[str, list[dict]]:
    """``rounds`` runs of each server on a fresh data directory, alternating which goes first,
    so that the machine's load (it is shared and noisy) falls on both alike."""
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    for number in range(rounds):
        order = servers if number % 2 == 0 else servers[::-1]
        for name in order:
            figures = RUNNERS[name](work, folder, count, associations)
            runs[name].append(figures)
            print(
                f"round {number + 1} {name}: {figures['instances_per_second']} inst/s, "
                f"{figures['server_cpu_ms_per_instance']} ms CPU/instance "
                f"(load {figures['load_average']})",
                file=sys.stderr,
            )
    return runs


def summary(runs: list[dict]) -> dict:
    """The median of each figure over the rounds, and the rounds themselves."""
    figures = {
        key: round(statistics.median(run[key] for run in runs), 3)
        for key in (
            "seconds",
            "instances_per_second",
            "server_cpu_ms_per_instance",
            "server_system_cpu_ms_per_instance",
        )
    }
    figures["instances"] = runs[0]["instances"]
    if "echo" in runs[0]:
        figures["echo"] = {
            key: round(statistics.median(run["echo"][key] for run in runs), 3)
            for key in ("seconds", "server_cpu_ms_per_association")
        }
        figures["echo"]["associations"] = runs[0]["echo"]["associations"]
    figures["rounds"] = runs
    return figures


def _range(runs: list[dict], key: str, inner: str | None = None) -> str:
    values = [run[inner][key] if inner else run[key] for run in runs]
    return f"{min(values)}–{max(values)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--associations", type=int, default=200, help="echoscu runs; 0: none")
    parser.add_argument("--no-orthanc", action="store_true")
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs of each server, alternating; medians reported"
    )
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
    with tempfile.TemporaryDirectory(prefix="dicomql-bench-dimse-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        folder = work / "instances"
        folder.mkdir()
        size = write_instances(folder, args.instances)
        (work / WARM_UP).mkdir()
        write_instances(work / WARM_UP, WARM_UP_INSTANCES, seed=8)
        servers = ["dicomql-sqlite"] if args.no_orthanc else ["dicomql-sqlite", "orthanc"]
        runs = run_rounds(
            work, folder, args.instances, args.associations, max(1, args.rounds), servers
        )
        results = {name: summary(server_runs) for name, server_runs in runs.items()}
    lines = [
        f"# DIMSE C-STORE: storescu of {args.instances} instances "
        f"({size // args.instances // 1024} KB each), one association",
        "",
        f"Medians of {max(1, args.rounds)} rounds, the servers alternating which goes first; "
        "the range over the rounds in brackets.",
        "",
        "| server | seconds | instances/s | server CPU ms/instance | of which system |",
        "|---|---|---|---|---|",
    ]
    for name, figures in results.items():
        runs = figures["rounds"]
        lines.append(
            f"| {name} | {figures['seconds']} "
            f"| {figures['instances_per_second']} ({_range(runs, 'instances_per_second')}) "
            f"| {figures['server_cpu_ms_per_instance']} "
            f"({_range(runs, 'server_cpu_ms_per_instance')}) "
            f"| {figures['server_system_cpu_ms_per_instance']} "
            f"({_range(runs, 'server_system_cpu_ms_per_instance')}) |"
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
            spread = _range(figures["rounds"], "server_cpu_ms_per_association", "echo")
            lines.append(
                f"| {name} | {echo['seconds']} "
                f"| {echo['server_cpu_ms_per_association']} ({spread}) |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "dimse.md").write_text(text)
    (args.output / "dimse.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
