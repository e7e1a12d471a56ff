"""Memory is bounded by design: a 200 MB STOW streamed to a ``dicomql serve`` subprocess and the
study streamed back keep the server's peak RSS under 300 MB (bench/stow_large.py does 1 GB)."""

from __future__ import annotations

import pytest

from dicomql.service.config import ServiceConfig
from tests.support.dicomweb import stow_large_bench

# One test of the heavy group at a time (docs/development.md): SIGKILLs, 200 MB bodies, peak RSS.
pytestmark = pytest.mark.xdist_group("heavy")

RSS_BOUND_MB = 300


@pytest.mark.slow
def test_200_megabyte_stow_and_retrieval_stay_under_300_megabytes_rss(
    service_config: ServiceConfig,
) -> None:
    figures = stow_large_bench().run(200, service_config.data_dir, service_config.database_url)
    assert figures["stow_mb"] >= 200
    assert figures["wado_mb"] >= 200  # every instance came back
    assert figures["peak_rss_after_stow_mb"] < RSS_BOUND_MB, figures
    assert figures["peak_rss_after_wado_mb"] < RSS_BOUND_MB, figures
