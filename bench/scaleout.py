"""STOW and QIDO throughput with 1 and with 2 ``dicomql serve`` processes on one PostgreSQL.

Each server count gets a fresh PostgreSQL database; the servers share it and one blob store:
``--blobs local`` (default) is one data directory on this machine's disk (what a shared file system
would be across machines), ``--blobs moto`` an S3 bucket on moto's server on loopback (moto runs on
the same two cores and costs CPU of its own, so local blobs measure dicomql better). The load
client holds ``--connections`` keep-alive connections, connection *i* pinned to server
*i mod N* (client-side round robin, what a connection-balancing load balancer does).

Besides wall-clock throughput (noisy on a shared machine, and two servers cannot beat one when
there are only two cores for servers, database and client together) it reports CPU seconds per
request: of the dicomql processes (/proc/PID/stat) and of the PostgreSQL backends serving them.
Those hold up under load and size a deployment: N machines of C cores each sustain about
``N * C / server-CPU-per-request`` requests a second while PostgreSQL has
``1 / postgres-CPU-per-request`` per core to spare. Usage::

    .venv/bin/python bench/scaleout.py [--small 600] [--ct 60] [--qido 400] [--connections 4]
        [--blobs local|moto] [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

Writes the table to bench/results/scaleout.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.client import ClientPool, DicomWebClient, batched
from bench.datagen import Corpus, StudyPlan
from bench.servers import DicomqlServer, free_port

RESULTS = Path(__file__).resolve().parent / "results" / "scaleout.md"
DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
S3_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class Row:
    servers: int
    phase: str
    requests: int
    instances: int
    seconds: float
    server_cpu: float
    postgres_cpu: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def instances_per_second(self) -> float:
        return self.instances / self.seconds if self.seconds else 0.0


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (/proc/PID/stat fields 14 and 15); 0 if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def fresh_database(base: str) -> Iterator[str]:
    import psycopg

    plain = base.replace("+psycopg", "")
    name = f"dq_bench_scaleout_{secrets.token_hex(4)}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{base.rpartition('/')[0]}/{name}"
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def postgres_backends(database_url: str) -> list[int]:
    """PIDs of the PostgreSQL backends connected to the benchmark's database."""
    import psycopg

    name = database_url.rpartition("/")[2]
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return [row[0] for row in rows]


@contextmanager
def moto_endpoint(log: Path) -> Iterator[str]:
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=30)


class Measured:
    """CPU seconds of the servers and of the database's backends across one phase."""

    def __init__(self, servers: list[DicomqlServer], database_url: str) -> None:
        self.servers = servers
        self.database_url = database_url

    def run(self, call: Callable[[], tuple[int, int]]) -> tuple[int, int, float, float, float]:
        backends = set(postgres_backends(self.database_url))
        server_before = sum(server.cpu_seconds() for server in self.servers)
        postgres_before = {pid: process_cpu(pid) for pid in backends}
        start = time.perf_counter()
        requests, instances = call()
        seconds = time.perf_counter() - start
        server_cpu = sum(server.cpu_seconds() for server in self.servers) - server_before
        after = set(postgres_backends(self.database_url)) | backends
        postgres_cpu = sum(process_cpu(pid) - postgres_before.get(pid, 0.0) for pid in after)
        return requests, instances, seconds, server_cpu, postgres_cpu


def round_robin_pool(servers: list[DicomqlServer], connections: int) -> ClientPool:
    pool = ClientPool(servers[0].dicomweb_url, 0)
    pool.clients = [
        DicomWebClient(servers[n % len(servers)].dicomweb_url) for n in range(connections)
    ]
    return pool


def qido_requests(pool: ClientPool, plans: list[StudyPlan], count: int) -> tuple[int, int]:
    """``count`` QIDO searches of four kinds, spread over the pool's connections."""
    rng = random.Random(3)
    queries: list[tuple[str, dict[str, str]]] = []
    for n in range(count):
        plan = rng.choice(plans)
        kind = n % 4
        if kind == 0:
            queries.append(("/studies", {"PatientID": plan.patient_id}))
        elif kind == 1:
            queries.append(
                ("/studies", {"StudyDate": f"{plan.study_date[:6]}01-{plan.study_date}"})
            )
        elif kind == 2:
            queries.append(("/studies", {"PatientName": plan.patient_name[:5] + "*"}))
        else:
            queries.append((f"/studies/{plan.study_instance_uid}/series", {}))
    lock = threading.Lock()
    done = [0]

    def worker(client: DicomWebClient) -> None:
        while True:
            with lock:
                if not queries:
                    return
                path, params = queries.pop()
            client.search(path, params)
            with lock:
                done[0] += 1

    threads = [threading.Thread(target=worker, args=(client,)) for client in pool.clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done[0], 0


def run_servers(count: int, args: argparse.Namespace, work: Path) -> list[Row]:
    rows: list[Row] = []
    with (
        fresh_database(args.database_url) as database_url,
        contextmanager_blobs(args, work) as (
            blob_args,
            blob_env,
        ),
    ):
        data_dir = work / f"data-{count}"  # shared by the servers: local blobs live here
        servers = []
        for n in range(count):
            server = DicomqlServer(
                f"dicomql-{count}.{n}", data_dir, database_url, work / f"serve-{count}-{n}.log"
            )
            server.command += ["--workers", "0", *blob_args]  # no LRO workers polling
            server.env = {**(server.env or {}), **blob_env}
            servers.append(server)
        try:
            for server in servers:
                server.start(ready_path="/v1/projects/bench/locations/local", timeout=120)
            servers[0].create_store()
            measured = Measured(servers, database_url)
            corpus = Corpus(seed=count)
            small_plans = corpus.studies(args.small)
            ct_plans = Corpus(seed=100 + count).studies(args.ct)
            with round_robin_pool(servers, args.connections) as pool:
                phases: list[tuple[str, Callable[[], tuple[int, int]]]] = [
                    (
                        f"STOW CT_small-sized, {args.small_batch}/request",
                        lambda: _stow(pool, corpus.small_instances(small_plans), args.small_batch),
                    ),
                    (
                        "STOW CT-like 0.5 MB, 1/request",
                        lambda: _stow(pool, corpus.ct_instances(ct_plans), 1),
                    ),
                    ("QIDO (4 kinds)", lambda: qido_requests(pool, small_plans, args.qido)),
                ]
                for name, call in phases:
                    requests, instances, seconds, server_cpu, postgres_cpu = measured.run(call)
                    rows.append(
                        Row(count, name, requests, instances, seconds, server_cpu, postgres_cpu)
                    )
                    print(_line(rows[-1]), flush=True)
        finally:
            for server in servers:
                server.stop()
    return rows


@contextmanager
def contextmanager_blobs(
    args: argparse.Namespace, work: Path
) -> Iterator[tuple[list[str], dict[str, str]]]:
    """Serve flags and environment for the chosen blob store."""
    if args.blobs == "local":
        yield [], {}
        return
    with moto_endpoint(work / "moto.log") as endpoint:
        bucket = f"bench-{secrets.token_hex(4)}"
        httpx.put(f"{endpoint}/{bucket}", timeout=30).raise_for_status()
        yield (
            ["--blob-url", f"s3://{bucket}/blobs"],
            {**S3_ENVIRONMENT, "DICOMQL_S3_ENDPOINT_URL": endpoint},
        )


def _stow(pool: ClientPool, instances: Iterator[bytes], batch: int) -> tuple[int, int]:
    result = pool.store_batches(batched(instances, batch))
    if result.failed:
        raise RuntimeError(f"{result.failed} instances failed to store")
    return result.requests, result.instances


HEADER = (
    "| servers | phase | requests | instances | wall s | req/s | inst/s "
    "| server CPU ms/req | PostgreSQL CPU ms/req |"
)


def _line(row: Row) -> str:
    return (
        f"| {row.servers} | {row.phase} | {row.requests} | {row.instances} | {row.seconds:.1f} "
        f"| {row.per_second:.1f} | {row.instances_per_second:.1f} "
        f"| {1000 * row.server_cpu / max(row.requests, 1):.1f} "
        f"| {1000 * row.postgres_cpu / max(row.requests, 1):.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=600, help="CT_small-sized instances")
    parser.add_argument("--small-batch", type=int, default=5, help="instances per STOW request")
    parser.add_argument("--ct", type=int, default=60, help="CT-like (0.5 MB) instances")
    parser.add_argument("--qido", type=int, default=400, help="QIDO requests")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--blobs", choices=["local", "moto"], default="local")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE)
    parser.add_argument("--servers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-write", action="store_true", help="do not write the results file")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dicomql-scaleout-"))
    rows: list[Row] = []
    print(HEADER)
    print("|" + "---|" * 9)
    try:
        for count in args.servers:
            rows += run_servers(count, args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not args.no_write:
        write_results(rows, args)


def write_results(rows: list[Row], args: argparse.Namespace) -> None:
    lines = [
        "# Scale-out: 1 and 2 `dicomql serve` processes on one PostgreSQL",
        "",
        f"`python bench/scaleout.py --small {args.small} --small-batch {args.small_batch} "
        f"--ct {args.ct} --qido {args.qido} --connections {args.connections} "
        f"--blobs {args.blobs}`, {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs shared with other work, Python {platform.python_version()}.",
        "Blobs: "
        + (
            "one local data directory shared by the servers."
            if args.blobs == "local"
            else "an S3 bucket on moto's server on loopback (same machine)."
        ),
        "Server CPU is the dicomql processes' user+system time; PostgreSQL CPU that of the "
        "backends connected to the benchmark database (not the WAL writer or checkpointer).",
        "",
        HEADER,
        "|" + "---|" * 9,
        *(_line(row) for row in rows),
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
