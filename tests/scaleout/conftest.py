"""Fixtures of the scale-out tests: one moto S3 server per session, clusters per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster, moto_s3_server, start_cluster


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One moto S3 server for the session (each cluster gets its own bucket in it)."""
    with moto_s3_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.fixture
def cluster_factory(tmp_path: Path, s3_endpoint: str) -> Iterator[Callable[..., Cluster]]:
    """``cluster_factory(servers=3, workers=2, lease_seconds=3, extra_args=[...])`` starts a
    cluster (see :func:`start_cluster`); every cluster is stopped and its database dropped after
    the test."""
    with ExitStack() as stack:

        def factory(servers: int = 3, **options: Any) -> Cluster:
            number = len(list(tmp_path.glob("cluster-*")))
            return stack.enter_context(
                start_cluster(
                    tmp_path / f"cluster-{number}",
                    servers,
                    s3_endpoint=s3_endpoint,
                    **options,
                )
            )

        yield factory
