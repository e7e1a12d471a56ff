"""QIDO-RS latency at two store sizes: does a selective search cost the same with 10x the data?

Loads 10,000 and 100,000 instances' worth of index rows (10 instances per study, 2 series per
study, one patient per study) straight into the index with bulk INSERTs -- the fast path, not
STOW-RS: it measures search, not ingest -- then runs one ``dicomql serve`` per size and times
QIDO requests over loopback HTTP with keep-alive httpx clients, alternating request by request
between the sizes so a noisy machine slows both alike. PostgreSQL gets ANALYZE after the load
(autovacuum's job in production); SQLite gets none, as in production.

- studies by PatientID, by a one-week StudyDate range, by fuzzy PatientName (a 5-letter prefix of
  a family name), ``/studies?limit=100``; series of a study; instances of a series.

Prints p50/p95 per query and size, and the 100k/10k ratio of the p50s. Usage::

    /work/venv/bin/python bench/qido_scale.py [--sizes 10000 100000] [--requests 200]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

With ``--database-url`` each size gets a fresh schema of that database (dropped afterwards).
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import insert

from dicomql.dicom.parse import person_name_tokens as name_tokens
from dicomql.store.index import Index
from dicomql.store.schema import (
    datasets,
    dicom_stores,
    instances,
    person_name_tokens,
    series,
    studies,
)

DICOMQL = Path(sys.executable).with_name("dicomql")  # the venv that runs this script
DICOMWEB = "/v1/projects/bench/locations/local/datasets/bench/dicomStores/bench/dicomWeb"
INSTANCES_PER_SERIES = 5
SERIES_PER_STUDY = 2
SYLLABLES = ["ka", "lo", "mi", "ra", "ten", "sor", "vel", "an", "dru", "pe", "zu", "hol", "bri"]
GIVEN = ["John", "Anna", "Maria", "Peter", "Ling", "Omar", "Sara", "Ivan", "Yuki", "Ada"]


def family_name(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(4)).capitalize()


def load(url: str, instance_count: int, seed: int = 7) -> list[dict[str, str]]:
    """Bulk-insert the rows of ``instance_count`` instances; returns per-study facts to query."""
    rng = random.Random(seed)
    index = Index.open(url)
    moment = datetime.now(UTC)
    study_count = instance_count // (INSTANCES_PER_SERIES * SERIES_PER_STUDY)
    facts: list[dict[str, str]] = []
    # About 1.5 KB of instance-level DICOM JSON per instance (the index stores it; QIDO's
    # default instance attributes come from columns, so it is read only for includefield).
    instance_json = {f"0009{n:04X}": {"vr": "LO", "Value": ["x" * 20]} for n in range(16, 56)}
    try:
        with index.begin() as conn:
            dataset_pk = conn.execute(
                insert(datasets)
                .values(
                    project="bench",
                    location="local",
                    dataset_id="bench",
                    resource={},
                    create_time=moment,
                )
                .returning(datasets.c.pk)
            ).scalar_one()
            store_pk = conn.execute(
                insert(dicom_stores)
                .values(
                    dataset_pk=dataset_pk,
                    store_id="bench",
                    resource={},
                    create_time=moment,
                    update_time=moment,
                )
                .returning(dicom_stores.c.pk)
            ).scalar_one()
        batch = 500
        for start in range(0, study_count, batch):
            study_rows, token_rows, series_rows, instance_rows = [], [], [], []
            for number in range(start, min(start + batch, study_count)):
                name = f"{family_name(rng)}^{rng.choice(GIVEN)}"
                study_date = (date(2015, 1, 1) + timedelta(days=rng.randrange(3650))).strftime(
                    "%Y%m%d"
                )
                study_uid = f"1.2.826.0.1.9.{number + 1}"
                facts.append({"study": study_uid, "patient_id": f"PID{number:08d}", "name": name})
                study_rows.append(
                    {
                        "pk": number + 1,
                        "store_pk": store_pk,
                        "study_instance_uid": study_uid,
                        "patient_name": name,
                        "patient_name_key": name.casefold(),
                        "patient_id": f"PID{number:08d}",
                        "accession_number": f"ACC{number:08d}",
                        "study_date": study_date,
                        "study_time": "101500",
                        "modalities_in_study": "CT\\SR",
                        "number_of_series": SERIES_PER_STUDY,
                        "number_of_instances": SERIES_PER_STUDY * INSTANCES_PER_SERIES,
                        "size_bytes": 0,
                        "attributes": {"00081030": {"vr": "LO", "Value": ["bench study"]}},
                        "update_time": moment,
                    }
                )
                token_rows += [
                    {
                        "study_pk": number + 1,
                        "store_pk": store_pk,
                        "keyword": "PatientName",
                        "token": token,
                    }
                    for token in sorted(name_tokens(name))
                ]
                for s in range(SERIES_PER_STUDY):
                    series_pk = number * SERIES_PER_STUDY + s + 1
                    series_uid = f"{study_uid}.{s + 1}"
                    facts[-1][f"series{s}"] = series_uid
                    series_rows.append(
                        {
                            "pk": series_pk,
                            "store_pk": store_pk,
                            "study_pk": number + 1,
                            "series_instance_uid": series_uid,
                            "modality": ("CT", "SR")[s % 2],
                            "series_number": s + 1,
                            "number_of_instances": INSTANCES_PER_SERIES,
                            "size_bytes": 0,
                            "update_time": moment,
                        }
                    )
                    for i in range(INSTANCES_PER_SERIES):
                        instance_rows.append(
                            {
                                "store_pk": store_pk,
                                "study_pk": number + 1,
                                "series_pk": series_pk,
                                "sop_instance_uid": f"{series_uid}.{i + 1}",
                                "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
                                "instance_number": i + 1,
                                "transfer_syntax_uid": "1.2.840.10008.1.2.1",
                                "rows": 512,
                                "columns": 512,
                                "bits_allocated": 16,
                                "blob_key": secrets.token_hex(16),
                                "size_bytes": 0,
                                "sha256": "0" * 64,
                                "storage_class": "STANDARD",
                                "attributes": instance_json,
                                "create_time": moment,
                            }
                        )
            with index.begin() as conn:
                conn.execute(insert(studies), study_rows)
                conn.execute(insert(person_name_tokens), token_rows)
                conn.execute(insert(series), series_rows)
                conn.execute(insert(instances), instance_rows)
    finally:
        index.close()
    return facts


@contextmanager
def fresh_index(database_url: str | None, data_dir: Path) -> Iterator[str]:
    if not database_url:
        yield f"sqlite:///{data_dir / 'index.sqlite3'}"
        return
    import psycopg

    schema = f"qido_bench_{secrets.token_hex(4)}"
    plain = database_url.replace("+psycopg", "")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{database_url}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@contextmanager
def serve(data_dir: Path, index_url: str) -> Iterator[str]:
    with socket_port() as port:
        command = [str(DICOMQL), "serve", "--port", str(port), "--data-dir", str(data_dir)]
        if not index_url.startswith("sqlite"):
            command += ["--database-url", index_url]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}{DICOMWEB}/studies?limit=1", timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("dicomql serve did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def socket_port() -> Iterator[int]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    yield port


def queries(facts: list[dict[str, str]]) -> dict[str, Callable[[random.Random], str]]:
    def by_patient(rng: random.Random) -> str:
        return f"studies?PatientID={rng.choice(facts)['patient_id']}"

    def by_date(rng: random.Random) -> str:
        start = date(2015, 1, 1) + timedelta(days=rng.randrange(3640))
        end = start + timedelta(days=6)
        return f"studies?StudyDate={start:%Y%m%d}-{end:%Y%m%d}"

    def fuzzy(rng: random.Random) -> str:
        return f"studies?PatientName={rng.choice(facts)['name'][:5]}&fuzzymatching=true"

    def first_page(rng: random.Random) -> str:
        return "studies?limit=100"

    def series_of_study(rng: random.Random) -> str:
        return f"studies/{rng.choice(facts)['study']}/series"

    def instances_of_series(rng: random.Random) -> str:
        fact = rng.choice(facts)
        return f"studies/{fact['study']}/series/{fact['series0']}/instances"

    return {
        "study by PatientID": by_patient,
        "studies by StudyDate week": by_date,
        "fuzzy PatientName prefix": fuzzy,
        "/studies?limit=100": first_page,
        "series of a study": series_of_study,
        "instances of a series": instances_of_series,
    }


def measure(
    servers: dict[int, tuple[str, list[dict[str, str]]]], requests: int
) -> dict[int, dict[str, dict[str, float]]]:
    """Time each query against every size, alternating request by request between the servers
    so that noise on a shared machine hits all sizes alike (the ratio is what matters)."""
    rng = random.Random(11)
    clients = {
        size: httpx.Client(base_url=f"{url}{DICOMWEB}/", timeout=60)
        for size, (url, _) in servers.items()
    }
    makers = {size: queries(facts) for size, (_, facts) in servers.items()}
    results: dict[int, dict[str, dict[str, float]]] = {size: {} for size in servers}
    try:
        for name in queries([]):
            timings: dict[int, list[float]] = {size: [] for size in servers}
            counts: dict[int, list[int]] = {size: [] for size in servers}
            for round_number in range(requests + 10):  # 10 warm-up rounds, not timed
                for size, client in clients.items():
                    path = makers[size][name](rng)
                    started = time.perf_counter()
                    response = client.get(path)
                    elapsed = (time.perf_counter() - started) * 1000
                    response.raise_for_status()
                    if round_number >= 10:
                        timings[size].append(elapsed)
                        counts[size].append(len(response.json()))
            for size in servers:
                ordered = sorted(timings[size])
                results[size][name] = {
                    "p50_ms": statistics.median(ordered),
                    "p95_ms": ordered[int(len(ordered) * 0.95) - 1],
                    "mean_results": statistics.mean(counts[size]),
                }
    finally:
        for client in clients.values():
            client.close()
    return results


def analyze(index_url: str) -> None:
    """Refresh planner statistics, as PostgreSQL's autovacuum does after bulk changes."""
    if index_url.startswith("sqlite"):
        return  # dicomql never runs ANALYZE on SQLite; the plans must be right without it
    index = Index.open(index_url)
    try:
        with index.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    finally:
        index.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--database-url", default=os.environ.get("DICOMQL_BENCH_DATABASE_URL"))
    args = parser.parse_args()
    with ExitStack() as stack:
        servers: dict[int, tuple[str, list[dict[str, str]]]] = {}
        for size in args.sizes:
            work = Path(tempfile.mkdtemp(prefix="qido-scale-"))
            stack.callback(shutil.rmtree, work, ignore_errors=True)
            index_url = stack.enter_context(fresh_index(args.database_url, work))
            started = time.perf_counter()
            facts = load(index_url, size)
            analyze(index_url)
            loaded = time.perf_counter() - started
            print(f"{size:>7} instances ({len(facts)} studies) loaded in {loaded:.1f} s")
            servers[size] = (stack.enter_context(serve(work, index_url)), facts)
        by_size = measure(servers, args.requests)
    backend = "postgresql" if args.database_url else "sqlite"
    print(f"\nQIDO-RS latency, {backend} index, {args.requests} requests each (ms)")
    header = f"{'query':28}" + "".join(f"{f'{s:,} p50':>12}{f'{s:,} p95':>12}" for s in args.sizes)
    if len(args.sizes) >= 2:
        header += f"{'p50 ratio':>11}"
    header += "  results/request"
    print(header)
    for name in queries([]):
        row = f"{name:28}"
        for size in args.sizes:
            figures = by_size[size][name]
            row += f"{figures['p50_ms']:>12.2f}{figures['p95_ms']:>12.2f}"
        if len(args.sizes) >= 2:
            first, last = by_size[args.sizes[0]][name], by_size[args.sizes[-1]][name]
            row += f"{last['p50_ms'] / first['p50_ms']:>11.2f}"
        row += "  " + " / ".join(f"{by_size[s][name]['mean_results']:.1f}" for s in args.sizes)
        print(row)


if __name__ == "__main__":
    main()
