"""Deflate bomb at STOW (issue 13 item 11): a deflated instance of a few hundred kilobytes whose
data set would inflate to 400 MB raises a ``dicomql serve`` process's peak RSS by a bounded
amount (+773 MB before the cap) and is refused with FailureReason 0xC000."""

from __future__ import annotations

import httpx
import pytest
from pydicom.uid import generate_uid

from dicomql.dicom.limits import MAX_INFLATED_BYTES
from tests.support.deflated import deflate_bomb
from tests.support.reliability import (
    DICOMWEB,
    ServerProcess,
    create_dataset_and_store,
    make_instance,
    peak_rss,
    qido_instances,
    stow,
)

# One test of the heavy group at a time (docs/development.md): SIGKILLs, 200 MB bodies, peak RSS.
pytestmark = pytest.mark.xdist_group("heavy")

PEAK_GROWTH_LIMIT = 150 * 1024 * 1024
INFLATED = 400 * 1024 * 1024


def _instance() -> bytes:
    return make_instance(generate_uid(), generate_uid(), generate_uid())


@pytest.mark.slow
def test_a_deflate_bomb_at_stow_is_refused_within_the_memory_bound(server: ServerProcess) -> None:
    assert server.process is not None
    bomb = deflate_bomb(_instance(), INFLATED)
    assert len(bomb) < 1024 * 1024
    with httpx.Client(base_url=server.url, timeout=300) as client:
        create_dataset_and_store(client)
        # Within the cap: stored (and imports and caches warmed before measuring).
        assert stow(client, [deflate_bomb(_instance(), 1024 * 1024)]).status_code == 200
        before = peak_rss(server.process.pid)
        response = stow(client, [bomb])
        growth = peak_rss(server.process.pid) - before
        stored = qido_instances(client, DICOMWEB)
    assert response.status_code in (400, 409), response.text
    failure = response.json()["00081198"]["Value"][0]
    assert failure["00081197"]["Value"] == [0xC000]
    assert f"inflates to more than {MAX_INFLATED_BYTES} bytes" in response.headers["warning"]
    assert len(stored) == 1  # only the instance within the cap
    assert growth < PEAK_GROWTH_LIMIT, f"peak RSS grew {growth / 2**20:.0f} MB"
    print(f"peak RSS growth for a {len(bomb)}-byte bomb: {growth / 2**20:.1f} MB")
