"""The one benchmark command: dicomql (SQLite and PostgreSQL) against Orthanc, same data, same
client, same loopback; prints the table and writes ``bench/results/{latest|quick}.{md,json}``.

    python bench/compare.py [--quick] [--instances N] [--no-orthanc] [--targets a,b]
                            [--phases stow,wado,large,qido,cfind] [--work-dir D [--keep|--loaded]]

Orthanc listens on every interface, so as root the command re-executes itself under
``unshare -n`` (a network namespace whose only interface is ``lo``) and runs every server and the
load client in there. PostgreSQL lives outside that namespace; it is reached through its Unix
socket, which a network namespace does not hide.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make the ``bench`` package importable
    sys.path.insert(0, str(REPO))

from bench import limits, orthanc, phases, report  # noqa: E402
from bench.datagen import Corpus  # noqa: E402
from bench.findscu import DimseAddress  # noqa: E402
from bench.servers import DIMSE_AE_TITLE, DicomqlServer, ServerError, free_port  # noqa: E402

NETNS_MARK = "DICOMQL_BENCH_NETNS"
POSTGRES_HOST = "DICOMQL_BENCH_POSTGRES_HOST"
POSTGRES_TCP = "postgresql://postgres@127.0.0.1:5432/test"
ALL_TARGETS = ("orthanc", "dicomql-sqlite", "dicomql-postgresql")
# qido and cfind share the QIDO scales' loading; either alone still loads.
ALL_PHASES = ("stow", "wado", "large", "qido", "cfind")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts; under 5 minutes")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--instances",
        type=int,
        help="largest QIDO scale (small instances stored); the other is a tenth",
    )
    parser.add_argument("--no-orthanc", action="store_true", help="measure dicomql only")
    parser.add_argument("--targets", help=f"comma-separated subset of {','.join(ALL_TARGETS)}")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "results")
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="where servers store data (default: a "
        "temporary directory on /var/tmp, removed afterwards)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--phases", help=f"comma-separated subset of {','.join(ALL_PHASES)}")
    parser.add_argument(
        "--loaded",
        action="store_true",
        help="--work-dir holds every QIDO scale's instances from an earlier run of the same "
        "plan with --keep: load nothing, time the searches at the largest scale",
    )
    args = parser.parse_args(argv)
    if args.loaded and not args.work_dir:
        parser.error("--loaded needs --work-dir")
    return args


def chosen(text: str | None, every: tuple[str, ...], what: str) -> list[str]:
    """The comma-separated names of ``text`` (all of ``every`` without it); exits on others."""
    names = text.split(",") if text else list(every)
    unknown = set(names) - set(every)
    if unknown:
        sys.exit(f"unknown {what}: {', '.join(sorted(unknown))}")
    return names


def choose_plan(args: argparse.Namespace) -> phases.Plan:
    plan = phases.SMOKE if args.smoke else phases.QUICK if args.quick else phases.FULL
    if args.instances:
        plan = dataclasses.replace(plan, qido_scales=(max(1, args.instances // 10), args.instances))
    return plan


def choose_targets(args: argparse.Namespace) -> list[str]:
    targets = chosen(args.targets, ALL_TARGETS, "targets")
    if args.no_orthanc:
        targets = [name for name in targets if name != "orthanc"]
    return targets


def postgres_socket_dir() -> str | None:
    """The Unix socket directory of the PostgreSQL on 127.0.0.1:5432, if it answers."""
    import psycopg

    try:
        with psycopg.connect(POSTGRES_TCP, connect_timeout=3) as conn:
            row = conn.execute("SHOW unix_socket_directories").fetchone()
    except psycopg.Error:
        return None
    directory = str(row[0]).split(",")[0].strip() if row else ""
    return directory if directory and Path(directory).is_dir() else None


def enter_namespace(argv: list[str], targets: list[str]) -> None:
    """Re-execute under ``unshare -n`` unless already there or Orthanc is not wanted."""
    if "orthanc" not in targets or os.environ.get(NETNS_MARK):
        return
    orthanc.ensure_installed()  # needs the network, so before leaving it
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        sys.exit(
            "Orthanc must run in its own network namespace (it binds every interface): "
            "run as root, or pass --no-orthanc"
        )
    env = {**os.environ, NETNS_MARK: "1"}
    if "dicomql-postgresql" in targets:
        env[POSTGRES_HOST] = postgres_socket_dir() or ""
    os.execvpe("unshare", ["unshare", "-n", "--", sys.executable, __file__, *argv], env)


def bring_up_loopback() -> None:
    if os.environ.get(NETNS_MARK):
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


class FreshDatabase:
    """A PostgreSQL database created for one run and dropped after it."""

    def __init__(self) -> None:
        host = os.environ.get(POSTGRES_HOST)
        if host is None:
            host = postgres_socket_dir() or ""
        self.host = host
        self.name = f"dicomql_bench_{secrets.token_hex(4)}"

    @property
    def available(self) -> bool:
        return bool(self.host)

    def _admin(self) -> Any:
        import psycopg

        return psycopg.connect(host=self.host, user="postgres", dbname="postgres", autocommit=True)

    def create(self) -> str:
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        return f"postgresql+psycopg://postgres@/{self.name}?host={self.host}"

    def drop(self) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def load_average() -> str:
    return "/".join(Path("/proc/loadavg").read_text().split()[:3])


def run_target(
    name: str,
    plan: phases.Plan,
    work_dir: Path,
    log: Callable[[str], None],
    wanted: list[str],
    loaded: bool = False,
) -> dict[str, Any]:
    """Start one server, run the ``wanted`` phases against it, stop it; errors are recorded per
    phase. ``loaded``: its data in ``work_dir`` is kept from an earlier run."""
    directory = work_dir / name
    directory.mkdir(parents=True, exist_ok=True)
    database: FreshDatabase | None = None
    result: dict[str, Any] = {"figures": {}, "errors": {}, "load_before": load_average()}
    try:
        # Every server also runs its DICOM server, for the C-FIND figures of the QIDO phase.
        dimse_port = free_port()
        if name == "orthanc":
            server: Any = orthanc.OrthancServer(directory, dicom_port=dimse_port)
            server.start()
            result["versions"] = server.versions()
            dimse = DimseAddress(orthanc.DICOM_AE_TITLE, dimse_port)
            target = phases.Target(name, "orthanc", server, server.dicomweb_url, dimse)
        else:
            url = None
            if name == "dicomql-postgresql":
                database = FreshDatabase()
                if not database.available:
                    result["errors"]["setup"] = "PostgreSQL is not reachable"
                    return result
                url = database.create()
            server = DicomqlServer(
                name, directory / "data", url, directory / "server.log", dimse_port
            )
            server.start("/v1/projects/bench/locations")
            dimse = DimseAddress(DIMSE_AE_TITLE, dimse_port)
            target = phases.Target(name, "dicomql", server, server.dicomweb_url, dimse)
            if not loaded:
                server.create_store()
    except (ServerError, OSError) as exc:
        result["errors"]["setup"] = str(exc)
        if database:
            database.drop()
        return result
    try:
        stored: list[Any] = []

        def do_stow() -> None:
            stored.extend(phases.stow(target, plan))

        searches = {"qido": "qido" in wanted, "cfind": "cfind" in wanted}
        steps: list[tuple[str, Callable[[], None]]] = [
            ("stow", do_stow),
            ("wado", lambda: phases.wado(target, plan, stored)),
            ("large", lambda: phases.large_study(target, plan)),
            ("qido", lambda: phases.qido_scale(target, plan, load=not loaded, **searches)),
        ]
        for phase, step in steps:
            if phase not in wanted and not (phase == "qido" and any(searches.values())):
                continue
            log(f"  {name}: {phase} (load {load_average()})")
            try:
                step()
            except Exception as exc:  # a phase failing must not lose the others' figures
                target.errors[phase] = f"{type(exc).__name__}: {exc}"
                log(f"  {name}: {phase} failed: {exc}\n{traceback.format_exc(limit=3)}")
        result["figures"] = target.figures
        result["errors"] = target.errors
    finally:
        server.stop()
        if database:
            database.drop()
        result["load_after"] = load_average()
    return result


def environment(targets: dict[str, Any], work_dir: Path) -> dict[str, str]:
    import dicomql

    revision = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    versions = targets.get("orthanc", {}).get("versions", {})
    return {
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Linux {platform.release()}",
        "python": platform.python_version(),
        "dicomql": f"{getattr(dicomql, '__version__', '?')} ({revision or 'no git'})",
        "orthanc": (
            f"{versions.get('orthanc', '?')}, DICOMweb plugin "
            f"{versions.get('dicomweb_plugin', '?')}"
        )
        if versions
        else "not run",
        "network": "one namespace (unshare -n), loopback only"
        if os.environ.get(NETNS_MARK)
        else "host loopback",
        "postgresql": "Unix socket, fresh database per run",
        "work dir": str(work_dir),
        "load average (1/5/15 min) per target": "; ".join(
            f"{name} {target.get('load_before')}→{target.get('load_after')}"
            for name, target in targets.items()
        ),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    plan = choose_plan(args)
    names = choose_targets(args)
    wanted = chosen(args.phases, ALL_PHASES, "phases")
    enter_namespace(argv, names)
    bring_up_loopback()

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="dicomql-bench-", dir="/var/tmp"))
    work_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    try:
        # The ceilings are fractions' denominators for throughputs; searches need none.
        ceilings = bool({"stow", "wado", "large"} & set(wanted))
        log(f"{plan.name} run into {work_dir}" + ("; limits…" if ceilings else ""))
        corpus = Corpus(seed=plan.seed, patients=10)
        payloads = list(corpus.ct_instances([corpus.study("CT", [40 if not args.smoke else 4])]))
        measured = limits.measure(work_dir, payloads, plan.http_limit_bytes) if ceilings else []
        targets = {}
        for name in names:
            log(f"{name}…")
            targets[name] = run_target(name, plan, work_dir, log, wanted, args.loaded)
        if ceilings:
            log("limits again…")
            # On a shared machine one measurement can land in a busy moment; a ceiling is the
            # best the machine managed, so keep the better of the two.
            again = limits.measure(work_dir, payloads, plan.http_limit_bytes)
            measured = [
                max(first, second, key=lambda limit: limit.megabytes_per_second)
                for first, second in zip(measured, again, strict=True)
            ]
        result = {
            "started": started,
            "plan": dataclasses.asdict(plan),
            "environment": {},
            "limits": [limit.as_dict() for limit in measured],
            "targets": targets,
        }
        result["environment"] = environment(targets, work_dir)
        # Only the full run at its own scale is ``latest``; other runs never overwrite it.
        whole = plan.name == "full" and not args.instances and wanted == list(ALL_PHASES)
        stem = "latest" if whole else plan.name
        if args.instances:
            stem += f"-{args.instances}"
        if wanted != list(ALL_PHASES):
            stem += "-" + "-".join(wanted)
        md_path, json_path = report.write(result, args.output, stem)
        print(report.terminal(result))
        log(f"wrote {md_path} and {json_path}")
    finally:
        if not args.keep and not args.work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    failed = any(target["errors"] for target in targets.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
