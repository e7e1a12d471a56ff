"""Fixtures shared by the reliability tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.reliability import ServerProcess


@pytest.fixture
def server(tmp_path: Path, database_url: str | None) -> Iterator[ServerProcess]:
    """``dicomql serve --processes 1`` on the test's backend, stopped afterwards."""
    process = ServerProcess(tmp_path / "data", database_url).start()
    try:
        yield process
    finally:
        process.stop()
