"""bench/deid.py cannot rot: a tiny run de-identifies real files with both tools, writes the
results table, and says how to install dicognito when it is missing."""

from __future__ import annotations

import sys
from pathlib import Path

import pydicom
import pytest

from bench import deid as bench_deid

REPO = Path(__file__).resolve().parents[2]


def test_a_tiny_run_reports_every_tool_and_the_ratio_to_dicognito(tmp_path: Path) -> None:
    pytest.importorskip("dicognito", reason="the bench extra: pip install -e '.[bench]'")
    markdown = tmp_path / "deid.md"

    text = bench_deid.main(
        ["--instances", "20", "--repeat", "1", "--processes", "2", "--markdown", str(markdown)]
    )

    assert markdown.read_text() == text
    rows = [line for line in text.splitlines() if line.startswith("| dico")]
    assert [row.split("|")[1].strip() for row in rows] == [
        "dicognito",
        "dicomql basic profile",
        "dicomql basic profile",
        "dicomql minimal keep list",
        "dicomql keep all (UIDs only)",
        "dicomql tag contents",
    ]
    for row in rows:
        cells = [cell.strip() for cell in row.split("|")[1:-1]]
        assert float(cells[2]) > 0 and float(cells[3]) > 0  # instances/s, per CPU second
        assert cells[4].endswith("x") and cells[5].endswith("x")
    assert "Headline: dicomql's basic profile on 2 processes" in text


def test_the_corpus_is_distinct_instances_and_both_tools_write_readable_files(
    tmp_path: Path,
) -> None:
    pytest.importorskip("dicognito", reason="the bench extra: pip install -e '.[bench]'")
    pairs = bench_deid.make_corpus(tmp_path, 12)
    originals = [pydicom.dcmread(source) for source, _ in pairs]
    assert len({ds.SOPInstanceUID for ds in originals}) == 12
    assert len({ds.StudyInstanceUID for ds in originals}) == 2

    for run in (bench_deid.dicognito_runner(), bench_deid.dicomql_runner("basic profile")):
        for source, target in pairs:
            run(source, target)
        for (_source, target), original in zip(pairs, originals, strict=True):
            output = pydicom.dcmread(target)
            assert output.PatientName != original.PatientName
            assert output.SOPInstanceUID != original.SOPInstanceUID
            assert (output.pixel_array == original.pixel_array).all()


def test_without_dicognito_the_benchmark_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A None entry in sys.modules makes `import dicognito` raise ImportError, as when the
    # bench extra is not installed.
    monkeypatch.setitem(sys.modules, "dicognito", None)

    text = bench_deid.main(
        ["--instances", "4", "--repeat", "1", "--processes", "1", "--markdown", str(tmp_path / "d")]
    )

    assert "pip install -e '.[bench]'" in capsys.readouterr().err
    assert "pip install -e '.[bench]'" in text
    assert "| dicognito |" not in text
