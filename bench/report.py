"""The run's figures as one table (terminal and Markdown) and as JSON, with dicomql/Orthanc ratios
and each throughput as a fraction of the machine's measured ceiling."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.phases import CFIND_QUERIES, CFIND_WITH_ASSOCIATION, QIDO_QUERIES, Plan


@dataclass(frozen=True)
class Row:
    label: str
    key: str  # figures key
    field: str  # value inside it
    unit: str
    higher_is_better: bool
    limit: str | None = None  # limits name the value is a fraction of


# bench/README.md, "Peak memory": the first counts pages a forked process shares with its
# parent once per process; the second counts each page once.
PEAK_RSS = "MB peak RSS (sum of per-process peaks)"
PEAK_PSS = "MB peak PSS (sum of processes)"


def rows_for(plan: Plan) -> list[Row]:
    rows = []
    for connections, per_request in plan.stow_configs:
        key = f"stow.{connections}conn.{per_request}per_request"
        label = f"STOW {connections} conn × {per_request}/request"
        rows.append(Row(label, key, "instances_per_s", "inst/s", True))
        rows.append(Row(label, key, "mb_per_s", "MB/s", True, "disk write+fsync"))
        rows.append(Row(label, key, "cpu_ms_per_instance", "server CPU ms/inst", False))
    rows += [
        Row("WADO single instance", "wado.instance", "instances_per_s", "inst/s", True),
        Row("WADO single instance", "wado.instance", "p50_ms", "ms p50", False),
        Row(
            "WADO single instance",
            "wado.instance",
            "cpu_ms_per_request",
            "server CPU ms/req",
            False,
        ),
        Row(
            "WADO whole series",
            "wado.series",
            "mb_per_s",
            "MB/s",
            True,
            "loopback HTTP GET (sendfile)",
        ),
        Row("WADO whole series", "wado.series", "cpu_ms_per_request", "server CPU ms/req", False),
        Row("WADO study metadata", "wado.study_metadata", "p50_ms", "ms p50", False),
        Row(
            "WADO study metadata",
            "wado.study_metadata",
            "cpu_ms_per_request",
            "server CPU ms/req",
            False,
        ),
        Row("WADO one frame", "wado.frame", "p50_ms", "ms p50", False),
        Row("WADO one frame", "wado.frame", "cpu_ms_per_request", "server CPU ms/req", False),
        Row("WADO rendered JPEG", "wado.rendered_jpeg", "p50_ms", "ms p50", False),
        Row(
            "WADO rendered JPEG",
            "wado.rendered_jpeg",
            "cpu_ms_per_request",
            "server CPU ms/req",
            False,
        ),
        Row("Large STOW", "large.stow", "mb_per_s", "MB/s", True, "disk write+fsync"),
        Row("Large STOW", "large.stow", "peak_rss_mb", PEAK_RSS, False),
        Row("Large STOW", "large.stow", "peak_pss_mb", PEAK_PSS, False),
        Row("Large STOW", "large.stow", "cpu_ms_per_instance", "server CPU ms/inst", False),
        Row(
            "Large study retrieval",
            "large.retrieve",
            "mb_per_s",
            "MB/s",
            True,
            "loopback HTTP GET (sendfile)",
        ),
        Row("Large study retrieval", "large.retrieve", "peak_rss_mb", PEAK_RSS, False),
        Row("Large study retrieval", "large.retrieve", "peak_pss_mb", PEAK_PSS, False),
        Row("Large study retrieval", "large.retrieve", "cpu_ms_per_mb", "server CPU ms/MB", False),
    ]
    for scale in plan.qido_scales:
        rows.append(
            Row(
                f"Bulk load to {scale:,} (4 conn × 25)",
                f"qido.{scale}.load",
                "instances_per_s",
                "inst/s",
                True,
            )
        )
        rows.append(
            Row(
                f"Bulk load to {scale:,} (4 conn × 25)",
                f"qido.{scale}.load",
                "cpu_ms_per_instance",
                "server CPU ms/inst",
                False,
            )
        )
        for query in QIDO_QUERIES:
            label = f"QIDO {query.replace('_', ' ')} @{scale:,}"
            rows.append(Row(label, f"qido.{scale}.{query}", "p50_ms", "ms p50", False))
            rows.append(Row(label, f"qido.{scale}.{query}", "p95_ms", "ms p95", False))
        for query in CFIND_QUERIES:
            label = f"C-FIND {query.replace('_', ' ')} @{scale:,}"
            key = f"cfind.{scale}.{query}"
            rows.append(Row(label, key, "p50_ms", "ms p50", False))
            rows.append(Row(label, key, "p95_ms", "ms p95", False))
            rows.append(Row(label, key, "cpu_ms_per_request", "server CPU ms/req", False))
        label = f"C-FIND {CFIND_WITH_ASSOCIATION.replace('_', ' ')} @{scale:,}"
        key = f"cfind.{scale}.{CFIND_WITH_ASSOCIATION}"
        rows.append(Row(label, key, "p50_ms", "ms p50", False))
        rows.append(Row(label, key, "cpu_ms_per_request", "server CPU ms/req", False))
    return rows


def _value(figures: dict[str, Any], row: Row) -> float | None:
    value = figures.get(row.key, {}).get(row.field)
    return float(value) if isinstance(value, int | float) else None


def _cell(value: float | None, row: Row, limits: dict[str, dict[str, Any]]) -> str:
    if value is None:
        return "—"
    text = f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
    if row.limit and row.limit in limits and limits[row.limit].get("mb_per_s"):
        text += f" ({value / limits[row.limit]['mb_per_s']:.0%})"
    return text


def _ratio(value: float | None, reference: float | None, row: Row) -> str:
    if value is None or reference is None or reference == 0 or math.isnan(value):
        return "—"
    ratio = value / reference
    better = ratio >= 1 if row.higher_is_better else ratio <= 1
    return f"{ratio:.2f}{'' if better else ' ✗'}"


def table(result: dict[str, Any]) -> list[list[str]]:
    """Header row plus one row per figure: value per target and dicomql/Orthanc ratios."""
    targets: dict[str, Any] = result["targets"]
    limits = {limit["name"]: limit for limit in result.get("limits", [])}
    plan = Plan(**result["plan"])
    names = list(targets)
    reference = "orthanc" if "orthanc" in targets else None
    header = ["Figure", "Unit"]
    for name in names:
        header.append(name)
        if reference and name != reference:
            header.append(f"{name}/orthanc")
    lines = [header]
    for row in rows_for(plan):
        line = [row.label, row.unit + (" ↑" if row.higher_is_better else " ↓")]
        reference_value = _value(targets[reference]["figures"], row) if reference else None
        for name in names:
            value = _value(targets[name]["figures"], row)
            line.append(_cell(value, row, limits))
            if reference and name != reference:
                line.append(_ratio(value, reference_value, row))
        lines.append(line)
    return lines


def markdown(result: dict[str, Any]) -> str:
    lines = table(result)
    out = [f"# dicomql vs Orthanc — {result['plan']['name']} run, {result['started']}", ""]
    env = result["environment"]
    out += [f"- {key}: {value}" for key, value in env.items()]
    out += [
        "",
        "Ratios are dicomql/Orthanc; ✗ marks where dicomql is worse. Percentages are the "
        "fraction of the machine ceiling named below.",
        "",
    ]
    out.append("| " + " | ".join(lines[0]) + " |")
    out.append("|" + "|".join(["---"] * 2 + ["---:"] * (len(lines[0]) - 2)) + "|")
    out += ["| " + " | ".join(line) + " |" for line in lines[1:]]
    out += ["", "## Machine ceilings", "", "| Ceiling | MB/s | files/s |", "|---|---:|---:|"]
    out += [
        f"| {limit['name']} | {limit['mb_per_s']:,} | {limit['files_per_s']:,} |"
        for limit in result.get("limits", [])
    ]
    growth = _qido_growth(result)
    if growth:
        out += ["", "## QIDO and C-FIND growth: p50 at the larger scale ÷ p50 at the smaller", ""]
        out += growth
    result_counts = _result_counts(result)
    if result_counts:
        out += [
            "",
            "## QIDO and C-FIND mean result counts (same queries; differences are semantics)",
            "",
        ]
        out += result_counts
    errors = [
        (name, phase, message)
        for name, target in result["targets"].items()
        for phase, message in target.get("errors", {}).items()
    ]
    if errors:
        out += ["", "## Errors", ""]
        out += [f"- **{name}** {phase}: {message[:400]}" for name, phase, message in errors]
    return "\n".join(out) + "\n"


# Issue 6's goal: QIDO latency at 100,000 instances within 1.5× of that at 10,000.
GROWTH_GOAL = 1.5


def _qido_growth(result: dict[str, Any]) -> list[str]:
    """Each QIDO query's p50 at the largest scale over its p50 at the smallest, per target (✗
    above :data:`GROWTH_GOAL`). The mean result counts below show where a query simply returns
    more at the larger scale (a date range over ten times the studies)."""
    scales = Plan(**result["plan"]).qido_scales
    if len(scales) < 2:
        return []
    small, large = scales[0], scales[-1]
    targets = result["targets"]
    lines = [
        f"| Query ({small:,} → {large:,}) | " + " | ".join(targets) + " |",
        "|---|" + "---:|" * len(targets),
    ]
    queries = [("qido", "", query) for query in QIDO_QUERIES]
    queries += [("cfind", "C-FIND ", query) for query in [*CFIND_QUERIES, CFIND_WITH_ASSOCIATION]]
    for phase, prefix, query in queries:
        cells = []
        for target in targets.values():
            before = target["figures"].get(f"{phase}.{small}.{query}", {}).get("p50_ms")
            after = target["figures"].get(f"{phase}.{large}.{query}", {}).get("p50_ms")
            if not before or after is None:
                cells.append("—")
                continue
            growth = after / before
            cells.append(f"{growth:.2f}{' ✗' if growth > GROWTH_GOAL else ''}")
        lines.append(f"| {prefix}{query.replace('_', ' ')} | " + " | ".join(cells) + " |")
    return lines


def _result_counts(result: dict[str, Any]) -> list[str]:
    targets = result["targets"]
    keys = sorted(
        {
            key
            for target in targets.values()
            for key in target["figures"]
            if key.startswith(("qido.", "cfind.")) and not key.endswith(".load")
        }
    )
    if not keys:
        return []
    lines = ["| Query | " + " | ".join(targets) + " |", "|---|" + "---:|" * len(targets)]
    for key in keys:
        counts = [
            str(target["figures"].get(key, {}).get("mean_results", "—"))
            for target in targets.values()
        ]
        lines.append(f"| {key} | " + " | ".join(counts) + " |")
    return lines


def terminal(result: dict[str, Any]) -> str:
    lines = table(result)
    widths = [max(len(line[column]) for line in lines) for column in range(len(lines[0]))]
    rendered = []
    for number, line in enumerate(lines):
        cells = [
            cell.ljust(width) if column < 2 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        rendered.append("  ".join(cells))
        if number == 0:
            rendered.append("  ".join("-" * width for width in widths))
    return "\n".join(rendered)


def write(result: dict[str, Any], directory: Path, stem: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"{stem}.json"
    md_path = directory / f"{stem}.md"
    json_path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    md_path.write_text(markdown(result))
    return md_path, json_path


if __name__ == "__main__":
    # Re-render a written run's Markdown from its JSON: python -m bench.report results/latest.json
    import sys

    for name in sys.argv[1:]:
        source = Path(name)
        source.with_suffix(".md").write_text(markdown(json.loads(source.read_text())))
