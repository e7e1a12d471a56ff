"""Server CPU per stored instance for STOW, dicomql only: ``python -m bench.stow_cpu``.

Starts ``dicomql serve`` (SQLite, or ``--database-url``) on a fresh data directory, stores
CT_small-sized generated instances with C connections × B instances a request, and reports the
server's user + system CPU time (``/proc/PID/stat``, summed over its processes) per instance.
CPU time, not wall time: the figure stays comparable on a machine shared with other work.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench.client import DicomWebClient
from bench.datagen import Corpus
from bench.servers import DicomqlServer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--per-request", type=int, default=25)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--database-url")
    parser.add_argument(
        "--count-fsyncs",
        action="store_true",
        help="count the server's fsync/fdatasync calls with strace (slows it: CPU not comparable)",
    )
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> dict[str, float]:
    corpus = Corpus(seed=7)
    instances = list(corpus.small_instances(corpus.studies(args.instances)))[: args.instances]
    requests = [
        instances[first : first + args.per_request]
        for first in range(0, len(instances), args.per_request)
    ]
    with tempfile.TemporaryDirectory(prefix="dicomql-stow-cpu-") as work:
        server = DicomqlServer(
            "dicomql", Path(work) / "data", args.database_url, Path(work) / "log"
        )
        server.command += ["--processes", str(args.processes)]
        server.start()
        try:
            server.create_store()
            with DicomWebClient(server.dicomweb_url) as warm:
                warm.store(requests.pop())  # imports and caches warmed, not counted
            stored = sum(len(request) for request in requests)
            lock = threading.Lock()

            def run(number: int) -> None:
                with DicomWebClient(server.dicomweb_url) as client:
                    while True:
                        with lock:
                            if not requests:
                                return
                            request = requests.pop()
                        result = client.store(request)
                        assert result.failed == 0, result

            tracer = _trace_fsyncs(server.pids()) if args.count_fsyncs else None
            cpu_before, started = server.cpu_seconds(), time.monotonic()
            threads = [threading.Thread(target=run, args=(n,)) for n in range(args.connections)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed, cpu = time.monotonic() - started, server.cpu_seconds() - cpu_before
            fsyncs = _fsyncs(tracer) if tracer is not None else None
        finally:
            server.stop()
    figures = {
        "instances": stored,
        "cpu_ms_per_instance": cpu * 1000 / stored,
        "instances_per_second": stored / elapsed,
    }
    if fsyncs is not None:
        figures["fsyncs_per_instance"] = fsyncs / stored
    return figures


def _trace_fsyncs(pids: list[int]) -> subprocess.Popen[str]:
    command = ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync"]
    for pid in pids:
        command += ["-p", str(pid)]
    tracer = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # attached (strace has no readiness signal)
    return tracer


def _fsyncs(tracer: subprocess.Popen[str]) -> int:
    tracer.send_signal(signal.SIGINT)
    _, summary = tracer.communicate(timeout=60)
    calls = re.findall(
        r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(?:fsync|fdatasync)$", summary, re.M
    )
    return sum(int(count) for count in calls)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    figures = measure(args)
    line = (
        f"STOW {args.connections} conn x {args.per_request}/request, {args.processes} process(es):"
        f" {figures['instances']:.0f} instances, {figures['cpu_ms_per_instance']:.2f} ms server"
        f" CPU an instance, {figures['instances_per_second']:.0f} instances/s (wall)"
    )
    if "fsyncs_per_instance" in figures:
        line += f", {figures['fsyncs_per_instance']:.2f} fsyncs an instance"
    print(line)


if __name__ == "__main__":
    main()
