"""The measurements, each run the same way against every server: STOW ingest, WADO retrieval,
peak memory during a large STOW and retrieval, and QIDO latency as the store grows."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.client import (
    MULTIPART_DICOM,
    MULTIPART_FRAMES,
    ClientPool,
    DicomWebClient,
    Throughput,
    batched,
    percentile,
    split_multipart,
)
from bench.datagen import Corpus, StudyPlan
from bench.servers import ServerProcess

Figures = dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """How much of everything a run does; ``quick`` and the full run differ only here."""

    name: str
    stow_instances: int  # CT-like instances per STOW configuration
    stow_configs: tuple[tuple[int, int], ...]  # (connections, instances per request)
    large_bytes: int  # the STOW and study retrieval whose peak RSS is read
    qido_scales: tuple[int, ...]  # small instances stored when QIDO is measured
    qido_repeats: int
    wado_repeats: int
    http_limit_bytes: int
    seed: int = 20261123


FULL = Plan(
    "full",
    200,
    ((1, 1), (1, 25), (4, 1), (4, 25)),
    1_000_000_000,
    (10_000, 100_000),
    50,
    30,
    1_000_000_000,
)
QUICK = Plan(
    "quick",
    50,
    ((1, 1), (1, 25), (4, 1), (4, 25)),
    150_000_000,
    (1_000, 3_000),
    15,
    10,
    200_000_000,
)
SMOKE = Plan("smoke", 4, ((1, 1), (2, 2)), 3_000_000, (40,), 2, 2, 2_000_000)


@dataclass
class Target:
    """One server under test and what it answers at."""

    name: str
    flavor: str  # "orthanc" or "dicomql": only the fuzzy-name query differs between them
    server: ServerProcess
    dicomweb_url: str
    figures: Figures = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def throughput_figures(result: Throughput) -> Figures:
    return {
        "instances": result.instances,
        "requests": result.requests,
        "megabytes": round(result.payload_bytes / 1e6, 1),
        "seconds": round(result.seconds, 3),
        "instances_per_s": round(result.instances_per_second, 1),
        "mb_per_s": round(result.megabytes_per_second, 1),
        "failed": result.failed,
    }


def latency_figures(samples: list[float], results: list[int]) -> Figures:
    return {
        "n": len(samples),
        "p50_ms": round(percentile(samples, 0.50) * 1000, 2),
        "p95_ms": round(percentile(samples, 0.95) * 1000, 2),
        "mean_results": round(sum(results) / len(results), 1) if results else 0,
    }


def stow(target: Target, plan: Plan) -> list[StudyPlan]:
    """Ingest at every (connections, instances per request); returns the studies stored."""
    stored: list[StudyPlan] = []
    for index, (connections, per_request) in enumerate(plan.stow_configs):
        corpus = Corpus(seed=plan.seed + index, patients=50)
        studies = [corpus.study("CT", _series_sizes(plan.stow_instances)) for _ in range(1)]
        with ClientPool(target.dicomweb_url, connections) as pool:
            result = pool.store_batches(batched(corpus.ct_instances(studies), per_request))
        target.figures[f"stow.{connections}conn.{per_request}per_request"] = throughput_figures(
            result
        )
        stored += studies
    return stored


def _series_sizes(instances: int) -> list[int]:
    """A study of CT series of up to 100 slices holding ``instances`` in all."""
    sizes = [100] * (instances // 100)
    if instances % 100:
        sizes.append(instances % 100)
    return sizes


def _sample(call: Callable[[], int], repeats: int) -> tuple[list[float], list[int]]:
    """Time ``repeats`` calls after one warm-up; ``call`` returns a result count."""
    call()
    samples, results = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        results.append(call())
        samples.append(time.perf_counter() - start)
    return samples, results


def wado(target: Target, plan: Plan, studies: list[StudyPlan]) -> None:
    """Retrieve what ``stow`` stored: instances, whole series, metadata, frames, rendered."""
    rnd = random.Random(plan.seed)
    with DicomWebClient(target.dicomweb_url) as client:
        study = studies[0]
        series = study.series[0]
        series_path = f"/studies/{study.study_instance_uid}/series/{series.series_instance_uid}"
        listed = client.search(f"{series_path}/instances", {"limit": "1000"})
        sop_instance_uids = [item["00080018"]["Value"][0] for item in listed]
        if not sop_instance_uids:
            raise RuntimeError(f"{target.name} lists no instances in {series_path}")

        def instance_path() -> str:
            return f"{series_path}/instances/{rnd.choice(sop_instance_uids)}"

        def one_instance() -> int:
            response = client.retrieve(instance_path(), MULTIPART_DICOM)
            return len(response.content)

        samples, sizes = _sample(one_instance, plan.wado_repeats * 5)
        target.figures["wado.instance"] = {
            **latency_figures(samples, [1] * len(samples)),
            "instances_per_s": round(len(samples) / sum(samples), 1),
            "mb_per_s": round(sum(sizes) / 1e6 / sum(samples), 1),
        }

        def whole_series() -> int:
            response = client.retrieve(series_path, MULTIPART_DICOM)
            return len(split_multipart(response.content, response.headers["content-type"]))

        samples, counts = _sample(whole_series, max(2, plan.wado_repeats // 3))
        series_bytes = series.size * _instance_bytes(client, instance_path())
        target.figures["wado.series"] = {
            **latency_figures(samples, counts),
            "mb_per_s": round(series_bytes / 1e6 / percentile(samples, 0.5), 1),
        }
        if counts[0] != series.size:
            target.errors["wado.series"] = f"retrieved {counts[0]} of {series.size} instances"

        def study_metadata() -> int:
            return len(client.metadata(f"/studies/{study.study_instance_uid}"))

        target.figures["wado.study_metadata"] = latency_figures(
            *_sample(study_metadata, plan.wado_repeats)
        )

        def one_frame() -> int:
            response = client.retrieve(f"{instance_path()}/frames/1", MULTIPART_FRAMES)
            return len(split_multipart(response.content, response.headers["content-type"]))

        target.figures["wado.frame"] = latency_figures(*_sample(one_frame, plan.wado_repeats))

        def rendered() -> int:
            response = client.retrieve(f"{instance_path()}/rendered", "image/jpeg")
            if not response.content.startswith(b"\xff\xd8"):
                raise RuntimeError(f"{target.name} rendered something that is not a JPEG")
            return 1

        target.figures["wado.rendered_jpeg"] = latency_figures(
            *_sample(rendered, plan.wado_repeats)
        )


def _instance_bytes(client: DicomWebClient, path: str) -> int:
    response = client.retrieve(path, MULTIPART_DICOM)
    return len(split_multipart(response.content, response.headers["content-type"])[0])


def large_study(target: Target, plan: Plan) -> None:
    """Peak server RSS (VmHWM) while storing ``large_bytes`` of CT and retrieving that study."""
    corpus = Corpus(seed=plan.seed - 1, patients=1)
    from bench.datagen import ct_instance_size

    count = max(1, plan.large_bytes // ct_instance_size())
    study = corpus.study("CT", _series_sizes(count), patient=0)
    server = target.server
    before = server.memory()
    server.reset_peak_rss()
    with ClientPool(target.dicomweb_url, 4) as pool:
        result = pool.store_batches(batched(corpus.ct_instances([study]), 25))
    after = server.memory()
    target.figures["large.stow"] = {
        **throughput_figures(result),
        "rss_before_mb": round(before["VmRSS"] / 1e6, 1),
        "peak_rss_mb": round(after["VmHWM"] / 1e6, 1),
    }
    server.reset_peak_rss()
    with DicomWebClient(target.dicomweb_url) as client:
        start = time.perf_counter()
        received = client.retrieve_streamed(f"/studies/{study.study_instance_uid}")
        seconds = time.perf_counter() - start
    target.figures["large.retrieve"] = {
        "megabytes": round(received / 1e6, 1),
        "seconds": round(seconds, 3),
        "mb_per_s": round(received / 1e6 / seconds, 1),
        "peak_rss_mb": round(server.memory()["VmHWM"] / 1e6, 1),
    }


QIDO_QUERIES = (
    "study_by_patient_id",
    "study_by_date_range",
    "study_by_fuzzy_name",
    "studies_limit_100",
    "series_of_study",
    "instances_of_series",
)


def qido_scale(target: Target, plan: Plan) -> None:
    """Grow the store with small instances to each scale and time the searches users run."""
    corpus = Corpus(seed=plan.seed + 100, patients=max(50, plan.qido_scales[-1] // 150))
    loaded: list[StudyPlan] = []
    stored = 0
    for scale in plan.qido_scales:
        studies = corpus.studies(scale - stored)
        with ClientPool(target.dicomweb_url, 4) as pool:
            result = pool.store_batches(batched(corpus.small_instances(studies), 25))
        target.figures[f"qido.{scale}.load"] = throughput_figures(result)
        loaded += studies
        stored = scale
        rnd = random.Random(plan.seed + scale)
        with DicomWebClient(target.dicomweb_url) as client:
            for query in QIDO_QUERIES:

                def call(
                    query: str = query,
                    client: DicomWebClient = client,
                    studies: list[StudyPlan] = loaded,
                    rnd: random.Random = rnd,
                ) -> int:
                    path, params = _qido_request(query, target.flavor, rnd.choice(studies), rnd)
                    return len(client.search(path, params))

                target.figures[f"qido.{scale}.{query}"] = latency_figures(
                    *_sample(call, plan.qido_repeats)
                )


def _qido_request(
    query: str, flavor: str, study: StudyPlan, rnd: random.Random
) -> tuple[str, dict[str, str]]:
    if query == "study_by_patient_id":
        return "/studies", {"PatientID": study.patient_id}
    if query == "study_by_date_range":
        year = study.study_date[:4]
        return "/studies", {"StudyDate": f"{year}0101-{year}0630"}
    if query == "study_by_fuzzy_name":
        prefix = study.patient_name[:3].lower()
        # Google's fuzzymatching is token-prefix matching (NOTES.md); Orthanc has no fuzzy
        # matching, so it gets the nearest wildcard (its PN matching is case-insensitive).
        if flavor == "orthanc":
            return "/studies", {"PatientName": f"{prefix}*"}
        return "/studies", {"PatientName": prefix, "fuzzymatching": "true"}
    if query == "studies_limit_100":
        return "/studies", {"limit": "100"}
    if query == "series_of_study":
        return f"/studies/{study.study_instance_uid}/series", {}
    series = rnd.choice(study.series)
    return (
        f"/studies/{study.study_instance_uid}/series/{series.series_instance_uid}/instances",
        {},
    )
