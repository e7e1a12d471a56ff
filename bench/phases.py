"""The measurements, each run the same way against every server: STOW ingest, WADO retrieval,
peak memory during a large STOW and retrieval, and QIDO and C-FIND latency as the store grows."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydicom.dataset import Dataset

from bench.client import (
    MULTIPART_DICOM,
    MULTIPART_FRAMES,
    BenchClientError,
    ClientPool,
    DicomWebClient,
    Throughput,
    batched,
    percentile,
    split_multipart,
)
from bench.datagen import Corpus, StudyPlan, ct_instance_size
from bench.findscu import DimseAddress, FindAssociation, identifier
from bench.servers import PssSampler, ServerProcess

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
    100_000_000,
    (500, 2_000),
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
    dimse: DimseAddress | None = None  # its DICOM server, for the C-FIND figures
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


def with_server_cpu(figures: Figures, cpu_seconds: float) -> Figures:
    """``figures`` plus the server's CPU time for them, per instance stored (when instances
    were counted), per MB (a streamed retrieval) or per request (latencies, warm-up included):
    CPU per unit of work is comparable across runs on a loaded machine, wall time is not."""
    figures = {**figures, "server_cpu_s": round(cpu_seconds, 3)}
    if figures.get("instances"):
        figures["cpu_ms_per_instance"] = round(cpu_seconds * 1000 / figures["instances"], 2)
    elif figures.get("n"):
        figures["cpu_ms_per_request"] = round(cpu_seconds * 1000 / (figures["n"] + 1), 2)
    elif figures.get("megabytes"):
        figures["cpu_ms_per_mb"] = round(cpu_seconds * 1000 / figures["megabytes"], 2)
    return figures


# Instances stored before the STOW figures, not measured: a server's first requests pay for what
# it sets up once in its life (dicomql's Python: imports, compiled statements, ~0.2 s of CPU),
# which the first figure (50 instances in a quick run) would otherwise carry; as bench/dimse.py.
STOW_WARM_UP_INSTANCES = 10


def stow(target: Target, plan: Plan) -> list[StudyPlan]:
    """Ingest at every (connections, instances per request); returns the studies stored."""
    warm_up = Corpus(seed=plan.seed - 2, patients=50)  # a seed of its own: UIDs come from it
    with ClientPool(target.dicomweb_url, 1) as pool:
        pool.store_batches(
            batched(warm_up.ct_instances([warm_up.study("CT", [STOW_WARM_UP_INSTANCES])]), 1)
        )
    stored: list[StudyPlan] = []
    for index, (connections, per_request) in enumerate(plan.stow_configs):
        corpus = Corpus(seed=plan.seed + index, patients=50)
        studies = [corpus.study("CT", _series_sizes(plan.stow_instances)) for _ in range(1)]
        cpu_before = target.server.cpu_seconds()
        with ClientPool(target.dicomweb_url, connections) as pool:
            result = pool.store_batches(batched(corpus.ct_instances(studies), per_request))
        target.figures[f"stow.{connections}conn.{per_request}per_request"] = with_server_cpu(
            throughput_figures(result), target.server.cpu_seconds() - cpu_before
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
    """Retrieve what ``stow`` stored: instances, whole series, metadata, frames, rendered.

    Each retrieval is measured on its own, so one the server lacks does not hide the others.
    """
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

        def one_instance() -> Figures:
            sizes: list[int] = []

            def call() -> int:
                sizes.append(len(client.retrieve(instance_path(), MULTIPART_DICOM).content))
                return 1

            samples, results = _sample(call, plan.wado_repeats * 5)
            return {
                **latency_figures(samples, results),
                "instances_per_s": round(len(samples) / sum(samples), 1),
                "mb_per_s": round(sum(sizes[1:]) / 1e6 / sum(samples), 1),
            }

        def whole_series() -> Figures:
            sizes: list[int] = []

            def call() -> int:
                response = client.retrieve(series_path, MULTIPART_DICOM)
                parts = split_multipart(response.content, response.headers["content-type"])
                sizes.append(sum(map(len, parts)))
                return len(parts)

            samples, counts = _sample(call, max(2, plan.wado_repeats // 3))
            if counts[0] != series.size:
                raise RuntimeError(f"retrieved {counts[0]} of {series.size} instances")
            return {
                **latency_figures(samples, counts),
                "mb_per_s": round(sizes[-1] / 1e6 / percentile(samples, 0.5), 1),
            }

        def study_metadata() -> Figures:
            path = f"/studies/{study.study_instance_uid}"
            return latency_figures(*_sample(lambda: len(client.metadata(path)), plan.wado_repeats))

        def one_frame() -> Figures:
            def call() -> int:
                response = client.retrieve(f"{instance_path()}/frames/1", MULTIPART_FRAMES)
                return len(split_multipart(response.content, response.headers["content-type"]))

            return latency_figures(*_sample(call, plan.wado_repeats))

        def rendered() -> Figures:
            def call() -> int:
                response = client.retrieve(f"{instance_path()}/rendered", "image/jpeg")
                if not response.content.startswith(b"\xff\xd8"):
                    raise RuntimeError(f"{target.name} rendered something that is not a JPEG")
                return 1

            return latency_figures(*_sample(call, plan.wado_repeats))

        measure(target, "wado.instance", one_instance)
        measure(target, "wado.series", whole_series)
        measure(target, "wado.study_metadata", study_metadata)
        measure(target, "wado.frame", one_frame)
        measure(target, "wado.rendered_jpeg", rendered)


def measure(target: Target, key: str, run: Callable[[], Figures]) -> None:
    """Record ``run``'s figures under ``key``, or why it failed, and carry on."""
    try:
        cpu_before = target.server.cpu_seconds()
        figures = run()
        target.figures[key] = with_server_cpu(figures, target.server.cpu_seconds() - cpu_before)
    except (BenchClientError, RuntimeError, ValueError, KeyError, httpx.HTTPError) as exc:
        target.errors[key] = f"{type(exc).__name__}: {exc}"


def peak_memory(server: ServerProcess, pss: PssSampler) -> Figures:
    """The server's peak memory since its VmHWM was reset: each process's peak RSS summed (an
    upper bound: shared pages once per process, each process at its own peak) and the sampled
    peak of the processes' summed PSS (a lower bound: a peak between samples is missed)."""
    figures: Figures = {"peak_rss_mb": round(server.memory()["VmHWM"] / 1e6, 1)}
    if pss.peak is not None:
        figures["peak_pss_mb"] = round(pss.peak / 1e6, 1)
        figures["pss_samples"] = pss.samples
    return figures


def large_study(target: Target, plan: Plan) -> None:
    """Peak server memory (summed VmHWM, sampled summed PSS) while storing ``large_bytes`` of
    CT and retrieving that study."""
    corpus = Corpus(seed=plan.seed - 1, patients=1)
    count = max(1, plan.large_bytes // ct_instance_size())
    study = corpus.study("CT", _series_sizes(count), patient=0)
    server = target.server

    def store() -> Figures:
        before = server.memory()
        server.reset_peak_rss()
        with server.sample_peak_pss() as pss, ClientPool(target.dicomweb_url, 4) as pool:
            result = pool.store_batches(batched(corpus.ct_instances([study]), 25))
        return {
            **throughput_figures(result),
            "rss_before_mb": round(before["VmRSS"] / 1e6, 1),
            **peak_memory(server, pss),
        }

    def retrieve() -> Figures:
        server.reset_peak_rss()
        with server.sample_peak_pss() as pss, DicomWebClient(target.dicomweb_url) as client:
            start = time.perf_counter()
            received = client.retrieve_streamed(f"/studies/{study.study_instance_uid}")
            seconds = time.perf_counter() - start
        return {
            "megabytes": round(received / 1e6, 1),
            "seconds": round(seconds, 3),
            "mb_per_s": round(received / 1e6 / seconds, 1),
            **peak_memory(server, pss),
        }

    measure(target, "large.stow", store)
    measure(target, "large.retrieve", retrieve)


QidoRequest = tuple[str, dict[str, str]]


def _by_patient_id(study: StudyPlan, flavor: str, rnd: random.Random) -> QidoRequest:
    return "/studies", {"PatientID": study.patient_id}


def _by_date_range(study: StudyPlan, flavor: str, rnd: random.Random) -> QidoRequest:
    year = study.study_date[:4]
    return "/studies", {"StudyDate": f"{year}0101-{year}0630"}


def _by_fuzzy_name(study: StudyPlan, flavor: str, rnd: random.Random) -> QidoRequest:
    prefix = study.patient_name[:3].lower()
    # Google's fuzzymatching is token-prefix matching (NOTES.md); Orthanc has no fuzzy
    # matching, so it gets the nearest wildcard (its PN matching is case-insensitive).
    if flavor == "orthanc":
        return "/studies", {"PatientName": f"{prefix}*"}
    return "/studies", {"PatientName": prefix, "fuzzymatching": "true"}


def _studies_limit_100(study: StudyPlan, flavor: str, rnd: random.Random) -> QidoRequest:
    return "/studies", {"limit": "100"}


def _series_of_study(study: StudyPlan, flavor: str, rnd: random.Random) -> QidoRequest:
    return f"/studies/{study.study_instance_uid}/series", {}


def _instances_of_series(study: StudyPlan, flavor: str, rnd: random.Random) -> QidoRequest:
    series = rnd.choice(study.series)
    return f"/studies/{study.study_instance_uid}/series/{series.series_instance_uid}/instances", {}


# The searches users run, by name; each builds its request from a random stored study.
QIDO_QUERIES: dict[str, Callable[[StudyPlan, str, random.Random], QidoRequest]] = {
    "study_by_patient_id": _by_patient_id,
    "study_by_date_range": _by_date_range,
    "study_by_fuzzy_name": _by_fuzzy_name,
    "studies_limit_100": _studies_limit_100,
    "series_of_study": _series_of_study,
    "instances_of_series": _instances_of_series,
}


def qido_scale(
    target: Target, plan: Plan, *, qido: bool = True, cfind: bool = True, load: bool = True
) -> None:
    """Grow the store with small instances to each scale and time the searches users run:
    QIDO (``qido``) and C-FIND (``cfind``, when the target has a DICOM server). Without
    ``load`` the store already holds every scale's instances (a kept work directory) and the
    searches are only timed, at the largest scale."""
    corpus = Corpus(seed=plan.seed + 100, patients=max(50, plan.qido_scales[-1] // 150))
    loaded: list[StudyPlan] = []
    stored = 0
    for scale in plan.qido_scales:
        studies = corpus.studies(scale - stored)
        loaded += studies
        stored = scale
        if not load:
            corpus.skip_small_instances(studies)
            if scale != plan.qido_scales[-1]:
                continue
        else:
            cpu_before = target.server.cpu_seconds()
            with ClientPool(target.dicomweb_url, 4) as pool:
                result = pool.store_batches(batched(corpus.small_instances(studies), 25))
            target.figures[f"qido.{scale}.load"] = with_server_cpu(
                throughput_figures(result), target.server.cpu_seconds() - cpu_before
            )
        # A server just started on kept data pays its first requests' lazy imports and caches
        # in the CPU figures (each of its processes does): a first pass warms it, the second's
        # figures are kept.
        for _ in range(1 if load else 2):
            if qido:
                qido_searches(target, plan, scale, loaded)
            if cfind and target.dimse is not None:
                cfind_latency(target, plan, scale, loaded)


def qido_searches(target: Target, plan: Plan, scale: int, loaded: list[StudyPlan]) -> None:
    """p50/p95 of each QIDO search, each built from a random study of ``loaded``."""
    rnd = random.Random(plan.seed + scale)
    with DicomWebClient(target.dicomweb_url) as client:
        for query, build in QIDO_QUERIES.items():

            def run(
                build: Callable[[StudyPlan, str, random.Random], QidoRequest] = build,
                client: DicomWebClient = client,
                studies: list[StudyPlan] = loaded,
                rnd: random.Random = rnd,
            ) -> Figures:
                def call() -> int:
                    path, params = build(rnd.choice(studies), target.flavor, rnd)
                    return len(client.search(path, params))

                return latency_figures(*_sample(call, plan.qido_repeats))

            measure(target, f"qido.{scale}.{query}", run)


# Return keys of each level's C-FIND: what a viewer's study, series and image lists show
# (close to QIDO's default attributes), the same for every server.
_STUDY_KEYS = {
    "StudyInstanceUID": "",
    "PatientName": "",
    "PatientID": "",
    "PatientBirthDate": "",
    "StudyDate": "",
    "StudyTime": "",
    "AccessionNumber": "",
    "StudyDescription": "",
    "ModalitiesInStudy": "",
    "NumberOfStudyRelatedInstances": "",
}
_SERIES_KEYS = {
    "SeriesInstanceUID": "",
    "Modality": "",
    "SeriesNumber": "",
    "SeriesDescription": "",
    "NumberOfSeriesRelatedInstances": "",
}
_IMAGE_KEYS = {"SOPInstanceUID": "", "SOPClassUID": "", "InstanceNumber": ""}


def _find_by_patient_id(study: StudyPlan, rnd: random.Random) -> Dataset:
    return identifier("STUDY", **{**_STUDY_KEYS, "PatientID": study.patient_id})


def _find_by_date_range(study: StudyPlan, rnd: random.Random) -> Dataset:
    year = study.study_date[:4]
    return identifier("STUDY", **{**_STUDY_KEYS, "StudyDate": f"{year}0101-{year}0630"})


def _find_by_name_wildcard(study: StudyPlan, rnd: random.Random) -> Dataset:
    # Stored names are upper case, so the case rules of the two servers do not matter here.
    return identifier("STUDY", **{**_STUDY_KEYS, "PatientName": f"{study.patient_name[:3]}*"})


def _find_series_of_study(study: StudyPlan, rnd: random.Random) -> Dataset:
    return identifier("SERIES", StudyInstanceUID=study.study_instance_uid, **_SERIES_KEYS)


def _find_images_of_series(study: StudyPlan, rnd: random.Random) -> Dataset:
    series = rnd.choice(study.series)
    return identifier(
        "IMAGE",
        StudyInstanceUID=study.study_instance_uid,
        SeriesInstanceUID=series.series_instance_uid,
        **_IMAGE_KEYS,
    )


# The QIDO searches DIMSE can express (no limit/offset in C-FIND, no fuzzy matching: the name
# search is a family-name prefix wildcard on both servers).
CFIND_QUERIES: dict[str, Callable[[StudyPlan, random.Random], Dataset]] = {
    "study_by_patient_id": _find_by_patient_id,
    "study_by_date_range": _find_by_date_range,
    "study_by_name_wildcard": _find_by_name_wildcard,
    "series_of_study": _find_series_of_study,
    "images_of_series": _find_images_of_series,
}
# Also timed: association setup, one C-FIND and release, as a tool that connects per query pays.
CFIND_WITH_ASSOCIATION = "association_and_study_by_patient_id"


def cfind_latency(target: Target, plan: Plan, scale: int, studies: list[StudyPlan]) -> None:
    """C-FIND p50/p95 of each query over one association opened before it is timed; then the
    round trip of a fresh association for one query."""
    assert target.dimse is not None
    address = target.dimse
    rnd = random.Random(plan.seed + scale + 1)
    for query, build in CFIND_QUERIES.items():
        key = f"cfind.{scale}.{query}"
        try:
            association = FindAssociation(address)
        except (RuntimeError, OSError) as exc:
            target.errors[key] = f"{type(exc).__name__}: {exc}"
            continue
        with association:

            def run(
                build: Callable[[StudyPlan, random.Random], Dataset] = build,
                association: FindAssociation = association,
            ) -> Figures:
                def call() -> int:
                    return association.find(build(rnd.choice(studies), rnd))

                return latency_figures(*_sample(call, plan.qido_repeats))

            measure(target, key, run)

    def fresh_association() -> Figures:
        def call() -> int:
            with FindAssociation(address) as association:
                return association.find(_find_by_patient_id(rnd.choice(studies), rnd))

        return latency_figures(*_sample(call, max(2, plan.qido_repeats // 3)))

    measure(target, f"cfind.{scale}.{CFIND_WITH_ASSOCIATION}", fresh_association)
