"""The benchmark harness cannot rot: its data is valid DICOM, its client speaks multipart, and a
tiny run of ``bench/compare.py`` against dicomql alone (no Orthanc, no root) produces figures."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench.client import multipart_body, percentile, split_multipart
from bench.datagen import Corpus, ct_instance_size
from pydicom import dcmread

REPO = Path(__file__).resolve().parents[2]

PHASE_FIGURES = {
    "stow": ["stow.1conn.1per_request", "stow.2conn.2per_request"],
    "wado": [
        "wado.instance",
        "wado.series",
        "wado.study_metadata",
        "wado.frame",
        "wado.rendered_jpeg",
    ],
    "large": ["large.stow", "large.retrieve"],
    "qido": [
        "qido.40.load",
        "qido.40.study_by_patient_id",
        "qido.40.study_by_date_range",
        "qido.40.study_by_fuzzy_name",
        "qido.40.studies_limit_100",
        "qido.40.series_of_study",
        "qido.40.instances_of_series",
    ],
    # C-FIND over each server's DICOM server, at the same scale as the QIDO figures.
    "cfind": [
        "cfind.40.study_by_patient_id",
        "cfind.40.study_by_date_range",
        "cfind.40.study_by_name_wildcard",
        "cfind.40.series_of_study",
        "cfind.40.images_of_series",
        "cfind.40.association_and_study_by_patient_id",
    ],
}


def test_generated_small_instances_are_valid_dicom_with_the_planned_attributes() -> None:
    corpus = Corpus(seed=5, patients=20)
    studies = corpus.studies(60)
    instances = [dcmread(io.BytesIO(data)) for data in corpus.small_instances(studies)]

    assert len(instances) == 60 == sum(study.size for study in studies)
    first = instances[0]
    assert first.StudyInstanceUID == studies[0].study_instance_uid
    assert first.SeriesInstanceUID == studies[0].series[0].series_instance_uid
    assert first.PatientID == studies[0].patient_id
    assert first.PatientName == studies[0].patient_name
    assert first.StudyDate == studies[0].study_date
    assert first.Modality == studies[0].series[0].modality
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    assert len({instance.SOPInstanceUID for instance in instances}) == 60
    assert first.pixel_array.shape == (128, 128)


def test_generated_ct_instances_are_half_a_megabyte_512_square_16_bit() -> None:
    corpus = Corpus(seed=5, patients=1)
    data = next(corpus.ct_instances([corpus.study("CT", [2])]))
    instance = dcmread(io.BytesIO(data))

    assert instance.pixel_array.shape == (512, 512)
    assert instance.BitsAllocated == 16
    assert len(data) == ct_instance_size()
    assert 520_000 < len(data) < 560_000


def test_the_same_seed_plans_the_same_corpus_for_every_server() -> None:
    first, second = Corpus(seed=9), Corpus(seed=9)

    assert list(first.small_instances(first.studies(30))) == list(
        second.small_instances(second.studies(30))
    )


def test_multipart_body_splits_back_into_its_parts() -> None:
    parts = [b"\x00first", b"second\r\n--not-a-boundary", b""]
    body = multipart_body(parts, "b0und4ry")

    assert (
        split_multipart(body, 'multipart/related; type="application/dicom"; boundary=b0und4ry')
        == parts
    )


def test_percentile_is_nearest_rank() -> None:
    samples = [float(value) for value in range(1, 21)]

    assert percentile(samples, 0.5) == 10.0
    assert percentile(samples, 0.95) == 19.0


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    output = tmp_path_factory.mktemp("bench-results")
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "compare.py"),
            "--smoke",
            "--no-orthanc",
            "--targets",
            "dicomql-sqlite",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    json_path = output / "smoke.json"
    assert json_path.exists(), completed.stderr[-3000:]
    assert (output / "smoke.md").read_text().startswith("# dicomql vs Orthanc")
    result: dict[str, Any] = json.loads(json_path.read_text())
    result["stdout"] = completed.stdout
    result["markdown"] = (output / "smoke.md").read_text()
    return result


def test_smoke_run_measures_the_machine_ceilings(smoke_run: dict[str, Any]) -> None:
    names = {limit["name"]: limit for limit in smoke_run["limits"]}

    assert set(names) == {
        "disk write+fsync",
        "disk read (page cache)",
        "loopback HTTP GET (sendfile)",
        "loopback HTTP POST (sendfile)",
        "loopback HTTP GET (uvicorn)",
        "loopback HTTP POST (uvicorn)",
    }
    assert all(limit["mb_per_s"] > 0 for limit in names.values())


@pytest.mark.parametrize(
    ("phase", "key"), [(phase, key) for phase, keys in PHASE_FIGURES.items() for key in keys]
)
def test_smoke_run_against_dicomql_produces_every_figure(
    smoke_run: dict[str, Any], phase: str, key: str
) -> None:
    target = smoke_run["targets"]["dicomql-sqlite"]
    assert "setup" not in target["errors"], target["errors"]
    error = target["errors"].get(key) or target["errors"].get(phase, "")
    # Endpoints still being built answer 404/405 UNIMPLEMENTED; say so rather than fail, and
    # fail on anything else.
    if " -> 404: " in error or " -> 405: " in error:
        pytest.skip(f"the embedded service does not serve {key} yet: {error[:160]}")
    assert not error

    figures = target["figures"][key]
    assert figures.get("failed", 0) == 0
    assert any(isinstance(value, float) and value > 0 for value in figures.values()), figures
    assert "dicomql-sqlite" in smoke_run["stdout"]


def test_smoke_run_c_find_answers_every_query_with_the_stored_matches(
    smoke_run: dict[str, Any],
) -> None:
    figures = smoke_run["targets"]["dicomql-sqlite"]["figures"]

    # Each query is built from a stored study, so it finds at least that study, series or
    # image (the date range, January to June of the study's year, may miss it); zero would
    # mean the DIMSE server answers from some other store.
    for key in PHASE_FIGURES["cfind"]:
        if key != "cfind.40.study_by_date_range":
            assert figures[key]["mean_results"] >= 1, (key, figures[key])


@pytest.mark.parametrize("key", PHASE_FIGURES["large"])
def test_smoke_run_reports_peak_memory_as_summed_rss_peaks_and_sampled_summed_pss(
    smoke_run: dict[str, Any], key: str
) -> None:
    figures = smoke_run["targets"]["dicomql-sqlite"]["figures"][key]

    # Each process's PSS is at most its RSS, which is at most its peak RSS: the summed PSS
    # sampled at any moment cannot exceed the summed per-process peaks.
    assert figures["pss_samples"] >= 2  # one at the start, one at the end, any in between
    assert 0 < figures["peak_pss_mb"] <= figures["peak_rss_mb"]
    for label in ("MB peak RSS (sum of per-process peaks)", "MB peak PSS (sum of processes)"):
        phase = "Large STOW" if key == "large.stow" else "Large study retrieval"
        assert f"| {phase} | {label} " in smoke_run["markdown"]
