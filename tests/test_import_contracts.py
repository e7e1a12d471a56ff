"""The layer rules of docs/architecture.md, checked by import-linter on every test run: imports
run only downward (cli → sql → provider → service → store → dicom), and no package or module
imports one that imports it back. The contracts themselves are in pyproject.toml."""

from __future__ import annotations

from pathlib import Path

from importlinter.cli import lint_imports

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_every_import_linter_contract_in_pyproject_is_kept(capsys) -> None:
    # lint_imports prints the broken contracts, with the import chains that break them.
    exit_code = lint_imports(config_filename=str(PYPROJECT), no_cache=True, no_logo=True)
    report = capsys.readouterr().out
    assert exit_code == 0, report
