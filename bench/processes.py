"""STOW with ``dicomql serve --processes 1`` against ``--processes 2``: instances a second and the
server's CPU per instance, summed over all its processes (/proc/PID/stat of the parent and each
server process).

CPU per instance holds up on a machine shared with other work, where wall time does not: read
both. Each run gets a fresh SQLite data directory (or, with ``--database-url``, a fresh
PostgreSQL schema). Instances are CT_small copies (39 KB) with their own UIDs. Usage::

    .venv/bin/python bench/processes.py [--instances 1500] [--connections 4] [--per-request 25]
        [--processes 1,2] [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import io
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.client import ClientPool, batched
from bench.servers import DicomqlServer


def instances(count: int) -> list[bytes]:
    """``count`` copies of CT_small, each its own study, series and instance (PS3.10 bytes)."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    out = []
    for number in range(count):
        if number % 50 == 0:
            ds.StudyInstanceUID = generate_uid()
            ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def _schema_url(base: str) -> tuple[str, str]:
    schema = f"bench_{secrets.token_hex(4)}"
    import psycopg

    with psycopg.connect(base.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return f"{base}?options=-csearch_path%3D{schema}", schema


def run(processes: int, args: argparse.Namespace, work: Path) -> dict[str, float]:
    data_dir = work / f"p{processes}"
    database_url, schema = (None, None)
    if args.database_url:
        database_url, schema = _schema_url(args.database_url)
    server = DicomqlServer(f"dicomql-p{processes}", data_dir, database_url, work / "serve.log")
    if processes:  # 0: no flag (the server's default, or a dicomql before --processes)
        server.command += ["--processes", str(processes)]
    server.start(ready_path="/v1/projects/bench/locations/local")
    try:
        server.create_store()
        warm = instances(100)
        body = instances(args.instances)
        with ClientPool(server.dicomweb_url, args.connections) as pool:
            pool.store_batches(batched(iter(warm), args.per_request))
            before = server.cpu_seconds()
            result = pool.store_batches(batched(iter(body), args.per_request))
            cpu = server.cpu_seconds() - before
        assert result.failed == 0, result
        return {
            "processes": processes,
            "instances_per_second": result.instances / result.seconds,
            "seconds": result.seconds,
            "cpu_ms_per_instance": 1000 * cpu / result.instances,
        }
    finally:
        server.stop()
        if schema and args.database_url:
            import psycopg

            with psycopg.connect(args.database_url.replace("+psycopg", ""), autocommit=True) as c:
                c.execute(f"DROP SCHEMA {schema} CASCADE")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1500)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--per-request", type=int, default=25)
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--database-url")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dicomql-processes-", dir="/var/tmp"))
    try:
        print("| processes | instances/s | wall s | server CPU ms/instance (all processes) |")
        print("|---|---|---|---|")
        for processes in (int(p) for p in args.processes.split(",")):
            figures = run(processes, args, work)
            print(
                f"| {processes} | {figures['instances_per_second']:.0f} | "
                f"{figures['seconds']:.1f} | {figures['cpu_ms_per_instance']:.1f} |",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
